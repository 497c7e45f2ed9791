//! RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.
//!
//! The [`TransactionLayer`] does no I/O and reads no clock: messages come in
//! through [`TransactionLayer::handle_incoming`], time through
//! [`TransactionLayer::handle_timeout`]; what to send leaves through
//! [`TransactionLayer::poll_transmit`], what the TU must see through
//! [`TransactionLayer::poll_event`]. Every timer is a deadline computed from
//! the `now` passed in, so tests drive it on a virtual clock.
//!
//! Timers (T1/T2/T4 from [`Timers`]):
//! - INVITE client: A (retransmit, UDP only, T1 doubling), B (64·T1 timeout in
//!   Calling), D (32 s on UDP, 0 on TCP, absorbs final retransmissions and
//!   re-sends the ACK), M (64·T1 in Accepted: 2xx retransmissions are passed up
//!   flagged).
//! - non-INVITE client: E (retransmit, UDP only, T1 doubling to T2; T2 once
//!   Proceeding), F (64·T1 timeout), K (T4 on UDP, 0 on TCP).
//! - INVITE server: G (retransmit a non-2xx final, UDP only), H (64·T1 without
//!   ACK → Timeout), I (T4 on UDP, 0 on TCP); for a 2xx the layer itself
//!   retransmits over UDP (T1 doubling to T2) until the ACK (Call-ID + CSeq
//!   number) arrives, or 64·T1 passes → Timeout (RFC 6026 Accepted, Timer L).
//! - non-INVITE server: J (64·T1 on UDP, 0 on TCP) absorbs retransmissions
//!   and re-sends the last response.
//!
//! Cost: each transaction keeps one entry, its earliest deadline, in a timer
//! queue ordered by (deadline, arming order). [`TransactionLayer::poll_timeout`]
//! reads the first entry, [`TransactionLayer::handle_timeout`] pops only the
//! due ones, and a message touches only its own transaction: nothing scans
//! every live transaction, so a flood of requests for nobody (each a server
//! transaction for 64·T1) costs O(log n) a message, not O(n).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use thiserror::Error;

use super::framing::ExtensionRequest;

/// The transport a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
}

impl TransportKind {
    /// Reliable transports get no retransmissions (RFC 3261 §17).
    pub fn reliable(self) -> bool {
        matches!(self, TransportKind::Tcp)
    }

    /// The token in a Via's sent-protocol.
    pub fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Where a message goes to or came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}

impl Target {
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Udp,
            addr,
        }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Tcp,
            addr,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Which side of a transaction we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

/// Identifies a transaction. Client transactions match responses by branch +
/// CSeq method (their `sent_by` is empty); server transactions match requests
/// by branch + sent-by + method, with ACK mapped to INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub method: String,
    pub sent_by: String,
    pub role: Role,
}

impl std::fmt::Display for TxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role} {} {}", self.method, self.branch)?;
        if !self.sent_by.is_empty() {
            write!(f, " from {}", self.sent_by)?;
        }
        Ok(())
    }
}

/// What the transaction layer reports to the TU.
#[derive(Debug, Clone)]
pub enum TxEvent {
    /// A new request from the network (not a retransmission). `key` is None
    /// for an ACK (which has no server transaction of its own when it
    /// acknowledges a 2xx) — ACKs go to the TU too.
    Request {
        key: Option<TxKey>,
        request: rsip::Request,
        source: Target,
    },
    /// A response for a client transaction (1xx and final; 2xx
    /// retransmissions to INVITE are also passed up, flagged).
    Response {
        key: TxKey,
        response: rsip::Response,
        retransmission: bool,
        /// Where it came from: the transaction matches by branch, so a
        /// response from a peer other than the one asked is still its answer,
        /// and the caller may want to say so.
        source: Target,
    },
    /// Client transaction Timer B/F fired, or a server INVITE transaction got
    /// no ACK (Timer H / L), or transport failure.
    Timeout { key: TxKey },
    /// A message that could not be matched or parsed, for the report (never
    /// dropped silently).
    Stray { reason: String, source: Target },
    /// A request the layer answered itself with an error response instead of
    /// passing it up: 501 for a method nobody here implements (RFC 3261
    /// §8.2.1), 400 for a CSeq method that differs from the request's
    /// (RFC 4475 mismatch01). For the report.
    Rejected {
        status: u16,
        reason: String,
        source: Target,
    },
}

