//! Steps about order: charging requests against the SIP events that must
//! precede them, and silence while a test user holds back its answer.
//! Order is read from the harness timeline (`crate::timeline`), never from
//! clocks.

use cucumber::then;

use crate::charging::ch1::RecordType;
use crate::harness::expect::record_type_named;
use crate::harness::rules::{self, Rule};
use crate::harness::verdict::StepFailure;
use crate::harness::world::{SipWhat, World, record_line};
use crate::profile::OrderingReading;
use crate::timeline::Stamp;

type StepResult = Result<(), StepFailure>;

/// A SIP event named in a step, e.g. `bob's 200 OK to the INVITE`.
fn sip_event(w: &World, user: &str, what: &str) -> Option<Stamp> {
    let (sent, what) = match what {
        "200 OK to the INVITE" => (
            true,
            SipWhat::Response {
                status: 200,
                method: rsip::Method::Invite,
                reinvite: false,
            },
        ),
        "200 OK to the re-INVITE" => (
            true,
            SipWhat::Response {
                status: 200,
                method: rsip::Method::Invite,
                reinvite: true,
            },
        ),
        "re-INVITE" => (
            true,
            SipWhat::Request {
                method: rsip::Method::Invite,
                reinvite: true,
            },
        ),
        "BYE" => (
            true,
            SipWhat::Request {
                method: rsip::Method::Bye,
                reinvite: false,
            },
        ),
        "200 OK to the SUT's BYE" => (
            true,
            SipWhat::Response {
                status: 200,
                method: rsip::Method::Bye,
                reinvite: false,
            },
        ),
        _ => return None,
    };
    w.sip_event(user, sent, &what)
}

/// Checks that every charged function's requests of `kind` arrived after the
/// SIP event of `user` (or, with `user` None, of the function's served user).
async fn every_after(
    w: &mut World,
    kind: &str,
    user: Option<&str>,
    what: &str,
    rule: &'static Rule,
) -> StepResult {
    if let Some(kind) = crate::harness::online::kind_named(kind) {
        return every_online_after(w, kind, user, what).await;
    }
    let Some(kind) = record_type_named(kind) else {
        return Err(w.harness_error(format!("`{kind}` is not a CH-1 session request")));
    };
    for function in w.offline_functions() {
        let who = match user {
            Some(u) => u.to_owned(),
            None => w.served_user(function).unwrap_or_default(),
        };
        let Some(event) = sip_event(w, &who, what) else {
            return Err(w.harness_error(format!("no \"{who}'s {what}\" happened in this scenario")));
        };
        let records = w.records_for(function);
        let early: Vec<String> = records
            .iter()
            .filter(|r| r.ch1.as_ref().is_ok_and(|c| c.kind == kind) && r.stamp < event)
            .map(record_line)
            .collect();
        if !early.is_empty() {
            let mut observed: Vec<String> = records
                .iter()
                .filter(|r| r.stamp < event)
                .map(record_line)
                .collect();
            observed.push(format!("{who}'s {what}"));
            observed.extend(records.iter().filter(|r| r.stamp > event).map(record_line));
            return Err(w.fail(
                rule,
                format!(
                    "the {function} serving {}",
                    w.served_user(function).unwrap_or_default()
                ),
                format!("{who}'s {what}, then the {}", kind.ch1_name()),
                format!("in arrival order:\n{}", observed.join("\n")),
            ));
        }
    }
    Ok(())
}

/// [`every_after`] for CH-2 requests: a TerminationRequest after the BYE.
async fn every_online_after(
    w: &mut World,
    kind: crate::charging::ch2::RequestType,
    user: Option<&str>,
    what: &str,
) -> StepResult {
    use crate::harness::online::{kind_name, line};
    for function in w.online_functions() {
        let who = match user {
            Some(u) => u.to_owned(),
            None => w.served_user(function).unwrap_or_default(),
        };
        let Some(event) = sip_event(w, &who, what) else {
            return Err(w.harness_error(format!("no \"{who}'s {what}\" happened in this scenario")));
        };
        let records = w.online_records_for(function);
        if records
            .iter()
            .any(|r| r.request.kind == kind && r.record.stamp < event)
        {
            let mut observed: Vec<String> = records
                .iter()
                .filter(|r| r.record.stamp < event)
                .map(line)
                .collect();
            observed.push(format!("{who}'s {what}"));
            observed.extend(records.iter().filter(|r| r.record.stamp > event).map(line));
            return Err(w.fail(
                &rules::ON_TERMINATION_ON_CLIENT_BYE,
                format!(
                    "the {function} serving {}",
                    w.served_user(function).unwrap_or_default()
                ),
                format!("{who}'s {what}, then the {}", kind_name(kind)),
                format!("in arrival order:\n{}", observed.join("\n")),
            ));
        }
    }
    Ok(())
}

