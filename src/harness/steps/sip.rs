//! Steps that drive the CPM clients over SIP: invite, answer, reject,
//! cancel, modify, end, and the server-side stimuli that make the SUT end a
//! session. A SIP step that cannot get the SUT to do its part ends the
//! scenario *inconclusive*: it says nothing yet about charging.

use std::time::Duration;

use cucumber::{given, when};

use crate::harness::verdict::StepFailure;
use crate::harness::world::{Leg, PendingRequest, SipWhat, World};
use crate::sip::agent::{TestUser, UserEvent};
use crate::sip::dialog::{Dialog, copy_record_route, new_branch, new_call_id, uri_text};
use crate::sip::message::{self, CpmInvite};
use crate::sip::transaction::{Target, TransportKind, TxEvent, TxKey};

pub(super) type StepResult = Result<(), StepFailure>;

#[given(regex = r#"^CPM clients ("\w+"(?:(?:, | and )"\w+")*)$"#)]
async fn clients(w: &mut World, list: String) {
    for name in list.split('"').skip(1).step_by(2) {
        w.add_user(name);
    }
}

/// Logs a request a test user sent.
pub(super) fn log_sent_request(
    w: &mut World,
    at: crate::timeline::Stamp,
    user: &str,
    method: rsip::Method,
) {
    w.log_sip(
        at,
        user,
        true,
        SipWhat::Request {
            method,
            reinvite: false,
        },
    );
}

#[given(expr = "a CPM client {string}")]
async fn client(w: &mut World, a: String) {
    w.add_user(&a);
}

#[given(expr = "{word} has a 1-1 CPM session with {word}")]
async fn has_session(w: &mut World, a: String, b: String) -> StepResult {
    invite(w, a.clone(), b.clone()).await?;
    // The recipient rings first, as real clients do.
    answer_invite(w, b.clone(), 180).await?;
    answer_invite(w, b, 200).await?;
    // The session's Start requests belong to the setup, not to what follows;
    // without them the scenario's own rule cannot be judged.
    if let Err(missing) = super::charging::await_every_function(
        w,
        crate::charging::ch1::RecordType::Start,
        &crate::harness::rules::START_ON_ANSWER,
    )
    .await
    {
        w.outcome = None;
        return Err(w.inconclusive(format!(
            "precondition: the session's StartRequests did not arrive (6.2.3.1 judges that):\n{missing}"
        )));
    }
    Ok(())
}

#[when(expr = "{word} invites {word} to a 1-1 CPM session")]
async fn invite(w: &mut World, a: String, b: String) -> StepResult {
    send_invite(w, &a, &b).await?;
    await_forwarded_invite(w, &a, &b).await
}

/// `a` sends its INVITE for a 1-1 session with `b` to the SUT.
pub(super) async fn send_invite(w: &mut World, a: &str, b: &str) -> StepResult {
    let (a, b) = (a.to_owned(), b.to_owned());
    let sut = w.ctx.sut_sip;
    let to = w.user(&b)?.uri.clone();
    let caller = w.user(&a)?;
    let local = caller.local_addr();
    let tag = caller.new_tag();
    let request = message::cpm_invite(&CpmInvite {
        from: caller.uri.clone(),
        from_tag: tag.clone(),
        to,
        call_id: new_call_id(&local.ip().to_string()),
        local,
        transport: caller.transport(),
        branch: new_branch(),
        conversation_id: format!("conv-{}", new_branch()),
        contribution_id: format!("contrib-{}", new_branch()),
        msrp_port: 9,
    })
    .map_err(|e| StepFailure::Harness(e.to_string()))?;
    let (_, at) = caller
        .send_request(request.clone(), sut)
        .await
        .map_err(|e| StepFailure::Harness(format!("{a}'s INVITE not sent: {e}")))?;
    w.log_sip(
        at,
        &a,
        true,
        SipWhat::Request {
            method: rsip::Method::Invite,
            reinvite: false,
        },
    );
    w.legs.insert(
        a.clone(),
        Leg {
            invite: request,
            invite_key: None,
            local_tag: tag,
            dialog: None,
            pending: Vec::new(),
            ended: false,
        },
    );
    w.originator = Some(a.clone());
    w.recipient = Some(b.clone());
    Ok(())
}

/// The SUT must forward `a`'s INVITE to `b`: awaited and kept on `b`'s leg.
pub(super) async fn await_forwarded_invite(w: &mut World, a: &str, b: &str) -> StepResult {
    let (a, b) = (a.to_owned(), b.to_owned());
    let timeout = w.profile().timers.sip_answer;
    let Some(PendingRequest { key, request, .. }) =
        await_request(w, &b, rsip::Method::Invite, false, timeout).await?
    else {
        return Err(w.inconclusive(format!(
            "the SUT did not forward {a}'s INVITE to {b} within {timeout:?}"
        )));
    };
    let tag = w.user(&b)?.new_tag();
    w.legs.insert(
        b,
        Leg {
            invite: request,
            invite_key: Some(key),
            local_tag: tag,
            dialog: None,
            pending: Vec::new(),
            ended: false,
        },
    );
    Ok(())
}