/// Errors of the TU's calls into the layer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxError {
    #[error("request lacks a usable {header} header: {detail}")]
    MissingHeader {
        header: &'static str,
        detail: String,
    },
    #[error("ACK has no client transaction; send it with send_stateless")]
    AckNeedsNoTransaction,
    #[error("a transaction {key} already exists: use a fresh Via branch")]
    Duplicate { key: TxKey },
    #[error("no transaction {key} (already terminated, or never existed)")]
    UnknownTransaction { key: TxKey },
    #[error("transaction {key} is a client transaction; responses go on server transactions")]
    NotServer { key: TxKey },
    #[error("transaction {key} already sent a final response ({status}); cannot send {attempted}")]
    AlreadyFinal {
        key: TxKey,
        status: u16,
        attempted: u16,
    },
    #[error("transaction {key} can only be forgotten after a final response, not {status}")]
    NotFinal { key: TxKey, status: u16 },
    #[error("response CSeq method {response} does not match transaction {key}")]
    MethodMismatch { key: TxKey, response: String },
}

// ---------------------------------------------------------------------------
// Header helpers (liberal: string level, no reliance on rsip's typed parsers)
// ---------------------------------------------------------------------------

/// The parts of a Via value the layer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViaInfo {
    /// "UDP", "TCP", ... (upper case).
    pub transport: String,
    /// host[:port], lower-cased.
    pub sent_by: String,
    pub branch: Option<String>,
    pub received: Option<String>,
    /// `Some(None)` for a bare `rport`, `Some(Some(p))` for `rport=p`.
    pub rport: Option<Option<u16>>,
}

/// Parses a Via value such as `SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport`.
pub fn parse_via(value: &str) -> Option<ViaInfo> {
    // "SIP / 2.0 / UDP host : port ; branch = x" → "SIP/2.0/UDP host:port;branch=x".
    let tight = super::framing::tighten_via(value);
    let mut parts = tight.split(';');
    let compact = parts.next()?.trim();
    let (proto, sent_by) = compact.split_once(' ')?;
    let transport = proto.rsplit('/').next()?.to_ascii_uppercase();
    let sent_by = sent_by.trim().to_ascii_lowercase();
    if sent_by.is_empty() {
        return None;
    }
    let mut info = ViaInfo {
        transport,
        sent_by,
        branch: None,
        received: None,
        rport: None,
    };
    for p in parts {
        let (name, val) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if name.eq_ignore_ascii_case("branch") {
            info.branch = val.map(str::to_string);
        } else if name.eq_ignore_ascii_case("received") {
            info.received = val.map(str::to_string);
        } else if name.eq_ignore_ascii_case("rport") {
            info.rport = Some(val.and_then(|v| v.parse().ok()));
        }
    }
    Some(info)
}

/// The topmost Via of a message.
pub fn top_via(headers: &rsip::Headers) -> Option<ViaInfo> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Via(v) => parse_via(v.value()),
        _ => None,
    })
}

/// CSeq number and method of a message, the method as sent (methods are
/// case-sensitive, RFC 3261 §7.1).
pub fn cseq_of(headers: &rsip::Headers) -> Option<(u32, String)> {
    headers.iter().find_map(|h| match h {
        rsip::Header::CSeq(c) => {
            let mut it = c.value().split_whitespace();
            let n = it.next()?.parse().ok()?;
            let m = it.next()?.to_string();
            Some((n, m))
        }
        _ => None,
    })
}

/// Call-ID of a message.
pub fn call_id_of(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        rsip::Header::CallId(c) => Some(c.value().trim().to_string()),
        _ => None,
    })
}

/// The `tag` parameter of a From/To value (a header parameter, never one
/// inside the `<...>` URI), with any whitespace RFC 3261 allows around `;`
/// and `=`; `None` for a tag without a value.
pub fn tag_param(value: &str) -> Option<String> {
    super::framing::header_param(value, "tag").filter(|t| !t.is_empty())
}

fn status_of(response: &rsip::Response) -> u16 {
    response.status_code.code()
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Calling (INVITE) or Trying (non-INVITE).
    Initial,
    Proceeding,
    /// A non-2xx final (INVITE) or any final (non-INVITE) arrived.
    Completed,
    /// A 2xx to INVITE arrived (RFC 6026).
    Accepted,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    request: rsip::Request,
    target: Target,
    state: ClientState,
    /// Next retransmission (A/E) and the interval after it.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B/F: timeout.
    timeout_at: Option<Instant>,
    /// Timer D/K/M: end of the transaction.
    end_at: Option<Instant>,
    /// The ACK we generated for a non-2xx final.
    ack: Option<rsip::Request>,
    /// This transaction's entry in the timer queue.
    armed: Option<Slot>,
}

