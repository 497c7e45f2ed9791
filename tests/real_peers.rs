//! Real peers nobody here wrote: Debian's `sipp` (package `sip-tester`)
//! calls through the reference SUT, which charges the call to our Charging
//! Enabler; `tshark` then dissects what crossed loopback, SIP and Diameter,
//! with Wireshark's dissectors and 3GPP dictionary, and must find nothing
//! malformed.
//!
//! Where `sipp` or `tshark` is missing, or capturing is not permitted, the
//! tests say so on stderr and pass, unless `CPMCC_REQUIRE_PEERS=1` (set by
//! `.ci/run`) makes that a failure. Every port is free and chosen at run
//! time; every child process is killed on every exit path; each test's
//! files live in a directory unique to the process, kept on failure.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cpmcc::charging::ch1::{ChargedRole, RecordType};
use cpmcc::charging::enabler::{AnswerOutcome, ChargingRecord, Enabler, EnablerConfig};
use cpmcc::diameter::LocalIdentity;
use cpmcc::profile::{ChargedFunction, Transport};
use cpmcc::sut::config::{ChargingConfig, SipConfig};
use cpmcc::sut::{self, RunningSut, SutConfig};

/// Set to 1 (CI does) to make a missing peer or capture permission a failure.
const REQUIRE_PEERS: &str = "CPMCC_REQUIRE_PEERS";
const ALICE: &str = "sip:alice@test.invalid";
const BOB: &str = "sip:bob@test.invalid";
/// sipp's own global timeout, per process.
const SIPP_TIMEOUT: &str = "20s";
/// How long the test waits for anything (a 2-core machine shared with builds).
const PATIENCE: Duration = Duration::from_secs(45);

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Writes straight to stderr: libtest's capture would hide a `println!`.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

/// A peer the test needs is not there: skip with a note, or fail in CI.
/// Returns false so callers can `return` on it.
fn unavailable(why: &str) -> bool {
    if std::env::var(REQUIRE_PEERS).is_ok_and(|v| v == "1") {
        panic!("{why}; {REQUIRE_PEERS}=1 requires the real-peer tests to run");
    }
    note(&format!(
        "{why}; skipping this real-peer test ({REQUIRE_PEERS}=1 makes this a failure)"
    ));
    false
}

/// True if `binary` runs; otherwise names the Debian package to install.
fn installed(binary: &str, package: &str) -> bool {
    match Command::new(binary)
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) => unavailable(&format!(
            "`{binary}` cannot be run ({e}): install Debian package `{package}` \
             (apt-get install {package})"
        )),
    }
}

/// A UDP port free now on 127.0.0.1 (the kernel's pick, so unlikely to be
/// taken again before the peer binds it).
fn free_udp_port() -> u16 {
    UdpSocket::bind(localhost(0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sipp")
        .join(name)
}

/// This test's own directory; removed when the test passes, kept (and
/// named) when it fails.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cpmcc-real-peers-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            note(&format!(
                "real-peer test files kept in {}",
                self.0.display()
            ));
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process that is killed on every exit path: when dropped still
/// running it gets SIGINT first if `interrupt_first` (tshark must close its
/// capture file), then SIGKILL.
#[derive(Debug)]
struct Peer {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    interrupt_first: bool,
}

