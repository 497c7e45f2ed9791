//! The SIP endpoint: one tokio task (the driver) owns the sockets, every TCP
//! connection and the [`TransactionLayer`]; the [`Endpoint`] handle talks to
//! it over a channel, and the TU receives [`TxEvent`]s on another.
//!
//! The driver sleeps until the next message, command or the layer's
//! `poll_timeout`; all protocol decisions are the layer's.
//!
//! What the sockets read reaches the driver over a bounded queue (see
//! `transport`): under a flood, datagrams are shed at the edge and counted,
//! and the count reaches the TU as one [`TxEvent::Stray`] ("N datagrams
//! dropped: receive queue full") at most once a second.

use std::net::SocketAddr;
use std::time::Instant;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::framing::{ParseError, Parsed, Reading, encode, read_datagram, read_message};
use super::transaction::{
    Target, Timers, TransactionLayer, TransportKind, TxError, TxEvent, TxKey,
};
use super::transport::{NetEvent, NetSenders, RECEIVE_QUEUE, TransportError, Transports};
use crate::report::capture::WireRecorder;

/// Where to listen; port 0 picks a free port.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub timers: Timers,
}

impl EndpointConfig {
    /// UDP and TCP on 127.0.0.1 with free ports, default timers.
    pub fn loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            udp: Some(any),
            tcp: Some(any),
            timers: Timers::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("the SIP endpoint has shut down")]
    Closed,
    #[error(transparent)]
    Transaction(#[from] TxError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

#[derive(Debug)]
enum Command {
    SendRequest {
        request: rsip::Request,
        target: Target,
        reply: oneshot::Sender<Result<TxKey, TxError>>,
    },
    SendResponse {
        key: TxKey,
        response: rsip::Response,
        reply: oneshot::Sender<Result<(), TxError>>,
    },
    SendResponseAndForget {
        key: TxKey,
        response: rsip::Response,
        reply: oneshot::Sender<Result<(), TxError>>,
    },
    SendStateless {
        message: rsip::SipMessage,
        target: Target,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    SendRaw {
        bytes: Vec<u8>,
        target: Target,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to a running endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct Endpoint {
    cmd: mpsc::UnboundedSender<Command>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
}

impl Endpoint {
    /// Binds the sockets and spawns the driver task.
    pub async fn bind(
        config: EndpointConfig,
    ) -> Result<(Endpoint, mpsc::UnboundedReceiver<TxEvent>), TransportError> {
        Self::bind_recorded(config, None).await
    }

    /// [`Endpoint::bind`], recording every datagram and stream read or
    /// write of its sockets into `recorder`.
    pub async fn bind_recorded(
        config: EndpointConfig,
        recorder: Option<WireRecorder>,
    ) -> Result<(Endpoint, mpsc::UnboundedReceiver<TxEvent>), TransportError> {
        // What was read comes bounded (a flood is shed at the edge), the
        // rest unbounded: see `transport`.
        let (inbound, inbound_rx) = mpsc::channel(RECEIVE_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let net_tx = NetSenders { inbound, control };
        let transports =
            Transports::bind(config.udp, config.tcp, net_tx, accept_tx, recorder).await?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let endpoint = Endpoint {
            cmd: cmd_tx,
            udp: transports.local_addr(TransportKind::Udp),
            tcp: transports.local_addr(TransportKind::Tcp),
        };
        let driver = Driver {
            layer: TransactionLayer::new(config.timers),
            transports,
            events: event_tx,
        };
        tokio::spawn(driver.run(cmd_rx, inbound_rx, control_rx, accept_rx));
        Ok((endpoint, event_rx))
    }

    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        match kind {
            TransportKind::Udp => self.udp,
            TransportKind::Tcp => self.tcp,
        }
    }

    /// Starts a client transaction.
    pub async fn send_request(
        &self,
        request: rsip::Request,
        target: Target,
    ) -> Result<TxKey, EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::SendRequest {
                request,
                target,
                reply,
            },
            rx,
        )
        .await?
        .map_err(EndpointError::from)
    }

    /// Sends a response within a server transaction.
    pub async fn send_response(
        &self,
        key: &TxKey,
        response: rsip::Response,
    ) -> Result<(), EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::SendResponse {
                key: key.clone(),
                response,
                reply,
            },
            rx,
        )
        .await?
        .map_err(EndpointError::from)
    }

    /// Sends a final response and forgets the server transaction at once
    /// (RFC 3261 §8.2.7 stateless UAS): for a request that belongs to no
    /// test user, so that a flood of them holds no state. See
    /// [`TransactionLayer::send_response_and_forget`].
    pub async fn send_response_and_forget(
        &self,
        key: &TxKey,
        response: rsip::Response,
    ) -> Result<(), EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::SendResponseAndForget {
                key: key.clone(),
                response,
                reply,
            },
            rx,
        )
        .await?
        .map_err(EndpointError::from)
    }

    /// Sends without a transaction (the ACK for a 2xx, say).
    pub async fn send_stateless(
        &self,
        message: rsip::SipMessage,
        target: Target,
    ) -> Result<(), EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::SendStateless {
                message,
                target,
                reply,
            },
            rx,
        )
        .await?
        .map_err(EndpointError::from)
    }

    /// Raw bytes, no parsing: for deliberately malformed SIP.
    pub async fn send_raw(&self, bytes: Vec<u8>, target: Target) -> Result<(), EndpointError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Command::SendRaw {
                bytes,
                target,
                reply,
            },
            rx,
        )
        .await?
        .map_err(EndpointError::from)
    }

    /// Stops the driver, closing every socket and connection.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    async fn call<T>(&self, cmd: Command, rx: oneshot::Receiver<T>) -> Result<T, EndpointError> {
        self.cmd.send(cmd).map_err(|_| EndpointError::Closed)?;
        rx.await.map_err(|_| EndpointError::Closed)
    }
}