/// Waits up to the profile's `sip_answer` time for `user`'s next final
/// response to `method`, and logs it on the timeline.
pub(super) async fn await_final(
    w: &mut World,
    user: &str,
    method: rsip::Method,
    reinvite: bool,
) -> Result<Option<rsip::Response>, StepFailure> {
    let timeout = w.profile().timers.sip_answer;
    let got = w
        .user(user)?
        .next_event(|e| final_response_to(e, method), timeout)
        .await;
    let Some(UserEvent {
        stamp,
        event: TxEvent::Response {
            response, source, ..
        },
    }) = got
    else {
        return Ok(None);
    };
    let status = response.status_code.code();
    warn_unless_from_sut(w, user, &format!("{status} to {method}"), &source);
    w.log_sip(
        stamp,
        user,
        false,
        SipWhat::Response {
            status,
            method,
            reinvite,
        },
    );
    Ok(Some(response))
}

/// Waits up to `timeout` for `user` to receive a `method` request (inside a
/// dialog or not), and logs it on the timeline. The caller answers it.
pub(super) async fn await_request(
    w: &mut World,
    user: &str,
    method: rsip::Method,
    in_dialog: bool,
    timeout: Duration,
) -> Result<Option<PendingRequest>, StepFailure> {
    let got = w
        .user(user)?
        .next_event(|e| is_request(e, method, in_dialog), timeout)
        .await;
    let Some(UserEvent {
        stamp,
        event:
            TxEvent::Request {
                key: Some(key),
                request,
                source,
            },
    }) = got
    else {
        return Ok(None);
    };
    note_source(w, user, &request, &source);
    let reinvite = method == rsip::Method::Invite && in_dialog;
    w.log_sip(stamp, user, false, SipWhat::Request { method, reinvite });
    Ok(Some(PendingRequest {
        key,
        request,
        stamp,
    }))
}

/// A test user hears only from the SUT; anything else is reported with its
/// source, since it may explain a verdict (a far end answering directly).
fn warn_unless_from_sut(w: &mut World, user: &str, what: &str, source: &Target) {
    let sut = w.ctx.sut_sip;
    if !from_sut(sut, source) {
        w.warnings.push(format!(
            "{user} received {what} from {} over {:?}, not from the SUT at {}",
            source.addr, source.transport, sut.addr
        ));
    }
}

/// Whether `source` is the SUT: over UDP its address, over TCP its host (a
/// connection the SUT opens comes from a port of its own choosing).
fn from_sut(sut: Target, source: &Target) -> bool {
    match source.transport {
        TransportKind::Udp => source.addr == sut.addr,
        TransportKind::Tcp => source.addr.ip() == sut.addr.ip(),
    }
}

/// A request a test user receives should come from the SUT: anything else
/// (another test user, a stranger) is reported with its source.
fn note_source(w: &mut World, user: &str, request: &rsip::Request, source: &Target) {
    warn_unless_from_sut(
        w,
        user,
        &format!("{} {}", request.method, request.uri),
        source,
    );
    // A target refresh names where the dialog's requests go next: a SIP URI.
    if request.method == rsip::Method::Invite
        && let Some(contact) = request.headers.iter().find_map(|h| match h {
            rsip::Header::Contact(c) => Some(c.to_string()),
            _ => None,
        })
    {
        let value = contact.split_once(':').map_or("", |(_, v)| v);
        let uri = uri_text(value).to_ascii_lowercase();
        if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
            w.warnings.push(format!(
                "{user} received an INVITE whose Contact is no SIP URI: {}",
                value.trim()
            ));
        }
    }
}

/// The SIP URI test user `user` puts in its Contact.
fn contact_uri(user: &TestUser) -> Result<rsip::Uri, StepFailure> {
    let text = message::cpm_contact(&user.name, user.local_addr(), user.transport());
    rsip::Uri::try_from(uri_text(&text))
        .map_err(|e| StepFailure::Harness(format!("{}'s Contact {text} is no URI: {e}", user.name)))
}

/// Two test users of the scenario at once, so that both parties can act
/// concurrently (a proxy answers a BYE only once the far end has).
fn pair<'w>(
    users: &'w mut std::collections::BTreeMap<String, TestUser>,
    a: &str,
    b: &str,
) -> Option<(&'w mut TestUser, &'w mut TestUser)> {
    let (mut first, mut second) = (None, None);
    for (name, user) in users.iter_mut() {
        if name == a {
            first = Some(user);
        } else if name == b {
            second = Some(user);
        }
    }
    Some((first?, second?))
}

