//! The reference server as a separate process (`cpmcc sut --config`), described
//! to the harness only by a SUT profile without `sut.embedded`: the path a
//! vendor's server takes. Proves that nothing in a run depends on the SUT
//! being embedded.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};

/// Kills the server on every exit path.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the suite against `cpmcc sut` in its own process; `offline` is the
/// profile's `charging.offline` mapping. Returns the exit code and stdout.
fn run_external(name: &str, offline: &str) -> (Option<i32>, String) {
    run_external_with(name, offline, "")
}

/// As [`run_external`], with extra lines for the server's `charging:` section.
fn run_external_with(name: &str, offline: &str, server_charging: &str) -> (Option<i32>, String) {
    run_external_full(name, offline, server_charging, "")
}

/// As [`run_external_with`], with extra lines for the profile.
fn run_external_full(
    name: &str,
    offline: &str,
    server_charging: &str,
    profile_extra: &str,
) -> (Option<i32>, String) {
    run_external_shaped(
        name,
        offline,
        server_charging,
        profile_extra,
        "b2bua",
        "udp",
    )
}

/// As [`run_external_full`], with the server's shape and the SIP transport.
fn run_external_shaped(
    name: &str,
    offline: &str,
    server_charging: &str,
    profile_extra: &str,
    shape: &str,
    transport: &str,
) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("cpmcc-external-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (sut_sip, harness_sip, diameter, admin) = (free_udp(), free_udp(), free_tcp(), free_tcp());
    // The B2BUA charges online too; the proxy shape only offline.
    let (server_online, profile_online) = if shape == "b2bua" {
        (
            "online:\n  functions: [originating_pf, controlling_function]\n  participant_threshold: 3\n",
            ", online: { functions: [originating_pf, controlling_function], refusal_status: 402, \
             triggers: [participants_number, participants_threshold], participant_threshold: 3 }",
        )
    } else {
        ("", "")
    };
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "sip: {{ listen: 127.0.0.1:{sut_sip}, transport: {transport}, t1: 20ms }}\n\
             shape: {shape}\n\
             domain: test.invalid\n\
             route_users_to: 127.0.0.1:{harness_sip}\n\
             charging:\n  server: 127.0.0.1:{diameter}\n  functions: [originating_pf, terminating_pf]\n{server_charging}\
             inactivity_timer: 1500ms\n\
             admin: 127.0.0.1:{admin}\n\
             conference:\n  groups:\n    team-a: [sip:carol.team-a@test.invalid, sip:dave.team-a@test.invalid]\n\
             {server_online}"
        ),
    )
    .unwrap();
    let profile = dir.join("profile.yaml");
    std::fs::write(
        &profile,
        format!(
            "name: reference server, external\n\
             sut: {{ sip: {{ address: 127.0.0.1:{sut_sip}, transport: {transport} }}, domain: test.invalid }}\n\
             harness: {{ sip: {{ listen: 127.0.0.1:{harness_sip} }}, diameter: {{ listen: 127.0.0.1:{diameter} }} }}\n\
             charging: {{ offline: {offline}{profile_online} }}\n\
             groups:\n  conference_factory: conf-factory\n  pre_defined: {{ team-a: [carol, dave] }}\n  dial_in: true\n  refer_add: true\n  refer_remove: true\n\
             stimuli:\n  inactivity_timer: 1500ms\n  bye_timeout: 1280ms\n  operator_terminate:\n    http: {{ url: \"http://127.0.0.1:{admin}/sessions/{{call_id}}/terminate\" }}\n{profile_extra}"
        ),
    )
    .unwrap();
    // The server waits for the Charging Enabler, as a real one retries its peer.
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_cpmcc"))
            .arg("sut")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .arg("--profile")
        .arg(&profile)
        .arg("--json")
        .arg(dir.join("summary.json"))
        .arg("--cucumber-log")
        .arg(dir.join("cucumber.log"))
        .arg("--junit")
        .arg(scratch_report(dir.join("cucumber.log"), "junit.xml"))
        .arg("--cucumber-json")
        .arg(scratch_report(dir.join("cucumber.log"), "cucumber.json"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}\n{stderr}"))
}

/// Every scenario ran (none n/a) and passed.
fn all_pass(out: &str) -> bool {
    out.contains(" pass, 0 fail, 0 inconclusive, 0 n/a, 0 error in ")
}

/// Every scenario passed but the online ones, n/a for a server that
/// charges offline only (the proxy shape).
fn all_offline_pass(out: &str) -> bool {
    let total = out.lines().find(|l| l.starts_with("total: ")).unwrap_or("");
    total.contains(" 0 fail, 0 inconclusive, ")
        && total.contains(" 0 error in ")
        && out
            .lines()
            .filter(|l| l.starts_with("n/a "))
            .all(|l| l.starts_with("n/a ON-"))
}

