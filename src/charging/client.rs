//! The Rf (CH-1) charging client the reference SUT uses: a Diameter link to
//! the Charging Enabler that connects in the background, reconnects with
//! backoff, keeps requests made while disconnected and resends those left
//! unanswered by a dropped link with the T flag (RFC 6733 5.5.4).
//!
//! The decisions are [`super::link::Link`]'s (sans-IO, tested on a virtual
//! clock); the task here only connects sockets, moves messages and wakes
//! the link at its deadlines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch};

use crate::diameter::{
    CloseReason, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, PeerHandle, RemoteIdentity,
    Role, TransportError, error_answer, result, transport,
};

use super::ch1::{Ch1Request, Ch1Response, RecordType};
use super::link::{Link, LinkAction, LinkConfig, LinkFailure, LinkState, RequestId};
use super::rf::MappingError;

/// Timers of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// TCP connect plus CER/CEA, per attempt.
    pub connect_timeout: Duration,
    /// How long one sent ACR may wait for its ACA (a request waiting for
    /// the link to open waits as long as that takes).
    pub request_timeout: Duration,
    /// Peer timers.
    pub peer: PeerConfig,
    /// First wait before reconnecting; doubles after every failed attempt.
    pub reconnect_initial: Duration,
    /// The reconnection backoff grows up to this.
    pub reconnect_max: Duration,
    /// The first attempt waits this long (a server that connects to its
    /// charging server on its own schedule, after it started).
    pub first_attempt_after: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let link = LinkConfig::default();
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: link.request_timeout,
            peer: PeerConfig::default(),
            reconnect_initial: link.reconnect_initial,
            reconnect_max: link.reconnect_max,
            first_attempt_after: Duration::ZERO,
        }
    }
}

/// What went wrong talking to the Charging Enabler.
#[derive(Debug, thiserror::Error)]
pub enum ChargingClientError {
    /// TCP connect failed.
    #[error("cannot connect to the charging server at {server}: {source}")]
    Connect {
        /// Server address.
        server: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TCP connect or CER/CEA took too long.
    #[error("charging server at {server} did not complete CER/CEA within {after:?}")]
    ConnectTimeout {
        /// Server address.
        server: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// The connection closed during CER/CEA (e.g. CEA 5010).
    #[error("charging server at {server} refused the connection: {reason:?}")]
    Refused {
        /// Server address.
        server: SocketAddr,
        /// Why, as the peer saw it.
        reason: Option<CloseReason>,
    },
    /// No ACA in time.
    #[error("no answer to {kind} #{record_number} of session {session_id} within {after:?}")]
    Timeout {
        /// Session-Id.
        session_id: String,
        /// Record type.
        kind: RecordType,
        /// Record number.
        record_number: u32,
        /// The limit.
        after: Duration,
    },
    /// No answer to a raw request in time.
    #[error("no answer to {request} within {after:?}")]
    RawTimeout {
        /// One-line description of the request.
        request: String,
        /// The limit.
        after: Duration,
    },
    /// The connection is gone or not open.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The answer is not a usable ACA.
    #[error("answer to session {session_id} is not a usable ACA: {source}")]
    BadAnswer {
        /// Session-Id of the request.
        session_id: String,
        /// Why.
        source: MappingError,
    },
    /// The client was closed before the answer came.
    #[error("charging client for {server} was closed before {request} was answered")]
    Stopped {
        /// Server address.
        server: SocketAddr,
        /// One-line description of the request.
        request: String,
    },
}

/// Where the link stands, for tests and logs.
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// A connection is Open now.
    pub open: bool,
    /// The server's CEA on the current or last connection.
    pub remote: Option<RemoteIdentity>,
    /// How many connections have opened so far.
    pub times_opened: u32,
    /// Why the last attempt failed or the last connection closed.
    pub last_error: Option<String>,
    /// The client has stopped for good.
    pub stopped: bool,
}

#[derive(Debug)]
enum ToTask {
    Request {
        message: Message,
        timeout: Duration,
        reply: oneshot::Sender<Result<Message, LinkFailure>>,
    },
    Raw(Vec<u8>),
    Close(oneshot::Sender<()>),
}

type Connection = (PeerHandle, UnboundedReceiver<PeerEvent>);

#[derive(Debug)]
enum Internal {
    Attempt(Result<(Connection, RemoteIdentity), ChargingClientError>),
    Answer(RequestId, Result<Message, TransportError>),
}

#[derive(Debug)]
struct Setup {
    server: SocketAddr,
    identity: LocalIdentity,
    config: ClientConfig,
}

#[derive(Debug)]
struct Inner {
    setup: Arc<Setup>,
    destination_realm: String,
    commands: UnboundedSender<ToTask>,
    status: watch::Receiver<LinkStatus>,
}

/// An Rf client. Cheap to clone; the link closes when the last clone is
/// dropped or [`ChargingClient::close`] is called.
#[derive(Clone, Debug)]
pub struct ChargingClient {
    inner: Arc<Inner>,
    request_timeout: Duration,
}

impl ChargingClient {
    /// Starts the client and returns at once: it connects in the
    /// background, and again after every failure or drop, with backoff.
    /// Requests made meanwhile wait for the link, in order. Needs a tokio
    /// runtime.
    pub fn spawn(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
        config: ClientConfig,
    ) -> ChargingClient {
        Self::start(server, identity, destination_realm, config, None)
    }