/// A request `user` received and answered on the spot.
struct Answered {
    received: crate::timeline::Stamp,
    request: rsip::Request,
    source: Target,
    /// When the answer left; None if it could not be sent.
    answered: Option<crate::timeline::Stamp>,
}

/// Waits up to `timeout` for `user`'s next in-dialog `method` request and
/// answers it with `status` as soon as it arrives.
async fn answer_when_it_comes(
    user: &mut TestUser,
    method: rsip::Method,
    status: u16,
    timeout: Duration,
) -> Option<Answered> {
    let got = user
        .next_event(|e| is_request(e, method, true), timeout)
        .await;
    let Some(UserEvent {
        stamp,
        event:
            TxEvent::Request {
                key: Some(key),
                request,
                source,
            },
    }) = got
    else {
        return None;
    };
    let response =
        crate::sip::transaction::response_to(&request, rsip::StatusCode::from(status), None);
    let answered = user.send_response(&key, response).await.ok();
    Some(Answered {
        received: stamp,
        request,
        source,
        answered,
    })
}

fn is_request(e: &UserEvent, method: rsip::Method, in_dialog: bool) -> bool {
    matches!(&e.event, TxEvent::Request { request, .. }
        if request.method == method && message::to_tag(request).is_some() == in_dialog)
}

pub(super) fn final_response_to(e: &UserEvent, method: rsip::Method) -> bool {
    matches!(&e.event, TxEvent::Response { response, retransmission: false, .. }
        if response.status_code.code() >= 200
            && message::cseq(response).is_ok_and(|(_, m)| m == method))
        || matches!(&e.event, TxEvent::Timeout { .. })
}

#[when(regex = r"^(\w+) answers the INVITE with (\d{3})(?: [A-Za-z ]+)?$")]
async fn answer_invite(w: &mut World, b: String, status: u16) -> StepResult {
    answer_invite_then_ack(w, b, status, false).await
}

#[when(
    regex = r"^(\w+) accepts the INVITE while (\w+) holds back (?:his|her) ACK until the 200 OK comes again$"
)]
async fn accept_with_held_ack(w: &mut World, b: String, a: String) -> StepResult {
    if w.originator.as_deref() != Some(a.as_str()) {
        return Err(w.harness_error(format!("{a} sent no INVITE to hold an ACK for")));
    }
    answer_invite_then_ack(w, b, 200, true).await
}

/// `b` answers the INVITE it received (kept on its leg) with `status`: a
/// tagged 1xx or a 2xx with Contact and Record-Route (RFC 3261 12.1.1), a 2xx
/// with an SDP answer and a dialog; logged on the timeline.
pub(super) async fn send_invite_answer(w: &mut World, b: &str, status: u16) -> StepResult {
    let leg = w.leg(b)?;
    let (Some(key), invite, tag) = (
        leg.invite_key.clone(),
        leg.invite.clone(),
        leg.local_tag.clone(),
    ) else {
        return Err(w.harness_error(format!("{b} has received no INVITE to answer")));
    };
    let callee = w.user(b)?;
    let local = callee.local_addr();
    let transport = callee.transport();
    let contact = contact_uri(callee)?;
    let mut response =
        crate::sip::transaction::response_to(&invite, rsip::StatusCode::from(status), Some(&tag));
    if status < 300 && status > 100 {
        // A tagged 1xx or a 2xx makes a dialog: Contact and Record-Route
        // (RFC 3261 §12.1.1).
        let user = callee.name.clone();
        response.headers.push(rsip::Header::Contact(
            message::cpm_contact(&user, local, transport).into(),
        ));
        copy_record_route(&invite, &mut response);
    }
    if (200..300).contains(&status) {
        let sdp = message::msrp_sdp(local, 9, &tag, false);
        message::set_body(
            &mut response.headers,
            &mut response.body,
            "application/sdp",
            sdp.as_bytes(),
        );
        let dialog = Dialog::uas(&invite, &tag, contact).map_err(|e| {
            StepFailure::Harness(format!(
                "{b}: cannot make a dialog from the SUT's INVITE: {e}"
            ))
        })?;
        w.leg(b)?.dialog = Some(dialog);
    }
    let at = w
        .user(b)?
        .send_response(&key, response)
        .await
        .map_err(|e| StepFailure::Harness(format!("{b}'s {status} not sent: {e}")))?;
    w.log_sip(
        at,
        b,
        true,
        SipWhat::Response {
            status,
            method: rsip::Method::Invite,
            reinvite: false,
        },
    );
    Ok(())
}