impl ClientTx {
    fn next_deadline(&self) -> Option<Instant> {
        earliest(self.retransmit_at, self.timeout_at, self.end_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// non-INVITE: no response sent yet.
    Trying,
    Proceeding,
    /// Final sent (non-2xx for INVITE).
    Completed,
    /// INVITE: ACK for the non-2xx received (Timer I running).
    Confirmed,
    /// INVITE: 2xx sent, waiting for the ACK (RFC 6026).
    Accepted,
    /// INVITE: 2xx sent and ACKed; absorbs retransmitted INVITEs and ACKs
    /// until Timer L.
    Acked,
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    source: Target,
    call_id: String,
    cseq: u32,
    state: ServerState,
    last_response: Option<rsip::Response>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H / L: no ACK → Timeout.
    timeout_at: Option<Instant>,
    /// Timer I / J / L: end.
    end_at: Option<Instant>,
    /// INVITE: the 100 (Trying) sent if the TU has not answered by then
    /// (RFC 3261 17.2.1: within 200 ms), so that the client's Timer B
    /// stops while a test user or a server takes its time.
    trying: Option<(Instant, rsip::Response)>,
    /// This transaction's entry in the timer queue.
    armed: Option<Slot>,
}

impl ServerTx {
    fn next_deadline(&self) -> Option<Instant> {
        let trying = self.trying.as_ref().map(|(at, _)| *at);
        earliest(self.retransmit_at, self.timeout_at, self.end_at)
            .into_iter()
            .chain(trying)
            .min()
    }
}

/// How long an INVITE server transaction waits for its TU before it answers
/// 100 (Trying) itself (RFC 3261 17.2.1).
const TRYING_AFTER: Duration = Duration::from_millis(200);

/// A place in the timer queue: the deadline, then the order of arming, so
/// that two transactions due at the same instant fire in the order they were
/// armed and never collide.
type Slot = (Instant, u64);

fn earliest(a: Option<Instant>, b: Option<Instant>, c: Option<Instant>) -> Option<Instant> {
    [a, b, c].into_iter().flatten().min()
}

/// The transaction layer: every client and server transaction of an endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    clients: HashMap<TxKey, ClientTx>,
    servers: HashMap<TxKey, ServerTx>,
    /// Every transaction with a timer running, once, at its earliest
    /// deadline.
    deadlines: BTreeMap<Slot, TxKey>,
    /// The next arming order.
    armings: u64,
    /// INVITE server transactions by Call-ID and CSeq number: an ACK for a
    /// 2xx carries a branch of its own and is matched by these.
    /// (A set: a peer may send many with one Call-ID and CSeq, each with a
    /// branch of its own; removing one must not cost the others.)
    invites: HashMap<(String, u32), HashSet<TxKey>>,
    transmits: VecDeque<(Target, rsip::SipMessage)>,
    events: VecDeque<TxEvent>,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            clients: HashMap::new(),
            servers: HashMap::new(),
            deadlines: BTreeMap::new(),
            armings: 0,
            invites: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// Live transactions (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn timer_64t1(&self) -> Duration {
        self.timers.t1 * 64
    }

    /// Creates a client transaction (INVITE or non-INVITE per method; ACK is
    /// not allowed here — use send_stateless). The request must carry a Via
    /// with a branch, a CSeq and a Call-ID.
    pub fn send_request(
        &mut self,
        request: rsip::Request,
        target: Target,
        now: Instant,
    ) -> Result<TxKey, TxError> {
        if request.method == rsip::Method::Ack {
            return Err(TxError::AckNeedsNoTransaction);
        }
        let via = top_via(&request.headers).ok_or_else(|| TxError::MissingHeader {
            header: "Via",
            detail: "no parseable Via".into(),
        })?;
        let branch = via.branch.ok_or_else(|| TxError::MissingHeader {
            header: "Via",
            detail: "the top Via has no branch parameter (use dialog::new_branch())".into(),
        })?;
        if cseq_of(&request.headers).is_none() {
            return Err(TxError::MissingHeader {
                header: "CSeq",
                detail: "no parseable CSeq".into(),
            });
        }
        if call_id_of(&request.headers).is_none() {
            return Err(TxError::MissingHeader {
                header: "Call-ID",
                detail: "no Call-ID".into(),
            });
        }
        let key = TxKey {
            branch,
            method: request.method.to_string(),
            sent_by: String::new(),
            role: Role::Client,
        };
        if self.clients.contains_key(&key) {
            return Err(TxError::Duplicate { key });
        }
        let invite = request.method == rsip::Method::Invite;
        let t64 = self.timer_64t1();
        let tx = ClientTx {
            invite,
            request: request.clone(),
            target,
            state: ClientState::Initial,
            retransmit_at: (!target.transport.reliable()).then(|| now + self.timers.t1),
            interval: self.timers.t1,
            timeout_at: Some(now + t64),
            end_at: None,
            ack: None,
            armed: None,
        };
        self.clients.insert(key.clone(), tx);
        self.arm(&key);
        self.transmits.push_back((target, request.into()));
        Ok(key)
    }

