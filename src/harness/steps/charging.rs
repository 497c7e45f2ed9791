//! Steps about what reaches the Charging Enabler: which CH-1 requests arrive
//! for which charged function, and which must not arrive.

use std::time::Duration;

use cucumber::{given, then};

use crate::charging::enabler::{AnswerSelector, ScriptedAnswer};

use crate::charging::ch1::RecordType;
use crate::harness::expect::{record_type_named, sequence_diff};
use crate::harness::verdict::StepFailure;
use crate::harness::world::{World, record_line};

type StepResult = Result<(), StepFailure>;

/// The clause whose rule requires a request of this kind.
pub fn clause_of(kind: RecordType) -> &'static str {
    match kind {
        RecordType::Start => "6.2.3.1",
        RecordType::Interim => "6.2.3.4",
        RecordType::Stop => "6.2.3.7",
        RecordType::Event => "6.2.3.1",
    }
}

#[then(expr = "a CH-1 {word} arrives for every charged function")]
async fn arrives_for_every_function(w: &mut World, kind: String) -> StepResult {
    let Some(kind) = record_type_named(&kind) else {
        return Err(w.harness_error(format!("`{kind}` is not a CH-1 request (StartRequest, InterimRequest, StopRequest, EventRequest)")));
    };
    await_every_function(w, kind, clause_of(kind)).await
}

/// Waits for a request of `kind` after the watermark from every charged
/// function; moves the watermark past them.
pub async fn await_every_function(w: &mut World, kind: RecordType, clause: &str) -> StepResult {
    let timeout = w.profile().timers.charging;
    let after = w.watermark;
    let mut last = after;
    for function in w.offline_functions() {
        match w.wait_record(function, kind, after, timeout).await {
            Some(r) => last = last.max(r.stamp),
            None => {
                let observed: Vec<String> =
                    w.records_for(function).iter().map(record_line).collect();
                let served = w.served_user(function).unwrap_or_default();
                let link = diameter_link(w);
                let mut expected: Vec<String> = observed.clone();
                expected.push(format!("{} ...", kind.ch1_name()));
                return Err(w.fail(
                    clause,
                    &format!(
                        "the {function} (serving {served}) sends a CH-1 {} within {timeout:?}",
                        kind.ch1_name()
                    ),
                    format!("a {} for the {function}", kind.ch1_name()),
                    format!(
                        "none{link}; the {function}'s requests so far:\n{}",
                        sequence_diff(&expected, &observed)
                    ),
                ));
            }
        }
    }
    w.watermark = last;
    Ok(())
}

/// Why no request could have come, when the SUT is not even connected.
fn diameter_link(w: &World) -> String {
    let connections = w.ctx.enabler.connections();
    if connections.is_empty() {
        format!(
            " (no SUT has connected to the Charging Enabler at {})",
            w.ctx.enabler.local_addr()
        )
    } else if connections.iter().all(|c| !c.open) {
        let why: Vec<String> = connections
            .iter()
            .map(|c| format!("{}: {:?}", c.peer, c.closed))
            .collect();
        format!(
            " (every Diameter connection from the SUT has closed: {})",
            why.join(", ")
        )
    } else {
        String::new()
    }
}

#[then(expr = "no CH-1 {word} arrives")]
async fn none_arrives(w: &mut World, kind: String) -> StepResult {
    let Some(kind) = record_type_named(&kind) else {
        return Err(w.harness_error(format!("`{kind}` is not a CH-1 request")));
    };
    tokio::time::sleep(w.profile().timers.quiet).await;
    let after = w.watermark;
    let seen: Vec<String> = w
        .scenario_records()
        .iter()
        .filter(|r| r.stamp > after && r.ch1.as_ref().is_ok_and(|c| c.kind == kind))
        .map(record_line)
        .collect();
    if seen.is_empty() {
        return Ok(());
    }
    let rule = if kind == RecordType::Start {
        "no StartRequest if the INVITE fails"
    } else {
        "no request of this kind here"
    };
    Err(w.fail(
        clause_of(kind),
        rule,
        format!("no {}", kind.ch1_name()),
        seen.join("\n"),
    ))
}

#[then("a CH-1 EventRequest arrives only if the SUT profile expects one for a failed INVITE")]
async fn event_if_expected(w: &mut World) -> StepResult {
    let expects = w.profile().offline().is_some_and(|o| o.failed_invite_event);
    if expects {
        return await_every_function(w, RecordType::Event, "6.2.3.1").await;
    }
    let after = w.watermark;
    let seen: Vec<String> = w
        .scenario_records()
        .iter()
        .filter(|r| r.stamp > after && r.ch1.as_ref().is_ok_and(|c| c.kind == RecordType::Event))
        .map(record_line)
        .collect();
    if seen.is_empty() {
        Ok(())
    } else {
        Err(w.fail(
            "6.2.3.1",
            "the SUT profile says the SUT records no failed INVITE with an EventRequest (charging.offline.failed_invite_event: false)",
            "no EventRequest",
            seen.join("\n"),
        ))
    }
}

/// The Charging Enabler's script for one test user's requests of one type
/// (`CH-1 requests` for all of them).
fn selector(w: &mut World, user: &str, kind: &str) -> Result<AnswerSelector, StepFailure> {
    let name = w.user(user)?.name.clone();
    let record_type = match kind {
        "CH-1 requests" => None,
        k => match record_type_named(k) {
            Some(t) => Some(t),
            None => return Err(w.harness_error(format!("`{k}` is not a CH-1 request"))),
        },
    };
    Ok(AnswerSelector {
        served_user: Some(name),
        session_id: None,
        record_type,
    })
}

#[given(
    regex = r"^the Charging Enabler delays its answers? to (\w+)'s (CH-1 requests|\w+) by (\d+) ms$"
)]
async fn delays(w: &mut World, user: String, kind: String, ms: u64) -> StepResult {
    let selector = selector(w, &user, &kind)?;
    w.ctx.enabler.script(
        selector,
        ScriptedAnswer {
            result_code: crate::diameter::result::SUCCESS,
            delay: Duration::from_millis(ms),
            withhold: false,
            times: None,
        },
    );
    Ok(())
}