impl Peer {
    fn spawn(
        name: &str,
        program: &str,
        args: &[OsString],
        dir: &Scratch,
        interrupt_first: bool,
    ) -> std::io::Result<Peer> {
        let stdout = dir.path(&format!("{name}.stdout"));
        let stderr = dir.path(&format!("{name}.stderr"));
        let child = Command::new(program)
            .args(args)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()?;
        Ok(Peer {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            interrupt_first,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit on its own; None on timeout.
    async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGINT, as Ctrl-C would (tshark then stops dumpcap and closes the file).
    fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-s", "INT", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What the process said, for a failure message.
    fn report(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- {} stderr ---\n{}\n--- {} stdout (last 40 lines) ---\n{}",
            self.name,
            self.stderr_text(),
            self.name,
            tail.join("\n")
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.interrupt_first {
            self.interrupt();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ports of one call: the SUT's SIP (0: any), sipp UAS (bob), sipp UAC (alice).
#[derive(Debug, Clone, Copy)]
struct Ports {
    sut: u16,
    uas: u16,
    uac: u16,
}

async fn start_enabler() -> Enabler {
    Enabler::bind(EnablerConfig {
        listen: localhost(0),
        identity: LocalIdentity::charging_server(
            "cdf.cpmcc.test",
            "cpmcc.test",
            Ipv4Addr::LOCALHOST.into(),
        ),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

/// The reference SUT over UDP, routing every user to sipp's UAS and charging
/// both Participating Functions to `enabler`.
async fn start_sut(ports: Ports, enabler: &Enabler) -> RunningSut {
    let config = SutConfig {
        sip: SipConfig {
            listen: localhost(ports.sut),
            transport: Transport::Udp,
            t1: None,
        },
        shape: Default::default(),
        domain: "test.invalid".into(),
        route_users_to: localhost(ports.uas),
        charging: Some(ChargingConfig {
            server: enabler.local_addr(),
            origin_host: "cpm.sut.test".into(),
            origin_realm: "sut.test".into(),
            destination_realm: "cpmcc.test".into(),
            functions: vec![
                ChargedFunction::OriginatingPf,
                ChargedFunction::TerminatingPf,
            ],
            service_context_id: "32260@3gpp.org".into(),
            served_user_in_start_only: false,
            reconnect_max: None,
            connect_after: None,
        }),
        inactivity_timer: None,
        admin: None,
        deviations: Vec::new(),
        conference: None,
        online: None,
    };
    sut::start(config).await.unwrap()
}

fn sipp_args(
    role: &str,
    scenario: &str,
    local_port: u16,
    remote: Option<SocketAddr>,
    dir: &Scratch,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(remote) = remote {
        args.push(remote.to_string().into());
    }
    args.push("-sf".into());
    args.push(fixture(scenario).into());
    for a in [
        "-t",
        "u1",
        "-i",
        "127.0.0.1",
        "-p",
        &local_port.to_string(),
        "-m",
        "1",
        "-timeout",
        SIPP_TIMEOUT,
        "-timeout_error",
        "-nostdin",
        "-trace_err",
    ] {
        args.push(a.into());
    }
    args.push("-error_file".into());
    args.push(dir.path(&format!("{role}_errors.log")).into());
    args.push("-trace_msg".into());
    args.push("-message_file".into());
    args.push(dir.path(&format!("{role}_messages.log")).into());
    args
}

/// sipp's logs of a role, for a failure message.
fn sipp_logs(dir: &Scratch, role: &str) -> String {
    let read = |name: String| std::fs::read_to_string(dir.path(&name)).unwrap_or_default();
    format!(
        "--- {role} unexpected messages ---\n{}\n--- {role} messages ---\n{}",
        read(format!("{role}_errors.log")),
        read(format!("{role}_messages.log"))
    )
}

/// Whether some socket is bound to UDP `port` on 127.0.0.1, read from
/// /proc/net/udp (binding the port ourselves to find out could make sipp's
/// own bind fail). None where that file cannot be read.
fn udp_port_bound(port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    Some(
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(local.as_str())),
    )
}

/// Until sipp holds its UDP port, or it exits.
async fn until_bound(peer: &mut Peer, port: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = peer.exited() {
            panic!(
                "sipp {} exited ({status}) before it listened on {port}\n{}",
                peer.name,
                peer.report()
            );
        }
        match udp_port_bound(port) {
            Some(true) => return,
            Some(false) => {}
            None => {
                // No /proc: give sipp a moment; the SUT retransmits its INVITE anyway.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sipp {} did not bind UDP {port} in {PATIENCE:?}\n{}",
            peer.name,
            peer.report()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One call: sipp's UAS plays bob, sipp's UAC (alice) calls bob through the
/// SUT at `sut`. Both must exit 0.
async fn sipp_call(dir: &Scratch, sut: SocketAddr, ports: Ports) {
    let mut uas = Peer::spawn(
        "uas",
        "sipp",
        &sipp_args("uas", "uas.xml", ports.uas, None, dir),
        dir,
        false,
    )
    .unwrap();
    until_bound(&mut uas, ports.uas).await;
    let mut uac = Peer::spawn(
        "uac",
        "sipp",
        &sipp_args("uac", "uac.xml", ports.uac, Some(sut), dir),
        dir,
        false,
    )
    .unwrap();

    let uac_status = uac.wait(PATIENCE).await;
    let uas_status = uas.wait(Duration::from_secs(15)).await;
    let ok = |s: Option<ExitStatus>| s.is_some_and(|s| s.success());
    if !ok(uac_status) || !ok(uas_status) {
        panic!(
            "sipp call through the reference SUT failed: UAC (alice) {}, UAS (bob) {}\n{}\n{}\n{}\n{}",
            describe(uac_status),
            describe(uas_status),
            uac.report(),
            sipp_logs(dir, "uac"),
            uas.report(),
            sipp_logs(dir, "uas"),
        );
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "still running, killed".into(),
    }
}

fn answered(r: &ChargingRecord) -> bool {
    matches!(r.answer, AnswerOutcome::Answered { .. })
}

fn role(r: &ChargingRecord) -> Option<ChargedRole> {
    r.ch1.as_ref().ok().and_then(|c| c.role)
}

/// The Enabler saw, for alice (originating PF) and bob (terminating PF), a
/// Start #0 then a Stop #1 of one charging session, each answered 2001.
async fn assert_charged(enabler: &Enabler) {
    for user in [ALICE, BOB] {
        let stop = enabler
            .wait_for(
                |r| {
                    r.served_user() == Some(user)
                        && r.record_type() == Some(RecordType::Stop)
                        && answered(r)
                },
                PATIENCE,
            )
            .await;
        if stop.is_none() {
            let seen: Vec<String> = enabler.records().iter().map(|r| r.describe()).collect();
            panic!(
                "no answered Stop for {user} in {PATIENCE:?}; the Enabler recorded:\n{}",
                seen.join("\n")
            );
        }
    }
    let records = enabler.records();
    let all: Vec<String> = records.iter().map(|r| r.describe()).collect();
    let all = all.join("\n");
    for r in &records {
        assert!(
            r.ch1.is_ok(),
            "a request did not read as CH-1: {:?}\n{all}",
            r.ch1
        );
    }
    assert_eq!(
        records.len(),
        4,
        "two functions, Start and Stop each:\n{all}"
    );
    let mut call_ids = Vec::new();
    for (user, expected_role) in [
        (ALICE, ChargedRole::OriginatingPf),
        (BOB, ChargedRole::TerminatingPf),
    ] {
        let mine: Vec<&ChargingRecord> = records
            .iter()
            .filter(|r| r.served_user() == Some(user))
            .collect();
        let seq: Vec<(Option<RecordType>, u32)> = mine
            .iter()
            .map(|r| {
                (
                    r.record_type(),
                    r.ch1.as_ref().map(|c| c.record_number).unwrap_or(u32::MAX),
                )
            })
            .collect();
        assert_eq!(
            seq,
            vec![(Some(RecordType::Start), 0), (Some(RecordType::Stop), 1)],
            "{user}: Start #0 then Stop #1\n{all}"
        );
        assert_eq!(
            mine[0].session_id(),
            mine[1].session_id(),
            "{user}: one charging session from Start to Stop\n{all}"
        );
        for r in &mine {
            assert_eq!(role(r), Some(expected_role), "{user}\n{all}");
            assert!(
                matches!(
                    r.answer,
                    AnswerOutcome::Answered {
                        result_code: 2001,
                        ..
                    }
                ),
                "{user}: answered 2001\n{all}"
            );
            let ch1 = r.ch1.as_ref().unwrap();
            assert_eq!(ch1.calling_party.as_deref(), Some(ALICE), "{all}");
            assert_eq!(ch1.called_party.as_deref(), Some(BOB), "{all}");
            call_ids.push(ch1.call_id.clone());
        }
    }
    assert!(
        call_ids.iter().all(|c| c.is_some() && *c == call_ids[0]),
        "every record carries sipp's Call-ID: {call_ids:?}"
    );
}

/// The reference SUT between two sipp user agents, charging to our Enabler:
/// the call completes for sipp and is charged Start/Stop per function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_the_reference_sut_and_the_call_is_charged() {
    if !installed("sipp", "sip-tester") {
        return;
    }
    let dir = Scratch::new("sipp");
    let enabler = start_enabler().await;
    let ports = Ports {
        sut: 0,
        uas: free_udp_port(),
        uac: free_udp_port(),
    };
    let sut = start_sut(ports, &enabler).await;
    sipp_call(&dir, sut.sip, ports).await;
    assert_charged(&enabler).await;
    sut.shutdown();
}

/// Why a capture did not start.
#[derive(Debug)]
enum CaptureError {
    /// Not allowed to capture here (skip, unless peers are required).
    Permission(String),
    /// Anything else (a failure).
    Other(String),
}

/// tshark capturing loopback into a file.
#[derive(Debug)]
struct Capture {
    tshark: Peer,
    file: PathBuf,
}

impl Capture {
    /// Starts tshark and returns once it captures: it said so and the file
    /// has its header, plus a short settle.
    async fn start(dir: &Scratch, filter: &str) -> Result<Capture, CaptureError> {
        let file = dir.path("call.pcapng");
        let args: Vec<OsString> = vec![
            "-i".into(),
            "lo".into(),
            "-f".into(),
            filter.into(),
            "-w".into(),
            file.clone().into(),
        ];
        let mut tshark = Peer::spawn("tshark-capture", "tshark", &args, dir, true)
            .map_err(|e| CaptureError::Other(format!("cannot run tshark: {e}")))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let said = tshark.stderr_text();
            if let Some(status) = tshark.exited() {
                let lower = said.to_lowercase();
                let why = format!("tshark could not capture on lo ({status}): {said}");
                return Err(
                    if lower.contains("permission") || lower.contains("not permitted") {
                        CaptureError::Permission(why)
                    } else {
                        CaptureError::Other(why)
                    },
                );
            }
            let header = std::fs::metadata(&file).is_ok_and(|m| m.len() >= 24);
            if said.contains("Capturing on") && header {
                break;
            }
            if Instant::now() >= deadline {
                return Err(CaptureError::Other(format!(
                    "tshark did not start capturing in {PATIENCE:?}\n{}",
                    tshark.report()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Capture { tshark, file })
    }

    /// Stops tshark as Ctrl-C would and returns the capture file.
    async fn stop(mut self) -> PathBuf {
        // Let the last packets reach dumpcap's file.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.tshark.interrupt();
        let status = self.tshark.wait(Duration::from_secs(15)).await;
        assert!(
            status.is_some(),
            "tshark did not stop on SIGINT\n{}",
            self.tshark.report()
        );
        self.file.clone()
    }
}

/// Runs `tshark -r` on the capture with SIP and Diameter decoded on our
/// ports, and returns what it printed; fails if tshark does.
fn decode(file: &Path, ports: Ports, diameter: u16, extra: &[&str]) -> String {
    let mut args: Vec<OsString> = vec!["-r".into(), file.into()];
    for a in [
        "-d".to_owned(),
        format!("udp.port=={},sip", ports.sut),
        "-d".to_owned(),
        format!("tcp.port=={diameter},diameter"),
    ] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(OsString::from));
    let out = Command::new("tshark")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Counts every comma-separated value of every field line (one frame may
/// carry several Diameter messages; tshark joins their values with commas).
fn count_values(text: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        for value in line.split([',', '\t']).filter(|v| !v.is_empty()) {
            *counts.entry(value.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// The same call, captured on loopback: tshark decodes SIP INVITE/180/200/
/// ACK/BYE/200 on both legs and the Diameter CER/CEA and the ACR/ACA
/// START and STOP of both functions, and flags nothing malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_the_call_and_its_charging_with_nothing_malformed() {
    if !installed("sipp", "sip-tester") || !installed("tshark", "tshark") {
        return;
    }
    let dir = Scratch::new("tshark");
    let enabler = start_enabler().await;
    let diameter = enabler.local_addr().port();
    let ports = Ports {
        sut: free_udp_port(),
        uas: free_udp_port(),
        uac: free_udp_port(),
    };
    // Capture before the SUT starts, so its CER/CEA is in the file too.
    let filter = format!(
        "udp port {} or udp port {} or udp port {} or tcp port {diameter}",
        ports.sut, ports.uas, ports.uac
    );
    let capture = match Capture::start(&dir, &filter).await {
        Ok(c) => c,
        Err(CaptureError::Permission(why)) => {
            unavailable(&format!("cannot capture on loopback: {why}"));
            return;
        }
        Err(CaptureError::Other(why)) => panic!("{why}"),
    };
    let sut = start_sut(ports, &enabler).await;
    assert_eq!(sut.sip.port(), ports.sut);
    sipp_call(&dir, sut.sip, ports).await;
    // Every ACA is out before the capture stops.
    assert_charged(&enabler).await;
    let file = capture.stop().await;

    // What tshark shows of the whole capture, for failure messages only.
    let context = || {
        format!(
            "capture {}:\n{}",
            file.display(),
            decode(&file, ports, diameter, &[])
        )
    };

    // SIP: both legs of the call, as Wireshark reads them.
    let sip = decode(
        &file,
        ports,
        diameter,
        &[
            "-Y",
            "sip",
            "-T",
            "fields",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.CSeq.method",
        ],
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in sip.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let key = match f.as_slice() {
            [method, ..] if !method.is_empty() => (*method).to_owned(),
            [_, status, cseq, ..] => format!("{status} ({cseq})"),
            _ => continue,
        };
        *seen.entry(key).or_default() += 1;
    }
    for (what, at_least) in [
        ("INVITE", 2),
        ("180 (INVITE)", 2),
        ("200 (INVITE)", 2),
        ("ACK", 2),
        ("BYE", 2),
        ("200 (BYE)", 2),
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= at_least,
            "tshark should see {what} on both legs, saw {seen:?}\n{}",
            context()
        );
    }

    // Diameter requests: CER, then ACR START and STOP of each function.
    let requests = decode(
        &file,
        ports,
        diameter,
        &[
            "-Y",
            "diameter.flags.request == 1",
            "-T",
            "fields",
            "-e",
            "diameter.cmd.code",
        ],
    );
    let requests = count_values(&requests);
    assert_eq!(
        requests.get("257"),
        Some(&1),
        "one CER: {requests:?}\n{}",
        context()
    );
    assert_eq!(
        requests.get("271"),
        Some(&4),
        "four ACRs: {requests:?}\n{}",
        context()
    );
    let record_types = decode(
        &file,
        ports,
        diameter,
        &[
            "-Y",
            "diameter.cmd.code == 271 && diameter.flags.request == 1",
            "-T",
            "fields",
            "-e",
            "diameter.Accounting-Record-Type",
        ],
    );
    let record_types = count_values(&record_types);
    assert_eq!(
        record_types,
        BTreeMap::from([("2".to_owned(), 2), ("4".to_owned(), 2)]),
        "ACRs: START_RECORD (2) and STOP_RECORD (4) for each function\n{}",
        context()
    );

    // Diameter answers: CEA and four ACA, all DIAMETER_SUCCESS.
    let results = decode(
        &file,
        ports,
        diameter,
        &[
            "-Y",
            "diameter.flags.request == 0",
            "-T",
            "fields",
            "-e",
            "diameter.Result-Code",
        ],
    );
    let results = count_values(&results);
    assert_eq!(
        results,
        BTreeMap::from([("2001".to_owned(), 5)]),
        "CEA and four ACA, each 2001\n{}",
        context()
    );

    // Nothing malformed, no expert error, in any packet; no AVP missing from
    // Wireshark's dictionary and no expert warning on a Diameter packet.
    let suspect = "_ws.malformed || _ws.expert.severity == error \
                   || diameter.avp.unknown || (diameter && _ws.expert.severity >= warning)";
    let bad = decode(&file, ports, diameter, &["-Y", suspect]);
    if !bad.trim().is_empty() {
        let verbose = decode(&file, ports, diameter, &["-Y", suspect, "-V"]);
        panic!(
            "tshark finds packets malformed, in error, with AVPs it does not know or \
             with Diameter warnings ({suspect}):\n{bad}\n{verbose}\n{}",
            context()
        );
    }
    let full = decode(&file, ports, diameter, &["-V"]);
    assert!(
        !full.contains("Malformed Packet") && !full.contains("[Expert Info (Error"),
        "tshark -V reports a malformed packet or an error:\n{full}"
    );
    // The dissector read the record types with its dictionary's names, e.g.
    // "Accounting-Record-Type: Start Record (2)".
    let named = |value: &str| {
        full.lines().any(|l| {
            let l = l.trim();
            l.starts_with("Accounting-Record-Type: ") && l.ends_with(value)
        })
    };
    assert!(
        named("(2)") && named("(4)"),
        "tshark names the START and STOP record types:\n{full}"
    );
    sut.shutdown();
}
