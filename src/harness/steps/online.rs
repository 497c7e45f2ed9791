//! Steps about online charging (CH-2): what the OCS the harness plays
//! answers (scripted per served user, as commercial OCS emulators do), which
//! CH-2 requests arrive, and the SIP the SUT holds back until they are
//! answered (6.3.3.1, 6.3.3.4, 6.3.3.7).

use cucumber::{given, then, when};

use super::sip::{StepResult, await_final, send_invite};
use crate::charging::ch2::{FinalUnitAction, RequestType, ServiceUnits, TriggerType};
use crate::charging::enabler::AnswerOutcome;
use crate::charging::ocs::{OcsAnswer, OcsSelector};
use crate::harness::online::{OnlineRecord, kind_name, kind_named, line};
use crate::harness::rules::{self, Rule};
use crate::harness::world::{SipWhat, World};
use crate::timeline::Stamp;

fn kind_of(w: &mut World, name: &str) -> Result<RequestType, crate::harness::verdict::StepFailure> {
    kind_named(name).ok_or_else(|| {
        w.harness_error(format!(
            "`{name}` is not a CH-2 request (InitialRequest, UpdateRequest, TerminationRequest, EventRequest)"
        ))
    })
}

/// A script for `user`'s CH-2 requests of `kind` (by user part: unique to
/// the scenario, so scripts never reach another scenario's sessions).
fn script(w: &mut World, user: &str, kind: RequestType, answer: OcsAnswer) -> StepResult {
    let name = w.user(user)?.name.clone();
    w.ctx
        .enabler
        .script_ocs(OcsSelector::any().user(name).kind(kind), answer);
    Ok(())
}

#[given(regex = r"^the OCS refuses (\w+)'s CH-2 (\w+) with (\d{4})$")]
async fn refuse(w: &mut World, user: String, kind: String, code: u32) -> StepResult {
    let kind = kind_of(w, &kind)?;
    script(w, &user, kind, OcsAnswer::refuse(code))
}

#[given(regex = r"^the OCS refuses (\w+)'s CH-2 (\w+) at service level with (\d{4})$")]
async fn refuse_service(w: &mut World, user: String, kind: String, code: u32) -> StepResult {
    let kind = kind_of(w, &kind)?;
    script(w, &user, kind, OcsAnswer::refuse_service(code))
}

/// The answer waits the profile's hold-back time: long enough that a SUT
/// which does not wait for it is seen going on without it.
#[given(regex = r"^the OCS holds back its answer to (\w+)'s CH-2 (\w+)$")]
async fn hold_answer(w: &mut World, user: String, kind: String) -> StepResult {
    let kind = kind_of(w, &kind)?;
    let hold = w.profile().timers.hold_back;
    script(w, &user, kind, OcsAnswer::success().after(hold))
}

/// 6.3.3.3: the answer to the InitialRequest arms a Charging Trigger
/// Condition (`participants-number`: 50, `participants-threshold`: 51) or,
/// with an empty Trigger, none.
#[given(
    regex = r"^the OCS arms (the participants-number trigger|the participants-threshold trigger|no trigger) for (\w+)'s CH-2 session$"
)]
async fn arm(w: &mut World, which: String, user: String) -> StepResult {
    let answer = match which.as_str() {
        "the participants-number trigger" => {
            OcsAnswer::success().arm([TriggerType::ChangeInParticipantsNmb])
        }
        "the participants-threshold trigger" => {
            OcsAnswer::success().arm([TriggerType::ChangeInThresholdOfParticipantsNmb])
        }
        _ => OcsAnswer::success().disarm(),
    };
    script(w, &user, RequestType::Initial, answer)
}

#[given(regex = r"^the OCS grants (\w+) (\d+) seconds?$")]
async fn grant(w: &mut World, user: String, seconds: u32) -> StepResult {
    script(
        w,
        &user,
        RequestType::Initial,
        OcsAnswer::grant(ServiceUnits::seconds(seconds)),
    )
}

