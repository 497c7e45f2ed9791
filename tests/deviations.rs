//! Proves the suite catches every named deviation of the reference SUT: for
//! each, runs `cpmcc run --deviation NAME` (the real binary, on free ports)
//! and checks that the scenarios whose rule it breaks fail with a `fail`
//! verdict *by that rule* (its catalogue id), then prints the matrix
//! deviation → failing scenarios (rules).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use cpmcc::sut::Deviation;

/// What a deviation must cause: these scenarios fail, each by this rule
/// (its id among the scenario's broken rules), and, where two checks could
/// catch the same rule, with this text in the failure (the check that must
/// catch it first: "held back" for the hold-back steps).
struct Caught {
    scenarios: &'static [&'static str],
    rule: &'static str,
    detail: Option<&'static str>,
}

const fn by(scenarios: &'static [&'static str], rule: &'static str) -> Caught {
    Caught {
        scenarios,
        rule,
        detail: None,
    }
}

const fn by_while(
    scenarios: &'static [&'static str],
    rule: &'static str,
    detail: &'static str,
) -> Caught {
    Caught {
        scenarios,
        rule,
        detail: Some(detail),
    }
}

/// The scenarios each deviation must make fail, and the rule that catches it.
fn must_fail(d: Deviation) -> Vec<Caught> {
    match d {
        Deviation::StartBeforeAnswer => vec![
            by(&["OFF-INIT-01"], "off.start.after-answer"),
            by_while(&["OFF-INIT-02"], "off.start.after-answer", "held back"),
        ],
        Deviation::StartOnFailedInvite => vec![by(
            &["OFF-INIT-03", "OFF-INIT-04"],
            "off.start.none-on-failure",
        )],
        Deviation::EventOnFailedInvite => vec![by(&["OFF-INIT-03"], "off.event.failed-invite")],
        Deviation::DuplicateStart => vec![by(&["OFF-INIT-01"], "off.session.one-start")],
        Deviation::NoInterimOnReinvite => vec![by(
            &["OFF-MOD-01", "OFF-MOD-02", "OFF-GRP-MOD-01"],
            "off.interim.on-modification",
        )],
        Deviation::InterimBeforeReinviteAnswer => vec![by_while(
            &["OFF-MOD-03", "OFF-GRP-MOD-01"],
            "off.interim.after-answer",
            "held back",
        )],
        Deviation::NoStopOnBye => vec![
            by(
                &["OFF-TERM-01", "OFF-TERM-02", "OFF-TERM-05"],
                "off.stop.on-client-bye",
            ),
            // The harness's own teardown BYE is owed a Stop too.
            by(
                &["OFF-INIT-01", "OFF-MOD-01"],
                "off.stop.every-ended-session",
            ),
        ],
        Deviation::StopBeforeByeOk => vec![by_while(
            &["OFF-TERM-03", "OFF-TERM-04", "OFF-TERM-07"],
            "off.stop.after-client-ok",
            "held back",
        )],
        Deviation::StopAllOnFirstByeOk => vec![by_while(
            &["OFF-TERM-03", "OFF-TERM-04"],
            "off.stop.after-client-ok",
            "holds back",
        )],
        Deviation::RecordNumberSkips => vec![by(
            &["OFF-MOD-01", "OFF-TERM-01"],
            "off.session.number-rises-by-1",
        )],
        Deviation::RecordNumberFromOne => {
            vec![by(
                &["OFF-INIT-01", "OFF-TERM-01"],
                "off.session.number-from-0",
            )]
        }
        Deviation::NewSessionIdOnStop => vec![by(
            &["OFF-TERM-01", "OFF-TERM-02"],
            "off.session.one-session-id",
        )],
        Deviation::InterimAfterStop => vec![by(&["OFF-TERM-01"], "off.session.stop-last")],
        Deviation::DuplicateStop => vec![by(&["OFF-TERM-01"], "off.session.one-stop")],
        Deviation::NoStopAfterInterim => vec![by(
            &["OFF-MOD-01", "OFF-MOD-02", "OFF-MOD-03"],
            "off.stop.every-ended-session",
        )],
        Deviation::WrongApplicationId => vec![by(
            &["OFF-INIT-01", "OFF-MOD-01", "OFF-TERM-01"],
            "dia.rf.application-id",
        )],
        Deviation::InterimWithStart => vec![
            by(&["OFF-MOD-01", "OFF-MOD-02"], "off.interim.after-answer"),
            by(
                &["OFF-INIT-01", "OFF-TERM-01"],
                "off.interim.one-per-modification",
            ),
        ],
        Deviation::StopWithStart => vec![by(&["OFF-TERM-01", "OFF-TERM-02"], "off.stop.after-bye")],
        Deviation::InterimTwicePerReinvite => vec![by(
            &["OFF-MOD-01", "OFF-MOD-02"],
            "off.interim.one-per-modification",
        )],
        Deviation::StartOnRinging => vec![
            by_while(&["OFF-INIT-02"], "off.start.after-answer", "held back"),
            by(&["OFF-INIT-03"], "off.start.none-on-failure"),
        ],
        Deviation::InterimOnRejectedReinvite => {
            vec![by(
                &["OFF-MOD-04", "OFF-GRP-MOD-02"],
                "off.interim.one-per-modification",
            )]
        }
        Deviation::SecondStartOnRetransmittedOk => {
            vec![by(&["OFF-INIT-05"], "off.session.one-start")]
        }
        Deviation::LateStartAfterFailedInvite => vec![by(
            &["OFF-INIT-03", "OFF-INIT-04"],
            "off.start.none-on-failure",
        )],
        Deviation::NoStartOnAnswer => vec![by(&["OFF-INIT-01"], "off.start.on-answer")],
        Deviation::NoStopOnServerBye => vec![by(
            &["OFF-TERM-03", "OFF-TERM-04", "OFF-TERM-07"],
            "off.stop.on-server-bye",
        )],
        Deviation::GroupStartCountsOriginatorOnly => vec![by(
            &["OFF-GRP-INIT-01", "OFF-GRP-INIT-02"],
            "off.group.participant-count",
        )],
        Deviation::InterimBeforeJoinAnswer => vec![by_while(
            &["OFF-GRP-JOIN-01", "OFF-GRP-JOIN-02"],
            "off.group.interim-after-event",
            "held back",
        )],
        Deviation::NoInterimOnDialIn => {
            vec![by(&["OFF-GRP-JOIN-03"], "off.group.interim-on-change")]
        }
        Deviation::StaleParticipantCount => vec![by(
            &["OFF-GRP-JOIN-01", "OFF-GRP-LEAVE-01"],
            "off.group.participant-count",
        )],
        Deviation::NoInterimOnServerRemoval => {
            vec![by(&["OFF-GRP-LEAVE-02"], "off.group.interim-on-change")]
        }
        Deviation::StopWhileParticipantsRemain => vec![by(
            &["OFF-GRP-LEAVE-01", "OFF-GRP-TERM-01"],
            "off.group.stop-at-end",
        )],
        Deviation::GroupStartOnFirstJoin => vec![by(
            &["OFF-GRP-INIT-01", "OFF-GRP-INIT-02"],
            "off.group.start-on-originator-leg",
        )],
        Deviation::InterimOnFailedJoin => vec![by(
            &["OFF-GRP-JOIN-04"],
            "off.group.no-interim-on-failed-join",
        )],
        Deviation::ForwardInviteBeforeCreditAnswer => {
            vec![by(&["ON-INIT-01"], "on.initial.forward-after-answer")]
        }
        Deviation::ForwardInviteAfterRefusal => {
            vec![by(
                &["ON-INIT-02", "ON-INIT-03"],
                "on.initial.refusal-rejects-invite",
            )]
        }
        Deviation::TerminationAfterRefusedInitial => {
            vec![by(&["ON-INIT-02"], "online.refused-initial-ends-session")]
        }
        Deviation::UpdateAfterForwardingReinvite => {
            vec![by(&["ON-MOD-01"], "on.update.forward-after-answer")]
        }
        Deviation::NoUsedUnitsInTermination => {
            vec![by(&["ON-TERM-01"], "online.used-units-reported")]
        }
        Deviation::UsedUnitsFromRequested => {
            vec![by(&["ON-TERM-01"], "on.termination.used-units-as-used")]
        }
        Deviation::TerminationAfterServerByeOk => {
            vec![by(&["ON-TERM-02"], "on.termination.on-server-bye")]
        }
        Deviation::SessionKeptAfterFinalUnits => {
            vec![by(&["ON-TERM-03"], "on.final-units.end-session")]
        }
        Deviation::CreditRequestNumberSkips => vec![by(&["ON-MOD-01"], "online.request-numbers")],
        Deviation::NoRequestedUnitsInInitial => vec![by(&["ON-INIT-01"], "online.units-requested")],
        Deviation::SecondInitialOnReinvite => vec![
            by(&["ON-MOD-01"], "online.one-initial"),
            by(&["ON-MOD-01"], "on.update.on-modification"),
        ],
        Deviation::NoCreditControl => {
            vec![by(&["ON-INIT-01", "ON-INIT-02"], "on.initial.on-invite")]
        }
        Deviation::NoTerminationOnBye => vec![by(&["ON-TERM-01"], "on.termination.on-client-bye")],
        Deviation::NoUpdateOnExhaustedQuota => {
            vec![by(&["ON-CC-01"], "on.credit.reauthorise-when-spent")]
        }
        Deviation::NoUpdateOnValidityTime => {
            vec![by(&["ON-CC-02"], "on.credit.reauthorise-when-invalid")]
        }
        Deviation::InterimBeforeStart => {
            vec![by(&["OFF-INIT-01"], "off.session.start-first")]
        }
        Deviation::InvitationsBeforeCreditAnswer => vec![
            by(&["ON-GRP-INIT-01"], "on.group.invite-after-answer"),
            by(&["ON-GRP-INIT-02"], "on.group.refusal-invites-nobody"),
        ],
        Deviation::GroupInvitationsAfterRefusal => {
            vec![by(&["ON-GRP-INIT-02"], "on.group.refusal-invites-nobody")]
        }
        Deviation::NoUpdateWhenParticipantsTriggerArmed => vec![by(
            &["ON-GRP-JOIN-01"],
            "on.group.update-on-change-when-armed",
        )],
        Deviation::UpdateOnJoinWhenNothingArmed => vec![by(
            &["ON-GRP-JOIN-03", "ON-GRP-INIT-01"],
            "on.group.no-update-unarmed",
        )],
        Deviation::UpdateOnEveryJoinWhenOnlyThresholdArmed => {
            vec![by(&["ON-GRP-JOIN-02"], "on.group.update-only-at-threshold")]
        }
    }
}

