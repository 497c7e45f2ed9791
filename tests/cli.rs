//! The `cpmcc` command line as a user meets it: tag selection, refusals that
//! stop a run before it starts, and a profile option that changes what a
//! scenario expects.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpmcc-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cpmcc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(["--free-ports"])
        .args(args)
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
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_tag_expression_selects_scenarios() {
    let dir = scratch("tags");
    let o = cpmcc(
        &dir,
        &["--tags", "@clause-6.2.3.4 and not @ordering-strict"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("total: 2 scenarios, 2 pass"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_tag_expression_that_selects_nothing_stops_the_run() {
    let dir = scratch("none");
    let o = cpmcc(&dir, &["--tags", "@clause-9.9.9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no scenario selected"), "{}", text(&o));
}

#[test]
fn a_feature_file_that_does_not_parse_stops_the_run() {
    let dir = scratch("parse");
    let features = dir.join("features");
    std::fs::create_dir_all(&features).unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("features/offline/6.2.3.1-one-to-one-session-initiation.feature");
    std::fs::copy(good, features.join("good.feature")).unwrap();
    std::fs::write(
        features.join("broken.feature"),
        "Feature: x\n  Scenario: y\n    Given\n  Examples without outline\n",
    )
    .unwrap();
    let o = cpmcc(&dir, &["--features", features.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("do not parse"), "{}", text(&o));
}

#[test]
fn an_expected_event_request_for_a_failed_invite_is_required() {
    let dir = scratch("event");
    let profile = dir.join("profile.yaml");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sut/reference.yaml"
    ))
    .unwrap();
    std::fs::write(
        &profile,
        reference.replace("failed_invite_event: false", "failed_invite_event: true"),
    )
    .unwrap();
    let profile = profile.to_str().unwrap();
    // The profile expects an EventRequest; a SUT that sends none fails …
    let o = cpmcc(&dir, &["--profile", profile, "--tags", "@tp-OFF-INIT-03"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("EventRequest"), "{}", text(&o));
    // … and one that sends it passes.
    let o = cpmcc(
        &dir,
        &[
            "--profile",
            profile,
            "--tags",
            "@tp-OFF-INIT-03",
            "--deviation",
            "event_on_failed_invite",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn deviations_are_listed_with_the_rule_each_breaks() {
    let o = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .arg("deviations")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        out.contains("stop_before_bye_ok") && out.contains("6.2.3.7"),
        "{out}"
    );
}

#[test]
fn the_whole_suite_passes_over_sip_tcp() {
    let dir = scratch("tcp");
    let profile = dir.join("profile.yaml");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sut/reference.yaml"
    ))
    .unwrap();
    assert!(reference.contains("transport: udp"));
    std::fs::write(
        &profile,
        reference.replace("transport: udp", "transport: tcp"),
    )
    .unwrap();
    let o = cpmcc(&dir, &["--profile", profile.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(" pass, 0 fail, 0 inconclusive, 0 n/a, 0 error in "),
        "every scenario runs and passes over TCP: {}",
        text(&o)
    );
}

#[test]
fn the_lenient_reading_of_6_2_3_4_accepts_an_interim_on_re_invite_receipt() {
    let dir = scratch("lenient");
    let profile = dir.join("profile.yaml");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sut/reference.yaml"
    ))
    .unwrap();
    assert!(reference.contains("ordering: strict"));
    std::fs::write(
        &profile,
        reference.replace("ordering: strict", "ordering: lenient"),
    )
    .unwrap();
    let profile = profile.to_str().unwrap();
    let args = ["--profile", profile, "--tags", "@clause-6.2.3.4"];
    // The text's reading: an Interim on receipt of the re-INVITE passes, and
    // the scenario that checks only the figure's reading does not apply …
    let o = cpmcc(
        &dir,
        &[
            &args[..],
            &["--deviation", "interim_before_reinvite_answer"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("ordering reading: lenient"),
        "{}",
        text(&o)
    );
    assert!(
        // OFF-MOD-03/04 and the group modifications check the figure only.
        text(&o).contains("2 pass, 0 fail, 0 inconclusive, 4 n/a"),
        "{}",
        text(&o)
    );
    // … but no Interim at all still fails.
    let o = cpmcc(
        &dir,
        &[&args[..], &["--deviation", "no_interim_on_reinvite"]].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("off.interim.on-modification"),
        "{}",
        text(&o)
    );
    // … and neither does an Interim before the re-INVITE arrived.
    let o = cpmcc(
        &dir,
        &[&args[..], &["--deviation", "interim_with_start"]].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("[6.2.3.4 (lenient)] off.interim.after-reinvite"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_output_path_that_cannot_be_written_is_refused_before_the_run() {
    let dir = scratch("unwritable");
    for (json, log) in [
        ("/proc/nope/summary.json".to_owned(), dir.join("c.log")),
        (dir.display().to_string(), dir.join("c.log")),
        (
            dir.join("summary.json").display().to_string(),
            PathBuf::from("/proc/nope/cucumber.log"),
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
            .args(["--free-ports", "--tags", "@tp-OFF-INIT-01", "--json", &json])
            .arg("--cucumber-log")
            .arg(&log)
            .arg("--junit")
            .arg(scratch_report(&log, "junit.xml"))
            .arg("--cucumber-json")
            .arg(scratch_report(&log, "cucumber.json"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let named = if json.starts_with("/proc") || Path::new(&json).is_dir() {
            json.clone()
        } else {
            log.display().to_string()
        };
        assert!(
            text(&o).contains(&format!("cannot write {named}")),
            "{}",
            text(&o)
        );
        assert!(!text(&o).contains("total:"), "no run: {}", text(&o));
    }
}

#[test]
fn a_run_that_cannot_start_leaves_no_stale_summary() {
    let dir = scratch("stale");
    std::fs::write(dir.join("summary.json"), r#"{"results":[],"old":true}"#).unwrap();
    std::fs::write(dir.join("cucumber.log"), "old").unwrap();
    let o = cpmcc(&dir, &["--profile", "fixtures/sut/no-such-profile.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!dir.join("summary.json").exists(), "stale summary left");
    assert!(!dir.join("cucumber.log").exists(), "stale log left");
}

#[test]
fn free_ports_with_an_external_sut_is_refused_with_the_reason() {
    let dir = scratch("external");
    let o = cpmcc(&dir, &["--profile", "fixtures/sut/reference-external.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--free-ports") && text(&o).contains("external SUT"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("random port"), "{}", text(&o));
}

#[test]
fn an_interrupted_run_writes_what_finished_marked_interrupted() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let dir = scratch("sigint");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(["--free-ports", "--json"])
        .arg(dir.join("summary.json"))
        .arg("--cucumber-log")
        .arg(dir.join("cucumber.log"))
        .arg("--junit")
        .arg(scratch_report(dir.join("cucumber.log"), "junit.xml"))
        .arg("--cucumber-json")
        .arg(scratch_report(dir.join("cucumber.log"), "cucumber.json"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The signal handlers are in place before the harness says where it listens.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening: sip="), "{line}");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains(": INTERRUPTED"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(
        summary["results"].as_array().unwrap().len() < 14,
        "{summary}"
    );
}

#[test]
fn a_listed_known_deviation_passes_the_gate_and_nothing_else_does() {
    // The harness's own teardown must leave no stray behind (it ACKs what it
    // provokes), or a known deviation could never pass the gate.
    let dir = scratch("known");
    let profile = dir.join("profile.yaml");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/sut/reference.yaml"
    ))
    .unwrap();
    assert!(reference.contains("known_deviations: []"));
    let known = reference.replace(
        "known_deviations: []",
        "known_deviations:\n  - { scenario: OFF-MOD-01, reason: ticket 1 }\n  - { scenario: OFF-MOD-02, reason: ticket 1 }\n  - { scenario: OFF-MOD-03, reason: ticket 1 }\n  - { scenario: ON-MOD-01, reason: ticket 1 }\n",
    );
    std::fs::write(&profile, known).unwrap();
    let profile = profile.to_str().unwrap();
    let o = cpmcc(
        &dir,
        &["--profile", profile, "--deviation", "no_stop_after_interim"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("known deviation: ticket 1"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains("belonged to no scenario"),
        "{}",
        text(&o)
    );
    // The same deviation breaks a scenario the profile does not list.
    let o = cpmcc(
        &dir,
        &["--profile", profile, "--deviation", "no_stop_on_bye"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// A report beside `log` (tests never write into the checkout's reports/,
/// and runs at once never share a file).
fn scratch_report(log: impl AsRef<std::path::Path>, name: &str) -> std::path::PathBuf {
    let log = log.as_ref();
    let stem = log.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    log.with_file_name(format!("{stem}.{name}"))
}
