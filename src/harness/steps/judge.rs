//! The judge, as the last step of every scenario: ends what the scenario
//! left open, waits for the charging owed, and checks the rules that hold
//! on the scenario's whole charging. Being a step, its failure is
//! cucumber's too: the log, cucumber's writers and the summary agree.
//! The runner appends it to every scenario ([`JUDGE_STEP`]); a scenario
//! that failed earlier is judged by the after-scenario hook instead.

use cucumber::then;

use crate::charging::Interface;
use crate::charging::ch1::RecordType;
use crate::charging::enabler::{AnswerOutcome, ChargingRecord};
use crate::harness::expect;
use crate::harness::verdict::{Ladder, LadderEvent, StepFailure, Violation};
use crate::harness::world::{Judgement, World};
use crate::report::sanitize::escape;
use crate::timeline::Stamp;

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

/// The scenario as a ladder diagram: every SIP message a test user sent or
/// received, every charging request of the scenario and its answer, in the
/// harness timeline's order, times relative to the scenario's start. The
/// rules broken are added by whoever builds the result.
pub fn ladder(w: &World) -> Ladder {
    use crate::harness::world::SipWhat;
    let at_ms = |s: Stamp| {
        u64::try_from(s.at.saturating_duration_since(w.started).as_millis()).unwrap_or(u64::MAX)
    };
    let mut users: Vec<String> = Vec::new();
    let mut events: Vec<(Stamp, LadderEvent)> = Vec::new();
    for e in &w.sip_log {
        if !users.contains(&e.user) {
            users.push(e.user.clone());
        }
        let label = match &e.what {
            SipWhat::Request { method, reinvite } => method_name(method, *reinvite),
            SipWhat::Response {
                status,
                method,
                reinvite,
            } => format!("{status} ({})", method_name(method, *reinvite)),
        };
        let user = escape(&e.user);
        let (from, to, verb) = if e.sent {
            (user.clone(), Ladder::SUT.to_owned(), "sent")
        } else {
            (Ladder::SUT.to_owned(), user.clone(), "received")
        };
        events.push((
            e.stamp,
            LadderEvent {
                at_ms: at_ms(e.stamp),
                from,
                to,
                detail: format!("{user} {verb} {label}"),
                label,
            },
        ));
    }
    // Users of the scenario that never sent nor received still get a lifeline.
    for name in w.users.keys() {
        if !users.contains(name) {
            users.push(name.clone());
        }
    }
    let mut records = w.scenario_records();
    for f in w.online_functions() {
        for r in w.online_records_for(f) {
            if !records.iter().any(|x| x.stamp == r.record.stamp) {
                records.push(r.record);
            }
        }
    }
    for r in &records {
        let label = request_label(r);
        events.push((
            r.stamp,
            LadderEvent {
                at_ms: at_ms(r.stamp),
                from: Ladder::SUT.to_owned(),
                to: Ladder::ENABLER.to_owned(),
                label: label.clone(),
                detail: escape(&r.describe()),
            },
        ));
        if let AnswerOutcome::Answered { result_code, stamp } = &r.answer {
            let answer = match r.interface() {
                Some(Interface::Ch1) => "ACA",
                Some(Interface::Ch2) => "CCA",
                None => "answer",
            };
            events.push((
                *stamp,
                LadderEvent {
                    at_ms: at_ms(*stamp),
                    from: Ladder::ENABLER.to_owned(),
                    to: Ladder::SUT.to_owned(),
                    label: format!("{answer} {result_code}"),
                    detail: format!("the answer to {label}: Result-Code {result_code}"),
                },
            ));
        }
    }
    let mut lifelines: Vec<String> = users.iter().map(|u| escape(u)).collect();
    lifelines.push(Ladder::SUT.to_owned());
    lifelines.push(Ladder::ENABLER.to_owned());
    Ladder::of(lifelines, events)
}

/// `INVITE`, `re-INVITE`, `BYE`.
fn method_name(method: &rsip::Method, reinvite: bool) -> String {
    if reinvite && *method == rsip::Method::Invite {
        "re-INVITE".to_owned()
    } else {
        escape(&method.to_string())
    }
}

/// `ACR Start #0`, `CCR Initial #0`; the command alone when the request
/// did not map.
fn request_label(r: &ChargingRecord) -> String {
    let command = escape(&r.message.command_name());
    match r.charging_request() {
        Some(c) => format!(
            "{command} {} #{}",
            c.kind.name_on(c.interface).trim_end_matches("Request"),
            c.sequence_number
        ),
        None => command,
    }
}
