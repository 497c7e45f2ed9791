//! UDP and TCP sockets for the endpoint driver: bytes in, bytes out, framing
//! on streams; no protocol logic (that is the transaction layer's).
//!
//! Each socket reader runs as its own task and reports [`NetEvent`]s to the
//! driver; each TCP connection is one task that both reads (framed by
//! [`StreamDecoder`]) and writes what the driver queues for it.
//!
//! Messages come in over a bounded queue ([`RECEIVE_QUEUE`] messages), so a
//! flood is shed at the edge instead of piling up in front of the protocol
//! task: a datagram that finds the queue full is dropped and counted (UDP
//! may lose it; SIP retransmits what mattered). The last [`RESERVED`] places
//! are kept for light senders: once fewer are free, a datagram from a
//! source that sent an eighth or more of the recent datagrams (weighed over
//! windows of [`WINDOW`], the older halved) is dropped too, so that one flooding peer cannot crowd out the SUT. The
//! count reaches the
//! driver as one [`NetEvent::Shed`] at most once per [`SHED_REPORT`]; a TCP
//! connection whose message finds the queue full waits, so TCP's own flow
//! control slows its sender. Everything else (send failures, closed
//! connections, shed counts) comes over a separate unbounded queue: those are
//! few, and must never be lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::framing::StreamDecoder;
use super::transaction::TransportKind;
use crate::report::capture::{Direction, WireRecorder, WireTransport};

/// Largest UDP datagram we read.
const MAX_DATAGRAM: usize = 65_535;

/// Messages read but not yet taken by the driver, at most.
pub(crate) const RECEIVE_QUEUE: usize = 1_024;

/// Places of the receive queue that a heavy sender cannot take.
pub(crate) const RESERVED: usize = RECEIVE_QUEUE / 4;

/// Datagrams over which senders are weighed.
const WINDOW: u32 = 1_024;

/// Shed datagrams are reported at most this often.
pub(crate) const SHED_REPORT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot bind SIP {kind} socket on {addr}: {source}")]
    Bind {
        kind: TransportKind,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the local address of the SIP {kind} socket: {source}")]
    LocalAddr {
        kind: TransportKind,
        source: std::io::Error,
    },
    #[error("no SIP {kind} socket is configured on this endpoint")]
    NotConfigured { kind: TransportKind },
    #[error("the SIP {kind} socket is closed (endpoint shutting down)")]
    Closed { kind: TransportKind },
}

/// What the sockets report to the driver.
#[derive(Debug)]
pub(crate) enum NetEvent {
    Datagram {
        bytes: Vec<u8>,
        from: SocketAddr,
    },
    /// One framed message from a TCP connection.
    Stream {
        bytes: Vec<u8>,
        from: SocketAddr,
    },
    /// A datagram could not be sent.
    UdpSendFailed {
        to: SocketAddr,
        error: String,
    },
    /// The connection to / from `peer` ended; `error` says why if not a
    /// clean close. `connect_failed` when it never came up.
    StreamClosed {
        peer: SocketAddr,
        error: Option<String>,
        connect_failed: bool,
    },
    /// `datagrams` UDP datagrams arrived while the receive queue was full
    /// and were dropped unread (since the last such report), the last of
    /// them from `last_from`.
    Shed {
        datagrams: u64,
        last_from: SocketAddr,
    },
}

/// The two queues into the driver: `inbound` (bounded) carries what was
/// read, `control` (unbounded) everything else.
#[derive(Clone, Debug)]
pub(crate) struct NetSenders {
    pub(crate) inbound: mpsc::Sender<NetEvent>,
    pub(crate) control: mpsc::UnboundedSender<NetEvent>,
}

/// The endpoint's sockets and live TCP connections.
#[derive(Debug)]
pub(crate) struct Transports {
    /// Queue of the UDP writer task (sends must not wait in the driver).
    udp: Option<mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    conns: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
    net_tx: NetSenders,
    tasks: Vec<JoinHandle<()>>,
    /// Where every datagram and every stream read or write is recorded.
    recorder: Option<WireRecorder>,
}