/// `b` answers the INVITE with `status`; the originator awaits the final
/// answer and ACKs a 2xx, at once or (`hold_ack`) only once the SUT has
/// sent the 200 OK again (RFC 3261 13.3.1.4: it retransmits a 2xx until the
/// ACK comes; over a reliable transport the hold lasts 2 T1).
async fn answer_invite_then_ack(
    w: &mut World,
    b: String,
    status: u16,
    hold_ack: bool,
) -> StepResult {
    send_invite_answer(w, &b, status).await?;
    if status < 200 {
        return Ok(());
    }
    // The originator must get the final answer; a 2xx is acknowledged.
    let a = w.originator.clone().unwrap_or_default();
    let Some(response) = await_final(w, &a, rsip::Method::Invite, false).await? else {
        let timeout = w.profile().timers.sip_answer;
        return Err(w.inconclusive(format!(
            "the SUT did not relay {b}'s {status} to {a} within {timeout:?}"
        )));
    };
    let code = response.status_code.code();
    if (200..300).contains(&code) {
        let invite = w.leg(&a)?.invite.clone();
        let dialog = Dialog::uac(&invite, &response).map_err(|e| {
            StepFailure::Harness(format!("{a}: the SUT's 200 OK makes no dialog: {e}"))
        })?;
        if hold_ack {
            let t1 = crate::sip::transaction::Timers::default().t1;
            let caller = w.user(&a)?;
            let reliable = caller.transport() == TransportKind::Tcp;
            let hold = if reliable { t1 * 2 } else { t1 * 4 };
            let again = caller
                .next_event(
                    |e| {
                        matches!(&e.event, TxEvent::Response { response, retransmission: true, .. }
                            if (200..300).contains(&response.status_code.code())
                                && message::cseq(response).is_ok_and(|(_, m)| m == rsip::Method::Invite))
                    },
                    hold,
                )
                .await;
            if again.is_none() && !reliable {
                w.warnings.push(format!(
                    "the SUT did not send {a} its 200 OK again within {hold:?} while the ACK was held (RFC 3261 13.3.1.4)"
                ));
            }
        }
        let caller = w.user(&a)?;
        let ack = dialog.ack(1, caller.local_addr(), caller.transport());
        w.leg(&a)?.dialog = Some(dialog);
        let target = w.in_dialog_target(&a);
        w.user(&a)?
            .send_stateless(ack.into(), target)
            .await
            .map_err(|e| StepFailure::Harness(format!("{a}'s ACK not sent: {e}")))?;
    }
    Ok(())
}

#[when(expr = "{word} holds back his answer to the INVITE")]
async fn hold_invite_answer(w: &mut World, b: String) -> StepResult {
    // Nothing is sent: the INVITE's server transaction stays open.
    w.leg(&b)?;
    Ok(())
}

#[when(expr = "{word} rejects the INVITE with {int}")]
async fn reject_invite(w: &mut World, b: String, status: u16) -> StepResult {
    if !(300..700).contains(&status) {
        return Err(w.harness_error(format!("{status} is not a rejection (3xx-6xx)")));
    }
    answer_invite(w, b, status).await
}

#[when(expr = "{word} cancels the INVITE")]
async fn cancel(w: &mut World, a: String) -> StepResult {
    let invite = w.leg(&a)?.invite.clone();
    let cancel = crate::sip::cancel_for(&invite);
    let sut = w.ctx.sut_sip;
    let (_, at) = w
        .user(&a)?
        .send_request(cancel, sut)
        .await
        .map_err(|e| StepFailure::Harness(format!("{a}'s CANCEL not sent: {e}")))?;
    w.log_sip(
        at,
        &a,
        true,
        SipWhat::Request {
            method: rsip::Method::Cancel,
            reinvite: false,
        },
    );
    // The recipient's user agent answers the CANCEL and the INVITE, as RFC 3261 §9.2 says.
    let b = w.recipient.clone().unwrap_or_default();
    let timeout = w.profile().timers.sip_answer;
    let got = w
        .user(&b)?
        .next_event(|e| is_request(e, rsip::Method::Cancel, false), timeout)
        .await;
    let Some(UserEvent {
        event:
            TxEvent::Request {
                key: Some(key),
                request,
                source,
            },
        ..
    }) = got
    else {
        return Err(w.inconclusive(format!(
            "the SUT did not forward {a}'s CANCEL to {b} within {timeout:?}"
        )));
    };
    note_source(w, &b, &request, &source);
    let ok = crate::sip::transaction::response_to(&request, rsip::StatusCode::OK, None);
    let _ = w.user(&b)?.send_response(&key, ok).await;
    let leg = w.leg(&b)?;
    let (Some(key), invite, tag) = (
        leg.invite_key.clone(),
        leg.invite.clone(),
        leg.local_tag.clone(),
    ) else {
        return Ok(());
    };
    let terminated = crate::sip::transaction::response_to(
        &invite,
        rsip::StatusCode::RequestTerminated,
        Some(&tag),
    );
    let _ = w.user(&b)?.send_response(&key, terminated).await;
    Ok(())
}

