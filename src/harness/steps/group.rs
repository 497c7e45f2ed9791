//! Steps about group sessions (6.2.3.2, 6.2.3.3): a chair starts one at the
//! SUT's Controlling Function, participants are invited, dial in, are added
//! and removed by the chair's REFER (RFC 4579), and leave; the Controlling
//! Function's charging names the chair and counts the participants.

use cucumber::{then, when};

use super::sip::{StepResult, await_final, await_request, in_dialog_request, log_sent_request};
use crate::charging::ch1::RecordType;
use crate::charging::ch2::{RequestType, TriggerType};
use crate::harness::expect::record_type_named;
use crate::harness::online::{kind_name, line as online_line};
use crate::harness::rules;
use crate::harness::verdict::StepFailure;
use crate::harness::world::{GroupSession, Leg, SipWhat, World, record_line};
use crate::profile::{ChargedFunction, Groups};
use crate::sip::dialog::{Dialog, new_branch, new_call_id, uri_text};
use crate::sip::message::{self, CpmInvite};

/// Names in a step: `carol`, `carol and dave`, `carol, dave and erin`.
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .flat_map(|part| part.split(" and "))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

fn invite_from(w: &mut World, from: &str, to: String) -> Result<CpmInvite, StepFailure> {
    let caller = w.user(from)?;
    let local = caller.local_addr();
    Ok(CpmInvite {
        from: caller.uri.clone(),
        from_tag: caller.new_tag(),
        to,
        call_id: new_call_id(&local.ip().to_string()),
        local,
        transport: caller.transport(),
        branch: new_branch(),
        conversation_id: format!("conv-{}", new_branch()),
        contribution_id: format!("contrib-{}", new_branch()),
        msrp_port: 9,
    })
}

/// The chair's INVITE to the conference factory with `members` as its
/// recipient list (each a test user of the scenario), and its From tag.
fn ad_hoc_invite(
    w: &mut World,
    chair: &str,
    members: &[String],
) -> Result<(rsip::Request, String), StepFailure> {
    let Some(factory) = w
        .profile()
        .groups
        .as_ref()
        .and_then(|g| g.conference_factory.clone())
    else {
        return Err(w.harness_error("the SUT profile declares no groups.conference_factory"));
    };
    let domain = w.profile().sut.domain.clone();
    let mut recipients = Vec::new();
    for m in members {
        if !w.users.contains_key(m) {
            w.add_user(m);
        }
        recipients.push(w.user(m)?.uri.clone());
    }
    let p = invite_from(w, chair, format!("sip:{factory}@{domain}"))?;
    let invite = message::cpm_group_invite(&p, &recipients)
        .map_err(|e| StepFailure::Harness(e.to_string()))?;
    Ok((invite, p.from_tag))
}

#[when(regex = r"^(\w+) starts an ad-hoc group session with (\w+(?:(?:, | and )\w+)*)$")]
async fn start_ad_hoc(w: &mut World, chair: String, members: String) -> StepResult {
    let members = names(&members);
    let (invite, tag) = ad_hoc_invite(w, &chair, &members)?;
    start(w, &chair, invite, tag, members).await
}

#[when(regex = r#"^(\w+) starts a session with the pre-defined group "([\w-]+)"$"#)]
async fn start_pre_defined(w: &mut World, chair: String, group: String) -> StepResult {
    let Some(members) = w
        .profile()
        .groups
        .as_ref()
        .and_then(|g| g.pre_defined.get(&group).cloned())
    else {
        return Err(w.harness_error(format!(
            "the SUT profile declares no pre-defined group \"{group}\" (tag the scenario @pre-defined-group-{group})"
        )));
    };
    // The members are provisioned on the SUT under fixed names.
    for role in &members {
        w.add_user_as(role, &Groups::member_user(&group, role));
    }
    let domain = w.profile().sut.domain.clone();
    let p = invite_from(w, &chair, format!("sip:{group}@{domain}"))?;
    let invite = message::cpm_invite(&p).map_err(|e| StepFailure::Harness(e.to_string()))?;
    start(w, &chair, invite, p.from_tag, members).await
}

