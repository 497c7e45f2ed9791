//! The reference CPM server's second shape: a record-routing stateful proxy
//! that charges, as a sans-IO state machine.
//!
//! One Call-ID on both sides: the proxy forwards the originator's INVITE to
//! the recipient with its own Via and a `Record-Route: <...;lr>`, relays the
//! responses, and forwards every in-dialog request by its Route and
//! Request-URI. It answers nothing the far end should answer (a BYE's 200 OK
//! is the far end's, relayed), only what a proxy answers itself: 100 Trying,
//! CANCEL, a 408 when the far end never answers. Charging is the B2BUA's
//! (`spec/flows.md`): Start on the recipient's 200 OK to the INVITE, Interim
//! after the 200 OK to a re-INVITE, Stop on a client's BYE, and on server
//! termination (inactivity timer, operator) a BYE to each party built from
//! the dialog state it tracked, each function's Stop after its user's answer.
//!
//! Events and time go in ([`ProxyCore::handle_sip`],
//! [`ProxyCore::handle_timeout`], [`ProxyCore::terminate`]); actions come out
//! ([`ProxyCore::poll_action`]): send SIP, send a charging request, and the
//! next deadline ([`ProxyCore::poll_timeout`]). The task around it only
//! moves messages.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader as _;

use super::charging::{FunctionCharging, SessionParties, Side, serves};
use super::config::SutConfig;
use super::deviation::Deviation;
use crate::charging::ch1::Ch1Request;
use crate::profile::ChargedFunction;
use crate::sip::dialog::{cancel_for, new_branch, uri_socket_addr, uri_text};
use crate::sip::framing::split_list;
use crate::sip::message;
use crate::sip::transaction::{Role, Target, TransportKind, TxEvent, TxKey, response_to};

pub use super::core::Action;
use super::core::SessionCore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE forwarded, no final answer yet.
    Inviting,
    Established,
    /// A client's BYE was forwarded; waiting for the far end's answer.
    Closing,
    /// The proxy sent BYE to both parties and waits for their answers.
    ServerTerminating,
}

/// What a client transaction the proxy started is for.
#[derive(Debug, Clone)]
enum Purpose {
    /// The initial INVITE, forwarded to B.
    Invite,
    /// An in-dialog request from `from`, forwarded; its answer goes back on
    /// `server`, a 2xx retransmission statelessly to `source`.
    Forward {
        server: TxKey,
        request: Box<rsip::Request>,
        from: Side,
        source: Target,
        method: rsip::Method,
    },
    /// A BYE the proxy sent to `Side` to end the session itself.
    ServerBye(Side),
    /// CANCEL of the forwarded INVITE.
    Cancel,
}

#[derive(Debug)]
struct Session {
    id: u64,
    phase: Phase,
    call_id: String,
    /// A's From and B's To header values (with their tags), as on the wire.
    a_from: String,
    a_tag: String,
    b_to: Option<String>,
    b_tag: Option<String>,
    /// The initial INVITE as received (for the responses to A) and forwarded
    /// (for CANCEL).
    invite: rsip::Request,
    invite_key: TxKey,
    forwarded: rsip::Request,
    /// Remote targets (Contact) of each party, refreshed by re-INVITEs.
    a_contact: Option<String>,
    b_contact: Option<String>,
    /// Where A's INVITE came from: upstream for 2xx retransmissions.
    a_source: Target,
    /// Highest CSeq each party used (A→B, B→A), for the proxy's own BYEs.
    seq_a: u32,
    seq_b: Option<u32>,
    functions: Vec<FunctionCharging>,
    parties: SessionParties,
    last_activity: Instant,
}

/// The proxy: every session, keyed by Call-ID.
#[derive(Debug)]
pub struct ProxyCore {
    config: Arc<SutConfig>,
    local: SocketAddr,
    transport: TransportKind,
    sessions: HashMap<String, Session>,
    clients: HashMap<TxKey, (String, Purpose)>,
    /// Failed sessions whose Start is still due (deviation
    /// `late_start_after_failed_invite` only).
    late_starts: Vec<(Instant, Session)>,
    actions: VecDeque<Action>,
    next_id: u64,
}

/// How long after a failed INVITE the `late_start_after_failed_invite`
/// deviation sends its Start.
pub const LATE_START: Duration = Duration::from_secs(1);

impl ProxyCore {
    /// A proxy reachable at `local` over `transport`.
    pub fn new(config: Arc<SutConfig>, local: SocketAddr, transport: TransportKind) -> Self {
        Self {
            config,
            local,
            transport,
            sessions: HashMap::new(),
            clients: HashMap::new(),
            late_starts: Vec::new(),
            actions: VecDeque::new(),
            next_id: 1,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time `handle_timeout` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = self.config.inactivity_timer.and_then(|timer| {
            self.sessions
                .values()
                .filter(|s| s.phase == Phase::Established)
                .map(|s| s.last_activity + timer)
                .min()
        });
        let late = self.late_starts.iter().map(|(at, _)| *at).min();
        [inactivity, late].into_iter().flatten().min()
    }

    /// Fires what is due at `now`: the inactivity timer ends idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(timer) = self.config.inactivity_timer {
            let idle: Vec<String> = self
                .sessions
                .values()
                .filter(|s| s.phase == Phase::Established && s.last_activity + timer <= now)
                .map(|s| s.call_id.clone())
                .collect();
            for call_id in idle {
                self.server_terminate(&call_id);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late_starts)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.late_starts = later;
        for (_, mut s) in due {
            charge(&mut self.actions, &mut s, |_| true, FunctionCharging::start);
            self.actions.push_back(Action::Forget { session: s.id });
        }
    }

    /// Operator stimulus: ends the established session with this Call-ID.
    pub fn terminate(&mut self, call_id: &str, _now: Instant) -> bool {
        if self.sessions.get(call_id).map(|s| s.phase) != Some(Phase::Established) {
            return false;
        }
        self.server_terminate(call_id);
        true
    }