/// A new request in `user`'s dialog, and where it goes; `what` says what
/// the step wanted to do, for the error when there is no session.
pub(super) fn in_dialog_request(
    w: &mut World,
    user: &str,
    method: rsip::Method,
    what: &str,
) -> Result<(rsip::Request, crate::sip::Target), StepFailure> {
    let target = w.in_dialog_target(user);
    let (local, transport) = {
        let u = w.user(user)?;
        (u.local_addr(), u.transport())
    };
    let Some(dialog) = w.leg(user)?.dialog.as_mut() else {
        return Err(w.harness_error(format!("{user} has no established session to {what}")));
    };
    Ok((dialog.new_request(method, local, transport), target))
}

#[when(expr = "{word} modifies the session with a re-INVITE")]
async fn reinvite(w: &mut World, a: String) -> StepResult {
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
    let (_, at) = w
        .user(&a)?
        .send_request(request, target)
        .await
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
    // The SUT forwards it to the other party.
    let b = other_party(w, &a);
    let timeout = w.profile().timers.sip_answer;
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
    Ok(())
}

fn other_party(w: &World, a: &str) -> String {
    if w.originator.as_deref() == Some(a) {
        w.recipient.clone().unwrap_or_default()
    } else {
        w.originator.clone().unwrap_or_default()
    }
}

#[when(expr = "{word} holds back his answer to the re-INVITE")]
async fn hold_reinvite_answer(w: &mut World, b: String) -> StepResult {
    if !w.leg(&b)?.holds(rsip::Method::Invite) {
        return Err(w.harness_error(format!("{b} has no re-INVITE to hold back")));
    }
    Ok(())
}

#[when(expr = "{word} answers the re-INVITE with 200 OK")]
async fn answer_reinvite(w: &mut World, b: String) -> StepResult {
    answer_reinvite_with(w, b, 200).await
}

#[when(expr = "{word} rejects the re-INVITE with {int}")]
async fn reject_reinvite(w: &mut World, b: String, status: u16) -> StepResult {
    if !(300..700).contains(&status) {
        return Err(w.harness_error(format!("{status} is not a rejection (3xx-6xx)")));
    }
    answer_reinvite_with(w, b, status).await
}

/// `b` answers the pending re-INVITE with `status`; its sender must get
/// that answer through the SUT, and ACKs a 2xx.
async fn answer_reinvite_with(w: &mut World, b: String, status: u16) -> StepResult {
    send_reinvite_answer(w, &b, status).await?;
    let a = other_party(w, &b);
    await_reinvite_answer(w, &a, &b, status).await
}

/// `b` answers the re-INVITE it holds with `status`.
pub(super) async fn send_reinvite_answer(w: &mut World, b: &str, status: u16) -> StepResult {
    let b = b.to_owned();
    let leg = w.leg(&b)?;
    let tag = leg.local_tag.clone();
    let Some(pending) = leg.take_pending(rsip::Method::Invite) else {
        return Err(w.harness_error(format!("{b} has no re-INVITE to answer")));
    };
    let (local, transport, name) = {
        let u = w.user(&b)?;
        (u.local_addr(), u.transport(), u.name.clone())
    };
    let mut answer = crate::sip::transaction::response_to(
        &pending.request,
        rsip::StatusCode::from(status),
        None,
    );
    if (200..300).contains(&status) {
        answer.headers.push(rsip::Header::Contact(
            message::cpm_contact(&name, local, transport).into(),
        ));
        let sdp = message::msrp_sdp(local, 11, &tag, false);
        message::set_body(
            &mut answer.headers,
            &mut answer.body,
            "application/sdp",
            sdp.as_bytes(),
        );
    }
    let at = w
        .user(&b)?
        .send_response(&pending.key, answer)
        .await
        .map_err(|e| StepFailure::Harness(format!("{b}'s {status} not sent: {e}")))?;
    w.log_sip(
        at,
        &b,
        true,
        SipWhat::Response {
            status,
            method: rsip::Method::Invite,
            reinvite: true,
        },
    );
    Ok(())
}

