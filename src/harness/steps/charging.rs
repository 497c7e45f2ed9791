//! Steps about what reaches the Charging Enabler: which CH-1 requests arrive
//! for which charged function, and which must not arrive.

use std::time::Duration;

use cucumber::{given, then, when};

use crate::charging::enabler::{AnswerSelector, LinkEventKind, ScriptedAnswer};

use crate::charging::ch1::RecordType;
use crate::harness::expect::{record_type_named, sequence_diff};
use crate::harness::rules::{self, Rule};
use crate::harness::verdict::StepFailure;
use crate::harness::world::{World, record_line};

type StepResult = Result<(), StepFailure>;

/// The rule that requires a request of `kind` at this point of the
/// scenario: a Stop is owed to a client's BYE, or to the server's own.
pub fn rule_requiring(w: &World, kind: RecordType) -> &'static Rule {
    if let Some(group) = &w.group {
        return match kind {
            RecordType::Start => &rules::GROUP_START_ON_ORIGINATOR_LEG,
            RecordType::Interim if group.modifier.is_some() => &rules::INTERIM_ON_MODIFICATION,
            RecordType::Interim => &rules::GROUP_INTERIM_ON_CHANGE,
            RecordType::Event => &rules::EVENT_ON_FAILURE_AS_PROFILED,
            RecordType::Stop => &rules::GROUP_STOP_AT_END,
        };
    }
    match kind {
        RecordType::Start => &rules::START_ON_ANSWER,
        RecordType::Interim => &rules::INTERIM_ON_MODIFICATION,
        RecordType::Event => &rules::EVENT_ON_FAILURE_AS_PROFILED,
        RecordType::Stop if w.client_sent_bye() => &rules::STOP_ON_CLIENT_BYE,
        RecordType::Stop => &rules::STOP_ON_SERVER_BYE,
    }
}

/// The rule a request of `kind` breaks where a step says none may arrive.
fn rule_forbidding(w: &World, kind: RecordType) -> &'static Rule {
    if let Some(group) = &w.group {
        match kind {
            RecordType::Interim if group.modifier.is_some() => {
                return &rules::INTERIM_PER_MODIFICATION;
            }
            RecordType::Interim => return &rules::GROUP_NO_INTERIM_ON_FAILED_JOIN,
            RecordType::Stop => return &rules::GROUP_STOP_AT_END,
            _ => {}
        }
    }
    match kind {
        RecordType::Start => &rules::NO_START_ON_FAILURE,
        RecordType::Interim => &rules::INTERIM_PER_MODIFICATION,
        RecordType::Stop => &rules::STOP_AFTER_CLIENT_OK,
        RecordType::Event => &rules::EVENT_ON_FAILURE_AS_PROFILED,
    }
}

#[then(expr = "a CH-1 {word} arrives for every charged function")]
async fn arrives_for_every_function(w: &mut World, kind: String) -> StepResult {
    let Some(kind) = record_type_named(&kind) else {
        return Err(w.harness_error(format!("`{kind}` is not a CH-1 request (StartRequest, InterimRequest, StopRequest, EventRequest)")));
    };
    let rule = rule_requiring(w, kind);
    await_every_function(w, kind, rule).await
}

/// Waits for a request of `kind` after the watermark from every charged
/// function; moves the watermark past them.
pub async fn await_every_function(
    w: &mut World,
    kind: RecordType,
    rule: &'static Rule,
) -> StepResult {
    let timeout = w.profile().timers.charging;
    await_every_function_within(w, kind, rule, timeout).await
}