#[then(
    regex = r"^every (\w+) arrives after (\w+)'s (200 OK to the INVITE|200 OK to the re-INVITE|re-INVITE|BYE|200 OK to the SUT's BYE)$"
)]
async fn every_after_user(w: &mut World, kind: String, user: String, what: String) -> StepResult {
    if w.group.is_some() {
        // In a group session each join or departure is its own event.
        let rule = match (kind.as_str(), what.as_str()) {
            ("StopRequest", _) => &rules::GROUP_STOP_AT_END,
            _ => &rules::GROUP_INTERIM_AFTER_EVENT,
        };
        return every_after(w, &kind, Some(&user), &what, rule).await;
    }
    let rule = match what.as_str() {
        "200 OK to the INVITE" => &rules::START_AFTER_ANSWER,
        "200 OK to the re-INVITE" => &rules::INTERIM_AFTER_ANSWER,
        "re-INVITE" => &rules::INTERIM_AFTER_REINVITE,
        _ => &rules::STOP_AFTER_BYE,
    };
    every_after(w, &kind, Some(&user), &what, rule).await
}

/// The request the last "arrives" step found for every charged function
/// came after `user`'s SIP event: in a group session, where each join and
/// departure has its own Interim, only the latest one is about this event.
#[then(
    regex = r"^that (\w+) arrives after (\w+)'s (200 OK to the INVITE|BYE|200 OK to the SUT's BYE)$"
)]
async fn that_after_user(w: &mut World, kind: String, user: String, what: String) -> StepResult {
    let rule = match kind.as_str() {
        "StopRequest" => &rules::GROUP_STOP_AT_END,
        _ => &rules::GROUP_INTERIM_AFTER_EVENT,
    };
    let Some(event) = sip_event(w, &user, &what) else {
        return Err(w.harness_error(format!("no \"{user}'s {what}\" happened in this scenario")));
    };
    for function in w.offline_functions() {
        let Some(at) = w.marks.get(&function).copied() else {
            return Err(w.harness_error(format!(
                "no {kind} of the {function} was found by an earlier step"
            )));
        };
        if at < event {
            let records = w.records_for(function);
            let mut observed: Vec<String> = records
                .iter()
                .filter(|r| r.stamp < event)
                .map(record_line)
                .collect();
            observed.push(format!("{user}'s {what}"));
            observed.extend(records.iter().filter(|r| r.stamp > event).map(record_line));
            return Err(w.fail(
                rule,
                format!(
                    "the {function} serving {}",
                    w.served_user(function).unwrap_or_default()
                ),
                format!("{user}'s {what}, then the {kind}"),
                format!("in arrival order:\n{}", observed.join("\n")),
            ));
        }
    }
    Ok(())
}

/// In a group session a modification completes with the last recipient's
/// 200 OK: the request the last step found must follow every one of them.
#[then(regex = r"^that InterimRequest arrives after every 200 OK to the re-INVITE$")]
async fn that_after_every_reinvite_ok(w: &mut World) -> StepResult {
    let answered = SipWhat::Response {
        status: 200,
        method: rsip::Method::Invite,
        reinvite: true,
    };
    let Some(last_ok) = w
        .sip_log
        .iter()
        .filter(|e| e.sent && e.what == answered)
        .map(|e| e.stamp)
        .max()
    else {
        return Err(w.harness_error("no participant answered a re-INVITE with 200 OK"));
    };
    for function in w.offline_functions() {
        let Some(at) = w.marks.get(&function).copied() else {
            return Err(w.harness_error(format!(
                "no InterimRequest of the {function} was found by an earlier step"
            )));
        };
        if at < last_ok {
            let records = w.records_for(function);
            let mut observed: Vec<String> = records
                .iter()
                .filter(|r| r.stamp < last_ok)
                .map(record_line)
                .collect();
            observed.push("the last 200 OK to the re-INVITE".into());
            observed.extend(
                records
                    .iter()
                    .filter(|r| r.stamp > last_ok)
                    .map(record_line),
            );
            return Err(w.fail(
                &rules::INTERIM_AFTER_ANSWER,
                format!(
                    "the {function} serving {}",
                    w.served_user(function).unwrap_or_default()
                ),
                "every recipient's 200 OK to the re-INVITE, then the InterimRequest",
                format!("in arrival order:\n{}", observed.join("\n")),
            ));
        }
    }
    Ok(())
}