/// The re-INVITE's sender `a` gets `b`'s answer `status` and acknowledges it.
pub(super) async fn await_reinvite_answer(
    w: &mut World,
    a: &str,
    b: &str,
    status: u16,
) -> StepResult {
    let (a, b) = (a.to_owned(), b.to_owned());
    let Some(response) = await_final(w, &a, rsip::Method::Invite, true).await? else {
        let timeout = w.profile().timers.sip_answer;
        return Err(w.inconclusive(format!(
            "the SUT did not relay {b}'s answer to the re-INVITE to {a} within {timeout:?}"
        )));
    };
    let code = response.status_code.code();
    if code != status {
        return Err(w.inconclusive(format!(
            "{a} received {code} to the re-INVITE, not {b}'s {status}"
        )));
    }
    if (200..300).contains(&code) {
        let (local, transport) = {
            let u = w.user(&a)?;
            (u.local_addr(), u.transport())
        };
        let cseq = message::cseq(&response).map(|(n, _)| n).unwrap_or(1);
        let leg = w.leg(&a)?;
        if let Some(d) = leg.dialog.as_mut() {
            d.handle_response(&response);
            let ack = d.ack(cseq, local, transport);
            let target = w.in_dialog_target(&a);
            let _ = w.user(&a)?.send_stateless(ack.into(), target).await;
        }
    }
    Ok(())
}

#[when(expr = "{word} ends the session with BYE")]
async fn bye(w: &mut World, a: String) -> StepResult {
    let (request, target) = in_dialog_request(w, &a, rsip::Method::Bye, "end")?;
    w.leg(&a)?.ended = true;
    let b = other_party(w, &a);
    let timeout = w.profile().timers.sip_answer;
    w.user(&a)?;
    w.user(&b)?;
    let Some((caller, callee)) = pair(&mut w.users, &a, &b) else {
        return Err(w.harness_error(format!("{a} and {b} are not both in this scenario")));
    };
    let at = caller
        .send_request(request, target)
        .await
        .map(|(_, at)| at)
        .map_err(|e| format!("{a}'s BYE not sent: {e}"));
    // Both parties at once: a proxy answers the BYE only once the far end
    // has, and the far end answers the BYE the SUT sends it as it arrives.
    let (answer, far_end) = match at {
        Ok(_) => {
            tokio::join!(
                caller.next_event(|e| final_response_to(e, rsip::Method::Bye), timeout),
                answer_when_it_comes(callee, rsip::Method::Bye, 200, timeout),
            )
        }
        Err(_) => (None, None),
    };
    let at = at.map_err(|e| w.harness_error(e))?;
    w.log_sip(
        at,
        &a,
        true,
        SipWhat::Request {
            method: rsip::Method::Bye,
            reinvite: false,
        },
    );
    match far_end {
        Some(Answered {
            received,
            request,
            source,
            answered,
        }) => {
            note_source(w, &b, &request, &source);
            w.log_sip(
                received,
                &b,
                false,
                SipWhat::Request {
                    method: rsip::Method::Bye,
                    reinvite: false,
                },
            );
            if let Some(at) = answered {
                w.log_sip(
                    at,
                    &b,
                    true,
                    SipWhat::Response {
                        status: 200,
                        method: rsip::Method::Bye,
                        reinvite: false,
                    },
                );
            }
            w.leg(&b)?.ended = true;
        }
        None => w
            .warnings
            .push(format!("the SUT did not send {b} a BYE after {a}'s BYE")),
    }
    if let Some(UserEvent {
        stamp,
        event: TxEvent::Response {
            response, source, ..
        },
    }) = answer
    {
        let status = response.status_code.code();
        warn_unless_from_sut(w, &a, &format!("{status} to BYE"), &source);
        w.log_sip(
            stamp,
            &a,
            false,
            SipWhat::Response {
                status,
                method: rsip::Method::Bye,
                reinvite: false,
            },
        );
        if status >= 300 {
            return Err(w.inconclusive(format!(
                "the SUT answered {a}'s BYE with {status}: it did not take the session as ended"
            )));
        }
    }
    Ok(())
}

#[when("the SUT ends the session on its inactivity timer")]
async fn inactivity(w: &mut World) -> StepResult {
    let Some(timer) = w.profile().stimuli.inactivity_timer else {
        return Err(w.inconclusive(
            "the SUT profile declares no inactivity timer (stimuli.inactivity_timer)",
        ));
    };
    let wait = timer + w.profile().timers.sip_answer;
    await_server_byes(w, wait, "its inactivity timer").await
}

#[when("the operator ends the session")]
async fn operator(w: &mut World) -> StepResult {
    let a = w.originator.clone().unwrap_or_default();
    let call_id =
        message::call_id(&w.leg(&a)?.invite).map_err(|e| StepFailure::Harness(e.to_string()))?;
    let user = w.user(&a)?.uri.clone();
    let Some(command) = w.profile().stimuli.operator_terminate.clone() else {
        return Err(w.inconclusive(
            "the SUT profile names no operator command (stimuli.operator_terminate)",
        ));
    };
    if let Err(e) = crate::harness::stimulus::run(&command, &call_id, &user, w.ctx.sut_admin).await
    {
        return Err(w.inconclusive(format!("the operator command failed: {e}")));
    }
    let wait = w.profile().timers.sip_answer;
    await_server_byes(w, wait, "the operator command").await
}

