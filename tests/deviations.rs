//! Proves the suite catches every named deviation of the reference SUT: for
//! each, runs `cpmcc run --deviation NAME` (the real binary, on free ports)
//! and checks that the scenarios whose rule it breaks fail with a `fail`
//! verdict, then prints the matrix deviation → failing scenarios.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use cpmcc::sut::Deviation;

/// The scenarios each deviation must make fail (at least; others may too).
fn must_fail(d: Deviation) -> &'static [&'static str] {
    match d {
        Deviation::StartBeforeAnswer => &["OFF-INIT-01", "OFF-INIT-02"],
        Deviation::StartOnFailedInvite => &["OFF-INIT-03", "OFF-INIT-04"],
        Deviation::DuplicateStart => &["OFF-INIT-01"],
        Deviation::NoInterimOnReinvite => &["OFF-MOD-01", "OFF-MOD-02"],
        Deviation::InterimBeforeReinviteAnswer => &["OFF-MOD-03"],
        Deviation::NoStopOnBye => &["OFF-TERM-01", "OFF-TERM-02"],
        Deviation::StopBeforeByeOk => &["OFF-TERM-03", "OFF-TERM-04"],
        Deviation::RecordNumberSkips => &["OFF-MOD-01", "OFF-TERM-01"],
        Deviation::NewSessionIdOnStop => &["OFF-TERM-01", "OFF-TERM-02"],
        Deviation::InterimAfterStop => &["OFF-TERM-01"],
    }
}

struct Outcome {
    failing: BTreeMap<String, String>,
    log: String,
}

fn run(d: Deviation, dir: &std::path::Path) -> Outcome {
    let json = dir.join(format!("{}.json", d.name()));
    let output = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(["run", "--free-ports", "--deviation", d.name()])
        .arg("--json")
        .arg(&json)
        .arg("--cucumber-log")
        .arg(dir.join(format!("{}.log", d.name())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cpmcc runs");
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{d}: a deviating SUT must fail the run\n{log}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("summary written"))
            .expect("summary is JSON");
    let mut failing = BTreeMap::new();
    for r in summary["results"].as_array().expect("results") {
        let verdict = r["verdict"].as_str().unwrap_or_default().to_owned();
        if verdict != "pass" {
            failing.insert(
                r["test_purpose"].as_str().unwrap_or_default().to_owned(),
                verdict,
            );
        }
    }
    Outcome { failing, log }
}

fn main() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("cpmcc-deviations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Two at a time: each run is mostly waiting on timers, but the machine is small.
    let mut outcomes = Vec::new();
    for pair in Deviation::ALL.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|&d| {
                let dir = dir.clone();
                std::thread::spawn(move || (d, run(d, &dir)))
            })
            .collect();
        for h in handles {
            outcomes.push(h.join().expect("deviation run"));
        }
    }
    let mut problems = Vec::new();
    println!("deviation → failing scenarios");
    for (d, outcome) in &outcomes {
        let list: Vec<String> = outcome
            .failing
            .iter()
            .map(|(tp, v)| format!("{tp} ({v})"))
            .collect();
        println!("  {:<32} {}", d.name(), list.join(", "));
        for tp in must_fail(*d) {
            match outcome.failing.get(*tp).map(String::as_str) {
                Some("fail") => {}
                Some(other) => problems.push(format!(
                    "{d}: {tp} ended {other}, expected fail\n{}",
                    outcome.log
                )),
                None => problems.push(format!(
                    "{d}: {tp} passed, but it checks the rule {d} breaks ({})\n{}",
                    d.breaks(),
                    outcome.log
                )),
            }
        }
    }
    let caught = outcomes.len()
        - outcomes
            .iter()
            .filter(|(d, o)| must_fail(*d).iter().any(|tp| !o.failing.contains_key(*tp)))
            .count();
    println!(
        "deviations: {caught} passed, {} failed",
        outcomes.len() - caught
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
