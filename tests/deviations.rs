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
        Deviation::EventOnFailedInvite => &["OFF-INIT-03"],
        Deviation::DuplicateStart => &["OFF-INIT-01"],
        Deviation::NoInterimOnReinvite => &["OFF-MOD-01", "OFF-MOD-02"],
        Deviation::InterimBeforeReinviteAnswer => &["OFF-MOD-03"],
        Deviation::NoStopOnBye => &["OFF-TERM-01", "OFF-TERM-02", "OFF-TERM-05"],
        Deviation::StopBeforeByeOk => &["OFF-TERM-03", "OFF-TERM-04"],
        Deviation::StopAllOnFirstByeOk => &["OFF-TERM-03", "OFF-TERM-04"],
        Deviation::RecordNumberSkips => &["OFF-MOD-01", "OFF-TERM-01"],
        Deviation::NewSessionIdOnStop => &["OFF-TERM-01", "OFF-TERM-02"],
        Deviation::InterimAfterStop => &["OFF-TERM-01"],
        Deviation::StartOnRinging => &["OFF-INIT-02", "OFF-INIT-03"],
        Deviation::InterimOnRejectedReinvite => &["OFF-MOD-04"],
        Deviation::SecondStartOnRetransmittedOk => &["OFF-INIT-05"],
        Deviation::LateStartAfterFailedInvite => &["OFF-INIT-03", "OFF-INIT-04"],
    }
}

struct Outcome {
    /// Test purpose → the verdict of each of its scenarios (an outline has several).
    verdicts: BTreeMap<String, Vec<String>>,
    log: String,
}

impl Outcome {
    /// Whether every scenario of `tp` failed with a `fail` verdict.
    fn caught(&self, tp: &str) -> Result<(), String> {
        match self.verdicts.get(tp) {
            None => Err(format!("{tp} did not run")),
            Some(v) if v.iter().all(|x| x == "fail") => Ok(()),
            Some(v) => Err(format!(
                "{tp} ended {v:?}, expected fail for every scenario"
            )),
        }
    }

    fn failing(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter(|(_, v)| v.iter().any(|x| x != "pass"))
            .map(|(tp, v)| format!("{tp} ({})", v.join("/")))
            .collect()
    }
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
    let mut verdicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in summary["results"].as_array().expect("results") {
        verdicts
            .entry(r["test_purpose"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(r["verdict"].as_str().unwrap_or_default().to_owned());
    }
    Outcome { verdicts, log }
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
    let mut caught = 0;
    for (d, outcome) in &outcomes {
        println!("  {:<32} {}", d.name(), outcome.failing().join(", "));
        let missed: Vec<String> = must_fail(*d)
            .iter()
            .filter_map(|tp| outcome.caught(tp).err())
            .collect();
        if missed.is_empty() {
            caught += 1;
        } else {
            problems.push(format!(
                "{d} (breaks {}): {}\n{}",
                d.breaks(),
                missed.join("; "),
                outcome.log
            ));
        }
    }
    println!(
        "deviations: {caught} passed, {} failed",
        outcomes.len() - caught
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