/// Waits for the SUT's BYE at both parties and keeps it unanswered.
async fn await_server_byes(w: &mut World, wait: Duration, cause: &str) -> StepResult {
    let parties: Vec<String> = if w.group.is_some() {
        // Every participant still in the group session.
        w.legs
            .iter()
            .filter(|(_, l)| l.dialog.is_some() && !l.ended)
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        [w.originator.clone(), w.recipient.clone()]
            .into_iter()
            .flatten()
            .collect()
    };
    for name in parties {
        let Some(pending) = await_request(w, &name, rsip::Method::Bye, true, wait).await? else {
            return Err(w.inconclusive(format!(
                "the SUT sent {name} no BYE within {wait:?} after {cause}"
            )));
        };
        w.leg(&name)?.pending.push(pending);
    }
    Ok(())
}

#[when(regex = r"^(\w+) holds back (?:his|her) answer to the SUT's BYE$")]
async fn hold_bye_answer(w: &mut World, name: String) -> StepResult {
    if !w.leg(&name)?.holds(rsip::Method::Bye) {
        return Err(w.harness_error(format!("{name} has no BYE from the SUT to hold back")));
    }
    Ok(())
}

#[when(expr = "{word} and {word} hold back their answers to the SUT's BYE")]
async fn hold_bye_answers(w: &mut World, a: String, b: String) -> StepResult {
    for name in [a, b] {
        if !w.leg(&name)?.holds(rsip::Method::Bye) {
            return Err(w.harness_error(format!("{name} has no BYE from the SUT to hold back")));
        }
    }
    Ok(())
}

/// The client keeps the SUT's BYE unanswered for good: its server
/// transaction absorbs the SUT's retransmissions and never responds.
#[when(regex = r"^(\w+) never answers the SUT's BYE$")]
async fn never_answer_bye(w: &mut World, name: String) -> StepResult {
    let leg = w.leg(&name)?;
    // Dropped from the pending list, so that the teardown does not answer
    // it either.
    if leg.take_pending(rsip::Method::Bye).is_none() {
        return Err(w.harness_error(format!(
            "{name} has no BYE from the SUT to leave unanswered"
        )));
    }
    leg.ended = true;
    Ok(())
}

#[when(regex = r"^(\w+) answers the SUT's BYE with (\d{3})(?: [A-Za-z ]+)?$")]
pub(super) async fn answer_bye(w: &mut World, name: String, status: u16) -> StepResult {
    if !(200..700).contains(&status) {
        return Err(w.harness_error(format!("{status} is no final response")));
    }
    let leg = w.leg(&name)?;
    let Some(pending) = leg.take_pending(rsip::Method::Bye) else {
        return Err(w.harness_error(format!("{name} has no BYE from the SUT to answer")));
    };
    leg.ended = true;
    let at = answer_pending(w, &name, &pending.key, &pending.request, status).await?;
    w.log_sip(
        at,
        &name,
        true,
        SipWhat::Response {
            status,
            method: rsip::Method::Bye,
            reinvite: false,
        },
    );
    Ok(())
}

async fn answer_pending(
    w: &mut World,
    name: &str,
    key: &TxKey,
    request: &rsip::Request,
    status: u16,
) -> Result<crate::timeline::Stamp, StepFailure> {
    let response =
        crate::sip::transaction::response_to(request, rsip::StatusCode::from(status), None);
    let at = w
        .user(name)?
        .send_response(key, response)
        .await
        .map_err(|e| StepFailure::Harness(format!("{name}'s {status} not sent: {e}")))?;
    Ok(at)
}

#[when(regex = r"^(\w+) receives an? (\d{3}) final response$")]
#[cucumber::then(regex = r"^(\w+) receives an? (\d{3}) final response$")]
async fn receives_final(w: &mut World, a: String, status: u16) -> StepResult {
    let seen = w
        .sip_log
        .iter()
        .rev()
        .find(|e| {
            e.user == a
                && !e.sent
                && matches!(
                    e.what,
                    SipWhat::Response {
                        method: rsip::Method::Invite,
                        reinvite: false,
                        ..
                    }
                )
        })
        .map(|e| e.what.clone());
    match seen {
        Some(SipWhat::Response { status: got, .. }) if got == status => Ok(()),
        Some(SipWhat::Response { status: got, .. }) => Err(w.inconclusive(format!(
            "{a} received {got} instead of {status}: the SUT did not relay the recipient's answer"
        ))),
        _ => match await_final(w, &a, rsip::Method::Invite, false).await? {
            Some(r) if r.status_code.code() == status => Ok(()),
            Some(r) => Err(w.inconclusive(format!(
                "{a} received {} instead of {status}",
                r.status_code.code()
            ))),
            None => {
                let timeout = w.profile().timers.sip_answer;
                Err(w.inconclusive(format!("{a} received no final response within {timeout:?}")))
            }
        },
    }
}

