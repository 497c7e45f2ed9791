//! The Agent: every test user of every running scenario on one SIP endpoint.
//!
//! The SUT routes all test users to the harness's single address, so the
//! Agent must tell whose a message is: an out-of-dialog request by the user
//! part of its Request-URI, an in-dialog request by its To-tag, a response by
//! its From-tag (tags are random and registered by the user that made them).
//! Call-IDs are not enough: a proxying SUT keeps one Call-ID for both users.
//! What belongs to nobody is answered (481, or 404 for an unknown user) and
//! kept as a stray for the report, never dropped silently.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::dialog::new_tag;
use super::endpoint::{Endpoint, EndpointConfig, EndpointError};
use super::message;
use super::transaction::response_to;
use super::transaction::{Target, Timers, TransportKind, TxEvent, TxKey};
use crate::report::capture::WireRecorder;
use crate::report::strays::StrayLog;
use crate::timeline::{Stamp, stamp};

/// Binds the profile's transport, and the other one on the same port when
/// it is free, so a SUT may use either to reach a test user (RFC 3261
/// §18.1.1 moves large requests to TCP). A port 0 is chosen once and bound
/// for both; taken meanwhile, another is tried.
async fn bind_both(
    listen: SocketAddr,
    transport: TransportKind,
    recorder: Option<WireRecorder>,
) -> Result<(Endpoint, mpsc::UnboundedReceiver<TxEvent>), EndpointError> {
    let bind = |config| Endpoint::bind_recorded(config, recorder.clone());
    let only = |addr| EndpointConfig {
        udp: (transport == TransportKind::Udp).then_some(addr),
        tcp: (transport == TransportKind::Tcp).then_some(addr),
        timers: Timers::default(),
    };
    if listen.port() != 0 {
        let both = EndpointConfig {
            udp: Some(listen),
            tcp: Some(listen),
            timers: Timers::default(),
        };
        return match bind(both).await {
            Ok(bound) => Ok(bound),
            // The other transport is a convenience; the profile's is required.
            Err(_) => bind(only(listen)).await.map_err(EndpointError::from),
        };
    }
    for _ in 0..5 {
        let probe = match transport {
            TransportKind::Udp => std::net::UdpSocket::bind(listen).and_then(|s| s.local_addr()),
            TransportKind::Tcp => std::net::TcpListener::bind(listen).and_then(|s| s.local_addr()),
        };
        let Ok(addr) = probe else { break };
        let both = EndpointConfig {
            udp: Some(addr),
            tcp: Some(addr),
            timers: Timers::default(),
        };
        if let Ok(bound) = bind(both).await {
            return Ok(bound);
        }
    }
    bind(only(listen)).await.map_err(EndpointError::from)
}

/// Something that happened to a test user, stamped on the harness timeline.
#[derive(Debug, Clone)]
pub struct UserEvent {
    pub stamp: Stamp,
    pub event: TxEvent,
}

#[derive(Debug, Default)]
struct Routes {
    users: HashMap<String, mpsc::UnboundedSender<UserEvent>>,
    /// Our tags → the user that made them.
    tags: HashMap<String, String>,
    /// Client transactions → the user that started them (for timeouts).
    transactions: HashMap<TxKey, String>,
    /// Bounded: a flood of junk must not grow memory or the report.
    strays: StrayLog,
}

/// The harness's SIP side: hosts test users on one endpoint.
#[derive(Debug, Clone)]
pub struct Agent {
    endpoint: Endpoint,
    local: SocketAddr,
    transport: TransportKind,
    domain: String,
    routes: Arc<Mutex<Routes>>,
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Agent {
    /// Binds the endpoint and starts routing.
    /// Binds `listen`; `advertise` (else the bound address, a wildcard made
    /// loopback) is what test users write into Via, Contact and SDP.
    pub async fn bind(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        transport: TransportKind,
        domain: &str,
    ) -> Result<Agent, EndpointError> {
        Self::bind_recorded(listen, advertise, transport, domain, None).await
    }

    /// [`Agent::bind`], recording what its endpoint's sockets send and
    /// receive into `recorder`.
    pub async fn bind_recorded(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        transport: TransportKind,
        domain: &str,
        recorder: Option<WireRecorder>,
    ) -> Result<Agent, EndpointError> {
        let (endpoint, events) = bind_both(listen, transport, recorder).await?;
        let bound = endpoint.local_addr(transport).unwrap_or(listen);
        let local = advertise.unwrap_or(if bound.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
        } else {
            bound
        });
        let agent = Agent {
            endpoint,
            local,
            transport,
            domain: domain.to_owned(),
            routes: Arc::new(Mutex::new(Routes::default())),
        };
        tokio::spawn(agent.clone().route(events));
        Ok(agent)
    }