impl Transports {
    pub(crate) async fn bind(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        net_tx: NetSenders,
        accept_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
        recorder: Option<WireRecorder>,
    ) -> Result<Self, TransportError> {
        // Bind every socket before spawning any task, so that a failed bind
        // drops (and frees) what was bound before it at once.
        let udp_bound = match udp {
            Some(addr) => {
                let sock = UdpSocket::bind(addr)
                    .await
                    .map_err(|source| TransportError::Bind {
                        kind: TransportKind::Udp,
                        addr,
                        source,
                    })?;
                let local = sock
                    .local_addr()
                    .map_err(|source| TransportError::LocalAddr {
                        kind: TransportKind::Udp,
                        source,
                    })?;
                Some((sock, local))
            }
            None => None,
        };
        let tcp_bound = match tcp {
            Some(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| TransportError::Bind {
                            kind: TransportKind::Tcp,
                            addr,
                            source,
                        })?;
                let local = listener
                    .local_addr()
                    .map_err(|source| TransportError::LocalAddr {
                        kind: TransportKind::Tcp,
                        source,
                    })?;
                Some((listener, local))
            }
            None => None,
        };
        let mut tasks = Vec::new();
        let (udp_socket, udp_addr) = match udp_bound {
            Some((sock, local)) => {
                let sock = Arc::new(sock);
                let recorded = recorder.clone().map(|r| (r, local));
                tasks.push(tokio::spawn(udp_reader(
                    sock.clone(),
                    net_tx.clone(),
                    recorded.clone(),
                )));
                let (tx, rx) = mpsc::unbounded_channel();
                tasks.push(tokio::spawn(udp_writer(
                    sock,
                    rx,
                    net_tx.control.clone(),
                    recorded,
                )));
                (Some(tx), Some(local))
            }
            None => (None, None),
        };
        let tcp_addr = match tcp_bound {
            Some((listener, local)) => {
                tasks.push(tokio::spawn(tcp_acceptor(listener, accept_tx)));
                Some(local)
            }
            None => None,
        };
        Ok(Self {
            udp: udp_socket,
            udp_addr,
            tcp_addr,
            conns: HashMap::new(),
            net_tx,
            tasks,
            recorder,
        })
    }

    pub(crate) fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        match kind {
            TransportKind::Udp => self.udp_addr,
            TransportKind::Tcp => self.tcp_addr,
        }
    }

    /// Queues one datagram for the UDP writer task; a failed send comes
    /// back as [`NetEvent::UdpSendFailed`].
    pub(crate) fn send_udp(&self, bytes: Vec<u8>, to: SocketAddr) -> Result<(), TransportError> {
        let Some(sock) = &self.udp else {
            return Err(TransportError::NotConfigured {
                kind: TransportKind::Udp,
            });
        };
        sock.send((bytes, to)).map_err(|_| TransportError::Closed {
            kind: TransportKind::Udp,
        })
    }

    /// Queues bytes on the connection with `to`, opening one if there is none.
    pub(crate) fn send_tcp(&mut self, bytes: Vec<u8>, to: SocketAddr) {
        if let Some(tx) = self.conns.get(&to) {
            match tx.send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::SendError(bytes)) => {
                    self.conns.remove(&to);
                    return self.send_tcp(bytes, to);
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // The queue outlives the connect: the first message waits in it.
        let _ = tx.send(bytes);
        self.conns.insert(to, tx);
        let net_tx = self.net_tx.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => run_connection(stream, to, rx, net_tx, recorder).await,
                Err(e) => {
                    let _ = net_tx.control.send(NetEvent::StreamClosed {
                        peer: to,
                        error: Some(format!("connect failed: {e}")),
                        connect_failed: true,
                    });
                }
            }
        });
    }

    /// Takes over an accepted connection.
    pub(crate) fn adopt(&mut self, stream: TcpStream, peer: SocketAddr) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.conns.insert(peer, tx);
        tokio::spawn(run_connection(
            stream,
            peer,
            rx,
            self.net_tx.clone(),
            self.recorder.clone(),
        ));
    }

    /// Forgets a connection that ended.
    pub(crate) fn forget(&mut self, peer: SocketAddr) {
        self.conns.remove(&peer);
    }

    /// Stops the socket readers and closes every connection.
    pub(crate) fn shutdown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.conns.clear();
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A recorder and the local address to record on.
type Recording = Option<(WireRecorder, SocketAddr)>;

