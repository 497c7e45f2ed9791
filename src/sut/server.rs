//! The reference CPM server: originating and terminating Participating
//! Function of 1-1 sessions, as a back-to-back user agent, reporting offline
//! charging as `spec/flows.md` says for 6.2.3.1, 6.2.3.4 and 6.2.3.7.
//!
//! One task owns every session; charging requests leave through one ordered
//! queue per charged function, so a slow Charging Enabler delays charging but
//! never reorders it nor blocks SIP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rsip::headers::UntypedHeader as _;
use tokio::sync::mpsc;

use super::charging::{FunctionCharging, SessionParties, Side, serves};
use super::config::{Shape, SutConfig};
use super::deviation::Deviation;
use super::proxy::{Action, ProxyCore};
use crate::charging::ch1::Ch1Request;
use crate::charging::client::{ChargingClient, ClientConfig};
use crate::diameter::commands::LocalIdentity;
use crate::profile::{ChargedFunction, Transport};
use crate::sip::dialog::{Dialog, new_branch, new_call_id, new_tag};
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::message::{self, other_header};
use crate::sip::transaction::response_to;
use crate::sip::transaction::{Target, TransportKind, TxEvent, TxKey};

/// Why the reference server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SutError {
    #[error("reference server: cannot bind SIP on {address}: {reason}")]
    Sip { address: SocketAddr, reason: String },
    #[error("reference server: cannot reach the Charging Enabler at {address}: {reason}")]
    Charging { address: SocketAddr, reason: String },
    #[error("reference server: cannot bind the admin interface on {address}: {source}")]
    Admin {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A running reference server.
#[derive(Debug)]
pub struct RunningSut {
    /// Where test users send their requests.
    pub sip: SocketAddr,
    /// The operator HTTP interface, when configured.
    pub admin: Option<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RunningSut {
    /// Stops the server (sessions are dropped without BYE).
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// What the admin interface (or a test) asks of the server.
#[derive(Debug)]
pub(crate) enum Command {
    /// Operator stimulus: end the session with this Call-ID (either leg).
    Terminate {
        call_id: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    Shutdown,
}

/// Starts the reference server: binds SIP, starts the Diameter client of
/// the Charging Enabler (it connects in the background, and again whenever
/// the link drops, so the Enabler may come and go), starts the admin
/// interface.
pub async fn start(config: SutConfig) -> Result<RunningSut, SutError> {
    // Like a real server: take calls at once; charging requests wait for the
    // Charging Enabler's link, in order, and are resent if a link drops.
    let charging = config.charging.as_ref().map(|c| {
        let identity = LocalIdentity::rf_client(&c.origin_host, &c.origin_realm, c.server.ip());
        ChargingClient::spawn(
            c.server,
            identity,
            c.destination_realm.clone(),
            ClientConfig {
                reconnect_max: c
                    .reconnect_max
                    .unwrap_or(ClientConfig::default().reconnect_max),
                first_attempt_after: c.connect_after.unwrap_or_default(),
                ..ClientConfig::default()
            },
        )
    });

    let transport = kind(config.sip.transport);
    let endpoint_config = EndpointConfig {
        udp: (transport == TransportKind::Udp).then_some(config.sip.listen),
        tcp: (transport == TransportKind::Tcp).then_some(config.sip.listen),
        timers: config.sip.timers(),
    };
    let (endpoint, events) = Endpoint::bind(endpoint_config)
        .await
        .map_err(|e| SutError::Sip {
            address: config.sip.listen,
            reason: e.to_string(),
        })?;
    let local = endpoint
        .local_addr(transport)
        .ok_or_else(|| SutError::Sip {
            address: config.sip.listen,
            reason: "no local address after bind".into(),
        })?;

    let (commands, command_rx) = mpsc::unbounded_channel();
    let admin = match config.admin {
        Some(address) => Some(
            super::admin::serve(address, commands.clone())
                .await
                .map_err(|source| SutError::Admin { address, source })?,
        ),
        None => None,
    };

    if config.shape == Shape::Proxy {
        let deviations = config.deviations.clone();
        let core = ProxyCore::new(Arc::new(config), local, transport);
        tokio::spawn(run_proxy(
            core, endpoint, charging, deviations, events, command_rx,
        ));
        return Ok(RunningSut {
            sip: local,
            admin,
            commands,
        });
    }
    let server = Server {
        config: Arc::new(config),
        endpoint,
        local,
        transport,
        charging,
        sessions: HashMap::new(),
        legs: HashMap::new(),
        client_txs: HashMap::new(),
        next_id: 1,
        late_starts: Vec::new(),
    };
    tokio::spawn(server.run(events, command_rx));
    Ok(RunningSut {
        sip: local,
        admin,
        commands,
    })
}

fn kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
    }
}

type SessionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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
    /// A BYE the server sent on `Side`, because the other side hung up.
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
    functions: Vec<(FunctionCharging, mpsc::UnboundedSender<Ch1Request>)>,
    parties: SessionParties,
    id: SessionId,
    last_activity: Instant,
    /// When the 200 OK went to the originator, until its ACK came.
    ok_sent: Option<Instant>,
}

impl Session {
    fn leg(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

struct Server {
    config: Arc<SutConfig>,
    endpoint: Endpoint,
    local: SocketAddr,
    transport: TransportKind,
    charging: Option<ChargingClient>,
    sessions: HashMap<SessionId, Session>,
    /// (Call-ID, our tag on that leg) → session and side.
    legs: HashMap<(String, String), (SessionId, Side)>,
    client_txs: HashMap<TxKey, (SessionId, Purpose)>,
    next_id: SessionId,
    /// Failed sessions whose Start is still due (deviation
    /// `late_start_after_failed_invite` only).
    late_starts: Vec<(Instant, Session)>,
}

impl Server {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<TxEvent>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        loop {
            let deadline = self.next_inactivity_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle_event(event).await,
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(Command::Terminate { call_id, reply }) => {
                        let found = self.terminate_by_call_id(&call_id).await;
                        let _ = reply.send(found);
                    }
                    Some(Command::Shutdown) | None => break,
                },
                () = sleep => self.expire_inactive().await,
            }
        }
        self.endpoint.shutdown().await;
    }

    fn next_inactivity_deadline(&self) -> Option<Instant> {
        let late = self.late_starts.iter().map(|(at, _)| *at).min();
        let idle = self.config.inactivity_timer.and_then(|timer| {
            self.sessions
                .values()
                .filter(|s| s.phase == Phase::Established)
                .map(|s| s.last_activity + timer)
                .min()
        });
        [late, idle].into_iter().flatten().min()
    }

    async fn expire_inactive(&mut self) {
        // Deviation: the late Starts of failed sessions that are due.
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late_starts)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.late_starts = later;
        for (_, mut s) in due {
            charge(&mut s, FunctionCharging::start);
        }
        let Some(timer) = self.config.inactivity_timer else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.phase == Phase::Established && s.last_activity + timer <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.server_terminate(id).await;
        }
    }

    async fn terminate_by_call_id(&mut self, call_id: &str) -> bool {
        let found = self
            .legs
            .iter()
            .find(|((c, _), _)| c == call_id)
            .map(|(_, (id, _))| *id);
        match found {
            Some(id) if self.sessions.get(&id).map(|s| s.phase) == Some(Phase::Established) => {
                self.server_terminate(id).await;
                true
            }
            _ => false,
        }
    }

    async fn handle_event(&mut self, event: TxEvent) {
        match event {
            TxEvent::Request {
                key,
                request,
                source,
            } => self.handle_request(key, request, source).await,
            TxEvent::Response {
                key,
                response,
                retransmission,
                ..
            } => self.handle_response(key, response, retransmission).await,
            TxEvent::Timeout { key } => self.handle_timeout(key).await,
            TxEvent::Stray { reason, source } => {
                tracing::debug!(%reason, ?source, "reference server: stray SIP message");
            }
            TxEvent::Rejected { reason, source, .. } => {
                tracing::debug!(%reason, ?source, "reference server: request rejected by the endpoint");
            }
        }
    }

    fn find_leg(&self, request: &rsip::Request) -> Option<(SessionId, Side)> {
        let call_id = message::call_id(request).ok()?;
        let tag = message::to_tag(request)?;
        self.legs.get(&(call_id, tag)).copied()
    }

    async fn handle_request(&mut self, key: Option<TxKey>, request: rsip::Request, source: Target) {
        let method = request.method;
        let in_dialog = message::to_tag(&request).is_some();
        match (method, in_dialog, key) {
            (rsip::Method::Invite, false, Some(key)) => {
                self.new_session(key, request, source).await
            }
            (rsip::Method::Cancel, false, Some(key)) => self.cancel(key, request).await,
            (rsip::Method::Ack, _, _) => {
                let second_start = self.config.has(Deviation::SecondStartOnRetransmittedOk);
                let config = self.config.clone();
                if let Some((id, _)) = self.find_leg(&request)
                    && let Some(s) = self.sessions.get_mut(&id)
                {
                    s.last_activity = Instant::now();
                    // Deviation: an ACK later than T1 means the 200 OK was
                    // retransmitted; this server charges that as a new Start.
                    if let Some(sent) = s.ok_sent.take()
                        && second_start
                        && sent.elapsed() >= config.sip.timers().t1
                    {
                        start_again(&config, s);
                    }
                }
            }
            (_, true, Some(key)) => match self.find_leg(&request) {
                Some((id, side)) => self.in_dialog(id, side, key, request).await,
                None => self.reply(&key, &request, 481, None).await,
            },
            (_, false, Some(key)) => self.reply(&key, &request, 405, None).await,
            (_, _, None) => {}
        }
    }

    async fn reply(&self, key: &TxKey, request: &rsip::Request, status: u16, tag: Option<&str>) {
        let response = response_to(request, rsip::StatusCode::from(status), tag);
        if let Err(e) = self.endpoint.send_response(key, response).await {
            tracing::debug!(error = %e, "reference server: response not sent");
        }
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

    /// An initial INVITE from an originator: forward it to the recipient.
    async fn new_session(&mut self, key: TxKey, invite_a: rsip::Request, source: Target) {
        let (Ok(call_id_a), Some(calling), Some(called)) = (
            message::call_id(&invite_a),
            message::from_uri(&invite_a),
            message::to_uri(&invite_a),
        ) else {
            self.reply(&key, &invite_a, 400, None).await;
            return;
        };
        // RFC 3261 §17.2.1: the recipient may take longer than 200 ms to
        // answer; 100 Trying stops the originator's retransmissions.
        self.reply(&key, &invite_a, 100, None).await;
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
                self.reply(&key, &invite_a, 500, None).await;
                return;
            }
        };
        let parties = SessionParties {
            calling_party: calling,
            called_party: called,
            call_id: call_id_a.clone(),
        };
        let functions = self.charged_functions(&parties, id);
        let kept_parties = parties.clone();
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
            invite_a: invite_a.clone(),
            invite_a_key: key.clone(),
            invite_b: invite_b.clone(),
            pending_reinvite: None,
            functions,
            parties: kept_parties,
            id,
            last_activity: Instant::now(),
            ok_sent: None,
        };
        self.legs.insert((call_id_a, tag_a), (id, Side::A));
        self.legs.insert((call_id_b, tag_b), (id, Side::B));

        if self.config.has(Deviation::StartBeforeAnswer) {
            charge(&mut session, FunctionCharging::start);
        }
        self.sessions.insert(id, session);
        match self.endpoint.send_request(invite_b, target_b).await {
            Ok(kb) => {
                self.client_txs.insert(kb, (id, Purpose::Invite));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reference server: leg B INVITE not sent");
                self.reply(&key, &invite_a, 503, None).await;
                self.end(id);
            }
        }
    }

    fn charged_functions(
        &self,
        parties: &SessionParties,
        id: SessionId,
    ) -> Vec<(FunctionCharging, mpsc::UnboundedSender<Ch1Request>)> {
        let (Some(cfg), Some(client)) = (&self.config.charging, &self.charging) else {
            return Vec::new();
        };
        cfg.functions
            .iter()
            .filter_map(|f| FunctionCharging::new(*f, &self.config, parties, id))
            .map(|f| (f, charging_queue(client.clone(), &self.config.deviations)))
            .collect()
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

    async fn cancel(&mut self, key: TxKey, cancel: rsip::Request) {
        let call_id = message::call_id(&cancel).ok();
        let found = self
            .sessions
            .iter()
            .find(|(_, s)| {
                s.phase == Phase::Inviting && message::call_id(&s.invite_a).ok() == call_id
            })
            .map(|(id, _)| *id);
        let Some(id) = found else {
            self.reply(&key, &cancel, 481, None).await;
            return;
        };
        self.reply(&key, &cancel, 200, None).await;
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let cancel_b = crate::sip::cancel_for(&s.invite_b);
        let target = s.b.target;
        if let Ok(k) = self.endpoint.send_request(cancel_b, target).await {
            self.client_txs.insert(k, (id, Purpose::Cancel));
        }
    }

    async fn in_dialog(&mut self, id: SessionId, side: Side, key: TxKey, request: rsip::Request) {
        let Some(s) = self.sessions.get_mut(&id) else {
            self.reply(&key, &request, 481, None).await;
            return;
        };
        s.last_activity = Instant::now();
        if let Some(d) = s.leg(side).dialog.as_mut()
            && d.handle_request(&request).is_err()
        {
            self.reply(&key, &request, 500, None).await;
            return;
        }
        match request.method {
            rsip::Method::Invite => self.reinvite(id, side, key, request).await,
            rsip::Method::Bye => self.client_bye(id, side, key, request).await,
            _ => self.reply(&key, &request, 200, None).await,
        }
    }

    /// A re-INVITE from either side: forward it, answer when the other side
    /// answers, then report an Interim (the figure of 6.2.3.4).
    async fn reinvite(&mut self, id: SessionId, side: Side, key: TxKey, request: rsip::Request) {
        let (local, transport) = (self.local, self.transport);
        let deviate_early = self.config.has(Deviation::InterimBeforeReinviteAnswer);
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
            self.reply(&key, &request, status, None).await;
            return;
        }
        let other = side.other();
        let target = s.leg(other).target;
        let Some(dialog) = s.leg(other).dialog.as_mut() else {
            self.reply(&key, &request, 500, None).await;
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
        s.pending_reinvite = Some((key.clone(), request.clone()));
        if deviate_early {
            charge(s, FunctionCharging::interim);
        }
        match self.endpoint.send_request(forwarded, target).await {
            Ok(k) => {
                self.client_txs.insert(k, (id, Purpose::ReInvite(other)));
            }
            Err(_) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.pending_reinvite = None;
                }
                self.reply(&key, &request, 500, None).await;
            }
        }
    }

    /// A BYE from a client (6.2.3.7, client initiated): answer it, end the
    /// other leg, report Stop.
    async fn client_bye(&mut self, id: SessionId, side: Side, key: TxKey, request: rsip::Request) {
        self.reply(&key, &request, 200, None).await;
        let (local, transport) = (self.local, self.transport);
        let no_stop = self.config.has(Deviation::NoStopOnBye);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.phase == Phase::Ended {
            return;
        }
        let was_server_terminating = s.phase == Phase::ServerTerminating;
        s.phase = Phase::Ended;
        let never =
            no_stop || (was_server_terminating && self.config.has(Deviation::NoStopOnServerBye));
        if !never {
            charge(s, FunctionCharging::stop);
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
        if let Some(bye) = bye
            && let Ok(k) = self.endpoint.send_request(bye, target).await
        {
            self.client_txs.insert(k, (id, Purpose::ForwardedBye));
        }
    }

    /// Ends a session at the server's initiative (inactivity timer, operator):
    /// BYE on both legs; each function's Stop waits for its user's 200 OK.
    async fn server_terminate(&mut self, id: SessionId) {
        let (local, transport) = (self.local, self.transport);
        let early_stop = self.config.has(Deviation::StopBeforeByeOk);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.phase != Phase::Established {
            return;
        }
        s.phase = Phase::ServerTerminating;
        if early_stop {
            charge(s, FunctionCharging::stop);
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
            if let Ok(k) = self.endpoint.send_request(bye, target).await {
                self.client_txs.insert(k, (id, Purpose::ServerBye(side)));
            }
        }
    }

    async fn handle_response(
        &mut self,
        key: TxKey,
        response: rsip::Response,
        retransmission: bool,
    ) {
        let Some(&(id, purpose)) = self.client_txs.get(&key) else {
            return;
        };
        let code = response.status_code.code();
        if code < 200 {
            if let Purpose::Invite = purpose
                && code > 100
            {
                self.relay_provisional(id, code).await;
                if self.config.has(Deviation::StartOnRinging)
                    && let Some(s) = self.sessions.get_mut(&id)
                {
                    charge(s, FunctionCharging::start);
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
            self.client_txs.remove(&key);
        }
        match purpose {
            Purpose::Invite => self.invite_answered(id, response, retransmission).await,
            Purpose::ReInvite(side) if retransmission => self.reack(id, side, &response).await,
            Purpose::ReInvite(side) => self.reinvite_answered(id, side, response).await,
            Purpose::ServerBye(side) => self.server_bye_answered(id, side),
            Purpose::ForwardedBye => {
                self.end(id);
            }
            Purpose::Cancel => {}
        }
    }

    async fn relay_provisional(&mut self, id: SessionId, code: u16) {
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
        response
            .headers
            .push(rsip::Header::Contact(self.contact().into()));
        let _ = self.endpoint.send_response(&s.invite_a_key, response).await;
    }

    async fn invite_answered(
        &mut self,
        id: SessionId,
        response: rsip::Response,
        retransmission: bool,
    ) {
        let (local, transport) = (self.local, self.transport);
        let contact = self.contact_uri();
        let contact_text = self.contact();
        let failed_start = self.config.has(Deviation::StartOnFailedInvite);
        let failed_event = self.config.has(Deviation::EventOnFailedInvite);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let code = response.status_code.code();
        if (200..300).contains(&code) {
            let dialog_b = match Dialog::uac(&s.invite_b, &response) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "reference server: bad 2xx on leg B");
                    return;
                }
            };
            let ack = dialog_b.ack(1, local, transport);
            let target_b = s.b.target;
            if retransmission {
                let _ = self.endpoint.send_stateless(ack.into(), target_b).await;
                if self.config.has(Deviation::SecondStartOnRetransmittedOk) {
                    let config = self.config.clone();
                    if let Some(s) = self.sessions.get_mut(&id) {
                        start_again(&config, s);
                    }
                }
                return;
            }
            s.b.dialog = Some(dialog_b);
            let _ = self.endpoint.send_stateless(ack.into(), target_b).await;
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            let mut ok = response_to(&s.invite_a, rsip::StatusCode::OK, Some(&s.a.local_tag));
            ok.headers.push(rsip::Header::Contact(contact_text.into()));
            let ct = content_type(&response.headers);
            message::set_body(&mut ok.headers, &mut ok.body, &ct, &response.body);
            match Dialog::uas(&s.invite_a, &s.a.local_tag, contact) {
                Ok(d) => s.a.dialog = Some(d),
                Err(e) => tracing::warn!(error = %e, "reference server: bad INVITE on leg A"),
            }
            s.phase = Phase::Established;
            s.last_activity = Instant::now();
            s.ok_sent = Some(Instant::now());
            let key_a = s.invite_a_key.clone();
            let _ = self.endpoint.send_response(&key_a, ok).await;
            // 6.2.3.1: the recipient's 200 OK starts charging.
            let early = self.config.has(Deviation::InterimBeforeStart);
            if !self.config.has(Deviation::NoStartOnAnswer)
                && let Some(s) = self.sessions.get_mut(&id)
            {
                charge(s, |f| super::proxy::answered(f, early));
            }
        } else {
            let failure = response_to(
                &s.invite_a,
                response.status_code.clone(),
                Some(&s.a.local_tag),
            );
            if failed_start {
                charge(s, FunctionCharging::start);
            }
            if failed_event {
                charge(s, FunctionCharging::failed_attempt);
            }
            charge(s, FunctionCharging::stop);
            let key_a = s.invite_a_key.clone();
            let _ = self.endpoint.send_response(&key_a, failure).await;
            if self.config.has(Deviation::LateStartAfterFailedInvite)
                && let Some(s) = self.sessions.remove(&id)
            {
                self.legs.retain(|_, (sid, _)| *sid != id);
                self.client_txs.retain(|_, (sid, _)| *sid != id);
                let at = Instant::now() + super::proxy::LATE_START;
                self.late_starts.push((at, s));
                return;
            }
            self.end(id);
        }
    }

    async fn reinvite_answered(
        &mut self,
        id: SessionId,
        answered_side: Side,
        response: rsip::Response,
    ) {
        let (local, transport) = (self.local, self.transport);
        let no_interim = self.config.has(Deviation::NoInterimOnReinvite);
        let early_interim = self.config.has(Deviation::InterimBeforeReinviteAnswer);
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
            d.handle_response(&response);
            if let Ok((cseq, _)) = message::cseq(&response) {
                let ack = d.ack(cseq, local, transport);
                let _ = self.endpoint.send_stateless(ack.into(), target).await;
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
        let _ = self.endpoint.send_response(&key, answer).await;
        // 6.2.3.4 (figure): the Interim follows the recipients' 200 OK.
        let interim = if (200..300).contains(&code) {
            !no_interim && !early_interim
        } else {
            self.config.has(Deviation::InterimOnRejectedReinvite)
        };
        if interim && let Some(s) = self.sessions.get_mut(&id) {
            charge(s, FunctionCharging::interim);
        }
    }

    /// ACKs a retransmitted 2xx to a re-INVITE we forwarded (RFC 3261
    /// 13.2.2.4): our first ACK was lost, or is still on its way.
    async fn reack(&mut self, id: SessionId, side: Side, response: &rsip::Response) {
        let (local, transport) = (self.local, self.transport);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let target = s.leg(side).target;
        if let Some(d) = s.leg(side).dialog.as_ref()
            && let Ok((cseq, _)) = message::cseq(response)
        {
            let ack = d.ack(cseq, local, transport);
            let _ = self.endpoint.send_stateless(ack.into(), target).await;
        }
    }

    fn server_bye_answered(&mut self, id: SessionId, side: Side) {
        let early_stop = self.config.has(Deviation::StopBeforeByeOk);
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let all_at_once = self.config.has(Deviation::StopAllOnFirstByeOk);
        // 6.2.3.7 (server initiated): Stop only after the client's 200 OK.
        if !early_stop && !self.config.has(Deviation::NoStopOnServerBye) {
            for (f, queue) in &mut s.functions {
                if serves(f.function, side) || all_at_once {
                    for req in f.stop() {
                        let _ = queue.send(req);
                    }
                }
            }
        }
        let all_stopped_or_answered = !self
            .client_txs
            .values()
            .any(|(sid, p)| *sid == id && matches!(p, Purpose::ServerBye(_)));
        if all_stopped_or_answered {
            self.end(id);
        }
    }

    async fn handle_timeout(&mut self, key: TxKey) {
        let Some((id, purpose)) = self.client_txs.remove(&key) else {
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
                    let _ = self.endpoint.send_response(&k, r).await;
                }
                self.end(id);
            }
            Purpose::ServerBye(side) => self.server_bye_answered(id, side),
            Purpose::ReInvite(side) => {
                let fake = rsip::Response {
                    status_code: rsip::StatusCode::RequestTimeout,
                    version: rsip::Version::V2,
                    headers: Default::default(),
                    body: Vec::new(),
                };
                self.reinvite_answered(id, side, fake).await;
            }
            Purpose::ForwardedBye => self.end(id),
            Purpose::Cancel => {}
        }
    }

    /// Forgets a session once nothing more can happen in it.
    fn end(&mut self, id: SessionId) {
        if let Some(mut s) = self.sessions.remove(&id) {
            // Whatever is still open is closed; a correct server has sent its
            // Stop already and this sends nothing.
            let never = self.config.has(Deviation::NoStopOnBye)
                || (s.phase == Phase::ServerTerminating
                    && self.config.has(Deviation::NoStopOnServerBye));
            if s.phase != Phase::Inviting && !never {
                charge(&mut s, FunctionCharging::stop);
            }
            self.legs.retain(|_, (sid, _)| *sid != id);
            self.client_txs.retain(|_, (sid, _)| *sid != id);
        }
    }
}