/// The chair's INVITE to the Controlling Function: answered 200 OK with the
/// session's own URI in Contact, and ACKed.
async fn start(
    w: &mut World,
    chair: &str,
    invite: rsip::Request,
    tag: String,
    invited: Vec<String>,
) -> StepResult {
    send_group_invite(w, chair, invite, tag, invited).await?;
    established(w, chair, "group session").await?;
    let session_uri = w
        .leg(chair)?
        .dialog
        .as_ref()
        .map(|d| d.remote_target.to_string());
    if let Some(g) = w.group.as_mut() {
        g.session_uri = session_uri;
    }
    Ok(())
}

/// Sends the chair's INVITE to the group: the scenario is a group session
/// from now on, with `invited` the members the SUT is asked to invite.
async fn send_group_invite(
    w: &mut World,
    chair: &str,
    invite: rsip::Request,
    tag: String,
    invited: Vec<String>,
) -> StepResult {
    w.group = Some(GroupSession {
        invited,
        ..GroupSession::default()
    });
    w.originator = Some(chair.to_owned());
    let sut = w.ctx.sut_sip;
    let at = w
        .user(chair)?
        .send_request(invite.clone(), sut)
        .await
        .map(|(_, at)| at)
        .map_err(|e| StepFailure::Harness(format!("{chair}'s INVITE not sent: {e}")))?;
    log_sent_request(w, at, chair, rsip::Method::Invite);
    w.legs.insert(
        chair.to_owned(),
        Leg {
            invite,
            invite_key: None,
            local_tag: tag,
            dialog: None,
            pending: Vec::new(),
            ended: false,
        },
    );
    Ok(())
}

/// Awaits `user`'s final answer to its INVITE; a 2xx makes the dialog and
/// is ACKed.
async fn established(w: &mut World, user: &str, what: &str) -> StepResult {
    let Some(response) = await_final(w, user, rsip::Method::Invite, false).await? else {
        let timeout = w.profile().timers.sip_answer;
        return Err(w.inconclusive(format!(
            "the SUT did not answer {user}'s INVITE to the {what} within {timeout:?}"
        )));
    };
    let code = response.status_code.code();
    if !(200..300).contains(&code) {
        return Err(w.inconclusive(format!(
            "the SUT refused {user}'s INVITE to the {what} with {code}"
        )));
    }
    let invite = w.leg(user)?.invite.clone();
    let dialog = Dialog::uac(&invite, &response).map_err(|e| {
        StepFailure::Harness(format!("{user}: the SUT's 200 OK makes no dialog: {e}"))
    })?;
    let caller = w.user(user)?;
    let ack = dialog.ack(1, caller.local_addr(), caller.transport());
    w.leg(user)?.dialog = Some(dialog);
    let target = w.in_dialog_target(user);
    w.user(user)?
        .send_stateless(ack.into(), target)
        .await
        .map_err(|e| StepFailure::Harness(format!("{user}'s ACK not sent: {e}")))?;
    Ok(())
}

/// The SUT's INVITE to `member`, awaited once and kept on its leg.
async fn invitation(w: &mut World, member: &str) -> StepResult {
    if w.legs.get(member).is_some_and(|l| l.invite_key.is_some()) {
        return Ok(());
    }
    let timeout = w.profile().timers.sip_answer;
    let Some(pending) = await_request(w, member, rsip::Method::Invite, false, timeout).await?
    else {
        return Err(w.inconclusive(format!(
            "the SUT did not invite {member} to the group session within {timeout:?}"
        )));
    };
    let tag = w.user(member)?.new_tag();
    w.legs.insert(
        member.to_owned(),
        Leg {
            invite: pending.request,
            invite_key: Some(pending.key),
            local_tag: tag,
            dialog: None,
            pending: Vec::new(),
            ended: false,
        },
    );
    Ok(())
}