    /// Where the SUT must send requests for test users.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// Registers a test user `name` (unique across the run) and returns it.
    pub fn user(&self, name: &str) -> TestUser {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).users.insert(name.to_owned(), tx);
        TestUser {
            name: name.to_owned(),
            uri: format!("sip:{name}@{}", self.domain),
            agent: self.clone(),
            events: rx,
            backlog: VecDeque::new(),
        }
    }

    /// Messages that belonged to no test user, in arrival order: the first
    /// [`StrayLog::KEEP`], one short escaped line each.
    pub fn strays(&self) -> Vec<String> {
        lock(&self.routes).strays.kept().to_vec()
    }

    /// Every stray, counted in total and per kind, with the kept lines.
    pub fn stray_log(&self) -> StrayLog {
        lock(&self.routes).strays.clone()
    }

    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }

    async fn route(self, mut events: mpsc::UnboundedReceiver<TxEvent>) {
        while let Some(event) = events.recv().await {
            let stamp = stamp();
            let owner = self.owner_of(&event);
            let delivered = owner.and_then(|user| {
                let routes = lock(&self.routes);
                let tx = routes.users.get(&user)?;
                tx.send(UserEvent {
                    stamp,
                    event: event.clone(),
                })
                .ok()
            });
            if delivered.is_none() {
                self.stray(event).await;
            }
        }
    }

    fn owner_of(&self, event: &TxEvent) -> Option<String> {
        let routes = lock(&self.routes);
        match event {
            TxEvent::Request { request, .. } => match message::to_tag(request) {
                Some(tag) => routes.tags.get(&tag).cloned(),
                None => message::request_uri_user(request).filter(|u| routes.users.contains_key(u)),
            },
            TxEvent::Response { response, .. } => {
                message::from_tag(response).and_then(|tag| routes.tags.get(&tag).cloned())
            }
            TxEvent::Timeout { key } => routes.transactions.get(key).cloned(),
            TxEvent::Stray { .. } | TxEvent::Rejected { .. } => None,
        }
    }

    async fn stray(&self, event: TxEvent) {
        // Kind first (counted), then a detail the log escapes and cuts short:
        // a URI or a parse error may carry kilobytes of whatever was sent.
        let (kind, detail) = match &event {
            TxEvent::Request {
                request, source, ..
            } => (
                "request for no test user",
                format!("from {}: {} {}", source.addr, request.method, request.uri),
            ),
            TxEvent::Response { response, .. } => (
                "response for no test user",
                format!("with status {}", response.status_code),
            ),
            TxEvent::Timeout { key } => ("timeout of an unowned transaction", format!("{key:?}")),
            TxEvent::Stray { reason, source } => (
                "unreadable message",
                format!("from {}: {reason}", source.addr),
            ),
            TxEvent::Rejected { reason, source, .. } => (
                "request answered by the endpoint",
                format!("from {}: {reason}", source.addr),
            ),
        };
        lock(&self.routes).strays.push(kind, &detail);
        if let TxEvent::Request {
            key: Some(key),
            request,
            ..
        } = event
        {
            let status = if message::to_tag(&request).is_some() {
                481
            } else {
                404
            };
            // Answered statelessly (RFC 3261 §8.2.7): a flood of requests for
            // nobody holds no transaction. The To tag comes from the branch,
            // so a retransmission gets the same answer.
            let tag = stateless_tag(&key.branch);
            let response = response_to(&request, rsip::StatusCode::from(status), Some(&tag));
            let _ = self.endpoint.send_response_and_forget(&key, response).await;
        }
    }
}