/// Deviation `second_start_on_retransmitted_ok`: each function's Start once
/// more, as if the session began again (same Session-Id).
fn start_again(config: &SutConfig, session: &mut Session) {
    for (f, queue) in &mut session.functions {
        for req in super::proxy::start_again(config, &session.parties, session.id, f.function) {
            let _ = queue.send(req);
        }
    }
}

/// Queues what every charged function of the session reports for an event.
fn charge(session: &mut Session, event: impl Fn(&mut FunctionCharging) -> Vec<Ch1Request>) {
    for (f, queue) in &mut session.functions {
        for req in event(f) {
            let _ = queue.send(req);
        }
    }
}

/// The proxy shape's task: moves events and commands into the sans-IO core
/// and its actions out to the endpoint and the charging queues.
async fn run_proxy(
    mut core: ProxyCore,
    endpoint: Endpoint,
    charging: Option<ChargingClient>,
    deviations: Vec<Deviation>,
    mut events: mpsc::UnboundedReceiver<TxEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut queues: HashMap<(u64, ChargedFunction), mpsc::UnboundedSender<Ch1Request>> =
        HashMap::new();
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => core.handle_sip(event, Instant::now()),
                None => break,
            },
            command = commands.recv() => match command {
                Some(Command::Terminate { call_id, reply }) => {
                    let _ = reply.send(core.terminate(&call_id, Instant::now()));
                }
                Some(Command::Shutdown) | None => break,
            },
            () = sleep => core.handle_timeout(Instant::now()),
        }
        while let Some(action) = core.poll_action() {
            match action {
                Action::Request {
                    key,
                    request,
                    target,
                } => match endpoint.send_request(request, target).await {
                    Ok(sent) if sent == key => {}
                    Ok(sent) => {
                        tracing::warn!(%sent, %key, "reference proxy: unexpected transaction key");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reference proxy: request not sent");
                        core.handle_sip(TxEvent::Timeout { key }, Instant::now());
                    }
                },
                Action::Respond { key, response } => {
                    if let Err(e) = endpoint.send_response(&key, response).await {
                        tracing::debug!(error = %e, "reference proxy: response not sent");
                    }
                }
                Action::Stateless { message, target } => {
                    let _ = endpoint.send_stateless(message, target).await;
                }
                Action::Charge {
                    session,
                    function,
                    request,
                } => {
                    if let Some(client) = &charging {
                        let queue = queues
                            .entry((session, function))
                            .or_insert_with(|| charging_queue(client.clone(), &deviations));
                        let _ = queue.send(request);
                    }
                }
                Action::Forget { session } => queues.retain(|(s, _), _| *s != session),
            }
        }
    }
    endpoint.shutdown().await;
}

