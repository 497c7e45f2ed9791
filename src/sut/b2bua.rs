//! The reference CPM server's first shape: originating and terminating
//! Participating Function of 1-1 sessions as a back-to-back user agent, as a
//! sans-IO state machine, reporting offline charging as `spec/flows.md` says
//! for 6.2.3.1, 6.2.3.4 and 6.2.3.7.
//!
//! Each session has two legs, each its own dialog with its own Call-ID: leg
//! A with the originator, leg B with the recipient. Charging: Start after
//! the recipient's 200 OK to the INVITE, Interim after the 200 OK to a
//! re-INVITE, Stop on a client's BYE, and on server termination (inactivity
//! timer, operator) a BYE on both legs, each function's Stop after its
//! user's answer. Every [`Deviation`] that breaks one of those rules is a
//! branch here, read from the configuration.
//!
//! Events and time go in ([`SessionCore::handle_sip`],
//! [`SessionCore::handle_timeout`], [`SessionCore::terminate`]); actions come
//! out ([`SessionCore::poll_action`]), with the next deadline
//! ([`SessionCore::poll_timeout`]). Time is only ever the `now` passed in.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rsip::headers::UntypedHeader as _;

use super::charging::{
    CreditControl, CreditOutcome, CreditState, FunctionCharging, SessionParties, Side, serves,
};
use super::config::{FailureHandlingMode, SutConfig};
use super::core::{Action, SessionCore, client_key};
use super::deviation::Deviation;
use super::proxy::{LATE_START, answered, start_again};
use crate::charging::ch1::Ch1Request;
use crate::charging::ch2::{Ch2Request, Ch2Response, ReportingReason};
use crate::profile::ChargedFunction;
use crate::sip::dialog::{Dialog, cancel_for, new_branch, new_call_id, new_tag};
use crate::sip::message::{self, other_header};
use crate::sip::transaction::{Target, TransportKind, TxEvent, TxKey, response_to};

type SessionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Online: leg B's INVITE is held until every InitialRequest is granted.
    Authorizing,
    /// INVITE forwarded, waiting for the recipient's final answer.
    Inviting,
    Established,
    /// The server sent BYE on both legs and waits for their 200 OK.
    ServerTerminating,
    Ended,
}

/// What a client transaction the server started is for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// The INVITE on leg B.
    Invite,
    /// A re-INVITE forwarded to `Side`, answering the server tx of the other side.
    ReInvite(Side),
    /// A BYE the server sent on one leg, because the other side hung up.
    ForwardedBye,
    /// A BYE the server sent on `Side` to end the session itself.
    ServerBye(Side),
    /// CANCEL of leg B's INVITE.
    Cancel,
}

#[derive(Debug)]
struct Leg {
    local_tag: String,
    dialog: Option<Dialog>,
    /// Where this leg's peer is reached.
    target: Target,
}

#[derive(Debug)]
struct Session {
    phase: Phase,
    a: Leg,
    b: Leg,
    /// Leg A's INVITE and its server transaction.
    invite_a: rsip::Request,
    invite_a_key: TxKey,
    /// Leg B's INVITE, for CANCEL and ACK.
    invite_b: rsip::Request,
    /// A re-INVITE being forwarded: the server tx waiting for the answer.
    pending_reinvite: Option<(TxKey, rsip::Request)>,
    functions: Vec<FunctionCharging>,
    parties: SessionParties,
    id: SessionId,
    last_activity: Instant,
    /// When the 200 OK went to the originator, until its ACK came.
    ok_sent: Option<Instant>,
    /// Online charging, one per online function (6.3.3).
    credits: Vec<CreditControl>,
    /// A re-INVITE held for its UpdateRequests: the request to forward,
    /// the side it goes to, where.
    held_reinvite: Option<(rsip::Request, Side, Target)>,
}