    /// A SIP event from the transaction layer.
    pub fn handle_sip(&mut self, event: TxEvent, now: Instant) {
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
            TxEvent::Timeout { key } => self.timeout(key),
            TxEvent::Stray { reason, source } => {
                tracing::debug!(%reason, ?source, "reference proxy: stray SIP message");
            }
            // The transaction layer answered it (501 to an unknown method).
            TxEvent::Rejected {
                status,
                reason,
                source,
            } => {
                tracing::debug!(status, %reason, ?source, "reference proxy: request rejected");
            }
        }
    }

    fn has(&self, d: Deviation) -> bool {
        self.config.has(d)
    }

    fn respond(&mut self, key: &TxKey, request: &rsip::Request, status: u16) {
        self.actions.push_back(Action::Respond {
            key: key.clone(),
            response: response_to(request, rsip::StatusCode::from(status), None),
        });
    }

    /// Our Via and a client transaction key for a request we send.
    fn via(&self) -> (rsip::Header, String) {
        let branch = new_branch();
        let via = rsip::Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport.via_token(),
            self.local
        )));
        (via, branch)
    }

    fn record_route(&self) -> rsip::Header {
        let t = match self.transport {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        };
        rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(format!(
            "<sip:cpm@{};transport={t};lr>",
            self.local
        )))
    }

    fn send(
        &mut self,
        request: rsip::Request,
        branch: String,
        target: Target,
        purpose: (String, Purpose),
    ) {
        let key = TxKey {
            branch,
            method: request.method.to_string(),
            sent_by: String::new(),
            role: Role::Client,
        };
        self.clients.insert(key.clone(), purpose);
        self.actions.push_back(Action::Request {
            key,
            request,
            target,
        });
    }

    fn target(&self, addr: SocketAddr) -> Target {
        Target {
            transport: self.transport,
            addr,
        }
    }

    fn charge(&mut self, call_id: &str, event: impl Fn(&mut FunctionCharging) -> Vec<Ch1Request>) {
        if let Some(s) = self.sessions.get_mut(call_id) {
            charge(&mut self.actions, s, |_| true, event);
        }
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
            (rsip::Method::Ack, _, _) => self.ack(request, now),
            (rsip::Method::Invite, false, Some(key)) => self.new_session(key, request, source, now),
            (rsip::Method::Cancel, false, Some(key)) => self.cancel(key, request),
            (_, true, Some(key)) => self.in_dialog(key, request, source, now),
            (_, false, Some(key)) => self.respond(&key, &request, 405),
            (_, _, None) => {}
        }
    }

    /// An initial INVITE: 100 Trying, then forward it to the recipient with
    /// our Via and Record-Route.
    fn new_session(&mut self, key: TxKey, invite: rsip::Request, source: Target, now: Instant) {
        let (Ok(call_id), Some(a_tag), Some(calling), Some(called), Some(a_from)) = (
            message::call_id(&invite),
            message::from_tag(&invite),
            message::from_uri(&invite),
            message::to_uri(&invite),
            header_value(&invite.headers, |h| match h {
                rsip::Header::From(f) => Some(f.value()),
                _ => None,
            }),
        ) else {
            self.respond(&key, &invite, 400);
            return;
        };
        if self.sessions.contains_key(&call_id) {
            // A second initial INVITE with a known Call-ID: a loop or a
            // retransmission with a new branch.
            self.respond(&key, &invite, 482);
            return;
        }
        self.respond(&key, &invite, 100);
        let Some(mut forwarded) = self.forwardable(&key, &invite) else {
            return;
        };
        // A caller may preload a Route to us (RFC 3261 8.1.2); ours goes.
        let next = self.pop_our_route(&mut forwarded);
        let (via, branch) = self.via();
        forwarded.headers =
            with_via_and_record_route(&forwarded.headers, via, Some(self.record_route()));
        let id = self.next_id;
        self.next_id += 1;
        let parties = SessionParties {
            calling_party: calling,
            called_party: called,
            call_id: call_id.clone(),
        };
        let functions = match &self.config.charging {
            Some(c) => c
                .functions
                .iter()
                .filter_map(|f| FunctionCharging::new(*f, &self.config, &parties, id))
                .collect(),
            None => Vec::new(),
        };
        let seq_a = message::cseq(&invite).map(|(n, _)| n).unwrap_or(1);
        let session = Session {
            id,
            phase: Phase::Inviting,
            call_id: call_id.clone(),
            a_from: a_from.to_owned(),
            a_tag,
            b_to: None,
            b_tag: None,
            invite: invite.clone(),
            invite_key: key,
            forwarded: forwarded.clone(),
            a_contact: contact_of(&invite.headers),
            b_contact: None,
            a_source: source,
            seq_a,
            seq_b: None,
            functions,
            parties,
            last_activity: now,
        };
        self.sessions.insert(call_id.clone(), session);
        if self.has(Deviation::StartBeforeAnswer) {
            self.charge(&call_id, FunctionCharging::start);
        }
        // Every user of the domain is reached at the harness (unless the
        // caller routed the INVITE further).
        let target = self.target(next.unwrap_or(self.config.route_users_to));
        self.send(forwarded, branch, target, (call_id, Purpose::Invite));
    }

    /// A copy of `request` with Max-Forwards decremented; None (and 483
    /// sent) if it may not be forwarded.
    fn forwardable(&mut self, key: &TxKey, request: &rsip::Request) -> Option<rsip::Request> {
        let hops = header_value(&request.headers, |h| match h {
            rsip::Header::MaxForwards(m) => Some(m.value()),
            _ => None,
        })
        .and_then(|v| v.trim().parse::<u32>().ok());
        if hops == Some(0) {
            self.respond(key, request, 483);
            return None;
        }
        let mut forwarded = request.clone();
        forwarded
            .headers
            .retain(|h| !matches!(h, rsip::Header::MaxForwards(_)));
        forwarded
            .headers
            .push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
                hops.map_or(70, |n| n - 1).to_string(),
            )));
        Some(forwarded)
    }

    /// A CANCEL for a pending INVITE: answered here (hop by hop), and sent on.
    fn cancel(&mut self, key: TxKey, cancel: rsip::Request) {
        let call_id = message::call_id(&cancel).ok().unwrap_or_default();
        let pending = self
            .sessions
            .get(&call_id)
            .filter(|s| s.phase == Phase::Inviting)
            .map(|s| cancel_for(&s.forwarded));
        let Some(onward) = pending else {
            self.respond(&key, &cancel, 481);
            return;
        };
        self.respond(&key, &cancel, 200);
        let branch = crate::sip::transaction::top_via(&onward.headers)
            .and_then(|v| v.branch)
            .unwrap_or_default();
        let target = self.target(self.config.route_users_to);
        self.send(onward, branch, target, (call_id, Purpose::Cancel));
    }

    /// Which party sent an in-dialog request of this session, by its From tag.
    fn side_of(s: &Session, request: &rsip::Request) -> Option<Side> {
        let tag = message::from_tag(request)?;
        if tag == s.a_tag {
            Some(Side::A)
        } else if s.b_tag.as_deref() == Some(tag.as_str()) {
            Some(Side::B)
        } else {
            None
        }
    }

    fn in_dialog(&mut self, key: TxKey, request: rsip::Request, source: Target, now: Instant) {
        let call_id = message::call_id(&request).ok().unwrap_or_default();
        let Some(s) = self.sessions.get_mut(&call_id) else {
            self.respond(&key, &request, 481);
            return;
        };
        let Some(from) = Self::side_of(s, &request) else {
            self.respond(&key, &request, 481);
            return;
        };
        s.last_activity = now;
        if let Ok((n, _)) = message::cseq(&request) {
            match from {
                Side::A => s.seq_a = s.seq_a.max(n),
                Side::B => s.seq_b = Some(s.seq_b.map_or(n, |m| m.max(n))),
            }
        }
        let method = request.method;
        let phase = s.phase;
        if method == rsip::Method::Invite {
            // A target refresh: the sender's new Contact.
            if let Some(c) = contact_of(&request.headers) {
                match from {
                    Side::A => s.a_contact = Some(c),
                    Side::B => s.b_contact = Some(c),
                }
            }
            self.respond(&key, &request, 100);
        }
        if phase == Phase::ServerTerminating && method == rsip::Method::Bye {
            // Our BYE crossed theirs: this party has ended its side, which
            // answers our BYE to it as well as a 200 OK would.
            self.respond(&key, &request, 200);
            let ours = self
                .clients
                .iter()
                .find(|(_, (c, p))| {
                    *c == call_id && matches!(p, Purpose::ServerBye(side) if *side == from)
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = ours {
                self.clients.remove(&k);
                self.server_bye_answered(&call_id, from);
            }
            return;
        }
        let Some(mut forwarded) = self.forwardable(&key, &request) else {
            return;
        };
        let next = self.pop_our_route(&mut forwarded);
        let (via, branch) = self.via();
        forwarded.headers = with_via_and_record_route(&forwarded.headers, via, None);
        let fallback = match from.other() {
            Side::A => self.sessions.get(&call_id).map(|s| s.a_source.addr),
            Side::B => Some(self.config.route_users_to),
        };
        let Some(addr) = next
            .or_else(|| uri_socket_addr(&forwarded.uri.to_string()))
            .or(fallback)
        else {
            self.respond(&key, &request, 404);
            return;
        };
        match method {
            rsip::Method::Invite if self.has(Deviation::InterimBeforeReinviteAnswer) => {
                self.charge(&call_id, FunctionCharging::interim);
            }
            rsip::Method::Bye => {
                // 6.2.3.7, client initiated: the BYE stops charging.
                if let Some(s) = self.sessions.get_mut(&call_id) {
                    s.phase = Phase::Closing;
                }
                if !self.has(Deviation::NoStopOnBye) {
                    self.charge(&call_id, FunctionCharging::stop);
                }
            }
            _ => {}
        }
        let target = self.target(addr);
        self.send(
            forwarded,
            branch,
            target,
            (
                call_id,
                Purpose::Forward {
                    server: key,
                    request: Box::new(request),
                    from,
                    source,
                    method,
                },
            ),
        );
    }

    /// Removes our own entry from the top of the Route set (RFC 3261
    /// §16.4) and returns where the next remaining route points, if any.
    fn pop_our_route(&self, request: &mut rsip::Request) -> Option<SocketAddr> {
        let mut entries: Vec<String> = request
            .headers
            .iter()
            .filter_map(|h| match h {
                rsip::Header::Route(r) => Some(split_list(r.value())),
                _ => None,
            })
            .flatten()
            .collect();
        if entries
            .first()
            .is_some_and(|first| self.is_us(uri_text(first)))
        {
            entries.remove(0);
        }
        let next = entries.first().and_then(|r| uri_socket_addr(uri_text(r)));
        let mut headers = rsip::Headers::default();
        let mut placed = false;
        for h in request.headers.iter() {
            if matches!(h, rsip::Header::Route(_)) {
                if !placed {
                    for e in &entries {
                        headers.push(rsip::Header::Route(rsip::headers::Route::new(e.clone())));
                    }
                    placed = true;
                }
            } else {
                headers.push(h.clone());
            }
        }
        request.headers = headers;
        next
    }

    fn is_us(&self, uri: &str) -> bool {
        uri_socket_addr(uri) == Some(self.local)
    }

    /// An ACK for a 2xx (or any ACK the layer passes up): forwarded by its
    /// Route and Request-URI, outside any transaction.
    fn ack(&mut self, request: rsip::Request, now: Instant) {
        let call_id = message::call_id(&request).ok().unwrap_or_default();
        let from = match self.sessions.get_mut(&call_id) {
            Some(s) => {
                s.last_activity = now;
                Self::side_of(s, &request)
            }
            None => None,
        };
        let Some(from) = from else {
            return;
        };
        let hops = header_value(&request.headers, |h| match h {
            rsip::Header::MaxForwards(m) => Some(m.value()),
            _ => None,
        })
        .and_then(|v| v.trim().parse::<u32>().ok());
        if hops == Some(0) {
            return;
        }
        let mut forwarded = request;
        forwarded
            .headers
            .retain(|h| !matches!(h, rsip::Header::MaxForwards(_)));
        forwarded
            .headers
            .push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
                hops.map_or(70, |n| n - 1).to_string(),
            )));
        let next = self.pop_our_route(&mut forwarded);
        let (via, _) = self.via();
        forwarded.headers = with_via_and_record_route(&forwarded.headers, via, None);
        let fallback = match from.other() {
            Side::A => self.sessions.get(&call_id).map(|s| s.a_source.addr),
            Side::B => Some(self.config.route_users_to),
        };
        if let Some(addr) = next
            .or_else(|| uri_socket_addr(&forwarded.uri.to_string()))
            .or(fallback)
        {
            let target = self.target(addr);
            self.actions.push_back(Action::Stateless {
                message: forwarded.into(),
                target,
            });
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
        let Some((call_id, purpose)) = self.clients.get(&key).cloned() else {
            return;
        };
        let code = response.status_code.code();
        // A 2xx to an INVITE may come again (RFC 6026): its transaction
        // stays known until the session ends, to relay the retransmissions.
        let invite_2xx = (200..300).contains(&code) && key.method == "INVITE";
        if code >= 200 && !invite_2xx {
            self.clients.remove(&key);
        }
        match purpose {
            Purpose::Invite => self.invite_response(&call_id, response, retransmission, now),
            Purpose::Forward {
                server,
                from,
                source,
                method,
                ..
            } => self.forwarded_response(
                &call_id,
                server,
                from,
                source,
                method,
                response,
                retransmission,
            ),
            Purpose::ServerBye(side) if code >= 200 => self.server_bye_answered(&call_id, side),
            Purpose::ServerBye(_) | Purpose::Cancel => {}
        }
    }

    fn invite_response(
        &mut self,
        call_id: &str,
        response: rsip::Response,
        retransmission: bool,
        now: Instant,
    ) {
        let code = response.status_code.code();
        if code == 100 {
            return;
        }
        let upstream = strip_top_via(&response);
        let Some(s) = self.sessions.get_mut(call_id) else {
            return;
        };
        if retransmission {
            // RFC 6026: a 2xx retransmission goes upstream statelessly.
            let target = s.a_source;
            self.actions.push_back(Action::Stateless {
                message: upstream.into(),
                target,
            });
            if self.config.has(Deviation::SecondStartOnRetransmittedOk) {
                let functions: Vec<ChargedFunction> =
                    s.functions.iter().map(|f| f.function).collect();
                for function in functions {
                    for request in start_again(&self.config, &s.parties, s.id, function) {
                        self.actions.push_back(Action::Charge {
                            session: s.id,
                            function,
                            request,
                        });
                    }
                }
            }
            return;
        }
        if code < 300 {
            if let Some(tag) = message::to_tag(&response) {
                s.b_tag = Some(tag);
                s.b_to = header_value(&response.headers, |h| match h {
                    rsip::Header::To(t) => Some(t.value()),
                    _ => None,
                })
                .map(str::to_owned);
            }
            if let Some(c) = contact_of(&response.headers) {
                s.b_contact = Some(c);
            }
        }
        let key = s.invite_key.clone();
        self.actions.push_back(Action::Respond {
            key,
            response: upstream,
        });
        if code < 200 {
            if self.has(Deviation::StartOnRinging) {
                self.charge(call_id, FunctionCharging::start);
            }
            return;
        }
        if code < 300 {
            s.phase = Phase::Established;
            s.last_activity = now;
            // 6.2.3.1: the recipient's 200 OK, relayed, starts charging.
            if !self.has(Deviation::NoStartOnAnswer) {
                let early = self.has(Deviation::InterimBeforeStart);
                self.charge(call_id, |f| answered(f, early));
            }
            return;
        }
        // The INVITE failed: no charging, unless deviating.
        if self.has(Deviation::StartOnFailedInvite) {
            self.charge(call_id, FunctionCharging::start);
        }
        if self.has(Deviation::EventOnFailedInvite) {
            self.charge(call_id, FunctionCharging::failed_attempt);
        }
        if self.has(Deviation::LateStartAfterFailedInvite)
            && let Some(s) = self.sessions.remove(call_id)
        {
            self.clients.retain(|_, (c, _)| c != call_id);
            self.late_starts.push((now + LATE_START, s));
            return;
        }
        self.end(call_id);
    }

    #[allow(clippy::too_many_arguments)]
    fn forwarded_response(
        &mut self,
        call_id: &str,
        server: TxKey,
        from: Side,
        source: Target,
        method: rsip::Method,
        response: rsip::Response,
        retransmission: bool,
    ) {
        let code = response.status_code.code();
        if code == 100 {
            return;
        }
        let upstream = strip_top_via(&response);
        if retransmission {
            self.actions.push_back(Action::Stateless {
                message: upstream.into(),
                target: source,
            });
            return;
        }
        let answering = from.other();
        if method == rsip::Method::Invite
            && (200..300).contains(&code)
            && let Some(s) = self.sessions.get_mut(call_id)
            && let Some(c) = contact_of(&response.headers)
        {
            match answering {
                Side::A => s.a_contact = Some(c),
                Side::B => s.b_contact = Some(c),
            }
        }
        self.actions.push_back(Action::Respond {
            key: server,
            response: upstream,
        });
        if code < 200 {
            return;
        }
        match method {
            rsip::Method::Invite => {
                // 6.2.3.4 (figure): the Interim follows the recipient's 200 OK.
                let ok = (200..300).contains(&code);
                let interim = if ok {
                    !self.has(Deviation::NoInterimOnReinvite)
                        && !self.has(Deviation::InterimBeforeReinviteAnswer)
                } else {
                    self.has(Deviation::InterimOnRejectedReinvite)
                };
                if interim {
                    self.charge(call_id, FunctionCharging::interim);
                }
            }
            rsip::Method::Bye => self.end(call_id),
            _ => {}
        }
    }

    /// Ends a session at the proxy's initiative: a BYE to each party, built
    /// from the dialog state the proxy tracked; each function's Stop waits
    /// for its user's answer.
    fn server_terminate(&mut self, call_id: &str) {
        let local = self.local;
        let token = self.transport.via_token();
        let route_users_to = self.config.route_users_to;
        let Some(s) = self.sessions.get_mut(call_id) else {
            return;
        };
        if s.phase != Phase::Established {
            return;
        }
        s.phase = Phase::ServerTerminating;
        let b_to = s.b_to.clone().unwrap_or_default();
        let mut byes = Vec::new();
        // To A: as if from B, in B's CSeq space.
        let seq_b = s.seq_b.map_or(1, |n| n.wrapping_add(1));
        s.seq_b = Some(seq_b);
        byes.push((
            Side::A,
            s.a_contact.clone(),
            b_to.clone(),
            s.a_from.clone(),
            seq_b,
            s.a_source.addr,
        ));
        // To B: as if from A, in A's CSeq space.
        s.seq_a = s.seq_a.wrapping_add(1);
        byes.push((
            Side::B,
            s.b_contact.clone(),
            s.a_from.clone(),
            b_to,
            s.seq_a,
            route_users_to,
        ));
        if self.has(Deviation::StopBeforeByeOk) {
            self.charge(call_id, FunctionCharging::stop);
        }
        for (side, contact, from, to, seq, fallback) in byes {
            let uri = contact.unwrap_or_else(|| "sip:unknown@invalid".into());
            let branch = new_branch();
            let text = format!(
                "BYE {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/{token} {local};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: {from}\r\n\
                 To: {to}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {seq} BYE\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let Ok(bye) = message::parse_request(text) else {
                tracing::warn!("reference proxy: cannot build BYE to {uri}");
                continue;
            };
            let addr = uri_socket_addr(&uri).unwrap_or(fallback);
            let target = self.target(addr);
            self.send(
                bye,
                branch,
                target,
                (call_id.to_owned(), Purpose::ServerBye(side)),
            );
        }
    }

    /// A party answered (or never answered) the proxy's BYE: 6.2.3.7, the
    /// Stop of the function serving it only now.
    fn server_bye_answered(&mut self, call_id: &str, side: Side) {
        let early = self.has(Deviation::StopBeforeByeOk);
        let all_at_once = self.has(Deviation::StopAllOnFirstByeOk);
        let never = self.has(Deviation::NoStopOnServerBye);
        if !early
            && !never
            && let Some(s) = self.sessions.get_mut(call_id)
        {
            charge(
                &mut self.actions,
                s,
                |f| all_at_once || serves(f, side),
                FunctionCharging::stop,
            );
        }
        let waiting = self
            .clients
            .values()
            .any(|(c, p)| c == call_id && matches!(p, Purpose::ServerBye(_)));
        if !waiting {
            self.end(call_id);
        }
    }

    fn timeout(&mut self, key: TxKey) {
        let Some((call_id, purpose)) = self.clients.remove(&key) else {
            // Our own server transactions (no ACK for a 2xx we relayed) end
            // quietly: the client's business.
            return;
        };
        match purpose {
            Purpose::Invite => {
                if let Some(s) = self.sessions.get(&call_id) {
                    let r = response_to(&s.invite, rsip::StatusCode::RequestTimeout, None);
                    let k = s.invite_key.clone();
                    self.actions.push_back(Action::Respond {
                        key: k,
                        response: r,
                    });
                }
                self.end(&call_id);
            }
            Purpose::Forward {
                server,
                request,
                method,
                ..
            } => {
                self.respond(&server, &request, 408);
                if method == rsip::Method::Bye {
                    self.end(&call_id);
                }
            }
            Purpose::ServerBye(side) => self.server_bye_answered(&call_id, side),
            Purpose::Cancel => {}
        }
    }

    /// Forgets a session once nothing more can happen in it. A correct
    /// proxy has sent every Stop already, and this sends nothing.
    fn end(&mut self, call_id: &str) {
        let Some(mut s) = self.sessions.remove(call_id) else {
            return;
        };
        let never = self.has(Deviation::NoStopOnBye)
            || (s.phase == Phase::ServerTerminating && self.has(Deviation::NoStopOnServerBye));
        if s.phase != Phase::Inviting && !never {
            charge(&mut self.actions, &mut s, |_| true, FunctionCharging::stop);
        }
        self.clients.retain(|_, (c, _)| c != call_id);
        self.actions.push_back(Action::Forget { session: s.id });
    }
}