struct ScenarioOutcome {
    verdict: String,
    rules: Vec<String>,
    detail: String,
}

struct Outcome {
    /// Test purpose → each of its scenarios (an outline has several).
    scenarios: BTreeMap<String, Vec<ScenarioOutcome>>,
    log: String,
}

impl Outcome {
    /// Whether every scenario of `tp` failed by `rule` (and, if given, with
    /// `detail` in the failure).
    fn caught(&self, tp: &str, rule: &str, detail: Option<&str>) -> Result<(), String> {
        let Some(v) = self.scenarios.get(tp) else {
            return Err(format!("{tp} did not run"));
        };
        for s in v {
            if s.verdict != "fail" {
                return Err(format!("{tp} ended {}, expected fail by {rule}", s.verdict));
            }
            if !s.rules.iter().any(|r| r == rule) {
                return Err(format!(
                    "{tp} failed by {:?}, not by {rule}:\n{}",
                    s.rules, s.detail
                ));
            }
            if let Some(text) = detail
                && !s.detail.contains(text)
            {
                return Err(format!(
                    "{tp} failed by {rule} but not in the check that says \"{text}\":\n{}",
                    s.detail
                ));
            }
        }
        Ok(())
    }

    fn failing(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .filter(|(_, v)| v.iter().any(|x| x.verdict != "pass"))
            .map(|(tp, v)| {
                let mut rules: Vec<&str> = v
                    .iter()
                    .flat_map(|s| s.rules.iter().map(String::as_str))
                    .collect();
                rules.dedup();
                format!("{tp} ({})", rules.join(" "))
            })
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
        .arg("--junit")
        .arg(scratch_report(
            dir.join(format!("{}.log", d.name())),
            "junit.xml",
        ))
        .arg("--cucumber-json")
        .arg(scratch_report(
            dir.join(format!("{}.log", d.name())),
            "cucumber.json",
        ))
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
    let mut scenarios: BTreeMap<String, Vec<ScenarioOutcome>> = BTreeMap::new();
    for r in summary["results"].as_array().expect("results") {
        scenarios
            .entry(r["test_purpose"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(ScenarioOutcome {
                verdict: r["verdict"].as_str().unwrap_or_default().to_owned(),
                rules: r["rules"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                detail: r["detail"].as_str().unwrap_or_default().to_owned(),
            });
    }
    Outcome { scenarios, log }
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
            .flat_map(|c| {
                c.scenarios
                    .iter()
                    .filter_map(|tp| outcome.caught(tp, c.rule, c.detail).err())
            })
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
    // Every rule that binds the SUT is proved by a deviation that breaks it,
    // or by the test named here; a rule nothing breaks is a hole.
    let proved_elsewhere: &[(&str, &str)] = &[
        (
            "off.interim.after-reinvite",
            "tests/cli.rs the_lenient_reading_of_6_2_3_4_…",
        ),
        // The online every-flow rules no reference deviation breaks: each is
        // broken alone, and named alone, by the unit case
        // src/charging/online_rules.rs each_rule_broken_alone_is_named_alone,
        // and reaches the verdict through the same rules::online mapping.
        (
            "online.at-most-one-termination",
            "src/charging/online_rules.rs each_rule_broken_alone_is_named_alone",
        ),
        (
            "online.one-session-id",
            "src/charging/online_rules.rs each_rule_broken_alone_is_named_alone",
        ),
        (
            "online.nothing-after-termination",
            "src/charging/online_rules.rs each_rule_broken_alone_is_named_alone",
        ),
        (
            "online.no-usage-under-refused-service",
            "src/charging/online_rules.rs each_rule_broken_alone_is_named_alone",
        ),
        (
            "online.service-information",
            "src/charging/online_rules.rs each_rule_broken_alone_is_named_alone",
        ),
        (
            "profile.service-context-id",
            "tests/external_sut.rs a_service_context_id_pinned_by_the_profile_is_asserted",
        ),
    ];
    for rule in cpmcc::harness::rules::ALL {
        if rule.owner != cpmcc::harness::rules::Owner::Sut {
            continue;
        }
        let by_deviation = Deviation::ALL
            .iter()
            .any(|d| must_fail(*d).iter().any(|c| c.rule == rule.id));
        let elsewhere = proved_elsewhere.iter().any(|(id, _)| *id == rule.id);
        if !by_deviation && !elsewhere {
            problems.push(format!(
                "rule {} is broken by no deviation and proved by no named test",
                rule.id
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// A report beside `log` (tests never write into the checkout's reports/,
/// and runs at once never share a file).
fn scratch_report(log: impl AsRef<std::path::Path>, name: &str) -> std::path::PathBuf {
    let log = log.as_ref();
    let stem = log.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    log.with_file_name(format!("{stem}.{name}"))
}
