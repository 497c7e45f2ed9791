//! Every run writes `capture.pcap` into its run folder: the harness's SIP
//! and Diameter messages, both ways, in packets Wireshark decodes.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;

/// A fresh folder to run in: its `reports/` is the run's, never the checkout's.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpmcc-capture-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One short scenario on free ports, run from `dir`.
fn short_run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--free-ports", "--tags", "@tp-OFF-INIT-01"];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The UDP or TCP payload of an Ethernet frame, if it carries IPv4 or IPv6.
fn payload(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (protocol, l4) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            (frame[14 + 9], &frame[14 + ihl..])
        }
        0x86dd => (frame[14 + 6], &frame[14 + 40..]),
        _ => return None,
    };
    match protocol {
        17 => Some((17, &l4[8..])),
        6 => Some((6, &l4[usize::from(l4[12] >> 4) * 4..])),
        _ => None,
    }
}

fn is_sip(p: &[u8]) -> bool {
    let line = p.split(|&b| b == b'\r').next().unwrap_or_default();
    line.starts_with(b"SIP/2.0 ") || line.ends_with(b" SIP/2.0")
}

/// Version 1 and a length that the payload holds.
fn is_diameter(p: &[u8]) -> bool {
    p.len() >= 20 && p[0] == 1 && {
        let len = u32::from_be_bytes([0, p[1], p[2], p[3]]) as usize;
        len >= 20 && len <= p.len()
    }
}

/// tshark on `pcap`, with the Diameter heuristic on (free ports are no
/// well-known port), its standard output.
fn tshark(pcap: &Path, args: &[&str]) -> String {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["--enable-heuristic", "diameter_tcp"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "tshark {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn a_run_captures_its_sip_and_diameter_messages_for_wireshark() {
    let dir = scratch("run");
    let o = short_run(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pcap = dir.join("reports/latest/capture.pcap");
    assert!(pcap.is_file(), "{} missing: {}", pcap.display(), text(&o));

    let mut reader = PcapReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let (mut sip, mut diameter, mut other) = (0, 0, 0);
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        assert_eq!(packet.orig_len as usize, packet.data.len(), "whole");
        match payload(&packet.data) {
            Some((_, p)) if is_sip(p) => sip += 1,
            Some((6, p)) if is_diameter(p) => diameter += 1,
            _ => other += 1,
        }
    }
    assert!(sip > 0 && diameter > 0, "sip {sip}, diameter {diameter}");
    assert_eq!(other, 0, "every packet is SIP or Diameter");

    if Command::new("tshark").arg("--version").output().is_err() {
        // CI installs tshark (.ci/run): there the check must not skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is not installed, and CI requires the Wireshark check"
        );
        println!("note: tshark not installed; skipping the Wireshark check");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let decoded = tshark(
        &pcap,
        &[
            "-Y",
            "sip || diameter",
            "-T",
            "fields",
            "-e",
            "sip.Method",
            "-e",
            "diameter.cmd.code",
            "-e",
            "diameter.flags.request",
        ],
    );
    let rows: Vec<Vec<&str>> = decoded.lines().map(|l| l.split('\t').collect()).collect();
    assert!(
        rows.iter().any(|r| r[0].split(',').any(|m| m == "INVITE")),
        "no SIP INVITE decoded:\n{decoded}"
    );
    // An ACR (271) or CCR (272): a request, as the SUT's client sent it.
    assert!(
        rows.iter().any(|r| {
            let codes: Vec<&str> = r[1].split(',').collect();
            let requests: Vec<&str> = r[2].split(',').collect();
            codes
                .iter()
                .zip(requests.iter().chain(std::iter::repeat(&"")))
                .any(|(c, q)| (*c == "271" || *c == "272") && matches!(*q, "1" | "True"))
        }),
        "no Diameter ACR/CCR decoded:\n{decoded}"
    );
    let malformed = tshark(&pcap, &["-Y", "_ws.malformed"]);
    assert!(malformed.trim().is_empty(), "malformed:\n{malformed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_capture_leaves_the_run_folder_without_one() {
    let dir = scratch("off");
    let o = short_run(&dir, &["--no-capture"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = dir.join("reports/latest");
    assert!(run.join("summary.json").is_file(), "{}", text(&o));
    assert!(!run.join("capture.pcap").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