async fn udp_reader(sock: Arc<UdpSocket>, net_tx: NetSenders, recording: Recording) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Dropped since the last report, and when the next report may go.
    let mut shed = 0u64;
    let mut last_from = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut weigher = Weigher::default();
    let mut report_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            // Cancel-safe: a datagram is either read or left in the socket.
            read = sock.recv_from(&mut buf) => match read {
                Ok((n, from)) => {
                    // Recorded as it arrived, even if shed below.
                    if let Some((recorder, local)) = &recording {
                        recorder.record(Direction::Received, WireTransport::Udp, *local, from, &buf[..n]);
                    }
                    let admitted = if !weigher.admit(from, net_tx.inbound.capacity()) {
                        Err(None)
                    } else {
                        let event = NetEvent::Datagram {
                            bytes: buf[..n].to_vec(),
                            from,
                        };
                        net_tx.inbound.try_send(event).map_err(Some)
                    };
                    match admitted {
                        Ok(()) => {}
                        Err(None | Some(mpsc::error::TrySendError::Full(_))) => {
                            if shed == 0 {
                                report_at = report_at.max(tokio::time::Instant::now());
                            }
                            shed += 1;
                            last_from = from;
                        }
                        Err(Some(mpsc::error::TrySendError::Closed(_))) => return,
                    }
                }
                // ICMP port unreachable from an earlier send surfaces here on
                // Linux (ECONNREFUSED): not fatal for the socket.
                Err(_) => {
                    if net_tx.control.is_closed() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            },
            () = tokio::time::sleep_until(report_at), if shed > 0 => {
                if net_tx.control.send(NetEvent::Shed { datagrams: shed, last_from }).is_err() {
                    return;
                }
                shed = 0;
                report_at += SHED_REPORT;
            }
        }
    }
}

/// Weighs senders by their share of the recent datagrams (the source
/// address, port included: a SUT sends from its own).
#[derive(Debug, Default)]
struct Weigher {
    counts: HashMap<SocketAddr, u32>,
    seen: u32,
}

impl Weigher {
    /// Whether a datagram from `from` may take one of `free` places left in
    /// the receive queue (counting it either way).
    fn admit(&mut self, from: SocketAddr, free: usize) -> bool {
        let heavy = self.heavy(from);
        free > RESERVED || (!heavy && free > 0)
    }

    /// Counts one datagram from `from`; true if `from` sent an eighth or
    /// more of the recent datagrams (this window's, and half the weight of
    /// the windows before).
    fn heavy(&mut self, from: SocketAddr) -> bool {
        if self.seen >= WINDOW {
            // A new window: last window's weights carry over halved.
            self.counts.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
            self.seen /= 2;
        }
        self.seen += 1;
        let n = self.counts.entry(from).or_insert(0);
        *n += 1;
        *n >= WINDOW / 8
    }
}

async fn udp_writer(
    sock: Arc<UdpSocket>,
    mut rx: mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>,
    net_tx: mpsc::UnboundedSender<NetEvent>,
    recording: Recording,
) {
    while let Some((bytes, to)) = rx.recv().await {
        match sock.send_to(&bytes, to).await {
            Ok(_) => {
                if let Some((recorder, local)) = &recording {
                    recorder.record(Direction::Sent, WireTransport::Udp, *local, to, &bytes);
                }
            }
            Err(e) => {
                let _ = net_tx.send(NetEvent::UdpSendFailed {
                    to,
                    error: format!("sending {} bytes over UDP to {to} failed: {e}", bytes.len()),
                });
            }
        }
    }
}