#[when(regex = r"^(\w+) holds back (?:his|her) answer to the group invitation$")]
async fn hold_invitation(w: &mut World, member: String) -> StepResult {
    invitation(w, &member).await
}

#[when(regex = r"^(\w+) (?:answers|rejects) the group invitation with (\d{3})(?: [A-Za-z ]+)?$")]
async fn answer_invitation(w: &mut World, member: String, status: u16) -> StepResult {
    invitation(w, &member).await?;
    super::sip::send_invite_answer(w, &member, status).await?;
    if status >= 300 {
        w.leg(&member)?.ended = true;
    }
    Ok(())
}

#[when(regex = r"^(\w+) dials in to the group session$")]
async fn dial_in(w: &mut World, member: String) -> StepResult {
    let Some(uri) = w.group.as_ref().and_then(|g| g.session_uri.clone()) else {
        return Err(
            w.harness_error("no group session URI to dial in to: start a group session first")
        );
    };
    if !w.users.contains_key(&member) {
        w.add_user(&member);
    }
    // The session URI without its parameters (`;isfocus`): the To of a new
    // request carries the address, the Request-URI the same.
    let to = uri_text(&uri).to_owned();
    let p = invite_from(w, &member, to)?;
    let invite = message::cpm_invite(&p).map_err(|e| StepFailure::Harness(e.to_string()))?;
    let sut = w.ctx.sut_sip;
    let at = w
        .user(&member)?
        .send_request(invite.clone(), sut)
        .await
        .map(|(_, at)| at)
        .map_err(|e| StepFailure::Harness(format!("{member}'s INVITE not sent: {e}")))?;
    log_sent_request(w, at, &member, rsip::Method::Invite);
    w.legs.insert(
        member.clone(),
        Leg {
            invite,
            invite_key: None,
            local_tag: p.from_tag,
            dialog: None,
            pending: Vec::new(),
            ended: false,
        },
    );
    established(w, &member, "running group session").await
}

/// The chair's REFER to the session, with `refer_to`, answered 2xx.
async fn refer(w: &mut World, chair: &str, refer_to: String, what: &str) -> StepResult {
    let (mut request, target) = in_dialog_request(w, chair, rsip::Method::Refer, what)?;
    let chair_uri = w.user(chair)?.uri.clone();
    request
        .headers
        .push(rsip::Header::Other("Refer-To".into(), refer_to));
    request.headers.push(rsip::Header::Other(
        "Referred-By".into(),
        format!("<{chair_uri}>"),
    ));
    let at = w
        .user(chair)?
        .send_request(request, target)
        .await
        .map(|(_, at)| at)
        .map_err(|e| StepFailure::Harness(format!("{chair}'s REFER not sent: {e}")))?;
    log_sent_request(w, at, chair, rsip::Method::Refer);
    match await_final(w, chair, rsip::Method::Refer, false).await? {
        Some(r) if (200..300).contains(&r.status_code.code()) => Ok(()),
        Some(r) => Err(w.inconclusive(format!(
            "the SUT refused {chair}'s REFER to {what} with {}",
            r.status_code.code()
        ))),
        None => Err(w.inconclusive(format!("the SUT did not answer {chair}'s REFER to {what}"))),
    }
}

#[when(regex = r"^(\w+) adds (\w+) to the group session with REFER$")]
async fn refer_add(w: &mut World, chair: String, member: String) -> StepResult {
    if !w.users.contains_key(&member) {
        w.add_user(&member);
    }
    let uri = w.user(&member)?.uri.clone();
    if let Some(g) = w.group.as_mut() {
        g.invited.push(member.clone());
    }
    refer(w, &chair, format!("<{uri}>"), &format!("add {member}")).await
}