impl Session {
    fn leg(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

/// The B2BUA: every session, its two legs, the client transactions it
/// started.
#[derive(Debug)]
pub struct B2buaCore {
    config: Arc<SutConfig>,
    local: SocketAddr,
    transport: TransportKind,
    sessions: HashMap<SessionId, Session>,
    /// (Call-ID, our tag on that leg) → session and side.
    legs: HashMap<(String, String), (SessionId, Side)>,
    clients: HashMap<TxKey, (SessionId, Purpose)>,
    next_id: SessionId,
    /// Failed sessions whose Start is still due (deviation
    /// `late_start_after_failed_invite` only).
    late_starts: Vec<(Instant, Session)>,
    /// Online charging sessions whose session ended while their
    /// InitialRequest was unanswered: a granted one is terminated at once.
    orphans: Vec<(SessionId, CreditControl)>,
    actions: VecDeque<Action>,
}

impl SessionCore for B2buaCore {
    fn handle_sip(&mut self, event: TxEvent, now: Instant) {
        match event {
            TxEvent::Request {
                key,
                request,
                source,
            } => self.request(key, request, source, now),
            TxEvent::Response {
                key,
                response,
                retransmission,
                ..
            } => self.response(key, response, retransmission, now),
            TxEvent::Timeout { key } => self.timeout(key, now),
            TxEvent::Stray { reason, source } => {
                tracing::debug!(%reason, ?source, "reference server: stray SIP message");
            }
            TxEvent::Rejected { reason, source, .. } => {
                tracing::debug!(%reason, ?source, "reference server: request rejected by the endpoint");
            }
        }
    }

    /// Fires what is due at `now`: late Starts (deviation), then the
    /// inactivity timer of idle sessions.
    fn handle_timeout(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late_starts)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.late_starts = later;
        for (_, mut s) in due {
            charge(&mut self.actions, &mut s, FunctionCharging::start);
            self.actions.push_back(Action::Forget { session: s.id });
        }
        self.credit_timeouts(now);
        let Some(timer) = self.config.inactivity_timer else {
            return;
        };
        let mut expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Established && s.last_activity + timer <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.server_terminate(id, now);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let late = self.late_starts.iter().map(|(at, _)| *at).min();
        let idle = self.config.inactivity_timer.and_then(|timer| {
            self.sessions
                .values()
                .filter(|s| s.phase == Phase::Established)
                .map(|s| s.last_activity + timer)
                .min()
        });
        let credit = self
            .orphans
            .iter()
            .filter_map(|(_, c)| c.tx_deadline())
            .min();
        let credit = credit
            .into_iter()
            .chain(self.sessions.values().flat_map(|s| {
                s.credits.iter().filter_map(|c| {
                    if s.phase == Phase::Established {
                        c.next_deadline()
                    } else {
                        c.tx_deadline()
                    }
                })
            }));
        [late, idle].into_iter().flatten().chain(credit).min()
    }

    fn handle_charging_answer(
        &mut self,
        session: u64,
        function: ChargedFunction,
        answer: Result<Ch2Response, String>,
        now: Instant,
    ) {
        self.credit_answer(session, function, Some(answer), now);
    }

    fn terminate(&mut self, call_id: &str, now: Instant) -> bool {
        let found = self
            .legs
            .iter()
            .find(|((c, _), _)| c == call_id)
            .map(|(_, (id, _))| *id);
        match found {
            Some(id) if self.sessions.get(&id).map(|s| s.phase) == Some(Phase::Established) => {
                self.server_terminate(id, now);
                true
            }
            _ => false,
        }
    }

    /// A request that could not be sent: as the server did when sending
    /// failed at once, not as a transaction timeout.
    fn send_failed(&mut self, key: TxKey, now: Instant) {
        let Some((id, purpose)) = self.clients.remove(&key) else {
            return;
        };
        match purpose {
            Purpose::Invite => {
                tracing::warn!("reference server: leg B INVITE not sent");
                if let Some(s) = self.sessions.get(&id) {
                    let (k, r) = (s.invite_a_key.clone(), s.invite_a.clone());
                    self.respond(&k, &r, 503, None);
                }
                self.end(id, now);
            }
            Purpose::ReInvite(_) => {
                if let Some((k, r)) = self
                    .sessions
                    .get_mut(&id)
                    .and_then(|s| s.pending_reinvite.take())
                {
                    self.respond(&k, &r, 500, None);
                }
            }
            Purpose::ForwardedBye | Purpose::ServerBye(_) | Purpose::Cancel => {}
        }
    }
}

impl B2buaCore {
    /// A B2BUA reachable at `local` over `transport`.
    pub fn new(config: Arc<SutConfig>, local: SocketAddr, transport: TransportKind) -> Self {
        Self {
            config,
            local,
            transport,
            sessions: HashMap::new(),
            legs: HashMap::new(),
            clients: HashMap::new(),
            next_id: 1,
            late_starts: Vec::new(),
            orphans: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    fn has(&self, d: Deviation) -> bool {
        self.config.has(d)
    }

    fn respond(&mut self, key: &TxKey, request: &rsip::Request, status: u16, tag: Option<&str>) {
        let response = response_to(request, rsip::StatusCode::from(status), tag);
        self.actions.push_back(Action::Respond {
            key: key.clone(),
            response,
        });
    }

    /// Starts a client transaction for `purpose` in session `id`.
    fn send(&mut self, id: SessionId, purpose: Purpose, request: rsip::Request, target: Target) {
        let key = client_key(&request);
        self.clients.insert(key.clone(), (id, purpose));
        self.actions.push_back(Action::Request {
            key,
            request,
            target,
        });
    }

    fn stateless(&mut self, message: impl Into<rsip::SipMessage>, target: Target) {
        self.actions.push_back(Action::Stateless {
            message: message.into(),
            target,
        });
    }

    fn contact(&self) -> String {
        let t = match self.transport {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        };
        format!(
            "<sip:cpm@{};transport={t}>;+g.3gpp.icsi-ref=\"{}\"",
            self.local,
            message::CPM_SESSION_ICSI
        )
    }

    /// Our Contact as a SIP URI (the one in `contact()`), never a bare
    /// host:port: it goes into the Contact of our in-dialog requests.
    fn contact_uri(&self) -> rsip::Uri {
        let text = self.contact();
        rsip::Uri::try_from(crate::sip::dialog::uri_text(&text))
            .unwrap_or_else(|_| rsip::Uri::from(self.local))
    }

    fn find_leg(&self, request: &rsip::Request) -> Option<(SessionId, Side)> {
        let call_id = message::call_id(request).ok()?;
        let tag = message::to_tag(request)?;
        self.legs.get(&(call_id, tag)).copied()
    }

    // ---------------------------------------------------------------- requests

    fn request(
        &mut self,
        key: Option<TxKey>,
        request: rsip::Request,
        source: Target,
        now: Instant,
    ) {
        let in_dialog = message::to_tag(&request).is_some();
        match (request.method, in_dialog, key) {
            (rsip::Method::Invite, false, Some(key)) => {
                self.new_session(key, request, source, now);
            }
            (rsip::Method::Cancel, false, Some(key)) => self.cancel(key, request, now),
            (rsip::Method::Ack, _, _) => self.ack(&request, now),
            (_, true, Some(key)) => match self.find_leg(&request) {
                Some((id, side)) => self.in_dialog(id, side, key, request, now),
                None => self.respond(&key, &request, 481, None),
            },
            (_, false, Some(key)) => self.respond(&key, &request, 405, None),
            (_, _, None) => {}
        }
    }

    /// An ACK on a leg: activity; deviation `second_start_on_retransmitted_ok`
    /// takes an ACK later than T1 for a sign that the 200 OK was
    /// retransmitted, and charges that as a new Start.
    fn ack(&mut self, request: &rsip::Request, now: Instant) {
        let second_start = self.has(Deviation::SecondStartOnRetransmittedOk);
        let t1 = self.config.sip.timers().t1;
        let Some((id, _)) = self.find_leg(request) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.last_activity = now;
        if let Some(sent) = s.ok_sent.take()
            && second_start
            && now.saturating_duration_since(sent) >= t1
        {
            charge_start_again(&mut self.actions, &self.config, s);
        }
    }

    /// An initial INVITE from an originator: forward it to the recipient on
    /// a new leg, with its own Call-ID.
    fn new_session(&mut self, key: TxKey, invite_a: rsip::Request, source: Target, now: Instant) {
        let (Ok(call_id_a), Some(calling), Some(called)) = (
            message::call_id(&invite_a),
            message::from_uri(&invite_a),
            message::to_uri(&invite_a),
        ) else {
            self.respond(&key, &invite_a, 400, None);
            return;
        };
        // RFC 3261 §17.2.1: the recipient may take longer than 200 ms to
        // answer; 100 Trying stops the originator's retransmissions.
        self.respond(&key, &invite_a, 100, None);
        let id = self.next_id;
        self.next_id += 1;
        let tag_a = new_tag();
        let tag_b = new_tag();
        let call_id_b = new_call_id(&self.local.ip().to_string());
        let target_b = Target {
            transport: self.transport,
            addr: self.config.route_users_to,
        };
        let invite_b = match self.forwarded_invite(&invite_a, &calling, &called, &call_id_b, &tag_b)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reference server: cannot build leg B INVITE");
                self.respond(&key, &invite_a, 500, None);
                return;
            }
        };
        let parties = SessionParties {
            calling_party: calling,
            called_party: called,
            call_id: call_id_a.clone(),
        };
        let functions = match &self.config.charging {
            Some(c) => c
                .functions
                .iter()
                .filter_map(|f| FunctionCharging::new(*f, &self.config, &parties, id))
                .collect(),
            None => Vec::new(),
        };
        // Deviation: the server forgets online charging altogether.
        let online = self
            .config
            .online
            .as_ref()
            .filter(|_| !self.has(Deviation::NoCreditControl));
        let credits: Vec<CreditControl> = match online {
            Some(o) => o
                .functions
                .iter()
                .filter_map(|f| CreditControl::new(*f, &self.config, &parties, id))
                .collect(),
            None => Vec::new(),
        };
        let mut session = Session {
            phase: Phase::Inviting,
            a: Leg {
                local_tag: tag_a.clone(),
                dialog: None,
                target: source,
            },
            b: Leg {
                local_tag: tag_b.clone(),
                dialog: None,
                target: target_b,
            },
            invite_a,
            invite_a_key: key,
            invite_b: invite_b.clone(),
            pending_reinvite: None,
            functions,
            parties,
            id,
            last_activity: now,
            ok_sent: None,
            credits,
            held_reinvite: None,
        };
        self.legs.insert((call_id_a, tag_a), (id, Side::A));
        self.legs.insert((call_id_b, tag_b), (id, Side::B));
        if self.has(Deviation::StartBeforeAnswer) {
            charge(&mut self.actions, &mut session, FunctionCharging::start);
        }
        // 6.3.3.1: each online function's InitialRequest; the INVITE goes
        // on only once every one is granted.
        for c in &mut session.credits {
            let request = c.initial(now);
            credit(&mut self.actions, id, c, request);
        }
        let hold =
            !session.credits.is_empty() && !self.has(Deviation::ForwardInviteBeforeCreditAnswer);
        if hold {
            session.phase = Phase::Authorizing;
        }
        self.sessions.insert(id, session);
        if !hold {
            self.send(id, Purpose::Invite, invite_b, target_b);
        }
    }