impl SessionCore for ProxyCore {
    fn handle_sip(&mut self, event: TxEvent, now: Instant) {
        ProxyCore::handle_sip(self, event, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        ProxyCore::handle_timeout(self, now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        ProxyCore::poll_action(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        ProxyCore::poll_timeout(self)
    }

    fn terminate(&mut self, call_id: &str, now: Instant) -> bool {
        ProxyCore::terminate(self, call_id, now)
    }
}

/// A function's Start on the recipient's 200 OK; deviation
/// `interim_before_start` puts an Interim (a copy of the Start) first.
pub(super) fn answered(f: &mut FunctionCharging, interim_first: bool) -> Vec<Ch1Request> {
    let mut out = f.start();
    if interim_first && let Some(first) = out.first() {
        let mut early = first.clone();
        early.kind = crate::charging::ch1::RecordType::Interim;
        out.insert(0, early);
    }
    out
}

/// Deviation `second_start_on_retransmitted_ok`: a function's Start made
/// again, as by a server that takes a repeated 200 OK for a new session
/// (same Session-Id, record number 0).
pub(super) fn start_again(
    config: &SutConfig,
    parties: &SessionParties,
    id: u64,
    function: ChargedFunction,
) -> Vec<Ch1Request> {
    FunctionCharging::new(function, config, parties, id)
        .map(|mut f| f.start())
        .unwrap_or_default()
}

/// Queues what the session's charged functions that `which` selects report
/// for an event.
fn charge(
    actions: &mut VecDeque<Action>,
    s: &mut Session,
    which: impl Fn(ChargedFunction) -> bool,
    event: impl Fn(&mut FunctionCharging) -> Vec<Ch1Request>,
) {
    for f in &mut s.functions {
        if !which(f.function) {
            continue;
        }
        for request in event(f) {
            actions.push_back(Action::Charge {
                session: s.id,
                function: f.function,
                request,
            });
        }
    }
}

fn header_value(
    headers: &rsip::Headers,
    pick: impl Fn(&rsip::Header) -> Option<&str>,
) -> Option<&str> {
    headers.iter().find_map(pick)
}

/// The URI of the first Contact, as text.
fn contact_of(headers: &rsip::Headers) -> Option<String> {
    header_value(headers, |h| match h {
        rsip::Header::Contact(c) => Some(c.value()),
        _ => None,
    })
    .map(|v| uri_text(v).to_owned())
}

/// `via` on top, then the rest; `record_route` before any other Record-Route.
fn with_via_and_record_route(
    headers: &rsip::Headers,
    via: rsip::Header,
    record_route: Option<rsip::Header>,
) -> rsip::Headers {
    let mut out = rsip::Headers::default();
    out.push(via);
    let mut rr = record_route;
    for h in headers.iter() {
        if matches!(h, rsip::Header::RecordRoute(_))
            && let Some(ours) = rr.take()
        {
            out.push(ours);
        }
        if matches!(h, rsip::Header::ContentLength(_))
            && let Some(ours) = rr.take()
        {
            out.push(ours);
        }
        out.push(h.clone());
    }
    if let Some(ours) = rr {
        out.push(ours);
    }
    out
}

/// A response without its top Via value (ours), for the hop upstream.
fn strip_top_via(response: &rsip::Response) -> rsip::Response {
    let mut out = response.clone();
    let mut headers = rsip::Headers::default();
    let mut done = false;
    for h in response.headers.iter() {
        if !done && let rsip::Header::Via(v) = h {
            done = true;
            let rest = split_list(v.value());
            if rest.len() > 1 {
                headers.push(rsip::Header::Via(rsip::headers::Via::new(
                    rest[1..].join(", "),
                )));
            }
            continue;
        }
        headers.push(h.clone());
    }
    out.headers = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charging::ch1::RecordType;
    use crate::profile::Transport;
    use crate::sip::dialog::copy_record_route;
    use crate::sut::config::{ChargingConfig, Shape, SipConfig};

    const PROXY: &str = "127.0.0.1:5060";
    const HARNESS: &str = "127.0.0.1:5070";

    fn config(deviations: Vec<Deviation>) -> Arc<SutConfig> {
        Arc::new(SutConfig {
            sip: SipConfig {
                listen: PROXY.parse().unwrap(),
                transport: Transport::Udp,
                t1: None,
            },
            shape: Shape::Proxy,
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

    fn core(deviations: Vec<Deviation>) -> ProxyCore {
        ProxyCore::new(
            config(deviations),
            PROXY.parse().unwrap(),
            TransportKind::Udp,
        )
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
            method: if request.method == rsip::Method::Ack {
                "INVITE".into()
            } else {
                request.method.to_string()
            },
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

    /// An in-dialog request through the proxy: Route to it, Request-URI the
    /// other party's Contact.
    fn in_dialog(method: &str, from_a: bool, cseq: u32) -> rsip::Request {
        let (user, from, to) = if from_a {
            (
                "bob",
                "<sip:alice@test.invalid>;tag=a1",
                "<sip:bob@test.invalid>;tag=b1",
            )
        } else {
            (
                "alice",
                "<sip:bob@test.invalid>;tag=b1",
                "<sip:alice@test.invalid>;tag=a1",
            )
        };
        parse(format!(
            "{method} sip:{user}@{HARNESS};transport=udp SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch={}\r\n\
             Max-Forwards: 70\r\n\
             Route: <sip:cpm@{PROXY};transport=udp;lr>\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: one@test\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{}@{HARNESS};transport=udp>\r\n\
             Content-Length: 0\r\n\r\n",
            new_branch(),
            if from_a { "alice" } else { "bob" },
        ))
    }

    fn drain(core: &mut ProxyCore) -> Vec<Action> {
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
                Action::Credit { .. } => "credit".into(),
                Action::Forget { .. } => "forget".into(),
            })
            .collect()
    }

    fn sent_request(actions: &[Action], method: rsip::Method) -> (TxKey, rsip::Request, Target) {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Request {
                    key,
                    request,
                    target,
                } if request.method == method => Some((key.clone(), request.clone(), *target)),
                _ => None,
            })
            .unwrap()
    }

    fn answer(key: &TxKey, request: &rsip::Request, status: u16, who: &str) -> TxEvent {
        let mut response = response_to(request, rsip::StatusCode::from(status), Some("b1"));
        if (101..300).contains(&status) {
            response
                .headers
                .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                    "<sip:{who}@{HARNESS};transport=udp>"
                ))));
            copy_record_route(request, &mut response);
        }
        TxEvent::Response {
            key: key.clone(),
            response,
            retransmission: false,
            source: harness(),
        }
    }

    fn values(headers: &rsip::Headers, pick: fn(&rsip::Header) -> Option<String>) -> Vec<String> {
        headers.iter().filter_map(pick).collect()
    }

    fn vias(headers: &rsip::Headers) -> Vec<String> {
        values(headers, |h| match h {
            rsip::Header::Via(v) => Some(v.value().to_owned()),
            _ => None,
        })
    }

    /// Forwards the INVITE and relays bob's 200 OK: the established session.
    fn establish(p: &mut ProxyCore, t0: Instant) -> (TxKey, rsip::Request) {
        p.handle_sip(incoming(invite()), t0);
        let actions = drain(p);
        let (key, forwarded, _) = sent_request(&actions, rsip::Method::Invite);
        p.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        drain(p);
        (key, forwarded)
    }

    #[test]
    fn the_initial_invite_is_forwarded_with_one_call_id_and_record_route() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        p.handle_sip(incoming(invite()), t0);
        let actions = drain(&mut p);
        assert_eq!(shape(&actions), ["respond 100", "request INVITE"]);
        let (key, forwarded, target) = sent_request(&actions, rsip::Method::Invite);
        assert_eq!(
            target,
            harness(),
            "users of the domain are reached at the harness"
        );
        assert_eq!(
            message::call_id(&forwarded).unwrap(),
            "one@test",
            "one Call-ID"
        );
        assert_eq!(forwarded.uri.to_string(), "sip:bob@test.invalid");
        let v = vias(&forwarded.headers);
        assert!(v[0].contains(PROXY) && v[0].contains(&key.branch), "{v:?}");
        assert!(v[1].contains("z9hG4bKinv"), "{v:?}");
        let rr = values(&forwarded.headers, |h| match h {
            rsip::Header::RecordRoute(r) => Some(r.value().to_owned()),
            _ => None,
        });
        assert_eq!(rr, [format!("<sip:cpm@{PROXY};transport=udp;lr>")]);
        let hops = values(&forwarded.headers, |h| match h {
            rsip::Header::MaxForwards(m) => Some(m.value().to_owned()),
            _ => None,
        });
        assert_eq!(hops, ["69"]);

        // 100 stays here; 180 and 200 go upstream without our Via, and only
        // the 200 OK, once relayed, starts charging (6.2.3.1).
        let trying = answer(&key, &forwarded, 100, "bob");
        p.handle_sip(trying, t0);
        assert!(drain(&mut p).is_empty());
        p.handle_sip(answer(&key, &forwarded, 180, "bob"), t0);
        let actions = drain(&mut p);
        assert_eq!(shape(&actions), ["respond 180"]);
        let Action::Respond { key: k, response } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(*k, server_key(&invite()));
        assert_eq!(vias(&response.headers).len(), 1, "our Via is gone");
        p.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            [
                "respond 200",
                "charge Start OriginatingPf",
                "charge Start TerminatingPf"
            ]
        );
        // A retransmitted 2xx goes upstream statelessly and charges nothing.
        let TxEvent::Response { response, .. } = answer(&key, &forwarded, 200, "bob") else {
            unreachable!()
        };
        p.handle_sip(
            TxEvent::Response {
                key,
                response,
                retransmission: true,
                source: harness(),
            },
            t0,
        );
        assert_eq!(shape(&drain(&mut p)), ["stateless 200"]);
    }

    #[test]
    fn in_dialog_requests_follow_the_route_and_the_far_end_answers() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        establish(&mut p, t0);

        // The ACK: our Route popped, forwarded to bob's Contact.
        p.handle_sip(incoming(in_dialog("ACK", true, 1)), t0);
        let actions = drain(&mut p);
        assert_eq!(shape(&actions), ["stateless ACK"]);
        let Action::Stateless { message, target } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(*target, harness());
        let rsip::SipMessage::Request(ack) = message else {
            unreachable!()
        };
        assert!(
            !ack.headers
                .iter()
                .any(|h| matches!(h, rsip::Header::Route(_)))
        );
        assert_eq!(vias(&ack.headers).len(), 2);

        // bob's re-INVITE reaches alice through us; the Interim follows
        // alice's 200 OK, relayed (6.2.3.4).
        let reinvite = in_dialog("INVITE", false, 5000);
        p.handle_sip(incoming(reinvite.clone()), t0);
        let actions = drain(&mut p);
        assert_eq!(shape(&actions), ["respond 100", "request INVITE"]);
        let (key, forwarded, _) = sent_request(&actions, rsip::Method::Invite);
        assert_eq!(
            forwarded.uri.to_string().to_lowercase(),
            format!("sip:alice@{HARNESS};transport=udp")
        );
        p.handle_sip(answer(&key, &forwarded, 200, "alice"), t0);
        let actions = drain(&mut p);
        assert_eq!(
            shape(&actions),
            [
                "respond 200",
                "charge Interim OriginatingPf",
                "charge Interim TerminatingPf"
            ]
        );
        let Action::Respond { key: k, .. } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(*k, server_key(&reinvite), "answered on bob's transaction");

        // alice's BYE stops charging and goes on to bob; the proxy relays
        // bob's 200 OK and answers nothing itself.
        p.handle_sip(incoming(in_dialog("BYE", true, 2)), t0);
        let actions = drain(&mut p);
        assert_eq!(
            shape(&actions),
            [
                "charge Stop OriginatingPf",
                "charge Stop TerminatingPf",
                "request BYE"
            ]
        );
        let (key, bye, _) = sent_request(&actions, rsip::Method::Bye);
        p.handle_sip(answer(&key, &bye, 200, "bob"), t0);
        assert_eq!(shape(&drain(&mut p)), ["respond 200", "forget"]);
    }

    #[test]
    fn the_inactivity_timer_sends_bye_to_both_and_stops_each_after_its_own_answer() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        establish(&mut p, t0);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_millis(1500)));
        p.handle_timeout(t0 + Duration::from_millis(1499));
        assert!(drain(&mut p).is_empty(), "not yet");
        p.handle_timeout(t0 + Duration::from_millis(1500));
        let actions = drain(&mut p);
        assert_eq!(
            shape(&actions),
            ["request BYE", "request BYE"],
            "no Stop yet"
        );
        let byes: Vec<(TxKey, rsip::Request)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { key, request, .. } => Some((key.clone(), request.clone())),
                _ => None,
            })
            .collect();
        // To alice as from bob, to bob as from alice, at their Contacts.
        let to_alice = &byes[0].1;
        assert_eq!(message::to_tag(to_alice).as_deref(), Some("a1"));
        assert_eq!(message::from_tag(to_alice).as_deref(), Some("b1"));
        assert!(to_alice.uri.to_string().contains("alice@"));
        let to_bob = &byes[1].1;
        assert_eq!(message::to_tag(to_bob).as_deref(), Some("b1"));
        assert!(to_bob.uri.to_string().contains("bob@"));
        assert_eq!(message::cseq(to_bob).unwrap().0, 2, "after alice's INVITE");
        assert_eq!(p.poll_timeout(), None, "the timer is spent");

        p.handle_sip(answer(&byes[0].0, to_alice, 200, "alice"), t0);
        assert_eq!(shape(&drain(&mut p)), ["charge Stop OriginatingPf"]);
        p.handle_sip(answer(&byes[1].0, to_bob, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            ["charge Stop TerminatingPf", "forget"]
        );
    }

    #[test]
    fn a_preloaded_route_to_the_proxy_is_popped_from_the_initial_invite() {
        let mut p = core(vec![]);
        let mut inv = invite();
        inv.headers
            .push(rsip::Header::Route(rsip::headers::Route::new(format!(
                "<sip:cpm@{PROXY};lr>"
            ))));
        p.handle_sip(incoming(inv), Instant::now());
        let (_, forwarded, target) = sent_request(&drain(&mut p), rsip::Method::Invite);
        assert!(
            !forwarded
                .headers
                .iter()
                .any(|h| matches!(h, rsip::Header::Route(_))),
            "our Route is gone"
        );
        assert_eq!(target, harness());
    }

    #[test]
    fn the_operator_ends_only_an_established_session() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        assert!(!p.terminate("one@test", t0));
        establish(&mut p, t0);
        assert!(p.terminate("one@test", t0));
        assert_eq!(shape(&drain(&mut p)), ["request BYE", "request BYE"]);
        assert!(!p.terminate("one@test", t0), "already ending");
    }

    #[test]
    fn a_failed_or_cancelled_invite_charges_nothing() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        p.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = sent_request(&drain(&mut p), rsip::Method::Invite);
        p.handle_sip(answer(&key, &forwarded, 486, "bob"), t0);
        assert_eq!(shape(&drain(&mut p)), ["respond 486", "forget"]);

        let mut p = core(vec![]);
        p.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = sent_request(&drain(&mut p), rsip::Method::Invite);
        let mut cancel = cancel_for(&invite());
        cancel
            .headers
            .retain(|h| !matches!(h, rsip::Header::Route(_)));
        p.handle_sip(incoming(cancel), t0);
        let actions = drain(&mut p);
        assert_eq!(shape(&actions), ["respond 200", "request CANCEL"]);
        let (_, onward, _) = sent_request(&actions, rsip::Method::Cancel);
        assert_eq!(
            crate::sip::transaction::top_via(&onward.headers)
                .unwrap()
                .branch,
            Some(key.branch.clone()),
            "the CANCEL shares the forwarded INVITE's branch"
        );
        p.handle_sip(answer(&key, &forwarded, 487, "bob"), t0);
        assert_eq!(shape(&drain(&mut p)), ["respond 487", "forget"]);
    }

    #[test]
    fn deviations_work_in_the_proxy_shape_too() {
        let t0 = Instant::now();
        let mut p = core(vec![Deviation::StartBeforeAnswer]);
        p.handle_sip(incoming(invite()), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            [
                "respond 100",
                "charge Start OriginatingPf",
                "charge Start TerminatingPf",
                "request INVITE"
            ]
        );

        let mut p = core(vec![Deviation::StopBeforeByeOk]);
        establish(&mut p, t0);
        p.handle_timeout(t0 + Duration::from_secs(2));
        let kinds: Vec<RecordType> = drain(&mut p)
            .iter()
            .filter_map(|a| match a {
                Action::Charge { request, .. } => Some(request.kind),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, [RecordType::Stop, RecordType::Stop]);

        let mut p = core(vec![Deviation::InterimBeforeReinviteAnswer]);
        establish(&mut p, t0);
        p.handle_sip(incoming(in_dialog("INVITE", true, 2)), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            [
                "respond 100",
                "charge Interim OriginatingPf",
                "charge Interim TerminatingPf",
                "request INVITE"
            ]
        );
    }

    #[test]
    fn the_new_paths_deviate_only_when_asked() {
        let t0 = Instant::now();
        // Ringing, a rejected re-INVITE, a retransmitted 200 OK: nothing
        // charged by a correct proxy...
        for deviating in [false, true] {
            let devs = if deviating {
                vec![
                    Deviation::StartOnRinging,
                    Deviation::InterimOnRejectedReinvite,
                    Deviation::SecondStartOnRetransmittedOk,
                ]
            } else {
                vec![]
            };
            let mut p = core(devs);
            p.handle_sip(incoming(invite()), t0);
            let (key, forwarded, _) = sent_request(&drain(&mut p), rsip::Method::Invite);
            p.handle_sip(answer(&key, &forwarded, 180, "bob"), t0);
            let ringing = shape(&drain(&mut p));
            p.handle_sip(answer(&key, &forwarded, 200, "bob"), t0);
            drain(&mut p);
            let TxEvent::Response { response, .. } = answer(&key, &forwarded, 200, "bob") else {
                unreachable!()
            };
            p.handle_sip(
                TxEvent::Response {
                    key,
                    response,
                    retransmission: true,
                    source: harness(),
                },
                t0,
            );
            let again = shape(&drain(&mut p));
            p.handle_sip(incoming(in_dialog("INVITE", true, 2)), t0);
            let (key, reinvite, _) = sent_request(&drain(&mut p), rsip::Method::Invite);
            p.handle_sip(answer(&key, &reinvite, 488, "bob"), t0);
            let rejected = shape(&drain(&mut p));
            if deviating {
                assert_eq!(
                    ringing,
                    [
                        "respond 180",
                        "charge Start OriginatingPf",
                        "charge Start TerminatingPf"
                    ]
                );
                assert_eq!(
                    again,
                    [
                        "stateless 200",
                        "charge Start OriginatingPf",
                        "charge Start TerminatingPf"
                    ]
                );
                assert_eq!(
                    rejected,
                    [
                        "respond 488",
                        "charge Interim OriginatingPf",
                        "charge Interim TerminatingPf"
                    ]
                );
            } else {
                assert_eq!(ringing, ["respond 180"]);
                assert_eq!(again, ["stateless 200"]);
                assert_eq!(
                    rejected,
                    ["respond 488"],
                    "a rejected re-INVITE is not charged"
                );
            }
        }
    }

    #[test]
    fn a_481_to_the_servers_bye_ends_that_users_charging_after_the_answer() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        establish(&mut p, t0);
        assert!(p.terminate("one@test", t0));
        let byes: Vec<(TxKey, rsip::Request)> = drain(&mut p)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { key, request, .. } => Some((key, request)),
                _ => None,
            })
            .collect();
        p.handle_sip(answer(&byes[0].0, &byes[0].1, 481, "alice"), t0);
        assert_eq!(shape(&drain(&mut p)), ["charge Stop OriginatingPf"]);
        // bob never answers: his function stops when the BYE times out.
        p.handle_sip(
            TxEvent::Timeout {
                key: byes[1].0.clone(),
            },
            t0,
        );
        assert_eq!(
            shape(&drain(&mut p)),
            ["charge Stop TerminatingPf", "forget"]
        );
    }

    #[test]
    fn a_late_start_after_a_failed_invite_comes_on_the_virtual_clock() {
        let mut p = core(vec![Deviation::LateStartAfterFailedInvite]);
        let t0 = Instant::now();
        p.handle_sip(incoming(invite()), t0);
        let (key, forwarded, _) = sent_request(&drain(&mut p), rsip::Method::Invite);
        p.handle_sip(answer(&key, &forwarded, 486, "bob"), t0);
        assert_eq!(shape(&drain(&mut p)), ["respond 486"]);
        assert_eq!(p.poll_timeout(), Some(t0 + LATE_START));
        p.handle_timeout(t0 + LATE_START - Duration::from_millis(1));
        assert!(drain(&mut p).is_empty());
        p.handle_timeout(t0 + LATE_START);
        assert_eq!(
            shape(&drain(&mut p)),
            [
                "charge Start OriginatingPf",
                "charge Start TerminatingPf",
                "forget"
            ]
        );
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_client_bye_crossing_the_servers_bye_stops_that_clients_function() {
        let mut p = core(vec![]);
        let t0 = Instant::now();
        establish(&mut p, t0);
        assert!(p.terminate("one@test", t0));
        let byes: Vec<(TxKey, rsip::Request)> = drain(&mut p)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { key, request, .. } => Some((key, request)),
                _ => None,
            })
            .collect();
        p.handle_sip(incoming(in_dialog("BYE", true, 2)), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            ["respond 200", "charge Stop OriginatingPf"],
            "alice's own BYE ends her side"
        );
        p.handle_sip(answer(&byes[1].0, &byes[1].1, 200, "bob"), t0);
        assert_eq!(
            shape(&drain(&mut p)),
            ["charge Stop TerminatingPf", "forget"]
        );
    }
}