    /// Connects with default timeouts (5 s each); see
    /// [`ChargingClient::connect_with`].
    pub async fn connect(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
    ) -> Result<ChargingClient, ChargingClientError> {
        Self::connect_with(server, identity, destination_realm, ClientConfig::default()).await
    }

    /// Connects (TCP, CER/CEA) and returns once the connection is Open, or
    /// the first attempt's error (the client then stops). Once connected,
    /// the client reconnects by itself like [`ChargingClient::spawn`].
    pub async fn connect_with(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
        config: ClientConfig,
    ) -> Result<ChargingClient, ChargingClientError> {
        let (tx, rx) = oneshot::channel();
        let client = Self::start(server, identity, destination_realm, config, Some(tx));
        match rx.await {
            Ok(Ok(_)) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ChargingClientError::Refused {
                server,
                reason: None,
            }),
        }
    }

    fn start(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
        config: ClientConfig,
        first: Option<oneshot::Sender<Result<RemoteIdentity, ChargingClientError>>>,
    ) -> ChargingClient {
        let setup = Arc::new(Setup {
            server,
            identity,
            config,
        });
        let link = Link::new(
            LinkConfig {
                reconnect_initial: config.reconnect_initial,
                reconnect_max: config.reconnect_max,
                request_timeout: config.request_timeout,
            },
            e2e_base(),
            now() + config.first_attempt_after,
        );
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(LinkStatus::default());
        tokio::spawn(run(link, Arc::clone(&setup), command_rx, status_tx, first));
        ChargingClient {
            inner: Arc::new(Inner {
                setup,
                destination_realm,
                commands,
                status,
            }),
            request_timeout: config.request_timeout,
        }
    }

    /// Changes the per-request timeout of this handle.
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// What the server said about itself in its last CEA.
    pub fn remote(&self) -> Option<RemoteIdentity> {
        self.inner.status.borrow().remote.clone()
    }

    /// Where the link stands now.
    pub fn status(&self) -> LinkStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits until a connection is Open (at once if one is); its CEA, or
    /// None at the timeout or if the client stopped.
    pub async fn wait_open(&self, timeout: Duration) -> Option<RemoteIdentity> {
        let mut rx = self.inner.status.clone();
        let ok = tokio::time::timeout(timeout, rx.wait_for(|s| s.open || s.stopped)).await;
        match ok {
            Ok(Ok(s)) if s.open => s.remote.clone(),
            _ => None,
        }
    }