#[when(regex = r"^(\w+) removes (\w+) from the group session with REFER$")]
async fn refer_remove(w: &mut World, chair: String, member: String) -> StepResult {
    let uri = w.user(&member)?.uri.clone();
    refer(
        w,
        &chair,
        format!("<{uri};method=BYE>"),
        &format!("remove {member}"),
    )
    .await?;
    // The SUT's BYE to the member, kept for a later step to answer.
    let wait = w.profile().timers.sip_answer;
    let Some(pending) = await_request(w, &member, rsip::Method::Bye, true, wait).await? else {
        return Err(w.inconclusive(format!(
            "the SUT sent {member} no BYE within {wait:?} after {chair}'s REFER"
        )));
    };
    w.leg(&member)?.pending.push(pending);
    Ok(())
}

#[when(regex = r"^(\w+) leaves the group session with BYE$")]
async fn leave(w: &mut World, member: String) -> StepResult {
    let (request, target) = in_dialog_request(w, &member, rsip::Method::Bye, "leave")?;
    w.leg(&member)?.ended = true;
    let at = w
        .user(&member)?
        .send_request(request, target)
        .await
        .map(|(_, at)| at)
        .map_err(|e| StepFailure::Harness(format!("{member}'s BYE not sent: {e}")))?;
    log_sent_request(w, at, &member, rsip::Method::Bye);
    match await_final(w, &member, rsip::Method::Bye, false).await? {
        Some(_) => Ok(()),
        None => Err(w.inconclusive(format!("the SUT did not answer {member}'s BYE"))),
    }
}

#[when(regex = r"^(\w+) modifies the group session with a re-INVITE$")]
async fn modify(w: &mut World, a: String) -> StepResult {
    let (mut request, target) = in_dialog_request(w, &a, rsip::Method::Invite, "modify")?;
    let local = w.user(&a)?.local_addr();
    let tag = w.leg(&a)?.local_tag.clone();
    let sdp = message::msrp_sdp(local, 10, &tag, true);
    message::set_body(
        &mut request.headers,
        &mut request.body,
        "application/sdp",
        sdp.as_bytes(),
    );
    let at = w
        .user(&a)?
        .send_request(request, target)
        .await
        .map(|(_, at)| at)
        .map_err(|e| StepFailure::Harness(format!("{a}'s re-INVITE not sent: {e}")))?;
    w.log_sip(
        at,
        &a,
        true,
        SipWhat::Request {
            method: rsip::Method::Invite,
            reinvite: true,
        },
    );
    if let Some(g) = w.group.as_mut() {
        g.modifier = Some(a.clone());
    }
    // The Controlling Function forwards it to every other participant.
    let others: Vec<String> = w
        .legs
        .iter()
        .filter(|(n, l)| **n != a && l.dialog.is_some() && !l.ended)
        .map(|(n, _)| n.clone())
        .collect();
    let timeout = w.profile().timers.sip_answer;
    for b in others {
        let Some(pending) = await_request(w, &b, rsip::Method::Invite, true, timeout).await? else {
            return Err(w.inconclusive(format!(
                "the SUT did not forward {a}'s re-INVITE to {b} within {timeout:?}"
            )));
        };
        let leg = w.leg(&b)?;
        if let Some(d) = leg.dialog.as_mut() {
            let _ = d.handle_request(&pending.request);
        }
        leg.pending.push(pending);
    }
    Ok(())
}

#[when(regex = r"^every other participant answers the re-INVITE with (\d{3})(?: [A-Za-z ]+)?$")]
async fn others_answer_reinvite(w: &mut World, status: u16) -> StepResult {
    let Some(a) = w.group.as_ref().and_then(|g| g.modifier.clone()) else {
        return Err(w.harness_error("no participant sent a re-INVITE to the group session"));
    };
    let holders: Vec<String> = w
        .legs
        .iter()
        .filter(|(_, l)| l.holds(rsip::Method::Invite))
        .map(|(n, _)| n.clone())
        .collect();
    let last = holders.last().cloned().unwrap_or_default();
    for b in holders {
        super::sip::send_reinvite_answer(w, &b, status).await?;
    }
    super::sip::await_reinvite_answer(w, &a, &last, status).await
}