/// One ordered sender per charged function: each request waits for the
/// answer to the one before (the client keeps it while the link is down).
fn charging_queue(
    client: ChargingClient,
    deviations: &[Deviation],
) -> mpsc::UnboundedSender<Ch1Request> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ch1Request>();
    let wrong_app = deviations.contains(&Deviation::WrongApplicationId);
    // stop_with_start must put its Stop on the wire before the client's BYE
    // can arrive: its requests leave back to back, not each after the
    // previous answer (the link still sends them in order).
    let pipelined = deviations.contains(&Deviation::StopWithStart);
    let send = move |req: Ch1Request| {
        let client = client.clone();
        async move {
            let sent = client
                .send_shaped(&req, |acr| {
                    if wrong_app {
                        super::charging::name_wrong_application(acr);
                    }
                })
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, session = %req.session_id, "reference server: charging request failed");
            }
        }
    };
    tokio::spawn(async move {
        use futures::FutureExt as _;
        while let Some(req) = rx.recv().await {
            if pipelined {
                // The first poll hands the request to the link, in order;
                // its answer is not waited for.
                let _ = send(req).now_or_never();
            } else {
                send(req).await;
            }
        }
    });
    tx
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

    use tokio::net::UdpSocket;

    use super::*;
    use crate::sip::framing::{encode, parse_datagram};
    use crate::sut::config::SipConfig;

    /// A bare UDP peer: what it receives is read raw, so that nothing below
    /// it absorbs a retransmitted ACK.
    struct Peer(UdpSocket);

    impl Peer {
        async fn bind() -> Peer {
            Peer(UdpSocket::bind("127.0.0.1:0").await.unwrap())
        }

        fn addr(&self) -> SocketAddr {
            self.0.local_addr().unwrap()
        }

        async fn send(&self, message: impl Into<rsip::SipMessage>, to: SocketAddr) {
            self.0.send_to(&encode(&message.into()), to).await.unwrap();
        }

        /// The next message `wanted` accepts, within 3 s.
        async fn next(&self, wanted: impl Fn(&rsip::SipMessage) -> bool) -> rsip::SipMessage {
            let mut buf = vec![0u8; 65536];
            tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let (n, _) = self.0.recv_from(&mut buf).await.unwrap();
                    let message = parse_datagram(&buf[..n]).unwrap();
                    if wanted(&message) {
                        return message;
                    }
                }
            })
            .await
            .expect("the expected message within 3 s")
        }
    }

    fn is_request(method: rsip::Method) -> impl Fn(&rsip::SipMessage) -> bool {
        move |m| matches!(m, rsip::SipMessage::Request(r) if r.method == method)
    }

    fn is_status(code: u16) -> impl Fn(&rsip::SipMessage) -> bool {
        move |m| matches!(m, rsip::SipMessage::Response(r) if r.status_code.code() == code)
    }

    async fn sut(shape: Shape, callee: SocketAddr) -> RunningSut {
        start(SutConfig {
            sip: SipConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                transport: crate::profile::Transport::Udp,
                t1: None,
            },
            shape,
            domain: "test.invalid".into(),
            route_users_to: callee,
            charging: None,
            inactivity_timer: None,
            admin: None,
            deviations: Vec::new(),
            conference: None,
        })
        .await
        .unwrap()
    }

    /// The caller's INVITE reaches the callee, which answers 200 OK; returns
    /// the INVITE as the callee got it and its 200 OK.
    async fn call(
        caller: &Peer,
        callee: &Peer,
        sut: SocketAddr,
    ) -> (rsip::Request, rsip::Response) {
        let invite = message::cpm_invite(&message::CpmInvite {
            from: "sip:alice@test.invalid".into(),
            from_tag: "a1".into(),
            to: "sip:bob@test.invalid".into(),
            call_id: new_call_id("127.0.0.1"),
            local: caller.addr(),
            transport: TransportKind::Udp,
            branch: new_branch(),
            conversation_id: "c".into(),
            contribution_id: "c".into(),
            msrp_port: 9,
        })
        .unwrap();
        caller.send(invite, sut).await;
        let rsip::SipMessage::Request(got) = callee.next(is_request(rsip::Method::Invite)).await
        else {
            unreachable!()
        };
        let mut ok = response_to(&got, rsip::StatusCode::OK, Some("b1"));
        ok.headers
            .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:bob@{}>",
                callee.addr()
            ))));
        crate::sip::dialog::copy_record_route(&got, &mut ok);
        callee.send(ok.clone(), sut).await;
        (got, ok)
    }

    #[tokio::test]
    async fn the_b2bua_acks_every_retransmitted_2xx() {
        let (caller, callee) = (Peer::bind().await, Peer::bind().await);
        let running = sut(Shape::B2bua, callee.addr()).await;
        let (_, ok) = call(&caller, &callee, running.sip).await;
        callee.next(is_request(rsip::Method::Ack)).await;
        // The ACK was lost, say: the callee sends its 200 OK again, and the
        // B2BUA acknowledges it again (RFC 3261 13.2.2.4).
        callee.send(ok, running.sip).await;
        callee.next(is_request(rsip::Method::Ack)).await;
        running.shutdown();
    }

    #[tokio::test]
    async fn the_proxy_relays_a_retransmitted_2xx_to_the_caller() {
        let (caller, callee) = (Peer::bind().await, Peer::bind().await);
        let running = sut(Shape::Proxy, callee.addr()).await;
        let (invite, ok) = call(&caller, &callee, running.sip).await;
        assert!(
            invite
                .headers
                .iter()
                .any(|h| matches!(h, rsip::Header::RecordRoute(_))),
            "the proxy record-routes"
        );
        let first = caller.next(is_status(200)).await;
        let sent = std::time::Instant::now();
        callee.send(ok, running.sip).await;
        let again = caller.next(is_status(200)).await;
        assert!(
            sent.elapsed() < crate::sip::transaction::Timers::default().t1,
            "relayed at once, not the proxy's own retransmission after T1"
        );
        assert_eq!(
            message::call_id(&first).ok(),
            message::call_id(&again).ok(),
            "the same 200 OK"
        );
        running.shutdown();
    }
}