    /// Waits until the link has opened `n` times in all (`n` = 2: the
    /// first reconnection). False at the timeout.
    pub async fn wait_opened_times(&self, n: u32, timeout: Duration) -> bool {
        let mut rx = self.inner.status.clone();
        let ok = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| (s.open && s.times_opened >= n) || s.stopped),
        )
        .await;
        matches!(ok, Ok(Ok(s)) if s.open && s.times_opened >= n)
    }

    async fn submit(&self, message: Message) -> Result<Message, LinkFailure> {
        let (reply, rx) = oneshot::channel();
        let cmd = ToTask::Request {
            message,
            timeout: self.request_timeout,
            reply,
        };
        if self.inner.commands.send(cmd).is_err() {
            return Err(LinkFailure::Stopped);
        }
        rx.await.unwrap_or(Err(LinkFailure::Stopped))
    }

    fn stopped(&self, request: String) -> ChargingClientError {
        ChargingClientError::Stopped {
            server: self.inner.setup.server,
            request,
        }
    }

    /// Sends one CH-1 request as an ACR and reads the ACA. A non-2001
    /// Result-Code is a response, not an error. While the link is down the
    /// request waits for it; a request the link lost is resent with T.
    pub async fn send(&self, req: &Ch1Request) -> Result<Ch1Response, ChargingClientError> {
        self.send_shaped(req, |_| {}).await
    }

    /// As [`ChargingClient::send`], with the ACR reshaped before it leaves
    /// (the reference SUT's deviations that get the wire wrong).
    pub async fn send_shaped(
        &self,
        req: &Ch1Request,
        shape: impl FnOnce(&mut Message),
    ) -> Result<Ch1Response, ChargingClientError> {
        let mut acr = req.to_acr(&self.inner.setup.identity, &self.inner.destination_realm);
        shape(&mut acr);
        let answer = match self.submit(acr).await {
            Ok(a) => a,
            Err(LinkFailure::Timeout { after }) => {
                return Err(ChargingClientError::Timeout {
                    session_id: req.session_id.clone(),
                    kind: req.kind,
                    record_number: req.record_number,
                    after,
                });
            }
            Err(LinkFailure::Stopped) => {
                return Err(self.stopped(format!(
                    "{} #{} of session {}",
                    req.kind, req.record_number, req.session_id
                )));
            }
        };
        Ch1Response::from_aca(&answer).map_err(|source| ChargingClientError::BadAnswer {
            session_id: req.session_id.clone(),
            source,
        })
    }

    /// Sends any request (hop-by-hop assigned by the peer, end-to-end by
    /// the link unless set) and returns the answer as received: for
    /// hostile or odd requests.
    pub async fn request(&self, msg: Message) -> Result<Message, ChargingClientError> {
        let request = msg.describe();
        match self.submit(msg).await {
            Ok(a) => Ok(a),
            Err(LinkFailure::Timeout { after }) => {
                Err(ChargingClientError::RawTimeout { request, after })
            }
            Err(LinkFailure::Stopped) => Err(self.stopped(request)),
        }
    }

    /// Writes bytes as they are on the open connection (no answer
    /// matching); dropped if no connection is open.
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.inner.commands.send(ToTask::Raw(bytes));
    }

    /// The identity used in CER and on every ACR.
    pub fn identity(&self) -> &LocalIdentity {
        &self.inner.setup.identity
    }

    /// The server it connects to.
    pub fn server(&self) -> SocketAddr {
        self.inner.setup.server
    }

    /// Stops: DPR on an open connection, no more reconnection; requests
    /// still waiting fail with [`ChargingClientError::Stopped`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(ToTask::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// True once the client has stopped.
    pub fn is_closed(&self) -> bool {
        self.inner.status.borrow().stopped || self.inner.commands.is_closed()
    }
}

/// The link's clock: tokio's, so that tests may pause it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// RFC 6733 6.3: high 12 bits from the time, low 20 random.
fn e2e_base() -> u32 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    ((secs & 0xfff) << 20) | (rand::random::<u32>() & 0xf_ffff)
}

/// One attempt: TCP, CER/CEA.
async fn attempt(setup: Arc<Setup>) -> Result<(Connection, RemoteIdentity), ChargingClientError> {
    let server = setup.server;
    let after = setup.config.connect_timeout;
    let timeout = ChargingClientError::ConnectTimeout { server, after };
    let deadline = tokio::time::Instant::now() + after;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(server)).await {
        Err(_) => return Err(timeout),
        Ok(Err(source)) => return Err(ChargingClientError::Connect { server, source }),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let peer = Peer::new(
        Role::Initiator,
        setup.identity.clone(),
        setup.config.peer,
        Instant::now(),
    );
    let (handle, mut events) = transport::spawn(stream, peer);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(timeout),
            Ok(None) => {
                return Err(ChargingClientError::Refused {
                    server,
                    reason: None,
                });
            }
            Ok(Some(PeerEvent::Opened { remote })) => return Ok(((handle, events), remote)),
            Ok(Some(PeerEvent::Closed { reason })) => {
                return Err(ChargingClientError::Refused {
                    server,
                    reason: Some(reason),
                });
            }
            Ok(Some(_)) => {}
        }
    }
}