/// [`await_every_function`] with a wait of its own, for a request that
/// follows a SUT's timer rather than a message.
async fn await_every_function_within(
    w: &mut World,
    kind: RecordType,
    rule: &'static Rule,
    timeout: Duration,
) -> StepResult {
    let mut last = w.watermark;
    for function in w.offline_functions() {
        let after = w.marks.get(&function).copied().unwrap_or(w.started_at);
        match w.wait_record(function, kind, after, timeout).await {
            Some(r) => {
                last = last.max(r.stamp);
                w.marks.insert(function, r.stamp);
            }
            None => {
                let observed: Vec<String> =
                    w.records_for(function).iter().map(record_line).collect();
                let served = w.served_user(function).unwrap_or_default();
                let link = diameter_link(w);
                let mut expected: Vec<String> = observed.clone();
                expected.push(format!("{} ...", kind.ch1_name()));
                return Err(w.fail(
                    rule,
                    format!("the {function} serving {served}"),
                    format!("a {} within {timeout:?}", kind.ch1_name()),
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

/// A client that never answers the SUT's BYE has sent no 200 OK; the SUT
/// gives up after its own timeout (`stimuli.bye_timeout`) and the session
/// has still ended, so every function owes its Stop by then (the decision is
/// written in 6.2.3.7's feature).
#[then(
    regex = r"^a CH-1 StopRequest arrives for every charged function once the SUT gives up on (\w+)'s answer$"
)]
async fn stop_after_bye_timeout(w: &mut World, _silent: String) -> StepResult {
    let Some(timeout) = w.profile().stimuli.bye_timeout else {
        return Err(w.inconclusive(
            "the SUT profile declares no timeout for the SUT's own BYE (stimuli.bye_timeout)",
        ));
    };
    let wait = timeout + w.profile().timers.charging;
    await_every_function_within(w, RecordType::Stop, &rules::STOP_ON_SERVER_BYE, wait).await
}

/// Silence proves something only while the SUT could speak: a step that
/// expects no charging is inconclusive while no SUT peer is connected.
pub fn require_link(w: &mut World, what: &str) -> StepResult {
    if w.ctx.enabler.connections().iter().any(|c| c.open) {
        return Ok(());
    }
    let link = diameter_link(w);
    Err(w.inconclusive(format!(
        "{what} proves nothing while no SUT peer is connected over Diameter{link}"
    )))
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
    let after = w.watermark;
    let rule = rule_forbidding(w, kind);
    // However late one comes, even after the verdict: the run's drain judges
    // it. Not in a group session, where a later join or departure is
    // charged with a request of the same kind: there the silence is a
    // window, judged here.
    if w.group.is_none() {
        w.forbid(kind, after, rule);
    }
    tokio::time::sleep(w.profile().timers.quiet).await;
    require_link(w, &format!("no {} arriving", kind.ch1_name()))?;
    let seen: Vec<String> = w
        .scenario_records()
        .iter()
        .filter(|r| r.stamp > after && r.ch1.as_ref().is_ok_and(|c| c.kind == kind))
        .map(record_line)
        .collect();
    if seen.is_empty() {
        return Ok(());
    }
    Err(w.fail(
        rule,
        "this scenario's charging",
        format!("no {}", kind.ch1_name()),
        seen.join("\n"),
    ))
}

#[then("a CH-1 EventRequest arrives only if the SUT profile expects one for a failed INVITE")]
async fn event_if_expected(w: &mut World) -> StepResult {
    let expects = w.profile().offline().is_some_and(|o| o.failed_invite_event);
    if expects {
        return await_every_function(w, RecordType::Event, &rules::EVENT_ON_FAILURE_AS_PROFILED)
            .await;
    }
    let after = w.watermark;
    w.forbid(
        RecordType::Event,
        after,
        &rules::EVENT_ON_FAILURE_AS_PROFILED,
    );
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
            &rules::EVENT_ON_FAILURE_AS_PROFILED,
            "charging.offline.failed_invite_event: false",
            "no EventRequest",
            seen.join("\n"),
        ))
    }
}

/// Drops every SUT connection without DPR, as a network fault would, and
/// waits for the SUT to connect again (its own schedule, up to
/// `timers.sut_link`).
#[when("the Charging Enabler drops the SUT's Diameter link")]
async fn drop_link(w: &mut World) -> StepResult {
    let before = crate::timeline::stamp();
    w.ctx.enabler.drop_connections();
    let wait = w.profile().timers.sut_link;
    let reopened = w
        .ctx
        .enabler
        .wait_for_link_event(
            |e| e.stamp > before && e.kind == LinkEventKind::Opened,
            wait,
        )
        .await;
    match reopened {
        Some(_) => Ok(()),
        None => Err(w.inconclusive(format!(
            "the SUT did not connect again within {wait:?} after its Diameter link dropped"
        ))),
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