    fn forwarded_invite(
        &self,
        invite_a: &rsip::Request,
        calling: &str,
        called: &str,
        call_id: &str,
        tag: &str,
    ) -> Result<rsip::Request, message::MessageError> {
        let t = match self.transport {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        };
        let mut extra = String::new();
        for name in ["Accept-Contact", "Conversation-ID", "Contribution-ID"] {
            if let Some(v) = other_header(&invite_a.headers, name) {
                extra.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        let content_type = invite_a
            .headers
            .iter()
            .find_map(|h| match h {
                rsip::Header::ContentType(c) => Some(c.to_string()),
                _ => None,
            })
            .and_then(|line| line.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "application/sdp".into());
        let body = String::from_utf8_lossy(&invite_a.body);
        let text = format!(
            "INVITE {called} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
             Max-Forwards: 69\r\n\
             From: <{calling}>;tag={tag}\r\n\
             To: <{called}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: {contact}\r\n\
             {extra}\
             Content-Type: {content_type}\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            local = self.local,
            branch = new_branch(),
            contact = self.contact(),
            len = body.len(),
        );
        message::parse_request(text)
    }

    /// A CANCEL of leg A's pending INVITE: answered, and leg B's cancelled.
    fn cancel(&mut self, key: TxKey, cancel: rsip::Request, now: Instant) {
        let call_id = message::call_id(&cancel).ok();
        let found = self
            .sessions
            .iter()
            .find(|(_, s)| {
                matches!(s.phase, Phase::Inviting | Phase::Authorizing)
                    && message::call_id(&s.invite_a).ok() == call_id
            })
            .map(|(id, _)| *id);
        let Some(id) = found else {
            self.respond(&key, &cancel, 481, None);
            return;
        };
        self.respond(&key, &cancel, 200, None);
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.phase == Phase::Authorizing {
            // Nothing went to the recipient yet.
            let terminated = response_to(
                &s.invite_a,
                rsip::StatusCode::RequestTerminated,
                Some(&s.a.local_tag),
            );
            let k = s.invite_a_key.clone();
            self.actions.push_back(Action::Respond {
                key: k,
                response: terminated,
            });
            self.end(id, now);
            return;
        }
        let cancel_b = cancel_for(&s.invite_b);
        let target = s.b.target;
        self.send(id, Purpose::Cancel, cancel_b, target);
    }

    fn in_dialog(
        &mut self,
        id: SessionId,
        side: Side,
        key: TxKey,
        request: rsip::Request,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            self.respond(&key, &request, 481, None);
            return;
        };
        s.last_activity = now;
        if let Some(d) = s.leg(side).dialog.as_mut()
            && d.handle_request(&request).is_err()
        {
            self.respond(&key, &request, 500, None);
            return;
        }
        match request.method {
            rsip::Method::Invite => self.reinvite(id, side, key, request, now),
            rsip::Method::Bye => self.client_bye(id, side, key, request, now),
            _ => self.respond(&key, &request, 200, None),
        }
    }

    /// A re-INVITE from either side: forward it, answer when the other side
    /// answers, then report an Interim (the figure of 6.2.3.4).
    fn reinvite(
        &mut self,
        id: SessionId,
        side: Side,
        key: TxKey,
        request: rsip::Request,
        now: Instant,
    ) {
        let (local, transport) = (self.local, self.transport);
        let deviate_early = self.has(Deviation::InterimBeforeReinviteAnswer);
        let update_after = self.has(Deviation::UpdateAfterForwardingReinvite);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.phase != Phase::Established || s.pending_reinvite.is_some() {
            // RFC 3261 §14.2: 491 while another re-INVITE is pending.
            let status = if s.pending_reinvite.is_some() {
                491
            } else {
                500
            };
            self.respond(&key, &request, status, None);
            return;
        }
        let other = side.other();
        let target = s.leg(other).target;
        let Some(dialog) = s.leg(other).dialog.as_mut() else {
            self.respond(&key, &request, 500, None);
            return;
        };
        let mut forwarded = dialog.new_request(rsip::Method::Invite, local, transport);
        let ct = content_type(&request.headers);
        message::set_body(
            &mut forwarded.headers,
            &mut forwarded.body,
            &ct,
            &request.body,
        );
        s.pending_reinvite = Some((key, request));
        if deviate_early {
            charge(&mut self.actions, s, FunctionCharging::interim);
        }
        // 6.3.3.4 (figure): the UpdateRequests and their answers come
        // before the re-INVITE goes on.
        let open = |c: &&mut CreditControl| c.state == CreditState::Open;
        if !update_after && s.credits.iter_mut().any(|c| open(&c)) {
            for c in s.credits.iter_mut().filter(open) {
                let request = c.update(now, ReportingReason::RatingConditionChange);
                credit(&mut self.actions, id, c, request);
            }
            s.held_reinvite = Some((forwarded, other, target));
            return;
        }
        self.send(id, Purpose::ReInvite(other), forwarded, target);
    }

    /// A BYE from a client (6.2.3.7, client initiated): answer it, end the
    /// other leg, report Stop.
    fn client_bye(
        &mut self,
        id: SessionId,
        side: Side,
        key: TxKey,
        request: rsip::Request,
        now: Instant,
    ) {
        self.respond(&key, &request, 200, None);
        let (local, transport) = (self.local, self.transport);
        let no_stop = self.has(Deviation::NoStopOnBye);
        let no_stop_on_server_bye = self.has(Deviation::NoStopOnServerBye);
        let no_termination = self.has(Deviation::NoTerminationOnBye);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.phase == Phase::Ended {
            return;
        }
        let was_server_terminating = s.phase == Phase::ServerTerminating;
        s.phase = Phase::Ended;
        let never = no_stop || (was_server_terminating && no_stop_on_server_bye);
        if !never {
            charge(&mut self.actions, s, FunctionCharging::stop);
        }
        // 6.3.3.7 (client initiated): the TerminationRequest on the BYE.
        if !no_termination || was_server_terminating {
            terminate_credits(&mut self.actions, s, now, |_| true);
        }
        if was_server_terminating {
            return;
        }
        let other = side.other();
        let target = s.leg(other).target;
        let bye = s
            .leg(other)
            .dialog
            .as_mut()
            .map(|d| d.new_request(rsip::Method::Bye, local, transport));
        if let Some(bye) = bye {
            self.send(id, Purpose::ForwardedBye, bye, target);
        }
    }

    /// Ends a session at the server's initiative (inactivity timer, operator):
    /// BYE on both legs; each function's Stop waits for its user's 200 OK.
    fn server_terminate(&mut self, id: SessionId, now: Instant) {
        let (local, transport) = (self.local, self.transport);
        let early_stop = self.has(Deviation::StopBeforeByeOk);
        let late_termination = self.has(Deviation::TerminationAfterServerByeOk);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.phase != Phase::Established {
            return;
        }
        s.phase = Phase::ServerTerminating;
        if early_stop {
            charge(&mut self.actions, s, FunctionCharging::stop);
        }
        // 6.3.3.7 (server initiated): sending the BYE triggers the
        // TerminationRequest, which need not wait for the 200 OK.
        if !late_termination {
            terminate_credits(&mut self.actions, s, now, |_| true);
        }
        let mut byes = Vec::new();
        for side in [Side::A, Side::B] {
            let target = s.leg(side).target;
            if let Some(d) = s.leg(side).dialog.as_mut() {
                byes.push((
                    side,
                    target,
                    d.new_request(rsip::Method::Bye, local, transport),
                ));
            }
        }
        for (side, target, bye) in byes {
            self.send(id, Purpose::ServerBye(side), bye, target);
        }
    }

    // ------------------------------------------------------ online charging

    /// A CH-2 answer, or (None) its Tx running out.
    fn credit_answer(
        &mut self,
        id: SessionId,
        function: ChargedFunction,
        answer: Option<Result<Ch2Response, String>>,
        now: Instant,
    ) {
        let answer = answer.unwrap_or_else(|| Err("no answer within Tx".into()));
        let Some(online) = self.config.online.clone() else {
            return;
        };
        let after_refusal = self.has(Deviation::ForwardInviteAfterRefusal);
        let termination_after_refusal = self.has(Deviation::TerminationAfterRefusedInitial);
        let keep_quota = !self.has(Deviation::NoUpdateOnExhaustedQuota);
        let keep_validity = !self.has(Deviation::NoUpdateOnValidityTime);
        let Some(s) = self.sessions.get_mut(&id) else {
            // The session ended while its InitialRequest was out: a granted
            // one is closed at once.
            let found = self
                .orphans
                .iter()
                .position(|(sid, c)| *sid == id && c.function == function);
            if let Some(i) = found {
                let (_, mut c) = self.orphans.remove(i);
                if let Some((_, CreditOutcome::Granted)) = c.answered(answer, now)
                    && let Some(request) = c.termination(now)
                {
                    credit(&mut self.actions, id, &c, request);
                    self.actions.push_back(Action::Forget { session: id });
                }
            }
            return;
        };
        let Some(c) = s.credits.iter_mut().find(|c| c.function == function) else {
            return;
        };
        let refused_initial = c.state == CreditState::New;
        let Some((kind, outcome)) = c.answered(answer, now) else {
            return;
        };
        match outcome {
            CreditOutcome::Granted => c.forget_limits(keep_quota, keep_validity),
            CreditOutcome::NoAnswer if online.failure_handling == FailureHandlingMode::Continue => {
                // RFC 4006 CONTINUE: the session goes on without credit control.
                c.stop_control(true);
            }
            CreditOutcome::NoAnswer => {
                // TERMINATE (and RETRY_AND_TERMINATE, with no other server
                // to retry on): no more requests on this charging session.
                c.stop_control(false);
                self.credit_failed(id, 504, now);
                return;
            }
            CreditOutcome::Refused if kind == crate::charging::ch2::RequestType::Termination => {
                return;
            }
            CreditOutcome::Refused if refused_initial && after_refusal => c.stop_control(true),
            CreditOutcome::Refused => {
                if refused_initial {
                    // 6.3.3.1: a refused Initial ends the charging session,
                    // with no TerminationRequest.
                    if termination_after_refusal {
                        c.state = CreditState::Open;
                        if let Some(request) = c.termination(now) {
                            credit(&mut self.actions, id, c, request);
                        }
                    }
                    c.stop_control(false);
                }
                // A refused Update ends the session: BYE and Termination.
                self.credit_failed(id, online.refusal_status, now);
                return;
            }
        }
        self.credit_progress(id);
    }

    /// Credit refused or not answered: the held INVITE is rejected with
    /// `status`, an established session ends.
    fn credit_failed(&mut self, id: SessionId, status: u16, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match s.phase {
            Phase::Authorizing | Phase::Inviting => {
                let rejection = response_to(
                    &s.invite_a,
                    rsip::StatusCode::from(status),
                    Some(&s.a.local_tag),
                );
                let key = s.invite_a_key.clone();
                let cancel =
                    (s.phase == Phase::Inviting).then(|| (cancel_for(&s.invite_b), s.b.target));
                self.actions.push_back(Action::Respond {
                    key,
                    response: rejection,
                });
                if let Some((cancel, target)) = cancel {
                    self.send(id, Purpose::Cancel, cancel, target);
                }
                self.end(id, now);
            }
            Phase::Established => {
                if s.held_reinvite.take().is_some()
                    && let Some((key, reinvite)) = s.pending_reinvite.take()
                {
                    self.respond(&key, &reinvite, status, None);
                }
                self.server_terminate(id, now);
            }
            Phase::ServerTerminating | Phase::Ended => {}
        }
    }

    /// Sends what waited for credit once nothing is pending: the INVITE
    /// (6.3.3.1), a re-INVITE (6.3.3.4).
    fn credit_progress(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.credits.iter().any(CreditControl::is_pending) {
            return;
        }
        if s.phase == Phase::Authorizing {
            s.phase = Phase::Inviting;
            let (invite, target) = (s.invite_b.clone(), s.b.target);
            self.send(id, Purpose::Invite, invite, target);
        } else if let Some((request, side, target)) = s.held_reinvite.take() {
            self.send(id, Purpose::ReInvite(side), request, target);
        }
    }

    /// Tx expiries, then granted time and Validity-Time running out.
    fn credit_timeouts(&mut self, now: Instant) {
        let final_kept = self.has(Deviation::SessionKeptAfterFinalUnits);
        self.orphans.retain(|(_, c)| !c.tx_expired(now));
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let expired: Vec<ChargedFunction> = self.sessions[&id]
                .credits
                .iter()
                .filter(|c| c.tx_expired(now))
                .map(|c| c.function)
                .collect();
            for f in expired {
                self.credit_answer(id, f, None, now);
            }
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.phase != Phase::Established {
                continue;
            }
            let mut end = false;
            for c in &mut s.credits {
                if c.quota_deadline().is_some_and(|at| at <= now) {
                    if c.final_units && !final_kept {
                        end = true;
                    } else {
                        let request = c.update(now, ReportingReason::QuotaExhausted);
                        credit(&mut self.actions, id, c, request);
                    }
                } else if c.validity_deadline().is_some_and(|at| at <= now) {
                    let request = c.update(now, ReportingReason::ValidityTime);
                    credit(&mut self.actions, id, c, request);
                }
            }
            if end {
                // The final units are spent: the session ends (BYE on
                // both legs, TerminationRequest).
                self.server_terminate(id, now);
            }
        }
    }