#[given(regex = r"^the OCS grants (\w+) (\d+) seconds? valid for (\d+) seconds?$")]
async fn grant_valid_for(w: &mut World, user: String, seconds: u32, valid: u32) -> StepResult {
    script(
        w,
        &user,
        RequestType::Initial,
        OcsAnswer::grant(ServiceUnits::seconds(seconds)).validity(valid),
    )
}

/// Credit control beyond the table (RFC 4006): the SUT asks again when its
/// grant is spent or no longer valid, with the reason.
#[then(
    regex = r"^a CH-2 UpdateRequest reporting (QUOTA_EXHAUSTED|VALIDITY_TIME) arrives for every online function$"
)]
async fn update_reporting(w: &mut World, reason: String) -> StepResult {
    use crate::charging::ch2::ReportingReason;
    let (wanted, rule) = if reason == "QUOTA_EXHAUSTED" {
        (
            ReportingReason::QuotaExhausted,
            &rules::ON_REAUTHORISE_WHEN_SPENT,
        )
    } else {
        (
            ReportingReason::ValidityTime,
            &rules::ON_REAUTHORISE_WHEN_INVALID,
        )
    };
    await_every_online(w, RequestType::Update, rule).await?;
    for function in w.online_functions() {
        let Some(at) = w.online_marks.get(&function).copied() else {
            continue;
        };
        let records = w.online_records_for(function);
        let Some(update) = records.iter().find(|r| r.record.stamp == at) else {
            continue;
        };
        let reasons: Vec<ReportingReason> = update
            .request
            .credits
            .iter()
            .filter_map(|c| c.reporting_reason)
            .collect();
        if !reasons.contains(&wanted) {
            let served = w.served_user(function).unwrap_or_default();
            return Err(w.fail(
                rule,
                format!("the {function} serving {served}"),
                format!("an UpdateRequest with Reporting-Reason {reason}"),
                format!("{}: Reporting-Reason {reasons:?}", line(update)),
            ));
        }
    }
    Ok(())
}

#[given(regex = r"^the OCS grants (\w+) (\d+) seconds? with final units TERMINATE$")]
async fn final_units(w: &mut World, user: String, seconds: u32) -> StepResult {
    script(
        w,
        &user,
        RequestType::Initial,
        OcsAnswer::grant(ServiceUnits::seconds(seconds)).final_unit(FinalUnitAction::Terminate),
    )
}

#[when(regex = r"^the SUT ends the session once the granted units are used$")]
async fn ended_by_final_units(w: &mut World) -> StepResult {
    // The grant is short (a step scripted it). The BYE must come before the
    // SUT's inactivity timer could have sent one (counted from the session's
    // answer, the last SIP it saw), or it proves nothing about final units.
    let answered = w.sip_event(
        &w.originator.clone().unwrap_or_default(),
        false,
        &SipWhat::Response {
            status: 200,
            method: rsip::Method::Invite,
            reinvite: false,
        },
    );
    let wait = match (w.profile().stimuli.inactivity_timer, answered) {
        (Some(inactivity), Some(at)) => (at.at + inactivity)
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(std::time::Duration::from_millis(100)),
        _ => w.profile().timers.sip_answer * 2,
    };
    let parties: Vec<String> = [w.originator.clone(), w.recipient.clone()]
        .into_iter()
        .flatten()
        .collect();
    for name in parties {
        match super::sip::await_request(w, &name, rsip::Method::Bye, true, wait).await? {
            Some(pending) => w.leg(&name)?.pending.push(pending),
            None => {
                return Err(w.fail(
                    &rules::ON_FINAL_UNITS_END_SESSION,
                    format!("{name}'s leg"),
                    "a BYE from the SUT once the final units are used",
                    format!("no BYE within {wait:?}"),
                ));
            }
        }
    }
    Ok(())
}