    /// Sends a response within a server transaction (provisional or final).
    pub fn send_response(
        &mut self,
        key: &TxKey,
        response: rsip::Response,
        now: Instant,
    ) -> Result<(), TxError> {
        if key.role != Role::Server {
            return Err(TxError::NotServer { key: key.clone() });
        }
        let timers = self.timers;
        let t64 = self.timer_64t1();
        let tx = self
            .servers
            .get_mut(key)
            .ok_or_else(|| TxError::UnknownTransaction { key: key.clone() })?;
        if let Some((_, m)) = cseq_of(&response.headers)
            && m != key.method
        {
            return Err(TxError::MethodMismatch {
                key: key.clone(),
                response: m,
            });
        }
        let status = status_of(&response);
        match tx.state {
            ServerState::Trying | ServerState::Proceeding => {}
            _ => {
                return Err(TxError::AlreadyFinal {
                    key: key.clone(),
                    status: tx.last_response.as_ref().map(status_of).unwrap_or(0),
                    attempted: status,
                });
            }
        }
        let unreliable = !tx.source.transport.reliable();
        // The TU answered: no 100 (Trying) of the layer's own.
        tx.trying = None;
        if status < 200 {
            tx.state = ServerState::Proceeding;
        } else if tx.invite && status < 300 {
            tx.state = ServerState::Accepted;
            tx.retransmit_at = unreliable.then(|| now + timers.t1);
            tx.interval = timers.t1;
            tx.timeout_at = Some(now + t64); // Timer L
            tx.end_at = None;
        } else if tx.invite {
            tx.state = ServerState::Completed;
            tx.retransmit_at = unreliable.then(|| now + timers.t1);
            tx.interval = timers.t1;
            tx.timeout_at = Some(now + t64); // Timer H
            tx.end_at = None;
        } else {
            tx.state = ServerState::Completed;
            tx.end_at = Some(if unreliable { now + t64 } else { now });
        }
        tx.last_response = Some(response.clone());
        self.transmits.push_back((tx.source, response.into()));
        // A reliable non-INVITE server transaction ends at once (Timer J = 0).
        self.settle(key, now);
        Ok(())
    }

    /// Sends a final response and forgets the server transaction at once:
    /// RFC 3261 §8.2.7's stateless UAS, for a request that belongs to no
    /// one (a flood of them then holds no state for 64·T1 each). A
    /// retransmission of the request comes up again as a new request, to be
    /// answered again; for an INVITE, the peer's ACK to a non-2xx comes up
    /// as an ACK without a transaction. Real test users' requests keep
    /// [`TransactionLayer::send_response`].
    pub fn send_response_and_forget(
        &mut self,
        key: &TxKey,
        response: rsip::Response,
        now: Instant,
    ) -> Result<(), TxError> {
        let status = status_of(&response);
        if status < 200 {
            return Err(TxError::NotFinal {
                key: key.clone(),
                status,
            });
        }
        self.send_response(key, response, now)?;
        self.remove_server(key);
        Ok(())
    }

    /// Sends without a transaction: ACK for 2xx, or anything deliberately
    /// malformed later.
    pub fn send_stateless(&mut self, message: rsip::SipMessage, target: Target) {
        self.transmits.push_back((target, message));
    }

    /// The INVITE server transaction a CANCEL server transaction refers to
    /// (same branch and sent-by), if it is still alive.
    pub fn cancel_target(&self, cancel_key: &TxKey) -> Option<TxKey> {
        let key = TxKey {
            method: "INVITE".into(),
            ..cancel_key.clone()
        };
        self.servers.contains_key(&key).then_some(key)
    }

    /// A message from the network.
    pub fn handle_incoming(&mut self, message: rsip::SipMessage, source: Target, now: Instant) {
        match message {
            rsip::SipMessage::Request(r) => self.incoming_request(r, source, now),
            rsip::SipMessage::Response(r) => self.incoming_response(r, source, now),
        }
    }

    /// Something the TU should see in the report (bytes that did not parse, a
    /// connection that broke): never dropped silently.
    pub fn report_stray(&mut self, reason: String, source: Target) {
        self.events.push_back(TxEvent::Stray { reason, source });
    }