#[when(regex = r"^every participant answers the SUT's BYE with 200 OK$")]
async fn everyone_answers_bye(w: &mut World) -> StepResult {
    let holders: Vec<String> = w
        .legs
        .iter()
        .filter(|(_, l)| l.holds(rsip::Method::Bye))
        .map(|(n, _)| n.clone())
        .collect();
    if holders.is_empty() {
        return Err(w.harness_error("no participant has a BYE from the SUT to answer"));
    }
    for name in holders {
        super::sip::answer_bye(w, name, 200).await?;
    }
    Ok(())
}

#[then(regex = r"^a CH-1 (\w+) arrives from the Controlling Function with (\d+) participants?$")]
async fn arrives_with_count(w: &mut World, kind: String, count: u32) -> StepResult {
    let Some(kind) = record_type_named(&kind) else {
        return Err(w.harness_error(format!("`{kind}` is not a CH-1 request")));
    };
    if w.group.is_none() {
        return Err(w.harness_error("no group session in this scenario"));
    }
    let rule = super::charging::rule_requiring(w, kind);
    let function = ChargedFunction::ControllingFunction;
    let before = w.marks.get(&function).copied().unwrap_or(w.started_at);
    if let Err(missing) = super::charging::await_every_function(w, kind, rule).await {
        // A Stop instead of the change's request: the session was charged
        // as over while participants remain; that is the rule it broke.
        let stop = w
            .records_for(function)
            .into_iter()
            .find(|r| r.stamp > before && r.ch1.as_ref().is_ok_and(|c| c.kind == RecordType::Stop));
        if kind != RecordType::Stop
            && let Some(stop) = stop
        {
            w.outcome = None;
            let chair = w.originator.clone().unwrap_or_default();
            return Err(w.fail(
                &rules::GROUP_STOP_AT_END,
                format!("the {function} serving {chair}"),
                format!("a {} while the group session goes on", kind.ch1_name()),
                format!("a StopRequest: {}", record_line(&stop)),
            ));
        }
        return Err(missing);
    }
    let Some(at) = w.marks.get(&function).copied() else {
        return Ok(());
    };
    let Some(record) = w.records_for(function).into_iter().find(|r| r.stamp == at) else {
        return Ok(());
    };
    let seen = record.ch1.as_ref().ok().and_then(|c| c.participants);
    if seen != Some(count) {
        let chair = w.originator.clone().unwrap_or_default();
        let observed = match seen {
            Some(n) => format!("{n} participants: {}", record_line(&record)),
            None => format!("no Number-Of-Participants: {}", record_line(&record)),
        };
        return Err(w.fail(
            &rules::GROUP_PARTICIPANT_COUNT,
            format!("the {function} serving {chair}"),
            format!("a {} with {count} participants", kind.ch1_name()),
            observed,
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ online (6.3.3)

/// The Charging Trigger Conditions the OCS has armed on the Controlling
/// Function's CH-2 session of this scenario (none before its Initial).
fn armed(w: &World) -> Vec<TriggerType> {
    let Some(first) = w
        .online_records_for(ChargedFunction::ControllingFunction)
        .into_iter()
        .next()
    else {
        return Vec::new();
    };
    w.ctx
        .enabler
        .ocs_session(&first.request.session_id)
        .map(|s| s.armed)
        .unwrap_or_default()
}

/// The 6.3.3.3 rule an UpdateRequest for a join or departure answers to,
/// by what is armed.
fn update_rule(armed: &[TriggerType]) -> &'static rules::Rule {
    if armed.contains(&TriggerType::ChangeInParticipantsNmb) {
        &rules::ON_GROUP_UPDATE_ON_CHANGE_WHEN_ARMED
    } else if armed.contains(&TriggerType::ChangeInThresholdOfParticipantsNmb) {
        &rules::ON_GROUP_UPDATE_ONLY_AT_THRESHOLD
    } else {
        &rules::ON_GROUP_NO_UPDATE_UNARMED
    }
}

#[when(regex = r"^(\w+) tries to start an ad-hoc group session with (\w+(?:(?:, | and )\w+)*)$")]
async fn try_start_ad_hoc(w: &mut World, chair: String, members: String) -> StepResult {
    let members = names(&members);
    let (invite, tag) = ad_hoc_invite(w, &chair, &members)?;
    send_group_invite(w, &chair, invite, tag, members).await
}

/// 6.3.3.2: a refused InitialRequest answers the chair with the profile's
/// refusal status (else any 4xx-6xx) and invites nobody.
#[then(
    regex = r"^(\w+)'s group INVITE is rejected and (\w+(?:(?:, | and )\w+)*) (?:receives|receive) no invitation$"
)]
async fn group_rejected(w: &mut World, chair: String, members: String) -> StepResult {
    let rule = &rules::ON_GROUP_REFUSAL_INVITES_NOBODY;
    let expected = w.profile().online().and_then(|o| o.refusal_status);
    let response = await_final(w, &chair, rsip::Method::Invite, false).await?;
    let code = response.as_ref().map(|r| r.status_code.code());
    let ok = match (code, expected) {
        (Some(c), Some(e)) => c == e,
        (Some(c), None) => (400..700).contains(&c),
        (None, _) => false,
    };
    if !ok {
        if code.is_some_and(|c| (200..300).contains(&c)) {
            w.leg(&chair)?.ended = true;
        }
        let want = expected.map_or("a 4xx-6xx final response".to_owned(), |e| e.to_string());
        return Err(w.fail(
            rule,
            format!("{chair}'s INVITE to the group"),
            want,
            code.map_or("no final response".to_owned(), |c| c.to_string()),
        ));
    }
    w.leg(&chair)?.ended = true;
    let quiet = w.profile().timers.quiet;
    for member in names(&members) {
        if let Some(pending) = await_request(w, &member, rsip::Method::Invite, false, quiet).await?
        {
            // Kept, so that the teardown leaves no invitation unanswered.
            let tag = w.user(&member)?.new_tag();
            w.legs.insert(
                member.clone(),
                Leg {
                    invite: pending.request,
                    invite_key: Some(pending.key),
                    local_tag: tag,
                    dialog: None,
                    pending: Vec::new(),
                    ended: true,
                },
            );
            return Err(w.fail(
                rule,
                format!("{chair}'s INVITE to the group"),
                format!("no invitation to {member} after the refusal"),
                format!("{member} received the SUT's INVITE"),
            ));
        }
    }
    Ok(())
}

/// 6.3.3.2: the member's invitation comes only after the OCS answered the
/// Controlling Function's InitialRequest.
#[then(
    regex = r"^(\w+) receives the group invitation only after the OCS answered (\w+)'s InitialRequest$"
)]
async fn invited_after_answer(w: &mut World, member: String, chair: String) -> StepResult {
    invitation(w, &member).await?;
    let received = w.sip_event(
        &member,
        false,
        &SipWhat::Request {
            method: rsip::Method::Invite,
            reinvite: false,
        },
    );
    let Some(received) = received else {
        return Err(w.harness_error(format!("{member} received no INVITE in this scenario")));
    };
    let function = ChargedFunction::ControllingFunction;
    let records = w.online_records_for(function);
    let answered = super::online::answered_at(&records, RequestType::Initial);
    if answered.is_none_or(|at| received < at) {
        let mut observed: Vec<String> = records.iter().map(online_line).collect();
        observed.push(match answered {
            Some(_) => format!("{member} received the invitation before the OCS's answer"),
            None => format!("{member} received the invitation; the OCS has not answered"),
        });
        return Err(w.fail(
            &rules::ON_GROUP_INVITE_AFTER_ANSWER,
            format!("the {function} serving {chair}"),
            format!("the OCS's answer to {chair}'s InitialRequest, then {member}'s invitation"),
            observed.join("\n"),
        ));
    }
    Ok(())
}