struct Driver {
    layer: TransactionLayer,
    transports: Transports,
    events: mpsc::UnboundedSender<TxEvent>,
}

impl Driver {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
        mut inbound_rx: mpsc::Receiver<NetEvent>,
        mut control_rx: mpsc::UnboundedReceiver<NetEvent>,
        mut accept_rx: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    ) {
        loop {
            let deadline = self.layer.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.transports.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd),
                    // Every handle dropped: nobody can use the endpoint any more.
                    None => {
                        self.transports.shutdown();
                        return;
                    }
                },
                Some(ev) = inbound_rx.recv() => self.net(ev),
                Some(ev) = control_rx.recv() => self.net(ev),
                Some((stream, peer)) = accept_rx.recv() => self.transports.adopt(stream, peer),
                () = sleep => self.layer.handle_timeout(Instant::now()),
            }
            self.flush();
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::SendRequest {
                request,
                target,
                reply,
            } => {
                let _ = reply.send(self.layer.send_request(request, target, now));
            }
            Command::SendResponse {
                key,
                response,
                reply,
            } => {
                let _ = reply.send(self.layer.send_response(&key, response, now));
            }
            Command::SendResponseAndForget {
                key,
                response,
                reply,
            } => {
                let _ = reply.send(self.layer.send_response_and_forget(&key, response, now));
            }
            Command::SendStateless {
                message,
                target,
                reply,
            } => {
                let bytes = encode(&message);
                let _ = reply.send(self.send_bytes(bytes, target));
            }
            Command::SendRaw {
                bytes,
                target,
                reply,
            } => {
                let _ = reply.send(self.send_bytes(bytes, target));
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn send_bytes(&mut self, bytes: Vec<u8>, target: Target) -> Result<(), TransportError> {
        match target.transport {
            TransportKind::Udp => self.transports.send_udp(bytes, target.addr),
            TransportKind::Tcp => {
                self.transports.send_tcp(bytes, target.addr);
                Ok(())
            }
        }
    }

    fn net(&mut self, ev: NetEvent) {
        let now = Instant::now();
        match ev {
            NetEvent::Datagram { bytes, from } => {
                let source = Target::udp(from);
                match read_datagram(&bytes) {
                    Ok(parsed) => self.incoming(parsed, source, now),
                    // A CRLF keep-alive datagram.
                    Err(ParseError::Empty) => {}
                    Err(e) => self.layer.report_stray(
                        format!("unparseable UDP datagram ({} bytes): {e}", bytes.len()),
                        source,
                    ),
                }
            }
            NetEvent::Stream { bytes, from } => {
                let source = Target::tcp(from);
                match read_message(&bytes) {
                    Ok(parsed) => self.incoming(parsed, source, now),
                    Err(e) => self.layer.report_stray(
                        format!(
                            "unparseable SIP message on TCP ({} bytes): {e}",
                            bytes.len()
                        ),
                        source,
                    ),
                }
            }
            NetEvent::Shed {
                datagrams,
                last_from,
            } => {
                // One stray for many: the flood is counted, not replayed.
                self.layer.report_stray(
                    format!("{datagrams} datagrams dropped: receive queue full"),
                    Target::udp(last_from),
                );
            }
            NetEvent::UdpSendFailed { to, error } => {
                self.layer.report_stray(error, Target::udp(to));
            }
            NetEvent::StreamClosed {
                peer,
                error,
                connect_failed,
            } => {
                self.transports.forget(peer);
                let target = Target::tcp(peer);
                if let Some(reason) = error {
                    self.layer.report_stray(reason, target);
                }
                if connect_failed {
                    self.layer.handle_transport_error(target, now);
                }
            }
        }
    }

    fn incoming(&mut self, parsed: Parsed, source: Target, now: Instant) {
        for leniency in &parsed.leniencies {
            tracing::info!(%source, %leniency, "SIP read leniently");
        }
        match parsed.reading {
            Reading::Message(msg) => self.layer.handle_incoming(msg, source, now),
            Reading::Extension(request) => self.layer.handle_extension(request, source, now),
        }
    }

    fn flush(&mut self) {
        while let Some((target, msg)) = self.layer.poll_transmit() {
            if let Err(e) = self.send_bytes(encode(&msg), target) {
                // No socket for that transport: the transactions cannot proceed.
                self.layer.report_stray(format!("send failed: {e}"), target);
                self.layer.handle_transport_error(target, Instant::now());
            }
        }
        while let Some(ev) = self.layer.poll_event() {
            // The TU dropped its receiver: events have nowhere to go.
            let _ = self.events.send(ev);
        }
    }
}