    /// The transport could not reach `target` (connect refused, connection
    /// reset): every transaction sending there times out (RFC 3261 §17.1.4).
    pub fn handle_transport_error(&mut self, target: Target, _now: Instant) {
        let failed: Vec<TxKey> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.target == target)
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            if let Some(tx) = self.remove_client(&key)
                && matches!(tx.state, ClientState::Initial | ClientState::Proceeding)
            {
                self.events.push_back(TxEvent::Timeout { key });
            }
        }
        let failed: Vec<TxKey> = self
            .servers
            .iter()
            .filter(|(_, tx)| tx.source == target)
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            if let Some(tx) = self.remove_server(&key)
                && matches!(
                    tx.state,
                    ServerState::Accepted | ServerState::Completed | ServerState::Proceeding
                )
                && tx.invite
            {
                self.events.push_back(TxEvent::Timeout { key });
            }
        }
    }

    fn stray(&mut self, reason: impl Into<String>, source: Target) {
        self.events.push_back(TxEvent::Stray {
            reason: reason.into(),
            source,
        });
    }

    /// A request whose method rsip cannot hold (RFC 3261 §7.1
    /// `extension-method`): nobody here implements it, so the layer answers
    /// 501 Not Implemented (RFC 3261 §8.2.1; 405 is for a method known but
    /// not allowed) within a non-INVITE server transaction that absorbs its
    /// retransmissions, and reports it as [`TxEvent::Rejected`].
    pub fn handle_extension(&mut self, request: ExtensionRequest, source: Target, now: Instant) {
        let method = request.method().to_string();
        let Some(via) = top_via(request.headers()) else {
            return self.stray(format!("{method} request without a parseable Via"), source);
        };
        let reason = format!(
            "{method} request: a method nobody here implements, answered 501 (RFC 3261 §8.2.1)"
        );
        self.reject(request.carrier(), method, &via, 501, reason, source, now);
    }

    /// Answers `request` with `status` in a server transaction of its own
    /// (so retransmissions get the same answer) and reports it.
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        request: &rsip::Request,
        method: String,
        via: &ViaInfo,
        status: u16,
        reason: String,
        source: Target,
        now: Instant,
    ) {
        let call_id = call_id_of(&request.headers).unwrap_or_default();
        let cseq = cseq_of(&request.headers).map(|(n, _)| n).unwrap_or(0);
        let key = TxKey {
            branch: via
                .branch
                .clone()
                .unwrap_or_else(|| format!("rfc2543;{call_id};{cseq};{method}")),
            method,
            sent_by: via.sent_by.clone(),
            role: Role::Server,
        };
        if let Some(tx) = self.servers.get(&key) {
            if let Some(r) = tx.last_response.clone() {
                self.transmits.push_back((tx.source, r.into()));
            }
            return;
        }
        let mut response = response_to(
            request,
            rsip::StatusCode::from(status),
            Some(&super::dialog::new_tag()),
        );
        if status == 501 {
            response
                .headers
                .push(rsip::Header::Allow(super::message::ALLOWED_METHODS.into()));
        }
        let t64 = self.timer_64t1();
        self.servers.insert(
            key.clone(),
            ServerTx {
                invite: false,
                source,
                call_id,
                cseq,
                state: ServerState::Completed,
                last_response: Some(response.clone()),
                retransmit_at: None,
                interval: self.timers.t1,
                timeout_at: None,
                // Timer J: absorbs retransmissions (64·T1 on UDP, 0 on TCP).
                end_at: Some(if source.transport.reliable() {
                    now
                } else {
                    now + t64
                }),
                trying: None,
                armed: None,
            },
        );
        self.transmits.push_back((source, response.into()));
        self.events.push_back(TxEvent::Rejected {
            status,
            reason,
            source,
        });
        self.settle(&key, now);
    }

    fn incoming_request(&mut self, request: rsip::Request, source: Target, now: Instant) {
        let method = request.method.to_string();
        let Some(via) = top_via(&request.headers) else {
            return self.stray(format!("{method} request without a parseable Via"), source);
        };
        let Some((cseq, cseq_method)) = cseq_of(&request.headers) else {
            return self.stray(format!("{method} request without a parseable CSeq"), source);
        };
        let Some(call_id) = call_id_of(&request.headers) else {
            return self.stray(format!("{method} request without a Call-ID"), source);
        };
        if cseq_method != method && method != "ACK" {
            let reason = format!(
                "{method} request with CSeq method {cseq_method}: answered 400 (RFC 3261 §8.1.1.5)"
            );
            return self.reject(&request, method, &via, 400, reason, source, now);
        }
        if cseq_method != method {
            // An ACK is never answered.
            return self.stray(
                format!("{method} request with CSeq method {cseq_method}"),
                source,
            );
        }
        let branch = match via.branch.clone() {
            Some(b) if b.starts_with("z9hG4bK") => b,
            // RFC 2543 peer: identify the transaction by what RFC 3261
            // §17.2.3 lists, enough for retransmission matching.
            other => {
                let from_tag = request
                    .headers
                    .iter()
                    .find_map(|h| match h {
                        rsip::Header::From(f) => tag_param(f.value()),
                        _ => None,
                    })
                    .unwrap_or_default();
                format!(
                    "rfc2543;{};{call_id};{cseq};{from_tag};{}",
                    other.unwrap_or_default(),
                    request.uri
                )
            }
        };
        let is_ack = request.method == rsip::Method::Ack;
        let key = TxKey {
            branch,
            method: if is_ack { "INVITE".into() } else { method },
            sent_by: via.sent_by.clone(),
            role: Role::Server,
        };

        if is_ack {
            return self.incoming_ack(key, request, source, &call_id, cseq, now);
        }

        if let Some(tx) = self.servers.get_mut(&key) {
            // A retransmission: re-send the last response, if any.
            match tx.state {
                ServerState::Trying => {}
                ServerState::Accepted | ServerState::Acked => {
                    // RFC 6026: absorbed; the 2xx retransmission timer runs.
                }
                _ => {
                    if let Some(r) = tx.last_response.clone() {
                        self.transmits.push_back((tx.source, r.into()));
                    }
                }
            }
            return;
        }

        let invite = request.method == rsip::Method::Invite;
        let t64 = self.timer_64t1();
        self.servers.insert(
            key.clone(),
            ServerTx {
                invite,
                source,
                call_id: call_id.clone(),
                cseq,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                last_response: None,
                retransmit_at: None,
                interval: self.timers.t1,
                timeout_at: None,
                // A TU that never answers a non-INVITE must not leak it.
                end_at: (!invite).then(|| now + t64 * 4),
                trying: invite.then(|| {
                    (
                        now + TRYING_AFTER,
                        response_to(&request, rsip::StatusCode::Trying, None),
                    )
                }),
                armed: None,
            },
        );
        if invite {
            self.invites
                .entry((call_id, cseq))
                .or_default()
                .insert(key.clone());
        }
        self.arm(&key);
        self.events.push_back(TxEvent::Request {
            key: Some(key),
            request,
            source,
        });
    }

    fn incoming_ack(
        &mut self,
        key: TxKey,
        request: rsip::Request,
        source: Target,
        call_id: &str,
        cseq: u32,
        now: Instant,
    ) {
        let t4 = self.timers.t4;
        // Same branch as the INVITE: the ACK for a non-2xx final (or a peer
        // reusing the branch for the 2xx ACK).
        // Otherwise the 2xx's dialog: Call-ID and CSeq, and both tags, for a
        // proxy keeps one Call-ID (and may keep one CSeq) on both legs.
        let tags = (
            super::message::from_tag(&request),
            super::message::to_tag(&request),
        );
        let matched = if self.servers.contains_key(&key) {
            Some(key)
        } else {
            self.invites
                .get(&(call_id.to_string(), cseq))
                .into_iter()
                .flatten()
                .find(|k| {
                    self.servers.get(*k).is_some_and(|tx| {
                        matches!(tx.state, ServerState::Accepted | ServerState::Acked)
                            && tx.last_response.as_ref().is_none_or(|r| {
                                (super::message::from_tag(r), super::message::to_tag(r)) == tags
                            })
                    })
                })
                .cloned()
        };
        let Some(k) = matched else {
            // An ACK for a 2xx whose transaction has ended: the TU's business.
            self.events.push_back(TxEvent::Request {
                key: None,
                request,
                source,
            });
            return;
        };
        let Some(tx) = self.servers.get_mut(&k) else {
            return;
        };
        match tx.state {
            ServerState::Completed => {
                tx.state = ServerState::Confirmed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.end_at = Some(if tx.source.transport.reliable() {
                    now
                } else {
                    now + t4
                });
                self.settle(&k, now);
            }
            ServerState::Accepted => {
                tx.state = ServerState::Acked;
                tx.retransmit_at = None;
                // Until Timer L the transaction absorbs INVITE / ACK
                // retransmissions; then it ends quietly.
                tx.end_at = tx.timeout_at.take();
                self.events.push_back(TxEvent::Request {
                    key: None,
                    request,
                    source,
                });
                self.settle(&k, now);
            }
            // Confirmed / Acked: a retransmitted ACK, absorbed.
            ServerState::Confirmed | ServerState::Acked => {}
            ServerState::Trying | ServerState::Proceeding => {
                self.stray(
                    format!("ACK for transaction {k} that has sent no final response"),
                    source,
                );
            }
        }
    }

    fn incoming_response(&mut self, response: rsip::Response, source: Target, now: Instant) {
        let status = status_of(&response);
        let Some(via) = top_via(&response.headers) else {
            return self.stray(format!("{status} response without a parseable Via"), source);
        };
        let Some((_, method)) = cseq_of(&response.headers) else {
            return self.stray(
                format!("{status} response without a parseable CSeq"),
                source,
            );
        };
        let Some(branch) = via.branch else {
            return self.stray(format!("{status} response whose Via has no branch"), source);
        };
        let key = TxKey {
            branch,
            method,
            sent_by: String::new(),
            role: Role::Client,
        };
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(&key) else {
            return self.stray(
                format!("{status} response matches no client transaction ({key})"),
                source,
            );
        };
        let reliable = tx.target.transport.reliable();
        let mut pass_up = true;
        let mut retransmission = false;
        match (tx.state, status) {
            (ClientState::Initial | ClientState::Proceeding, 100..=199) => {
                tx.state = ClientState::Proceeding;
                if tx.invite {
                    // Timer A stops; Timer B only fires in Calling.
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                } else if tx.retransmit_at.is_some() {
                    // Timer E continues at T2.
                    tx.interval = timers.t2;
                }
            }
            (ClientState::Initial | ClientState::Proceeding, 200..=299) if tx.invite => {
                tx.state = ClientState::Accepted;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.end_at = Some(now + timers.t1 * 64); // Timer M
            }
            (ClientState::Initial | ClientState::Proceeding, _) => {
                tx.state = ClientState::Completed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if tx.invite {
                    let ack = ack_for_non_2xx(&tx.request, &response);
                    self.transmits.push_back((tx.target, ack.clone().into()));
                    tx.ack = Some(ack);
                    tx.end_at = Some(if reliable {
                        now
                    } else {
                        now + Duration::from_secs(32).max(timers.t1 * 64)
                    });
                } else {
                    tx.end_at = Some(if reliable { now } else { now + timers.t4 });
                }
            }
            (ClientState::Accepted, 200..=299) => {
                retransmission = true;
            }
            (ClientState::Completed, _) => {
                pass_up = false;
                if let Some(ack) = tx.ack.clone() {
                    self.transmits.push_back((tx.target, ack.into()));
                }
            }
            (ClientState::Accepted, _) => {
                pass_up = false;
                self.stray(
                    format!("{status} response after a 2xx on client transaction {key}"),
                    source,
                );
            }
        }
        self.settle(&key, now);
        if pass_up {
            self.events.push_back(TxEvent::Response {
                key,
                response,
                retransmission,
                source,
            });
        }
    }

    /// Fires every timer due at `now`, in deadline order; costs only the
    /// due transactions.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry()
            && entry.key().0 <= now
        {
            let key = entry.remove();
            match key.role {
                Role::Client => self.fire_client(&key, now),
                Role::Server => self.fire_server(&key, now),
            }
            self.settle(&key, now);
        }
    }

    /// Timers A/E (retransmit) and B/F (timeout) of one client transaction
    /// (whose queue entry the caller has taken).
    fn fire_client(&mut self, key: &TxKey, now: Instant) {
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(key) else {
            return;
        };
        tx.armed = None;
        while let Some(at) = tx.retransmit_at
            && at <= now
        {
            self.transmits
                .push_back((tx.target, rsip::SipMessage::from(tx.request.clone())));
            tx.interval = if tx.invite {
                tx.interval * 2
            } else {
                (tx.interval * 2).min(timers.t2)
            };
            tx.retransmit_at = Some(at + tx.interval);
            if let Some(t) = tx.timeout_at
                && at + tx.interval >= t
            {
                tx.retransmit_at = None;
            }
        }
        if let Some(t) = tx.timeout_at
            && t <= now
        {
            self.events.push_back(TxEvent::Timeout { key: key.clone() });
            tx.timeout_at = None;
            tx.retransmit_at = None;
            tx.end_at = Some(now);
        }
    }

    /// The 2xx / G retransmissions and Timer H / L of one server transaction
    /// (whose queue entry the caller has taken).
    fn fire_server(&mut self, key: &TxKey, now: Instant) {
        let timers = self.timers;
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        tx.armed = None;
        if let Some((at, _)) = &tx.trying
            && *at <= now
            && let Some((_, trying)) = tx.trying.take()
        {
            // Kept as the last response: a retransmitted INVITE gets it again.
            self.transmits
                .push_back((tx.source, rsip::SipMessage::from(trying.clone())));
            tx.last_response = Some(trying);
        }
        while let Some(at) = tx.retransmit_at
            && at <= now
        {
            if let Some(r) = &tx.last_response {
                self.transmits
                    .push_back((tx.source, rsip::SipMessage::from(r.clone())));
            }
            tx.interval = (tx.interval * 2).min(timers.t2);
            tx.retransmit_at = Some(at + tx.interval);
            if let Some(t) = tx.timeout_at
                && at + tx.interval >= t
            {
                tx.retransmit_at = None;
            }
        }
        if let Some(t) = tx.timeout_at
            && t <= now
        {
            self.events.push_back(TxEvent::Timeout { key: key.clone() });
            tx.timeout_at = None;
            tx.retransmit_at = None;
            tx.end_at = Some(now);
        }
    }

    /// After a transaction's timers changed: drops it if its end has come,
    /// else moves its queue entry to its earliest deadline.
    fn settle(&mut self, key: &TxKey, now: Instant) {
        let ended = match key.role {
            Role::Client => self.clients.get(key).map(|tx| tx.end_at),
            Role::Server => self.servers.get(key).map(|tx| tx.end_at),
        };
        match ended {
            None => {}
            Some(Some(end)) if end <= now => match key.role {
                Role::Client => drop(self.remove_client(key)),
                Role::Server => drop(self.remove_server(key)),
            },
            Some(_) => self.arm(key),
        }
    }

    /// Puts the transaction's earliest deadline in the queue, replacing the
    /// entry it had (if the deadline moved).
    fn arm(&mut self, key: &TxKey) {
        let (next, armed) = match key.role {
            Role::Client => match self.clients.get_mut(key) {
                Some(tx) => (tx.next_deadline(), &mut tx.armed),
                None => return,
            },
            Role::Server => match self.servers.get_mut(key) {
                Some(tx) => (tx.next_deadline(), &mut tx.armed),
                None => return,
            },
        };
        if armed.map(|(at, _)| at) == next {
            return;
        }
        if let Some(old) = armed.take() {
            self.deadlines.remove(&old);
        }
        if let Some(at) = next {
            let slot = (at, self.armings);
            self.armings += 1;
            self.deadlines.insert(slot, key.clone());
            *armed = Some(slot);
        }
    }

    fn remove_client(&mut self, key: &TxKey) -> Option<ClientTx> {
        let tx = self.clients.remove(key)?;
        if let Some(slot) = tx.armed {
            self.deadlines.remove(&slot);
        }
        Some(tx)
    }

    fn remove_server(&mut self, key: &TxKey) -> Option<ServerTx> {
        let tx = self.servers.remove(key)?;
        if let Some(slot) = tx.armed {
            self.deadlines.remove(&slot);
        }
        if tx.invite {
            let index = (tx.call_id.clone(), tx.cseq);
            if let Some(keys) = self.invites.get_mut(&index) {
                keys.remove(key);
                if keys.is_empty() {
                    self.invites.remove(&index);
                }
            }
        }
        Some(tx)
    }

    /// The earliest deadline of any timer, for the driver to sleep until.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(at, _), _)| at)
    }

    /// The next message to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<(Target, rsip::SipMessage)> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }
}