#[then(regex = r"^every (\w+) arrives after its served user's 200 OK to the SUT's BYE$")]
async fn every_after_served_user(w: &mut World, kind: String) -> StepResult {
    every_after(
        w,
        &kind,
        None,
        "200 OK to the SUT's BYE",
        &rules::STOP_AFTER_CLIENT_OK,
    )
    .await
}

#[then(
    regex = r"^every InterimRequest follows (\w+)'s re-INVITE as the ordering reading requires$"
)]
async fn interim_per_reading(w: &mut World, sender: String) -> StepResult {
    let reading = w
        .profile()
        .offline()
        .map(|o| o.ordering)
        .unwrap_or_default();
    match reading {
        // The figure: after the recipients' 200 OK to the re-INVITE.
        OrderingReading::Strict => {
            let recipient = if w.originator.as_deref() == Some(sender.as_str()) {
                w.recipient.clone()
            } else {
                w.originator.clone()
            }
            .unwrap_or_default();
            every_after(
                w,
                "InterimRequest",
                Some(&recipient),
                "200 OK to the re-INVITE",
                &rules::INTERIM_AFTER_ANSWER,
            )
            .await
        }
        // The text: receiving the re-INVITE triggers it.
        OrderingReading::Lenient => {
            every_after(
                w,
                "InterimRequest",
                Some(&sender),
                "re-INVITE",
                &rules::INTERIM_AFTER_REINVITE,
            )
            .await
        }
    }
}

#[then(
    regex = r"^no CH-1 request arrives for the function serving (\w+) while (?:he|she) holds back (?:his|her) answer$"
)]
async fn silent_for_holder(w: &mut World, holder: String) -> StepResult {
    tokio::time::sleep(w.profile().timers.hold_back).await;
    super::charging::require_link(w, "no charging while an answer is held back")?;
    let after = w.watermark;
    for function in w.offline_functions() {
        if w.served_user(function).as_deref() != Some(holder.as_str()) {
            continue;
        }
        let early: Vec<String> = w
            .records_for(function)
            .iter()
            .filter(|r| r.stamp > after)
            .map(record_line)
            .collect();
        if !early.is_empty() {
            let held = w.profile().timers.hold_back;
            return Err(w.fail(
                &rules::STOP_AFTER_CLIENT_OK,
                format!("the {function} serving {holder}"),
                format!("nothing for the {function} while {holder} holds back ({held:?})"),
                early.join("\n"),
            ));
        }
    }
    Ok(())
}

#[then(regex = r"^no CH-1 request arrives while .+ holds? back (?:his|her|their) answers?$")]
async fn silent_while_held(w: &mut World) -> StepResult {
    tokio::time::sleep(w.profile().timers.hold_back).await;
    super::charging::require_link(w, "no charging while an answer is held back")?;
    let after = w.watermark;
    let early: Vec<String> = w
        .scenario_records()
        .iter()
        .filter(|r| r.stamp > after)
        .map(record_line)
        .collect();
    if early.is_empty() {
        return Ok(());
    }
    // The rule is the one the early request breaks: its kind says which
    // answer it should have waited for.
    let group = w.group.is_some();
    let modifying = w.legs.values().any(|l| {
        l.pending
            .iter()
            .any(|p| p.request.method == rsip::Method::Invite)
    });
    let rule = match w
        .scenario_records()
        .iter()
        .find(|r| r.stamp > after)
        .and_then(|r| r.ch1.as_ref().ok())
        .map(|c| c.kind)
    {
        // A held re-INVITE: the modification's rule, not a join's.
        Some(RecordType::Interim) if group && modifying => &rules::INTERIM_AFTER_ANSWER,
        Some(RecordType::Interim) if group => &rules::GROUP_INTERIM_AFTER_EVENT,
        Some(RecordType::Stop) if group => &rules::GROUP_STOP_AT_END,
        Some(RecordType::Start) if group => &rules::GROUP_START_ON_ORIGINATOR_LEG,
        Some(RecordType::Interim) => &rules::INTERIM_AFTER_ANSWER,
        Some(RecordType::Stop) => &rules::STOP_AFTER_CLIENT_OK,
        Some(RecordType::Event) => &rules::EVENT_ON_FAILURE_AS_PROFILED,
        Some(RecordType::Start) | None => &rules::START_AFTER_ANSWER,
    };
    let held = w.profile().timers.hold_back;
    Err(w.fail(
        rule,
        "this scenario's charging",
        format!("no CH-1 request while the answer is held back ({held:?})"),
        early.join("\n"),
    ))
}