/// The Controlling Function's next CH-2 request of `kind` (Initial or
/// Update) with the participant count; an Update names the armed
/// Trigger-Type (6.3.3.3).
#[then(
    regex = r"^a CH-2 (InitialRequest|UpdateRequest) arrives from the Controlling Function with (\d+) participants?$"
)]
async fn online_arrives_with_count(w: &mut World, kind: String, count: u32) -> StepResult {
    if w.group.is_none() {
        return Err(w.harness_error("no group session in this scenario"));
    }
    let function = ChargedFunction::ControllingFunction;
    if !w.online_functions().contains(&function) {
        return Err(w.harness_error(
            "the SUT profile lists no online Controlling Function (charging.online.functions)",
        ));
    }
    let kind = if kind == "InitialRequest" {
        RequestType::Initial
    } else {
        RequestType::Update
    };
    let chair = w.originator.clone().unwrap_or_default();
    let armed = armed(w);
    let rule = match kind {
        RequestType::Initial => &rules::ON_INITIAL_ON_INVITE,
        _ => update_rule(&armed),
    };
    let after = w
        .online_marks
        .get(&function)
        .copied()
        .unwrap_or(w.started_at);
    let timeout = w.profile().timers.charging;
    let Some(found) = w.wait_online(function, kind, after, timeout).await else {
        let observed: Vec<String> = w
            .online_records_for(function)
            .iter()
            .map(online_line)
            .collect();
        let armed_text = if armed.is_empty() {
            "nothing armed".to_owned()
        } else {
            armed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(w.fail(
            rule,
            format!("the {function} serving {chair}"),
            format!(
                "a CH-2 {} within {timeout:?} ({armed_text})",
                kind_name(kind)
            ),
            format!("none; its CH-2 requests so far:\n{}", observed.join("\n")),
        ));
    };
    w.online_marks.insert(function, found.record.stamp);
    w.watermark = w.watermark.max(found.record.stamp);
    let seen = found.request.participants;
    if seen != Some(count) {
        let rule = match kind {
            RequestType::Initial => &rules::GROUP_PARTICIPANT_COUNT,
            _ => rule,
        };
        return Err(w.fail(
            rule,
            format!("the {function} serving {chair}"),
            format!("a CH-2 {} with {count} participants", kind_name(kind)),
            match seen {
                Some(n) => format!("{n} participants: {}", online_line(&found)),
                None => format!("no Number-Of-Participants: {}", online_line(&found)),
            },
        ));
    }
    if kind == RequestType::Update {
        let named = found.request.triggers();
        let owed: Vec<TriggerType> = armed
            .iter()
            .copied()
            .filter(|t| {
                matches!(
                    t,
                    TriggerType::ChangeInParticipantsNmb
                        | TriggerType::ChangeInThresholdOfParticipantsNmb
                )
            })
            .collect();
        if !owed.is_empty() && !owed.iter().any(|t| named.contains(t)) {
            return Err(w.fail(
                rule,
                format!("the {function} serving {chair}"),
                format!(
                    "an UpdateRequest whose Trigger names {}",
                    owed.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                format!("Trigger-Types {named:?}: {}", online_line(&found)),
            ));
        }
    }
    Ok(())
}

/// 6.3.3.3: no UpdateRequest from the Controlling Function since its last
/// awaited request; the rule broken depends on what is armed.
#[then(regex = r"^no CH-2 UpdateRequest arrives from the Controlling Function$")]
async fn no_online_update(w: &mut World) -> StepResult {
    let function = ChargedFunction::ControllingFunction;
    let after = w
        .online_marks
        .get(&function)
        .copied()
        .unwrap_or(w.started_at);
    tokio::time::sleep(w.profile().timers.quiet).await;
    super::charging::require_link(w, "no UpdateRequest arriving")?;
    let seen: Vec<String> = w
        .online_records_for(function)
        .iter()
        .filter(|r| r.record.stamp > after && r.request.kind == RequestType::Update)
        .map(online_line)
        .collect();
    if !seen.is_empty() {
        let armed = armed(w);
        let chair = w.originator.clone().unwrap_or_default();
        return Err(w.fail(
            update_rule(&armed),
            format!("the {function} serving {chair}"),
            "no CH-2 UpdateRequest for this change",
            seen.join("\n"),
        ));
    }
    Ok(())
}

/// After the scenario: an invitation that has not reached its invitee yet
/// is declined when it comes (the group session could not end while it is
/// pending: the 100 Trying stops the SUT's Timer B), then every participant
/// still in the session leaves it.
pub async fn teardown(w: &mut World) {
    let chair_in = w
        .originator
        .as_ref()
        .and_then(|c| w.legs.get(c))
        .is_some_and(|l| l.dialog.is_some());
    let late: Vec<String> = w
        .group
        .as_ref()
        .map(|g| g.invited.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| chair_in && !w.legs.contains_key(m))
        .collect();
    let wait = w.profile().timers.sip_answer;
    for member in late {
        if let Ok(Some(pending)) =
            await_request(w, &member, rsip::Method::Invite, false, wait).await
        {
            let response = crate::sip::transaction::response_to(
                &pending.request,
                rsip::StatusCode::BusyHere,
                Some(&crate::sip::dialog::new_tag()),
            );
            if let Some(user) = w.users.get_mut(&member) {
                let _ = user.send_response(&pending.key, response).await;
            }
        }
    }
    let live: Vec<String> = w
        .legs
        .iter()
        .filter(|(_, l)| l.dialog.is_some() && !l.ended)
        .map(|(n, _)| n.clone())
        .collect();
    for name in live {
        let Ok((request, target)) = in_dialog_request(w, &name, rsip::Method::Bye, "leave") else {
            continue;
        };
        if let Some(leg) = w.legs.get_mut(&name) {
            leg.ended = true;
        }
        let Some(user) = w.users.get_mut(&name) else {
            continue;
        };
        if user.send_request(request, target).await.is_ok() {
            let _ = user
                .next_event(
                    |e| super::sip::final_response_to(e, rsip::Method::Bye),
                    std::time::Duration::from_secs(1),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_names_is_split_on_commas_and_and() {
        assert_eq!(names("carol"), ["carol"]);
        assert_eq!(names("carol and dave"), ["carol", "dave"]);
        assert_eq!(names("carol, dave and erin"), ["carol", "dave", "erin"]);
    }

    #[test]
    fn the_group_invite_carries_a_list_the_focus_reads() {
        let p = CpmInvite {
            from: "sip:alice.1@test.invalid".into(),
            from_tag: "t".into(),
            to: "sip:conf-factory@test.invalid".into(),
            call_id: "c1@h".into(),
            local: "127.0.0.1:5070".parse().unwrap(),
            transport: crate::sip::transaction::TransportKind::Udp,
            branch: "z9hG4bK1".into(),
            conversation_id: "conv".into(),
            contribution_id: "contrib".into(),
            msrp_port: 9,
        };
        let members = [
            "sip:carol.1@test.invalid".to_owned(),
            "sip:a&b@test.invalid".to_owned(),
        ];
        let invite = message::cpm_group_invite(&p, &members).unwrap();
        // Re-read from the wire, as the SUT does.
        let text = rsip::SipMessage::from(invite).to_string();
        assert!(
            text.contains("\r\nRequire: recipient-list-invite\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: multipart/mixed;boundary="),
            "{text}"
        );
        let parsed = message::parse_request(text).unwrap();
        assert_eq!(crate::sut::focus::recipient_list(&parsed), members);
    }
}