async fn next_event(conn: &mut Option<Connection>) -> Option<PeerEvent> {
    match conn {
        Some((_, events)) => events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// The task around the link: performs its actions, feeds it events.
async fn run(
    mut link: Link,
    setup: Arc<Setup>,
    mut commands: UnboundedReceiver<ToTask>,
    status: watch::Sender<LinkStatus>,
    mut first: Option<oneshot::Sender<Result<RemoteIdentity, ChargingClientError>>>,
) {
    let (internal_tx, mut internal) = mpsc::unbounded_channel::<Internal>();
    let mut callers: HashMap<RequestId, oneshot::Sender<Result<Message, LinkFailure>>> =
        HashMap::new();
    let mut conn: Option<Connection> = None;
    let mut closers = Vec::new();
    let mut commands_open = true;
    loop {
        while let Some(action) = link.poll_action() {
            match action {
                LinkAction::Connect => {
                    let (setup, tx) = (Arc::clone(&setup), internal_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Internal::Attempt(attempt(setup).await));
                    });
                }
                LinkAction::Send { id, message } => match &conn {
                    Some((handle, _)) => {
                        // Queued here, in the link's order; only the wait for
                        // the answer runs apart (a spawned send could overtake).
                        let answer = handle.start_request(message);
                        let tx = internal_tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(Internal::Answer(id, answer.await));
                        });
                    }
                    // Open without a connection cannot be; wait for the next.
                    None => link.handle_closed(now()),
                },
                LinkAction::Deliver { id, answer } => {
                    if let Some(c) = callers.remove(&id) {
                        let _ = c.send(Ok(answer));
                    }
                }
                LinkAction::Fail { id, failure } => {
                    if let Some(c) = callers.remove(&id) {
                        let _ = c.send(Err(failure));
                    }
                }
                LinkAction::Disconnect => {
                    if let Some((handle, _)) = conn.take() {
                        handle.close().await;
                    }
                    status.send_modify(|s| s.open = false);
                }
            }
        }
        if link.state() == LinkState::Stopped {
            break;
        }
        tokio::select! {
            c = commands.recv(), if commands_open => match c {
                Some(ToTask::Request { message, timeout, reply }) => {
                    let id = link.submit_with_timeout(message, timeout, now());
                    callers.insert(id, reply);
                }
                Some(ToTask::Raw(bytes)) => {
                    if let Some((handle, _)) = &conn {
                        handle.send_raw(bytes);
                    }
                }
                Some(ToTask::Close(done)) => {
                    closers.push(done);
                    link.stop();
                }
                None => {
                    commands_open = false;
                    link.stop();
                }
            },
            Some(i) = internal.recv() => match i {
                Internal::Attempt(Ok((c, remote))) => {
                    conn = Some(c);
                    link.handle_connected(now());
                    status.send_modify(|s| {
                        s.open = true;
                        s.remote = Some(remote.clone());
                        s.times_opened += 1;
                    });
                    if let Some(f) = first.take() {
                        let _ = f.send(Ok(remote));
                    }
                }
                Internal::Attempt(Err(e)) => {
                    let text = e.to_string();
                    match first.take() {
                        Some(f) => {
                            link.stop();
                            let _ = f.send(Err(e));
                        }
                        None => link.handle_connect_failed(now()),
                    }
                    tracing::debug!(server = %setup.server, "charging link attempt failed: {text}");
                    status.send_modify(|s| s.last_error = Some(text));
                }
                Internal::Answer(id, Ok(answer)) => {
                    link.handle_answer(id, answer);
                }
                // The connection's Closed event follows; the link resends.
                Internal::Answer(_, Err(_)) => {}
            },
            ev = next_event(&mut conn) => match ev {
                Some(PeerEvent::Request(req)) => {
                    if let Some((handle, _)) = &conn {
                        handle.answer(error_answer(
                            &req,
                            &setup.identity,
                            result::COMMAND_UNSUPPORTED,
                            None,
                            Some("Rf client accepts no requests"),
                        ));
                    }
                }
                Some(PeerEvent::Warning(w)) => tracing::warn!(server = %setup.server, "{w}"),
                Some(PeerEvent::Closed { reason }) => {
                    tracing::info!(server = %setup.server, ?reason, "charging connection closed");
                    conn = None;
                    link.handle_closed(now());
                    status.send_modify(|s| {
                        s.open = false;
                        s.last_error = Some(format!("connection closed: {reason:?}"));
                    });
                }
                None => {
                    conn = None;
                    link.handle_closed(now());
                    status.send_modify(|s| s.open = false);
                }
                Some(_) => {}
            },
            () = sleep_until(link.poll_timeout()) => link.handle_timeout(now()),
        }
    }
    // Stopped: flush the failures, close what is open.
    while let Some(action) = link.poll_action() {
        if let LinkAction::Fail { id, failure } = action
            && let Some(c) = callers.remove(&id)
        {
            let _ = c.send(Err(failure));
        }
    }
    if let Some((handle, _)) = conn.take() {
        handle.close().await;
    }
    status.send_modify(|s| {
        s.open = false;
        s.stopped = true;
    });
    for c in closers {
        let _ = c.send(());
    }
}