/// Ends whatever the scenario left open, quietly, so that no SUT session
/// outlives its scenario. Runs after the verdict.
pub async fn teardown(w: &mut World) {
    let names: Vec<String> = w.legs.keys().cloned().collect();
    for name in &names {
        let pending: Vec<PendingRequest> = w
            .legs
            .get_mut(name)
            .map(|l| std::mem::take(&mut l.pending))
            .unwrap_or_default();
        for p in pending {
            let _ = answer_pending(w, name, &p.key, &p.request, 200).await;
            // A BYE from the SUT, answered, ends this user's session.
            if p.request.method == rsip::Method::Bye
                && let Some(leg) = w.legs.get_mut(name)
            {
                leg.ended = true;
            }
        }
    }
    // What reached a test user and no step looked at must still have come
    // from the SUT; a request among it is answered as a UA would (a BYE
    // the SUT sent on its own, say its inactivity timer's, ends the leg).
    let mut unconsumed = Vec::new();
    for (name, user) in w.users.iter_mut() {
        for e in user.take_unconsumed() {
            if let TxEvent::Request {
                key,
                request,
                source,
            } = e.event
            {
                unconsumed.push((name.clone(), key, request, source));
            }
        }
    }
    for (name, key, request, source) in unconsumed {
        if request.method != rsip::Method::Ack || !from_sut(w.ctx.sut_sip, &source) {
            note_source(w, &name, &request, &source);
        }
        if let Some(key) = key {
            // An INVITE nobody expected is declined: a 200 OK would open a
            // session no step will close.
            let status = if request.method == rsip::Method::Invite {
                486
            } else {
                200
            };
            let _ = answer_pending(w, &name, &key, &request, status).await;
            // A declined group invitation: that invitee is done with.
            if request.method == rsip::Method::Invite && w.group.is_some() {
                w.legs.entry(name.clone()).or_insert_with(|| Leg {
                    invite: request.clone(),
                    invite_key: None,
                    local_tag: String::new(),
                    dialog: None,
                    pending: Vec::new(),
                    ended: true,
                });
            }
            if request.method == rsip::Method::Bye
                && let Some(leg) = w.legs.get_mut(&name)
            {
                leg.ended = true;
            }
        }
    }
    if w.group.is_some() {
        return super::group::teardown(w).await;
    }
    let live = w.originator.clone().filter(|a| {
        w.legs
            .get(a)
            .is_some_and(|l| l.dialog.is_some() && !l.ended)
            && w.recipient
                .as_ref()
                .and_then(|b| w.legs.get(b))
                .is_none_or(|l| !l.ended)
    });
    if let Some(a) = live {
        let target = w.in_dialog_target(&a);
        let Some(user) = w.users.get(&a) else { return };
        let (local, transport) = (user.local_addr(), user.transport());
        let Some(request) = w
            .legs
            .get_mut(&a)
            .and_then(|l| l.dialog.as_mut())
            .map(|d| d.new_request(rsip::Method::Bye, local, transport))
        else {
            return;
        };
        let b = w.recipient.clone().unwrap_or_default();
        let wait = Duration::from_secs(1);
        match pair(&mut w.users, &a, &b) {
            Some((caller, callee)) => {
                if caller.send_request(request, target).await.is_ok() {
                    // Both at once: a proxy relays the BYE's answer only
                    // once the far end has answered it.
                    let _ = tokio::join!(
                        caller.next_event(|e| final_response_to(e, rsip::Method::Bye), wait),
                        answer_when_it_comes(callee, rsip::Method::Bye, 200, wait),
                    );
                }
            }
            None => {
                if let Some(caller) = w.users.get_mut(&a)
                    && caller.send_request(request, target).await.is_ok()
                {
                    let _ = caller
                        .next_event(|e| final_response_to(e, rsip::Method::Bye), wait)
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sut_is_its_address_over_udp_and_its_host_over_tcp() {
        let sut = Target::udp("127.0.0.1:5060".parse().unwrap());
        assert!(from_sut(
            sut,
            &Target::udp("127.0.0.1:5060".parse().unwrap())
        ));
        assert!(
            !from_sut(sut, &Target::udp("127.0.0.1:5070".parse().unwrap())),
            "another test user's port"
        );
        assert!(from_sut(
            sut,
            &Target::tcp("127.0.0.1:41234".parse().unwrap())
        ));
        assert!(!from_sut(
            sut,
            &Target::tcp("10.0.0.9:5060".parse().unwrap())
        ));
    }
}