#[test]
fn the_suite_passes_the_reference_server_run_as_an_external_process() {
    let (code, out) = run_external(
        "pass",
        "{ functions: [originating_pf, terminating_pf, controlling_function] }",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(all_pass(&out), "{out}");
}

#[test]
fn a_service_context_id_pinned_by_the_profile_is_asserted() {
    // The server sends 32260@3gpp.org; the profile pins another value.
    let (code, out) = run_external(
        "pinned",
        "{ functions: [originating_pf, terminating_pf, controlling_function], service_context_id: cpm@oma.test }",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("profile.service-context-id"), "{out}");
    assert!(out.contains("observed: 32260@3gpp.org"), "{out}");
}

#[test]
fn a_profile_with_an_unknown_key_stops_the_run_naming_file_and_key() {
    let dir = std::env::temp_dir().join(format!("cpmcc-badprofile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("bad.yaml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sut/reference.yaml"
    ))
    .unwrap()
    .replace(
        "  domain: test.invalid",
        "  domain: test.invalid\n  domian: typo.invalid",
    );
    std::fs::write(&profile, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .arg("--profile")
        .arg(&profile)
        // Never into the checkout's reports/.
        .arg("--reports")
        .arg(dir.join("reports"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("sut.domian"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_naming_the_served_user_in_the_start_only_passes_without_strays() {
    // Interim and Stop carry only the Session-Id the Start opened: legal,
    // and the harness must still attribute them to their scenario.
    let (code, out) = run_external_with(
        "start-only",
        "{ functions: [originating_pf, terminating_pf, controlling_function] }",
        "  served_user_in_start_only: true\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(all_pass(&out), "{out}");
    assert!(!out.contains("belonged to no scenario"), "{out}");
}

#[test]
fn a_server_started_first_whose_client_connects_seconds_later_is_awaited() {
    // As in a lab: the server runs before cpmcc, and its Diameter client
    // makes its first attempt 3 s later, on its own schedule. The run waits
    // for its CER, says so, and then passes as if it had been there.
    let (code, out) = run_external_with(
        "late-link",
        "{ functions: [originating_pf, terminating_pf, controlling_function] }",
        "  connect_after: 3s\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(all_pass(&out), "{out}");
    assert!(
        out.contains("waiting up to 10s for the SUT's Diameter client"),
        "{out}"
    );
    assert!(out.contains("SUT connected over Diameter from"), "{out}");
}

#[test]
fn both_shapes_over_udp_and_tcp_started_first_and_connecting_late_pass() {
    // The done-when of issue 5: each shape of the reference server, over each
    // transport, started as its own process before cpmcc, its Diameter
    // client connecting 2 s after the server (and so after cpmcc) started.
    for (shape, transport) in [
        ("b2bua", "udp"),
        ("proxy", "udp"),
        ("b2bua", "tcp"),
        ("proxy", "tcp"),
    ] {
        let (code, out) = run_external_shaped(
            &format!("late-{shape}-{transport}"),
            "{ functions: [originating_pf, terminating_pf, controlling_function] }",
            "  connect_after: 2s\n",
            "",
            shape,
            transport,
        );
        assert_eq!(code, Some(0), "{shape}/{transport}: {out}");
        let passed = if shape == "b2bua" {
            all_pass(&out)
        } else {
            all_offline_pass(&out)
        };
        assert!(passed, "{shape}/{transport}: {out}");
        assert!(
            out.contains("SUT connected over Diameter from"),
            "{shape}/{transport}: {out}"
        );
        assert!(
            !out.contains("belonged to no scenario"),
            "{shape}/{transport}: {out}"
        );
    }
}

#[test]
fn no_sut_peer_within_the_wait_stops_the_run_with_exit_3() {
    // The server's client tries only after 30 s: within the profile's 1 s
    // nobody connects, and the run says so instead of failing every scenario.
    let (code, out) = run_external_full(
        "no-link",
        "{ functions: [originating_pf, terminating_pf, controlling_function] }",
        "  connect_after: 30s\n",
        "timers: { sut_link: 1s }\n",
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("no SUT connected to the Charging Enabler") && out.contains("timers.sut_link"),
        "{out}"
    );
    assert!(!out.contains("scenarios"), "no scenario ran: {out}");
}

/// A report beside `log` (tests never write into the checkout's reports/,
/// and runs at once never share a file).
fn scratch_report(log: impl AsRef<std::path::Path>, name: &str) -> std::path::PathBuf {
    let log = log.as_ref();
    let stem = log.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    log.with_file_name(format!("{stem}.{name}"))
}