#[when(regex = r"^(\w+) tries to invite (\w+) to a 1-1 CPM session$")]
async fn try_invite(w: &mut World, a: String, b: String) -> StepResult {
    send_invite(w, &a, &b).await
}

/// Waits for a CH-2 request of `kind` after the watermark from every online
/// function; moves the marks past them.
pub async fn await_every_online(
    w: &mut World,
    kind: RequestType,
    rule: &'static Rule,
) -> StepResult {
    let timeout = w.profile().timers.charging;
    for function in w.online_functions() {
        let after = w
            .online_marks
            .get(&function)
            .copied()
            .unwrap_or(w.started_at);
        match w.wait_online(function, kind, after, timeout).await {
            Some(r) => {
                w.online_marks.insert(function, r.record.stamp);
                w.watermark = w.watermark.max(r.record.stamp);
            }
            None => {
                let served = w.served_user(function).unwrap_or_default();
                let observed: Vec<String> =
                    w.online_records_for(function).iter().map(line).collect();
                return Err(w.fail(
                    rule,
                    format!("the {function} serving {served}"),
                    format!("a CH-2 {} within {timeout:?}", kind_name(kind)),
                    format!("none; its CH-2 requests so far:\n{}", observed.join("\n")),
                ));
            }
        }
    }
    Ok(())
}

/// The rule that requires a CH-2 request of `kind` at this point.
fn rule_requiring(w: &World, kind: RequestType) -> &'static Rule {
    match kind {
        RequestType::Initial | RequestType::Event => &rules::ON_INITIAL_ON_INVITE,
        RequestType::Update => &rules::ON_UPDATE_ON_MODIFICATION,
        RequestType::Termination if w.client_sent_bye() => &rules::ON_TERMINATION_ON_CLIENT_BYE,
        RequestType::Termination => &rules::ON_TERMINATION_ON_SERVER_BYE,
    }
}

#[then(regex = r"^a CH-2 (\w+) arrives for every online function$")]
async fn arrives(w: &mut World, kind: String) -> StepResult {
    let kind = kind_of(w, &kind)?;
    let rule = rule_requiring(w, kind);
    await_every_online(w, kind, rule).await
}

/// Server termination online: sending the BYE triggers the Termination, so
/// it comes while the clients still hold their answers (6.3.3.7).
#[then(
    regex = r"^a CH-2 TerminationRequest arrives for every online function while they hold back their answers$"
)]
async fn termination_while_held(w: &mut World) -> StepResult {
    let hold = w.profile().timers.hold_back;
    for function in w.online_functions() {
        let after = w
            .online_marks
            .get(&function)
            .copied()
            .unwrap_or(w.started_at);
        match w
            .wait_online(function, RequestType::Termination, after, hold)
            .await
        {
            Some(r) => {
                w.online_marks.insert(function, r.record.stamp);
            }
            None => {
                let served = w.served_user(function).unwrap_or_default();
                return Err(w.fail(
                    &rules::ON_TERMINATION_ON_SERVER_BYE,
                    format!("the {function} serving {served}"),
                    format!(
                        "a CH-2 TerminationRequest while the BYE's answers are held ({hold:?})"
                    ),
                    "none",
                ));
            }
        }
    }
    Ok(())
}

#[then(regex = r"^no CH-2 (\w+) arrives$")]
async fn none_arrives(w: &mut World, kind: String) -> StepResult {
    let kind = kind_of(w, &kind)?;
    let after = w.watermark;
    tokio::time::sleep(w.profile().timers.quiet).await;
    super::charging::require_link(w, &format!("no {} arriving", kind_name(kind)))?;
    for function in w.online_functions() {
        let seen: Vec<String> = w
            .online_records_for(function)
            .iter()
            .filter(|r| r.record.stamp > after && r.request.kind == kind)
            .map(line)
            .collect();
        if !seen.is_empty() {
            let rule = match kind {
                RequestType::Termination => &rules::ON_REFUSED_INITIAL_ENDS_SESSION,
                _ => &rules::ON_NOTHING_AFTER_TERMINATION,
            };
            let served = w.served_user(function).unwrap_or_default();
            return Err(w.fail(
                rule,
                format!("the {function} serving {served}"),
                format!("no CH-2 {}", kind_name(kind)),
                seen.join("\n"),
            ));
        }
    }
    Ok(())
}

