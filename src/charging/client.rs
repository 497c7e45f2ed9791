//! The Rf (CH-1) charging client the reference SUT uses: one Diameter
//! connection to the Charging Enabler, CER/CEA on connect, one ACR per
//! [`ChargingClient::send`].
//!
//! Out of scope on purpose: reconnection and failover. When the connection
//! closes, every later `send` fails with [`ChargingClientError::Transport`];
//! the owner decides whether to connect again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::diameter::{
    CloseReason, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, PeerHandle, RemoteIdentity,
    Role, TransportError, error_answer, result, transport,
};

use super::ch1::{Ch1Request, Ch1Response, RecordType};
use super::rf::MappingError;

/// Timeouts of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// TCP connect plus CER/CEA.
    pub connect_timeout: Duration,
    /// How long one ACR may wait for its ACA.
    pub request_timeout: Duration,
    /// Peer timers.
    pub peer: PeerConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            peer: PeerConfig::default(),
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
}

/// A connected Rf client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChargingClient {
    handle: PeerHandle,
    identity: Arc<LocalIdentity>,
    destination_realm: Arc<str>,
    remote: Arc<RemoteIdentity>,
    request_timeout: Duration,
}

impl ChargingClient {
    /// Connects with default timeouts (5 s each).
    pub async fn connect(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
    ) -> Result<ChargingClient, ChargingClientError> {
        Self::connect_with(server, identity, destination_realm, ClientConfig::default()).await
    }

    /// Connects: TCP, CER/CEA, and returns once the connection is Open.
    pub async fn connect_with(
        server: SocketAddr,
        identity: LocalIdentity,
        destination_realm: String,
        config: ClientConfig,
    ) -> Result<ChargingClient, ChargingClientError> {
        let timeout = ChargingClientError::ConnectTimeout {
            server,
            after: config.connect_timeout,
        };
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(server)).await {
            Err(_) => return Err(timeout),
            Ok(Err(source)) => return Err(ChargingClientError::Connect { server, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer::new(
            Role::Initiator,
            identity.clone(),
            config.peer,
            Instant::now(),
        );
        let (handle, mut events) = transport::spawn(stream, peer);
        let remote = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Err(timeout),
                Ok(None) => {
                    return Err(ChargingClientError::Refused {
                        server,
                        reason: None,
                    });
                }
                Ok(Some(PeerEvent::Opened { remote })) => break remote,
                Ok(Some(PeerEvent::Closed { reason })) => {
                    return Err(ChargingClientError::Refused {
                        server,
                        reason: Some(reason),
                    });
                }
                Ok(Some(_)) => {}
            }
        };
        let identity = Arc::new(identity);
        tokio::spawn(background(events, handle.clone(), Arc::clone(&identity)));
        Ok(ChargingClient {
            handle,
            identity,
            destination_realm: destination_realm.into(),
            remote: Arc::new(remote),
            request_timeout: config.request_timeout,
        })
    }

    /// Changes the per-request timeout.
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// What the server said about itself in its CEA.
    pub fn remote(&self) -> &RemoteIdentity {
        &self.remote
    }

    /// Sends one CH-1 request as an ACR and reads the ACA. A non-2001
    /// Result-Code is a response, not an error.
    pub async fn send(&self, req: &Ch1Request) -> Result<Ch1Response, ChargingClientError> {
        let acr = req.to_acr(&self.identity, &self.destination_realm);
        let answer =
            match tokio::time::timeout(self.request_timeout, self.handle.request(acr)).await {
                Err(_) => {
                    return Err(ChargingClientError::Timeout {
                        session_id: req.session_id.clone(),
                        kind: req.kind,
                        record_number: req.record_number,
                        after: self.request_timeout,
                    });
                }
                Ok(r) => r?,
            };
        Ch1Response::from_aca(&answer).map_err(|source| ChargingClientError::BadAnswer {
            session_id: req.session_id.clone(),
            source,
        })
    }

    /// Sends any request (hop-by-hop and end-to-end assigned by the peer)
    /// and returns the answer as received: for hostile or odd requests.
    pub async fn request(&self, msg: Message) -> Result<Message, ChargingClientError> {
        let request = msg.describe();
        match tokio::time::timeout(self.request_timeout, self.handle.request(msg)).await {
            Err(_) => Err(ChargingClientError::RawTimeout {
                request,
                after: self.request_timeout,
            }),
            Ok(r) => Ok(r?),
        }
    }

    /// Writes bytes as they are on the connection (no answer matching).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        self.handle.send_raw(bytes);
    }

    /// The identity used in CER and on every ACR.
    pub fn identity(&self) -> &LocalIdentity {
        &self.identity
    }

    /// Sends DPR and waits briefly for DPA.
    pub async fn close(&self) {
        self.handle.close().await;
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// After Open: server-initiated requests (none exist on Rf) get 3001;
/// everything else is only logged.
async fn background(
    mut events: UnboundedReceiver<PeerEvent>,
    handle: PeerHandle,
    identity: Arc<LocalIdentity>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            PeerEvent::Request(req) => {
                handle.answer(error_answer(
                    &req,
                    &identity,
                    result::COMMAND_UNSUPPORTED,
                    None,
                    Some("Rf client accepts no requests"),
                ));
            }
            PeerEvent::Warning(w) => tracing::warn!(peer = %handle.peer_addr(), "{w}"),
            PeerEvent::Closed { reason } => {
                tracing::info!(peer = %handle.peer_addr(), ?reason, "charging connection closed")
            }
            _ => {}
        }
    }
}
