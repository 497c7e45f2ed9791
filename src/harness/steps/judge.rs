//! The judge, as the last step of every scenario: ends what the scenario
//! left open, waits for the charging owed, and checks the rules that hold
//! on the scenario's whole charging. Being a step, its failure is
//! cucumber's too: the log, cucumber's writers and the summary agree.
//! The runner appends it to every scenario ([`JUDGE_STEP`]); a scenario
//! that failed earlier is judged by the after-scenario hook instead.

use cucumber::then;

use crate::charging::ch1::RecordType;
use crate::harness::expect;
use crate::harness::verdict::{StepFailure, Violation};
use crate::harness::world::{Judgement, World};

/// The text of the step the runner appends to every scenario.
pub const JUDGE_STEP: &str = "the charging rules that hold for every flow hold";

#[then("the charging rules that hold for every flow hold")]
async fn rules_hold(w: &mut World) -> Result<(), StepFailure> {
    let judgement = judge(w).await;
    let harness = judgement.harness.clone();
    let first = judgement.violations.first().cloned();
    w.judgement = Some(judgement);
    if let Some(v) = harness {
        return Err(w.harness_error(v.to_string()));
    }
    match first {
        Some(v) => Err(w.fail(v.rule, v.subject, v.expected, v.observed)),
        None => Ok(()),
    }
}

/// Ends the scenario and judges it, once: the step, or the hook for a
/// scenario that never reached the step.
pub async fn judge(w: &mut World) -> Judgement {
    if let Some(j) = &w.judgement {
        return j.clone();
    }
    // End what the scenario left open first, so that the rules see each
    // charging session whole, Stop included.
    let teardown_from = crate::timeline::stamp();
    super::sip::teardown(w).await;
    let facts = w.facts(Some(teardown_from));
    await_owed_stops(w, &facts).await;
    // Then let late requests in.
    tokio::time::sleep(w.profile().timers.settle).await;
    let records = w.ctx.enabler.records();
    let harness = harness_rules(&expect::scenario_records(records.clone(), &facts));
    let mut violations = expect::judge_scenario(&facts, &records);
    let online_streams: Vec<_> = w
        .online_functions()
        .into_iter()
        .filter_map(|f| w.stream(f))
        .collect();
    violations.extend(crate::harness::online::judge(
        &online_streams,
        &records,
        &w.ctx.enabler,
    ));
    let judgement = Judgement {
        facts,
        violations,
        harness,
    };
    w.judgement = Some(judgement.clone());
    judgement
}

/// Waits, as a step would, for the StopRequest every ended session owes
/// (`off.stop.every-ended-session`), so that a slow but correct SUT is not
/// judged before its Stop arrives. The judge then decides.
async fn await_owed_stops(w: &World, facts: &expect::ScenarioFacts) {
    let Some(end) = facts.session_end else {
        return;
    };
    let timeout = w.profile().timers.charging;
    for stream in &facts.streams {
        let started = w
            .records_for(stream.function)
            .iter()
            .any(|r| r.ch1.as_ref().is_ok_and(|c| c.kind == RecordType::Start));
        if started {
            let _ = w
                .wait_record(stream.function, RecordType::Stop, end, timeout)
                .await;
        }
    }
}

/// The rules that bind the harness itself, on a scenario's records.
pub fn harness_rules(records: &[crate::charging::enabler::ChargingRecord]) -> Option<Violation> {
    let unanswered: Vec<String> = records
        .iter()
        .filter(|r| !crate::harness::world::answered(r))
        .map(crate::harness::world::record_line)
        .collect();
    (!unanswered.is_empty()).then(|| {
        Violation::new(
            &crate::harness::rules::EVERY_REQUEST_ANSWERED,
            "the Charging Enabler",
            "an answer to every request",
            format!("left unanswered:\n{}", unanswered.join("\n")),
        )
    })
}