    // --------------------------------------------------------------- responses

    fn response(
        &mut self,
        key: TxKey,
        response: rsip::Response,
        retransmission: bool,
        now: Instant,
    ) {
        let Some(&(id, purpose)) = self.clients.get(&key) else {
            return;
        };
        let code = response.status_code.code();
        if code < 200 {
            if let Purpose::Invite = purpose
                && code > 100
            {
                self.relay_provisional(id, code);
                if self.has(Deviation::StartOnRinging)
                    && let Some(s) = self.sessions.get_mut(&id)
                {
                    charge(&mut self.actions, s, FunctionCharging::start);
                }
            }
            return;
        }
        // A 2xx to an INVITE may come again until our ACK reaches its
        // sender: the transaction stays known, to ACK every retransmission
        // (RFC 3261 13.2.2.4), until the session ends.
        let invite_2xx =
            (200..300).contains(&code) && matches!(purpose, Purpose::Invite | Purpose::ReInvite(_));
        if !invite_2xx {
            self.clients.remove(&key);
        }
        match purpose {
            Purpose::Invite => self.invite_answered(id, &response, retransmission, now),
            Purpose::ReInvite(side) if retransmission => self.reack(id, side, &response),
            Purpose::ReInvite(side) => self.reinvite_answered(id, side, &response, now),
            Purpose::ServerBye(side) => self.server_bye_answered(id, side, now),
            Purpose::ForwardedBye => self.end(id, now),
            Purpose::Cancel => {}
        }
    }

    fn relay_provisional(&mut self, id: SessionId, code: u16) {
        let contact = self.contact();
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let mut response = response_to(
            &s.invite_a,
            rsip::StatusCode::from(code),
            Some(&s.a.local_tag),
        );
        // A tagged provisional makes an early dialog, which needs a Contact
        // (RFC 3261 §12.1.1).
        response.headers.push(rsip::Header::Contact(contact.into()));
        let key = s.invite_a_key.clone();
        self.actions.push_back(Action::Respond { key, response });
    }

    fn invite_answered(
        &mut self,
        id: SessionId,
        response: &rsip::Response,
        retransmission: bool,
        now: Instant,
    ) {
        let (local, transport) = (self.local, self.transport);
        let contact = self.contact_uri();
        let contact_text = self.contact();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let code = response.status_code.code();
        if !(200..300).contains(&code) {
            self.invite_failed(id, response, now);
            return;
        }
        let dialog_b = match Dialog::uac(&s.invite_b, response) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reference server: bad 2xx on leg B");
                return;
            }
        };
        let ack = dialog_b.ack(1, local, transport);
        let target_b = s.b.target;
        if retransmission {
            self.stateless(ack, target_b);
            if self.has(Deviation::SecondStartOnRetransmittedOk)
                && let Some(s) = self.sessions.get_mut(&id)
            {
                charge_start_again(&mut self.actions, &self.config, s);
            }
            return;
        }
        s.b.dialog = Some(dialog_b);
        let mut ok = response_to(&s.invite_a, rsip::StatusCode::OK, Some(&s.a.local_tag));
        ok.headers.push(rsip::Header::Contact(contact_text.into()));
        let ct = content_type(&response.headers);
        message::set_body(&mut ok.headers, &mut ok.body, &ct, &response.body);
        match Dialog::uas(&s.invite_a, &s.a.local_tag, contact) {
            Ok(d) => s.a.dialog = Some(d),
            Err(e) => tracing::warn!(error = %e, "reference server: bad INVITE on leg A"),
        }
        s.phase = Phase::Established;
        s.last_activity = now;
        s.ok_sent = Some(now);
        for c in &mut s.credits {
            c.start_usage(now);
        }
        let key_a = s.invite_a_key.clone();
        self.stateless(ack, target_b);
        self.actions.push_back(Action::Respond {
            key: key_a,
            response: ok,
        });
        // 6.2.3.1: the recipient's 200 OK starts charging.
        let early = self.has(Deviation::InterimBeforeStart);
        if !self.has(Deviation::NoStartOnAnswer)
            && let Some(s) = self.sessions.get_mut(&id)
        {
            charge(&mut self.actions, s, |f| answered(f, early));
        }
    }

    /// The recipient refused: the originator gets its status; nothing is
    /// charged unless deviating.
    fn invite_failed(&mut self, id: SessionId, response: &rsip::Response, now: Instant) {
        let failed_start = self.has(Deviation::StartOnFailedInvite);
        let failed_event = self.has(Deviation::EventOnFailedInvite);
        let late_start = self.has(Deviation::LateStartAfterFailedInvite);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let failure = response_to(
            &s.invite_a,
            response.status_code.clone(),
            Some(&s.a.local_tag),
        );
        if failed_start {
            charge(&mut self.actions, s, FunctionCharging::start);
        }
        if failed_event {
            charge(&mut self.actions, s, FunctionCharging::failed_attempt);
        }
        charge(&mut self.actions, s, FunctionCharging::stop);
        let key_a = s.invite_a_key.clone();
        self.actions.push_back(Action::Respond {
            key: key_a,
            response: failure,
        });
        if late_start && let Some(s) = self.sessions.remove(&id) {
            self.legs.retain(|_, (sid, _)| *sid != id);
            self.clients.retain(|_, (sid, _)| *sid != id);
            self.late_starts.push((now + LATE_START, s));
            return;
        }
        self.end(id, now);
    }

    fn reinvite_answered(
        &mut self,
        id: SessionId,
        answered_side: Side,
        response: &rsip::Response,
        now: Instant,
    ) {
        let update_after = self.has(Deviation::UpdateAfterForwardingReinvite);
        let (local, transport) = (self.local, self.transport);
        let no_interim = self.has(Deviation::NoInterimOnReinvite);
        let early_interim = self.has(Deviation::InterimBeforeReinviteAnswer);
        let interim_on_rejected = self.has(Deviation::InterimOnRejectedReinvite);
        let contact_text = self.contact();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some((key, reinvite)) = s.pending_reinvite.take() else {
            return;
        };
        let code = response.status_code.code();
        let target = s.leg(answered_side).target;
        if (200..300).contains(&code)
            && let Some(d) = s.leg(answered_side).dialog.as_mut()
        {
            d.handle_response(response);
            if let Ok((cseq, _)) = message::cseq(response) {
                let ack = d.ack(cseq, local, transport);
                self.actions.push_back(Action::Stateless {
                    message: ack.into(),
                    target,
                });
            }
        }
        // Answer the origin side's re-INVITE with the other side's status and SDP.
        let mut answer = response_to(&reinvite, response.status_code.clone(), None);
        if (200..300).contains(&code) {
            answer
                .headers
                .push(rsip::Header::Contact(contact_text.into()));
        }
        if !response.body.is_empty() {
            let ct = content_type(&response.headers);
            message::set_body(&mut answer.headers, &mut answer.body, &ct, &response.body);
        }
        self.actions.push_back(Action::Respond {
            key,
            response: answer,
        });
        // 6.2.3.4 (figure): the Interim follows the recipients' 200 OK.
        let interim = if (200..300).contains(&code) {
            !no_interim && !early_interim
        } else {
            interim_on_rejected
        };
        if interim && let Some(s) = self.sessions.get_mut(&id) {
            charge(&mut self.actions, s, FunctionCharging::interim);
        }
        if update_after
            && (200..300).contains(&code)
            && let Some(s) = self.sessions.get_mut(&id)
        {
            for c in s
                .credits
                .iter_mut()
                .filter(|c| c.state == CreditState::Open)
            {
                let request = c.update(now, ReportingReason::RatingConditionChange);
                credit(&mut self.actions, id, c, request);
            }
        }
    }

    /// ACKs a retransmitted 2xx to a re-INVITE we forwarded (RFC 3261
    /// 13.2.2.4): our first ACK was lost, or is still on its way.
    fn reack(&mut self, id: SessionId, side: Side, response: &rsip::Response) {
        let (local, transport) = (self.local, self.transport);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let target = s.leg(side).target;
        if let Some(d) = s.leg(side).dialog.as_ref()
            && let Ok((cseq, _)) = message::cseq(response)
        {
            let ack = d.ack(cseq, local, transport);
            self.stateless(ack, target);
        }
    }

    /// A party answered (or never answered) the server's BYE: 6.2.3.7, the
    /// Stop of the function serving it only now.
    fn server_bye_answered(&mut self, id: SessionId, side: Side, now: Instant) {
        let late_termination = self.has(Deviation::TerminationAfterServerByeOk);
        let early_stop = self.has(Deviation::StopBeforeByeOk);
        let all_at_once = self.has(Deviation::StopAllOnFirstByeOk);
        let never = self.has(Deviation::NoStopOnServerBye);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        // 6.2.3.7 (server initiated): Stop only after the client's 200 OK.
        if !early_stop && !never {
            for f in &mut s.functions {
                if serves(f.function, side) || all_at_once {
                    for request in f.stop() {
                        self.actions.push_back(Action::Charge {
                            session: id,
                            function: f.function,
                            request,
                        });
                    }
                }
            }
        }
        if late_termination {
            terminate_credits(&mut self.actions, s, now, |f| serves(f, side));
        }
        let waiting = self
            .clients
            .values()
            .any(|(sid, p)| *sid == id && matches!(p, Purpose::ServerBye(_)));
        if !waiting {
            self.end(id, now);
        }
    }

    fn timeout(&mut self, key: TxKey, now: Instant) {
        let Some((id, purpose)) = self.clients.remove(&key) else {
            return;
        };
        match purpose {
            Purpose::Invite => {
                if let Some(s) = self.sessions.get(&id) {
                    let r = response_to(
                        &s.invite_a,
                        rsip::StatusCode::RequestTimeout,
                        Some(&s.a.local_tag),
                    );
                    let k = s.invite_a_key.clone();
                    self.actions.push_back(Action::Respond {
                        key: k,
                        response: r,
                    });
                }
                self.end(id, now);
            }
            Purpose::ServerBye(side) => self.server_bye_answered(id, side, now),
            Purpose::ReInvite(side) => {
                let fake = rsip::Response {
                    status_code: rsip::StatusCode::RequestTimeout,
                    version: rsip::Version::V2,
                    headers: Default::default(),
                    body: Vec::new(),
                };
                self.reinvite_answered(id, side, &fake, now);
            }
            Purpose::ForwardedBye => self.end(id, now),
            Purpose::Cancel => {}
        }
    }

    /// Forgets a session once nothing more can happen in it.
    fn end(&mut self, id: SessionId, now: Instant) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        // Online: an open charging session is terminated (a failed
        // attempt debits nothing); one whose InitialRequest is unanswered
        // waits for it.
        // Deviation no_termination_on_bye: the safety net forgets too.
        let uncharged = self.has(Deviation::NoTerminationOnBye) && s.phase == Phase::Ended;
        for mut c in std::mem::take(&mut s.credits) {
            if c.state == CreditState::New && c.is_pending() {
                self.orphans.push((id, c));
            } else if !uncharged && let Some(request) = c.termination(now) {
                credit(&mut self.actions, id, &c, request);
            }
        }
        // Whatever is still open is closed; a correct server has sent its
        // Stop already and this sends nothing.
        let never = self.has(Deviation::NoStopOnBye)
            || (s.phase == Phase::ServerTerminating && self.has(Deviation::NoStopOnServerBye));
        if s.phase != Phase::Inviting && !never {
            charge(&mut self.actions, &mut s, FunctionCharging::stop);
        }
        self.legs.retain(|_, (sid, _)| *sid != id);
        self.clients.retain(|_, (sid, _)| *sid != id);
        self.actions.push_back(Action::Forget { session: id });
    }
}