/// One test user (`sip:alice.r7s3@test.invalid`) of one scenario.
#[derive(Debug)]
pub struct TestUser {
    /// The user part, unique across the run.
    pub name: String,
    pub uri: String,
    agent: Agent,
    events: mpsc::UnboundedReceiver<UserEvent>,
    /// Events taken off the channel while looking for another one.
    backlog: VecDeque<UserEvent>,
}

impl TestUser {
    /// A fresh tag that routes back to this user.
    pub fn new_tag(&self) -> String {
        let tag = new_tag();
        lock(&self.agent.routes)
            .tags
            .insert(tag.clone(), self.name.clone());
        tag
    }

    /// Routes in-dialog requests with this To-tag (or responses with this
    /// From-tag) to this user; for tags made by someone else (a forking SUT).
    pub fn own_tag(&self, tag: &str) {
        lock(&self.agent.routes)
            .tags
            .insert(tag.to_owned(), self.name.clone());
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.agent.local
    }

    pub fn transport(&self) -> TransportKind {
        self.agent.transport
    }

    /// Sends a request in a new client transaction; the stamp is taken before
    /// the request leaves, so anything the SUT does about it comes later.
    pub async fn send_request(
        &self,
        request: rsip::Request,
        target: Target,
    ) -> Result<(TxKey, Stamp), EndpointError> {
        let at = stamp();
        let key = self.agent.endpoint.send_request(request, target).await?;
        lock(&self.agent.routes)
            .transactions
            .insert(key.clone(), self.name.clone());
        Ok((key, at))
    }

    /// Sends a response in a server transaction.
    pub async fn send_response(
        &self,
        key: &TxKey,
        response: rsip::Response,
    ) -> Result<Stamp, EndpointError> {
        let at = stamp();
        self.agent.endpoint.send_response(key, response).await?;
        Ok(at)
    }

    /// Sends outside a transaction (ACK to a 2xx).
    pub async fn send_stateless(
        &self,
        message: rsip::SipMessage,
        target: Target,
    ) -> Result<Stamp, EndpointError> {
        let at = stamp();
        self.agent.endpoint.send_stateless(message, target).await?;
        Ok(at)
    }

    /// Waits up to `timeout` for the first event that `wanted` accepts;
    /// others stay queued in order for later calls.
    pub async fn next_event(
        &mut self,
        wanted: impl Fn(&UserEvent) -> bool,
        timeout: Duration,
    ) -> Option<UserEvent> {
        if let Some(i) = self.backlog.iter().position(&wanted) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if wanted(&event) => return Some(event),
                Ok(Some(event)) => self.backlog.push_back(event),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Takes everything received and not yet consumed (the scenario is
    /// over: what is left is checked, not awaited).
    pub fn take_unconsumed(&mut self) -> Vec<UserEvent> {
        while let Ok(e) = self.events.try_recv() {
            self.backlog.push_back(e);
        }
        self.backlog.drain(..).collect()
    }

    /// Everything received and not yet consumed, for a failure report.
    pub fn pending_summary(&mut self) -> Vec<String> {
        while let Ok(e) = self.events.try_recv() {
            self.backlog.push_back(e);
        }
        self.backlog.iter().map(|e| describe(&e.event)).collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let mut routes = lock(&self.agent.routes);
        routes.users.remove(&self.name);
        let name = self.name.clone();
        routes.tags.retain(|_, user| *user != name);
        routes.transactions.retain(|_, user| *user != name);
    }
}

/// One line for a report.
pub fn describe(event: &TxEvent) -> String {
    match event {
        TxEvent::Request { request, .. } => format!("{} {}", request.method, request.uri),
        TxEvent::Response { response, .. } => {
            let method = message::cseq(response)
                .map(|(_, m)| m.to_string())
                .unwrap_or_default();
            format!("{} to {method}", response.status_code)
        }
        TxEvent::Timeout { .. } => "transaction timeout".into(),
        TxEvent::Stray { reason, .. } => format!("unreadable: {reason}"),
        TxEvent::Rejected { reason, .. } => format!("rejected: {reason}"),
    }
}

/// The To tag a stateless answer gives a request: the same for every copy of
/// it (its branch), different across requests.
fn stateless_tag(branch: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    branch.hash(&mut h);
    format!("nb{:016x}", h.finish())
}