/// When the OCS sent its answer to the function's last request of `kind`.
pub(super) fn answered_at(records: &[OnlineRecord], kind: RequestType) -> Option<Stamp> {
    records
        .iter()
        .rev()
        .find(|r| r.request.kind == kind)
        .and_then(|r| match r.record.answer {
            AnswerOutcome::Answered { stamp, .. } => Some(stamp),
            _ => None,
        })
}

#[then(
    regex = r"^(\w+) receives the (INVITE|re-INVITE) only after the OCS answered (\w+)'s (\w+)$"
)]
async fn forwarded_after_answer(
    w: &mut World,
    b: String,
    what: String,
    a: String,
    kind: String,
) -> StepResult {
    let kind = kind_of(w, &kind)?;
    let reinvite = what == "re-INVITE";
    let rule = if reinvite {
        &rules::ON_FORWARD_AFTER_UPDATE
    } else {
        &rules::ON_FORWARD_AFTER_INITIAL
    };
    let Some(received) = w.sip_event(
        &b,
        false,
        &SipWhat::Request {
            method: rsip::Method::Invite,
            reinvite,
        },
    ) else {
        return Err(w.harness_error(format!("{b} received no {what} in this scenario")));
    };
    for function in w.online_functions() {
        if w.served_user(function).as_deref() != Some(a.as_str()) {
            continue;
        }
        let records = w.online_records_for(function);
        let answered = answered_at(&records, kind);
        if answered.is_none_or(|at| received < at) {
            let mut observed: Vec<String> = records.iter().map(line).collect();
            observed.push(match answered {
                Some(_) => format!("{b} received the {what} before the OCS's answer"),
                None => format!("{b} received the {what}; the OCS has not answered"),
            });
            return Err(w.fail(
                rule,
                format!("the {function} serving {a}"),
                format!(
                    "the OCS's answer to {a}'s {}, then {b}'s {what}",
                    kind_name(kind)
                ),
                observed.join("\n"),
            ));
        }
    }
    Ok(())
}

#[then(regex = r"^(\w+)'s INVITE is rejected and (\w+) receives no INVITE$")]
async fn rejected(w: &mut World, a: String, b: String) -> StepResult {
    let expected = w.profile().online().and_then(|o| o.refusal_status);
    let response = await_final(w, &a, rsip::Method::Invite, false).await?;
    let code = response.as_ref().map(|r| r.status_code.code());
    let ok = match (code, expected) {
        (Some(c), Some(e)) => c == e,
        (Some(c), None) => (400..700).contains(&c),
        (None, _) => false,
    };
    if !ok {
        let want = expected.map_or("a 4xx-6xx final response".to_owned(), |e| e.to_string());
        return Err(w.fail(
            &rules::ON_REFUSAL_REJECTS_INVITE,
            format!("{a}'s INVITE"),
            want,
            code.map_or("no final response".to_owned(), |c| c.to_string()),
        ));
    }
    // Nothing reached the recipient.
    let quiet = w.profile().timers.quiet;
    let forwarded = w
        .user(&b)?
        .next_event(
            |e| {
                matches!(&e.event, crate::sip::transaction::TxEvent::Request { request, .. }
                    if request.method == rsip::Method::Invite)
            },
            quiet,
        )
        .await;
    if forwarded.is_some() {
        return Err(w.fail(
            &rules::ON_REFUSAL_REJECTS_INVITE,
            format!("{a}'s INVITE"),
            format!("nothing forwarded to {b}"),
            format!("{b} received the INVITE"),
        ));
    }
    Ok(())
}