/// Queues a CH-2 request of one online function.
fn credit(actions: &mut VecDeque<Action>, id: SessionId, c: &CreditControl, request: Ch2Request) {
    actions.push_back(Action::Credit {
        session: id,
        function: c.function,
        request,
    });
}

/// The TerminationRequest of every open online function `which` accepts.
fn terminate_credits(
    actions: &mut VecDeque<Action>,
    s: &mut Session,
    now: Instant,
    which: impl Fn(ChargedFunction) -> bool,
) {
    for c in s.credits.iter_mut().filter(|c| which(c.function)) {
        if let Some(request) = c.termination(now) {
            credit(actions, s.id, c, request);
        }
    }
}

/// Deviation `second_start_on_retransmitted_ok`: each function's Start once
/// more, as if the session began again (same Session-Id).
fn charge_start_again(actions: &mut VecDeque<Action>, config: &SutConfig, s: &mut Session) {
    for f in &s.functions {
        for request in start_again(config, &s.parties, s.id, f.function) {
            actions.push_back(Action::Charge {
                session: s.id,
                function: f.function,
                request,
            });
        }
    }
}

/// Queues what every charged function of the session reports for an event.
fn charge(
    actions: &mut VecDeque<Action>,
    s: &mut Session,
    event: impl Fn(&mut FunctionCharging) -> Vec<Ch1Request>,
) {
    for f in &mut s.functions {
        for request in event(f) {
            actions.push_back(Action::Charge {
                session: s.id,
                function: f.function,
                request,
            });
        }
    }
}