/// The ACK an INVITE client transaction sends for a non-2xx final (RFC 3261
/// §17.1.1.3): Request-URI, Call-ID, From, top Via and Route of the INVITE,
/// To of the response, CSeq number of the INVITE with method ACK.
fn ack_for_non_2xx(invite: &rsip::Request, response: &rsip::Response) -> rsip::Request {
    let mut headers = rsip::Headers::default();
    if let Some(v) = invite
        .headers
        .iter()
        .find(|h| matches!(h, rsip::Header::Via(_)))
    {
        headers.push(v.clone());
    }
    for h in invite.headers.iter() {
        match h {
            rsip::Header::Route(_) | rsip::Header::From(_) | rsip::Header::CallId(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    if let Some(to) = response
        .headers
        .iter()
        .find(|h| matches!(h, rsip::Header::To(_)))
    {
        headers.push(to.clone());
    }
    let seq = cseq_of(&invite.headers).map(|(n, _)| n).unwrap_or(1);
    headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new(format!(
        "{seq} ACK"
    ))));
    headers.push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
        "70",
    )));
    headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::new("0"),
    ));
    rsip::Request {
        method: rsip::Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A response to `request`: copies Via(s), From, To (adding `to_tag` if the To
/// has none), Call-ID, CSeq; Content-Length 0.
pub fn response_to(
    request: &rsip::Request,
    status: rsip::StatusCode,
    to_tag: Option<&str>,
) -> rsip::Response {
    let mut headers = rsip::Headers::default();
    for h in request.headers.iter() {
        match h {
            rsip::Header::Via(_)
            | rsip::Header::From(_)
            | rsip::Header::CallId(_)
            | rsip::Header::CSeq(_) => headers.push(h.clone()),
            rsip::Header::To(to) => {
                let value = to.value();
                match to_tag {
                    Some(tag) if tag_param(value).is_none() => headers.push(rsip::Header::To(
                        rsip::headers::To::new(format!("{value};tag={tag}")),
                    )),
                    _ => headers.push(h.clone()),
                }
            }
            _ => {}
        }
    }
    headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::new("0"),
    ));
    rsip::Response {
        status_code: status,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_parsing_is_liberal() {
        let v = parse_via(
            "SIP / 2.0 / UDP  Host.Example:5060 ;branch=z9hG4bKx; rport ;received=1.2.3.4",
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.sent_by, "host.example:5060");
        assert_eq!(v.branch.as_deref(), Some("z9hG4bKx"));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received.as_deref(), Some("1.2.3.4"));
    }

    #[test]
    fn tag_param_ignores_uri_params() {
        assert_eq!(
            tag_param("\"A\" <sip:a@b;tag=no>;tag=yes").as_deref(),
            Some("yes")
        );
        assert_eq!(tag_param("sip:a@b;tag=t1").as_deref(), Some("t1"));
        assert_eq!(tag_param("<sip:a@b>"), None);
    }
}