async fn tcp_acceptor(
    listener: TcpListener,
    accept_tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if accept_tx.send((stream, peer)).is_err() {
                    return;
                }
            }
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TCP connection: reads framed messages, writes queued bytes.
async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    net_tx: NetSenders,
    recorder: Option<WireRecorder>,
) {
    let _ = stream.set_nodelay(true);
    let recording = match (recorder, stream.local_addr()) {
        (Some(recorder), Ok(local)) => Some((recorder, local)),
        _ => None,
    };
    let record = |direction, bytes: &[u8]| {
        if let Some((recorder, local)) = &recording {
            recorder.record(direction, WireTransport::Tcp, *local, peer, bytes);
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = StreamDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    let error = loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => break None,
                Ok(n) => {
                    record(Direction::Received, &buf[..n]);
                    decoder.push(&buf[..n]);
                    let mut framing_error = None;
                    loop {
                        match decoder.next_message() {
                            Ok(Some(bytes)) => {
                                // A full queue holds this connection's
                                // reading back: TCP flow control does the rest.
                                if net_tx.inbound.send(NetEvent::Stream { bytes, from: peer }).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                framing_error = Some(format!("framing error, connection closed: {e}"));
                                break;
                            }
                        }
                    }
                    if framing_error.is_some() {
                        break framing_error;
                    }
                }
                Err(e) => break Some(format!("read failed: {e}")),
            },
            out = rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        break Some(format!("write failed: {e}"));
                    }
                    record(Direction::Sent, &bytes);
                }
                None => {
                    let _ = wr.shutdown().await;
                    return;
                }
            },
        }
    };
    let _ = wr.shutdown().await;
    let _ = net_tx.control.send(NetEvent::StreamClosed {
        peer,
        error,
        connect_failed: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_flooding_sender_cannot_take_the_reserved_places() {
        let mut w = Weigher::default();
        let (flood, sut) = (addr(1), addr(5060));
        for _ in 0..10 * WINDOW {
            assert!(w.admit(flood, RESERVED + 1), "room beyond the reserve");
        }
        assert!(!w.admit(flood, RESERVED), "the reserve is not the flood's");
        assert!(!w.admit(flood, 1));
        // The SUT, a few datagrams among thousands, still gets in, until
        // the queue is full.
        for _ in 0..10 {
            assert!(w.admit(sut, RESERVED));
            assert!(w.admit(sut, 1));
            assert!(!w.admit(sut, 0));
            for _ in 0..100 {
                w.admit(flood, 1);
            }
        }
    }

    #[test]
    fn a_lone_busy_sender_is_refused_nothing_while_there_is_room() {
        // In a calm run the SUT sends every datagram: heavy, but the queue
        // never fills, so nothing of it is dropped.
        let mut w = Weigher::default();
        for _ in 0..10 * WINDOW {
            assert!(w.admit(addr(5060), RECEIVE_QUEUE - 3));
        }
    }

    #[test]
    fn a_sender_that_stops_flooding_is_light_again_after_a_few_windows() {
        let mut w = Weigher::default();
        let (was_flooding, others) = (addr(1), 1000..1500u16);
        for _ in 0..WINDOW {
            w.admit(was_flooding, RECEIVE_QUEUE);
        }
        assert!(!w.admit(was_flooding, RESERVED));
        // Many other light senders for a while: the old weight halves each
        // window.
        for _ in 0..8 {
            for p in others.clone().cycle().take(WINDOW as usize) {
                assert!(w.admit(addr(p), RESERVED), "a light sender");
            }
        }
        assert!(w.admit(was_flooding, RESERVED));
        assert!(
            w.counts.len() <= WINDOW as usize,
            "the weights stay bounded"
        );
    }
}