fn content_type(headers: &rsip::Headers) -> String {
    headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::ContentType(c) => Some(c.value().to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "application/sdp".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::charging::ch1::RecordType;
    use crate::profile::{ChargedFunction, Transport};
    use crate::sip::transaction::Role;
    use crate::sut::config::{ChargingConfig, Shape, SipConfig};

    const SUT: &str = "127.0.0.1:5060";
    const HARNESS: &str = "127.0.0.1:5070";

    fn config(deviations: Vec<Deviation>) -> Arc<SutConfig> {
        Arc::new(SutConfig {
            sip: SipConfig {
                listen: SUT.parse().unwrap(),
                transport: Transport::Udp,
                t1: Some(Duration::from_millis(500)),
            },
            shape: Shape::B2bua,
            domain: "test.invalid".into(),
            route_users_to: HARNESS.parse().unwrap(),
            charging: Some(ChargingConfig {
                server: "127.0.0.1:3868".parse().unwrap(),
                origin_host: "h".into(),
                origin_realm: "r".into(),
                destination_realm: "dr".into(),
                functions: vec![
                    ChargedFunction::OriginatingPf,
                    ChargedFunction::TerminatingPf,
                ],
                service_context_id: "s".into(),
                served_user_in_start_only: false,
                reconnect_max: None,
                connect_after: None,
            }),
            inactivity_timer: Some(Duration::from_millis(1500)),
            admin: None,
            deviations,
            conference: None,
            online: None,
        })
    }

    fn core(deviations: Vec<Deviation>) -> B2buaCore {
        B2buaCore::new(config(deviations), SUT.parse().unwrap(), TransportKind::Udp)
    }

    fn harness() -> Target {
        Target::udp(HARNESS.parse().unwrap())
    }

    fn parse(text: String) -> rsip::Request {
        message::parse_request(text).unwrap()
    }

    fn server_key(request: &rsip::Request) -> TxKey {
        let via = crate::sip::transaction::top_via(&request.headers).unwrap();
        TxKey {
            branch: via.branch.unwrap(),
            method: request.method.to_string(),
            sent_by: via.sent_by,
            role: Role::Server,
        }
    }

    fn incoming(request: rsip::Request) -> TxEvent {
        let key = (request.method != rsip::Method::Ack).then(|| server_key(&request));
        TxEvent::Request {
            key,
            request,
            source: harness(),
        }
    }

    fn invite() -> rsip::Request {
        parse(format!(
            "INVITE sip:bob@test.invalid SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch=z9hG4bKinv\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@test.invalid>;tag=a1\r\n\
             To: <sip:bob@test.invalid>\r\n\
             Call-ID: one@test\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{HARNESS};transport=udp>\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    }

    /// The dialog identifiers of an established session's two legs.
    struct Legs {
        /// Our tag on leg A (alice's Call-ID `one@test`).
        tag_a: String,
        /// Leg B's Call-ID and our tag on it.
        call_id_b: String,
        tag_b: String,
    }

    /// An in-dialog request from alice (leg A) or bob (leg B).
    fn in_dialog(legs: &Legs, method: &str, from_a: bool, cseq: u32) -> rsip::Request {
        let (user, from, to, call_id) = if from_a {
            (
                "alice",
                "<sip:alice@test.invalid>;tag=a1".to_owned(),
                format!("<sip:bob@test.invalid>;tag={}", legs.tag_a),
                "one@test".to_owned(),
            )
        } else {
            (
                "bob",
                "<sip:bob@test.invalid>;tag=b1".to_owned(),
                format!("<sip:alice@test.invalid>;tag={}", legs.tag_b),
                legs.call_id_b.clone(),
            )
        };
        parse(format!(
            "{method} sip:cpm@{SUT};transport=udp SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch={}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{HARNESS};transport=udp>\r\n\
             Content-Length: 0\r\n\r\n",
            new_branch(),
        ))
    }

    fn drain(core: &mut B2buaCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    /// A compact view of actions: `respond 200`, `request INVITE`, `charge Start`.
    fn shape(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Request { request, .. } => format!("request {}", request.method),
                Action::Respond { response, .. } => {
                    format!("respond {}", response.status_code.code())
                }
                Action::Stateless { message, .. } => match message {
                    rsip::SipMessage::Request(r) => format!("stateless {}", r.method),
                    rsip::SipMessage::Response(r) => {
                        format!("stateless {}", r.status_code.code())
                    }
                },
                Action::Charge {
                    function, request, ..
                } => format!("charge {:?} {:?}", request.kind, function),
                Action::Credit {
                    function, request, ..
                } => format!("credit {:?} {:?}", request.kind, function),
                Action::Forget { .. } => "forget".into(),
            })
            .collect()
    }

    fn requests(actions: &[Action]) -> Vec<(TxKey, rsip::Request, Target)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request {
                    key,
                    request,
                    target,
                } => Some((key.clone(), request.clone(), *target)),
                _ => None,
            })
            .collect()
    }

    fn answer(key: &TxKey, request: &rsip::Request, status: u16, who: &str) -> TxEvent {
        let mut response = response_to(request, rsip::StatusCode::from(status), Some("b1"));
        if (101..300).contains(&status) {
            response
                .headers
                .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                    "<sip:{who}@{HARNESS};transport=udp>"
                ))));
        }
        TxEvent::Response {
            key: key.clone(),
            response,
            retransmission: false,
            source: harness(),
        }
    }

    fn retransmitted(event: TxEvent) -> TxEvent {
        match event {
            TxEvent::Response {
                key,
                response,
                source,
                ..
            } => TxEvent::Response {
                key,
                response,
                retransmission: true,
                source,
            },
            other => other,
        }
    }

    const START: [&str; 2] = ["charge Start OriginatingPf", "charge Start TerminatingPf"];

    /// alice's INVITE forwarded on leg B, bob's 200 OK: the established
    /// session; returns its legs and leg B's INVITE key and request.
    fn establish(b: &mut B2buaCore, t0: Instant) -> (Legs, TxKey, rsip::Request) {
        b.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = requests(&drain(b)).remove(0);
        b.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        let actions = drain(b);
        let tag_a = actions
            .iter()
            .find_map(|a| match a {
                Action::Respond { response, .. } => message::to_tag(response),
                _ => None,
            })
            .unwrap();
        let legs = Legs {
            tag_a,
            call_id_b: message::call_id(&forwarded).unwrap(),
            tag_b: message::from_tag(&forwarded).unwrap(),
        };
        (legs, key, forwarded)
    }

    #[test]
    fn a_new_leg_with_its_own_call_id_and_start_only_after_the_200_ok() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["respond 100", "request INVITE"]);
        let (key, forwarded, target) = requests(&actions).remove(0);
        assert_eq!(target, harness());
        assert_eq!(key, client_key(&forwarded));
        assert_ne!(message::call_id(&forwarded).unwrap(), "one@test");
        assert_ne!(message::from_tag(&forwarded).as_deref(), Some("a1"));

        b.handle_sip(answer(&key, &forwarded, 180, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["respond 180"],
            "no Start on ringing"
        );
        b.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            ["stateless ACK", "respond 200", START[0], START[1]]
        );
        let Action::Respond { key: k, response } = &actions[1] else {
            unreachable!()
        };
        assert_eq!(*k, server_key(&invite()), "answered on alice's INVITE");
        assert_eq!(message::call_id(response).unwrap(), "one@test");
    }

    #[test]
    fn a_cancelled_invite_cancels_leg_b_and_charges_nothing() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = requests(&drain(&mut b)).remove(0);
        b.handle_sip(incoming(cancel_for(&invite())), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["respond 200", "request CANCEL"]);
        let (_, cancel, _) = requests(&actions).remove(0);
        assert_eq!(
            client_key(&cancel).branch,
            key.branch,
            "the CANCEL shares leg B's INVITE branch"
        );
        b.handle_sip(answer(&key, &forwarded, 487, "bob"), t0);
        assert_eq!(shape(&drain(&mut b)), ["respond 487", "forget"]);
        assert!(!b.terminate("one@test", t0), "the session is gone");
    }

    #[test]
    fn a_reinvite_gives_an_interim_after_its_200_ok_and_a_rejected_one_none() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        let (legs, _, _) = establish(&mut b, t0);

        // bob's re-INVITE on leg B goes to alice on leg A.
        let reinvite = in_dialog(&legs, "INVITE", false, 2);
        b.handle_sip(incoming(reinvite.clone()), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["request INVITE"]);
        let (key, onward, _) = requests(&actions).remove(0);
        assert_eq!(message::call_id(&onward).unwrap(), "one@test");
        b.handle_sip(answer(&key, &onward, 200, "alice"), t0);
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            [
                "stateless ACK",
                "respond 200",
                "charge Interim OriginatingPf",
                "charge Interim TerminatingPf"
            ]
        );
        let Action::Respond { key: k, .. } = &actions[1] else {
            unreachable!()
        };
        assert_eq!(*k, server_key(&reinvite), "answered on bob's re-INVITE");
        // alice's 200 OK again: ACKed again, charged once.
        b.handle_sip(retransmitted(answer(&key, &onward, 200, "alice")), t0);
        assert_eq!(shape(&drain(&mut b)), ["stateless ACK"]);

        // alice's re-INVITE, which bob rejects: answered, not charged.
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", true, 2)), t0);
        let (key, onward, _) = requests(&drain(&mut b)).remove(0);
        assert_eq!(message::call_id(&onward).unwrap(), legs.call_id_b);
        b.handle_sip(answer(&key, &onward, 488, "bob"), t0);
        assert_eq!(shape(&drain(&mut b)), ["respond 488"]);
    }

    #[test]
    fn a_clients_bye_stops_charging_and_the_far_ends_200_ends_the_session() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        let (legs, _, _) = establish(&mut b, t0);
        b.handle_sip(incoming(in_dialog(&legs, "BYE", true, 2)), t0);
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            [
                "respond 200",
                "charge Stop OriginatingPf",
                "charge Stop TerminatingPf",
                "request BYE"
            ]
        );
        let (key, bye, _) = requests(&actions).remove(0);
        assert_eq!(message::call_id(&bye).unwrap(), legs.call_id_b, "on leg B");
        b.handle_sip(answer(&key, &bye, 200, "bob"), t0);
        assert_eq!(shape(&drain(&mut b)), ["forget"], "nothing charged twice");
    }

    #[test]
    fn the_operator_sends_bye_on_both_legs_and_stops_each_after_its_200_ok() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        assert!(!b.terminate("one@test", t0), "nothing established yet");
        let (legs, _, _) = establish(&mut b, t0);
        // Either leg's Call-ID names the session.
        assert!(b.terminate(&legs.call_id_b, t0));
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            ["request BYE", "request BYE"],
            "no Stop yet"
        );
        assert!(!b.terminate("one@test", t0), "already ending");
        let byes = requests(&actions);
        assert_eq!(message::call_id(&byes[0].1).unwrap(), "one@test");
        assert_eq!(message::call_id(&byes[1].1).unwrap(), legs.call_id_b);
        b.handle_sip(answer(&byes[0].0, &byes[0].1, 200, "alice"), t0);
        assert_eq!(shape(&drain(&mut b)), ["charge Stop OriginatingPf"]);
        b.handle_sip(answer(&byes[1].0, &byes[1].1, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["charge Stop TerminatingPf", "forget"]
        );
    }

    #[test]
    fn the_inactivity_timer_fires_at_its_virtual_time_counted_from_the_last_activity() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        let (legs, _, _) = establish(&mut b, t0);
        let timer = Duration::from_millis(1500);
        assert_eq!(b.poll_timeout(), Some(t0 + timer));
        // alice's ACK is activity: the timer starts again.
        let t1 = t0 + Duration::from_secs(1);
        b.handle_sip(incoming(in_dialog(&legs, "ACK", true, 1)), t1);
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), Some(t1 + timer));
        b.handle_timeout(t0 + timer);
        assert!(drain(&mut b).is_empty(), "not idle long enough");
        b.handle_timeout(t1 + timer - Duration::from_millis(1));
        assert!(drain(&mut b).is_empty(), "not yet");
        b.handle_timeout(t1 + timer);
        assert_eq!(shape(&drain(&mut b)), ["request BYE", "request BYE"]);
        assert_eq!(b.poll_timeout(), None, "the timer is spent");
    }

    #[test]
    fn a_retransmitted_2xx_to_the_invite_is_acked_again_and_charged_once() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        let (_, key, forwarded) = establish(&mut b, t0);
        b.handle_sip(retransmitted(answer(&key, &forwarded, 200, "bob")), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["stateless ACK"]);
        let Action::Stateless { message: m, target } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(*target, harness());
        let rsip::SipMessage::Request(ack) = m else {
            unreachable!()
        };
        assert_eq!(
            message::call_id(ack).unwrap(),
            message::call_id(&forwarded).unwrap()
        );
    }

    #[test]
    fn a_bye_nobody_answers_still_stops_each_function_when_it_times_out() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        establish(&mut b, t0);
        b.handle_timeout(t0 + Duration::from_secs(2));
        let byes = requests(&drain(&mut b));
        b.handle_sip(answer(&byes[0].0, &byes[0].1, 200, "alice"), t0);
        assert_eq!(shape(&drain(&mut b)), ["charge Stop OriginatingPf"]);
        b.handle_sip(
            TxEvent::Timeout {
                key: byes[1].0.clone(),
            },
            t0,
        );
        assert_eq!(
            shape(&drain(&mut b)),
            ["charge Stop TerminatingPf", "forget"]
        );
    }

    #[test]
    fn an_invite_that_cannot_be_sent_gets_503_and_charges_nothing() {
        let mut b = core(vec![]);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let (key, _, _) = requests(&drain(&mut b)).remove(0);
        b.send_failed(key, t0);
        assert_eq!(shape(&drain(&mut b)), ["respond 503", "forget"]);
    }

    #[test]
    fn deviations_are_branches_of_the_same_core() {
        let t0 = Instant::now();
        let mut b = core(vec![Deviation::StartBeforeAnswer]);
        b.handle_sip(incoming(invite()), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["respond 100", START[0], START[1], "request INVITE"]
        );

        let mut b = core(vec![Deviation::StopBeforeByeOk]);
        establish(&mut b, t0);
        assert!(b.terminate("one@test", t0));
        let kinds: Vec<RecordType> = drain(&mut b)
            .iter()
            .filter_map(|a| match a {
                Action::Charge { request, .. } => Some(request.kind),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, [RecordType::Stop, RecordType::Stop]);

        // A late ACK (after T1) passes for a retransmitted 200 OK.
        let mut b = core(vec![Deviation::SecondStartOnRetransmittedOk]);
        let (legs, _, _) = establish(&mut b, t0);
        b.handle_sip(
            incoming(in_dialog(&legs, "ACK", true, 1)),
            t0 + Duration::from_millis(500),
        );
        assert_eq!(shape(&drain(&mut b)), START);

        let mut b = core(vec![Deviation::LateStartAfterFailedInvite]);
        b.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = requests(&drain(&mut b)).remove(0);
        b.handle_sip(answer(&key, &forwarded, 486, "bob"), t0);
        assert_eq!(shape(&drain(&mut b)), ["respond 486"]);
        assert_eq!(b.poll_timeout(), Some(t0 + LATE_START));
        b.handle_timeout(t0 + LATE_START);
        assert_eq!(shape(&drain(&mut b)), [START[0], START[1], "forget"]);
        assert_eq!(b.poll_timeout(), None);
    }

    // ------------------------------------------------------------ online

    use crate::charging::ch2::{
        Ch2Request, CreditGrant, FinalUnitAction, ReportingReason, RequestType, ServiceUnits,
    };
    use crate::sut::config::{FailureHandlingMode, OnlineConfig};

    const ORIG: ChargedFunction = ChargedFunction::OriginatingPf;
    const INITIAL: &str = "credit Initial OriginatingPf";
    const UPDATE: &str = "credit Update OriginatingPf";
    const TERMINATION: &str = "credit Termination OriginatingPf";

    /// Online charging by the originating PF only; no offline charging, no
    /// inactivity timer, so that only CH-2 shows.
    fn online(deviations: Vec<Deviation>, failure_handling: FailureHandlingMode) -> B2buaCore {
        let mut c = (*config(deviations)).clone();
        if let Some(ch) = c.charging.as_mut() {
            ch.functions.clear();
        }
        c.inactivity_timer = None;
        c.online = Some(OnlineConfig {
            functions: vec![ORIG],
            failure_handling,
            ..OnlineConfig::default()
        });
        B2buaCore::new(Arc::new(c), SUT.parse().unwrap(), TransportKind::Udp)
    }

    fn ch2(actions: &[Action]) -> Vec<Ch2Request> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Credit { request, .. } => Some(request.clone()),
                _ => None,
            })
            .collect()
    }

    fn session_of(actions: &[Action]) -> u64 {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Credit { session, .. } => Some(*session),
                _ => None,
            })
            .unwrap()
    }

    /// A 2001 granting `seconds`, final units if `last`.
    fn grant(req: &Ch2Request, seconds: u32, last: bool) -> Result<Ch2Response, String> {
        let mut a = Ch2Response::for_request(req, 2001);
        a.credits.push(CreditGrant {
            granted: Some(ServiceUnits::seconds(seconds)),
            final_unit_action: last.then_some(FinalUnitAction::Terminate),
            ..CreditGrant::default()
        });
        Ok(a)
    }

    fn used(req: &Ch2Request) -> Option<u32> {
        req.used_units().and_then(|u| u.time)
    }

    /// An online session established at `t0` with `seconds` granted:
    /// its legs and charging session number.
    fn online_establish(b: &mut B2buaCore, t0: Instant, seconds: u32, last: bool) -> (Legs, u64) {
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(b);
        let id = session_of(&actions);
        let initial = ch2(&actions).remove(0);
        b.handle_charging_answer(id, ORIG, grant(&initial, seconds, last), t0);
        let (key, forwarded, _) = requests(&drain(b)).remove(0);
        b.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        let actions = drain(b);
        assert_eq!(shape(&actions), ["stateless ACK", "respond 200"]);
        let tag_a = actions
            .iter()
            .find_map(|a| match a {
                Action::Respond { response, .. } => message::to_tag(response),
                _ => None,
            })
            .unwrap();
        let legs = Legs {
            tag_a,
            call_id_b: message::call_id(&forwarded).unwrap(),
            tag_b: message::from_tag(&forwarded).unwrap(),
        };
        (legs, id)
    }

    #[test]
    fn online_the_invite_waits_for_the_initial_requests_answer() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            ["respond 100", INITIAL],
            "nothing forwarded yet"
        );
        let initial = ch2(&actions).remove(0);
        assert_eq!(
            (initial.kind, initial.request_number),
            (RequestType::Initial, 0)
        );
        assert_eq!(initial.requested_units(), Some(ServiceUnits::seconds(60)));
        assert_eq!(
            initial.served_user.as_deref(),
            Some("sip:alice@test.invalid")
        );
        assert_eq!(initial.call_id.as_deref(), Some("one@test"));
        assert_eq!(
            initial.role,
            Some(crate::charging::ch1::ChargedRole::OriginatingPf)
        );
        assert!(initial.service_information);
        // Time passes; still nothing.
        b.handle_timeout(t0 + Duration::from_secs(1));
        assert!(drain(&mut b).is_empty());
        let id = session_of(&actions);
        b.handle_charging_answer(
            id,
            ORIG,
            grant(&initial, 60, false),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(shape(&drain(&mut b)), ["request INVITE"]);
    }

    #[test]
    fn online_a_refused_initial_rejects_the_invite_forwards_nothing_and_terminates_nothing() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let initial = ch2(&actions).remove(0);
        let refusal = Ch2Response::for_request(&initial, 4012);
        b.handle_charging_answer(session_of(&actions), ORIG, Ok(refusal), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["respond 402", "forget"]);
        assert_eq!(b.poll_timeout(), None, "nothing more to come");

        // An MSCC-level refusal under a 2001 refuses too.
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let initial = ch2(&actions).remove(0);
        let mut refusal = Ch2Response::for_request(&initial, 2001);
        refusal.credits.push(CreditGrant {
            result_code: Some(4010),
            ..CreditGrant::default()
        });
        b.handle_charging_answer(session_of(&actions), ORIG, Ok(refusal), t0);
        assert_eq!(shape(&drain(&mut b)), ["respond 402", "forget"]);
    }

    #[test]
    fn online_a_reinvite_waits_for_its_update_which_reports_the_time_used() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        let (legs, id) = online_establish(&mut b, t0, 60, false);
        let t1 = t0 + Duration::from_secs(12);
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", false, 2)), t1);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), [UPDATE], "the re-INVITE is held");
        let update = ch2(&actions).remove(0);
        assert_eq!(update.request_number, 1);
        assert_eq!(used(&update), Some(12));
        assert_eq!(update.requested_units(), Some(ServiceUnits::seconds(60)));
        b.handle_charging_answer(id, ORIG, grant(&update, 60, false), t1);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["request INVITE"]);
        let (key, onward, _) = requests(&actions).remove(0);
        b.handle_sip(answer(&key, &onward, 200, "alice"), t1);
        assert_eq!(shape(&drain(&mut b)), ["stateless ACK", "respond 200"]);

        // A refused Update ends the session: BYE on both legs, Termination.
        let t2 = t1 + Duration::from_secs(3);
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", true, 2)), t2);
        let update = ch2(&drain(&mut b)).remove(0);
        b.handle_charging_answer(id, ORIG, Ok(Ch2Response::for_request(&update, 4012)), t2);
        let actions = drain(&mut b);
        assert_eq!(
            shape(&actions),
            ["respond 402", TERMINATION, "request BYE", "request BYE"]
        );
        assert_eq!(ch2(&actions)[0].request_number, 3);
    }

    #[test]
    fn online_a_clients_bye_terminates_with_the_seconds_used() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        let t1 = t0 + Duration::from_secs(30);
        b.handle_sip(incoming(in_dialog(&legs, "BYE", true, 2)), t1);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["respond 200", TERMINATION, "request BYE"]);
        let t = ch2(&actions).remove(0);
        assert_eq!((t.request_number, used(&t)), (1, Some(30)));
        assert_eq!(t.reporting_reason(), Some(ReportingReason::Final));
        assert_eq!(t.requested_units(), None);

        // Deviation no_termination_on_bye: the BYE goes on, uncharged.
        let mut b = online(
            vec![Deviation::NoTerminationOnBye],
            FailureHandlingMode::Terminate,
        );
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "BYE", true, 2)), t1);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["respond 200", "request BYE"]);
        let byes = requests(&actions);
        b.handle_sip(answer(&byes[0].0, &byes[0].1, 200, "bob"), t1);
        assert!(
            ch2(&drain(&mut b)).is_empty(),
            "nor when the far end answers"
        );
    }

    #[test]
    fn online_a_server_bye_terminates_at_once_before_the_200_ok() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        let (_, _) = online_establish(&mut b, t0, 60, false);
        let t1 = t0 + Duration::from_secs(5);
        assert!(b.terminate("one@test", t1));
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), [TERMINATION, "request BYE", "request BYE"]);
        assert_eq!(used(&ch2(&actions)[0]), Some(5));
        let byes = requests(&actions);
        b.handle_sip(answer(&byes[0].0, &byes[0].1, 200, "alice"), t1);
        b.handle_sip(answer(&byes[1].0, &byes[1].1, 200, "bob"), t1);
        assert_eq!(shape(&drain(&mut b)), ["forget"], "nothing charged twice");
    }

    #[test]
    fn online_final_units_end_the_session_when_they_run_out_other_units_are_renewed() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        online_establish(&mut b, t0, 20, true);
        let at = t0 + Duration::from_secs(20);
        assert_eq!(b.poll_timeout(), Some(at));
        b.handle_timeout(at - Duration::from_millis(1));
        assert!(drain(&mut b).is_empty());
        b.handle_timeout(at);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), [TERMINATION, "request BYE", "request BYE"]);
        assert_eq!(used(&ch2(&actions)[0]), Some(20));
        let tx = OnlineConfig::default().tx;
        assert_eq!(b.poll_timeout(), Some(at + tx), "only the Termination's Tx");
        b.handle_timeout(at + tx);
        assert!(
            drain(&mut b).is_empty(),
            "an unanswered Termination changes nothing"
        );
        assert_eq!(b.poll_timeout(), None);

        // Not the final units: an Update (QUOTA_EXHAUSTED), the session goes on.
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let (_, id) = online_establish(&mut b, t0, 20, false);
        b.handle_timeout(at);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), [UPDATE]);
        let update = ch2(&actions).remove(0);
        assert_eq!(
            update.reporting_reason(),
            Some(ReportingReason::QuotaExhausted)
        );
        assert_eq!(used(&update), Some(20));
        b.handle_charging_answer(id, ORIG, grant(&update, 20, false), at);
        assert_eq!(b.poll_timeout(), Some(at + Duration::from_secs(20)));
    }

    #[test]
    fn online_validity_time_asks_again() {
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let (id, initial) = (session_of(&actions), ch2(&actions).remove(0));
        let mut a = grant(&initial, 600, false).unwrap();
        a.credits[0].validity_time = Some(10);
        b.handle_charging_answer(id, ORIG, Ok(a), t0);
        let (key, forwarded, _) = requests(&drain(&mut b)).remove(0);
        b.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        drain(&mut b);
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        b.handle_timeout(t0 + Duration::from_secs(10));
        let update = ch2(&drain(&mut b)).remove(0);
        assert_eq!(
            update.reporting_reason(),
            Some(ReportingReason::ValidityTime)
        );
    }

    #[test]
    fn online_no_answer_within_tx_terminate_rejects_504_continue_goes_on_unchecked() {
        let tx = OnlineConfig::default().tx;
        let t0 = Instant::now();
        let mut b = online(vec![], FailureHandlingMode::Terminate);
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let (id, initial) = (session_of(&actions), ch2(&actions).remove(0));
        assert_eq!(b.poll_timeout(), Some(t0 + tx));
        b.handle_timeout(t0 + tx);
        assert_eq!(shape(&drain(&mut b)), ["respond 504", "forget"]);
        // The late answer finds nothing.
        b.handle_charging_answer(id, ORIG, grant(&initial, 60, false), t0 + tx * 2);
        assert!(drain(&mut b).is_empty());

        // An established session whose Update is not answered ends.
        let mut b = online(vec![], FailureHandlingMode::RetryAndTerminate);
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", true, 2)), t0);
        assert_eq!(shape(&drain(&mut b)), [UPDATE]);
        b.handle_timeout(t0 + tx);
        assert_eq!(
            shape(&drain(&mut b)),
            ["respond 504", "request BYE", "request BYE"],
            "no Termination after the unanswered Update"
        );

        let mut b = online(vec![], FailureHandlingMode::Continue);
        b.handle_sip(incoming(invite()), t0);
        drain(&mut b);
        b.handle_timeout(t0 + tx);
        assert_eq!(
            shape(&drain(&mut b)),
            ["request INVITE"],
            "forwarded all the same"
        );
        assert_eq!(b.poll_timeout(), None, "no credit control any more");
    }

    #[test]
    fn online_and_offline_at_once() {
        let mut c = (*config(vec![])).clone();
        c.inactivity_timer = None;
        c.online = Some(OnlineConfig::default());
        let mut b = B2buaCore::new(Arc::new(c), SUT.parse().unwrap(), TransportKind::Udp);
        let t0 = Instant::now();
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let (id, initial) = (session_of(&actions), ch2(&actions).remove(0));
        b.handle_charging_answer(id, ORIG, grant(&initial, 60, false), t0);
        let (key, forwarded, _) = requests(&drain(&mut b)).remove(0);
        b.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["stateless ACK", "respond 200", START[0], START[1]]
        );
    }

    #[test]
    fn online_deviations_are_branches_of_the_same_core() {
        let t0 = Instant::now();
        let none = FailureHandlingMode::Terminate;
        let mut b = online(vec![Deviation::ForwardInviteBeforeCreditAnswer], none);
        b.handle_sip(incoming(invite()), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["respond 100", INITIAL, "request INVITE"]
        );

        let mut b = online(vec![Deviation::TerminationAfterRefusedInitial], none);
        b.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut b);
        let initial = ch2(&actions).remove(0);
        let refusal = Ch2Response::for_request(&initial, 4012);
        b.handle_charging_answer(session_of(&actions), ORIG, Ok(refusal), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            [TERMINATION, "respond 402", "forget"]
        );

        let mut b = online(vec![Deviation::TerminationAfterServerByeOk], none);
        online_establish(&mut b, t0, 60, false);
        assert!(b.terminate("one@test", t0));
        let byes = requests(&drain(&mut b));
        assert_eq!(byes.len(), 2, "no Termination with the BYEs");
        b.handle_sip(answer(&byes[0].0, &byes[0].1, 200, "alice"), t0);
        assert_eq!(shape(&drain(&mut b)), [TERMINATION]);

        let mut b = online(vec![Deviation::CreditRequestNumberSkips], none);
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "BYE", true, 2)), t0);
        assert_eq!(ch2(&drain(&mut b))[0].request_number, 2);

        let mut b = online(vec![Deviation::SessionKeptAfterFinalUnits], none);
        online_establish(&mut b, t0, 20, true);
        b.handle_timeout(t0 + Duration::from_secs(20));
        assert_eq!(shape(&drain(&mut b)), [UPDATE]);

        let mut b = online(vec![Deviation::UpdateAfterForwardingReinvite], none);
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", true, 2)), t0);
        let actions = drain(&mut b);
        assert_eq!(shape(&actions), ["request INVITE"]);
        let (key, onward, _) = requests(&actions).remove(0);
        b.handle_sip(answer(&key, &onward, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut b)),
            ["stateless ACK", "respond 200", UPDATE]
        );

        let mut b = online(vec![Deviation::NoUsedUnitsInTermination], none);
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "BYE", true, 2)), t0);
        assert_eq!(used(&ch2(&drain(&mut b))[0]), None);

        let mut b = online(vec![Deviation::NoRequestedUnitsInInitial], none);
        b.handle_sip(incoming(invite()), t0);
        assert_eq!(ch2(&drain(&mut b))[0].requested_units(), None);

        let mut b = online(vec![Deviation::SecondInitialOnReinvite], none);
        let (legs, _) = online_establish(&mut b, t0, 60, false);
        b.handle_sip(incoming(in_dialog(&legs, "INVITE", true, 2)), t0);
        assert_eq!(shape(&drain(&mut b)), [INITIAL]);
    }
}
