//! Diameter over TCP: a sans-IO frame splitter and a tokio driver that runs
//! a [`Peer`] over a [`TcpStream`]. The driver does no protocol logic: it
//! moves bytes, time and commands into the peer and its outputs out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::codec::{HEADER_LEN, Message};
use super::disconnect_cause;
use super::peer::{Peer, PeerError, PeerEvent, PeerState};
use crate::report::capture::{Direction, WireRecorder, WireTransport};

/// Largest message the frame decoder accepts.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// The byte stream cannot be split into messages; the connection must go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// First byte of a message is not version 1.
    #[error("message at stream offset {stream_offset} has version {version}, expected 1")]
    BadVersion {
        /// Version byte found.
        version: u8,
        /// Offset in the stream since the connection opened.
        stream_offset: u64,
    },
    /// Message Length below the header size.
    #[error("message at stream offset {stream_offset} declares length {length} < 20")]
    TooShort {
        /// Declared length.
        length: u32,
        /// Offset in the stream.
        stream_offset: u64,
    },
    /// Message Length above [`MAX_MESSAGE_LEN`].
    #[error("message at stream offset {stream_offset} declares length {length} > cap {cap}")]
    TooLong {
        /// Declared length.
        length: u32,
        /// The cap.
        cap: usize,
        /// Offset in the stream.
        stream_offset: u64,
    },
}

/// Splits a TCP byte stream into Diameter messages (by the length field).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    consumed: u64,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// The first `n` buffered bytes (for error reports).
    pub fn head(&self, n: usize) -> Vec<u8> {
        self.buf.iter().take(n).copied().collect()
    }
    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
    /// The next complete message's bytes, if buffered. An error is fatal:
    /// the stream has lost its framing.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(&version) = self.buf.first() else {
            return Ok(None);
        };
        let stream_offset = self.consumed;
        if version != 1 {
            return Err(FramingError::BadVersion {
                version,
                stream_offset,
            });
        }
        let Some(l) = self.buf.get(1..4) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([0, l[0], l[1], l[2]]);
        let len = length as usize;
        if len < HEADER_LEN {
            return Err(FramingError::TooShort {
                length,
                stream_offset,
            });
        }
        if len > MAX_MESSAGE_LEN {
            return Err(FramingError::TooLong {
                length,
                cap: MAX_MESSAGE_LEN,
                stream_offset,
            });
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        let frame = self.buf.split_to(len).to_vec();
        self.consumed += len as u64;
        Ok(Some(frame))
    }
}

/// Why a request through a [`PeerHandle`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The connection closed before the answer came.
    #[error("connection to {peer} closed before the answer")]
    Closed {
        /// Remote address.
        peer: SocketAddr,
    },
    /// The peer state refused the request.
    #[error("connection to {peer}: {source}")]
    Refused {
        /// Remote address.
        peer: SocketAddr,
        /// Why.
        source: PeerError,
    },
}

#[derive(Debug)]
enum Command {
    Request(Message, oneshot::Sender<Result<Message, TransportError>>),
    Answer(Message),
    Raw(Vec<u8>),
    Close(oneshot::Sender<()>),
    Abort,
}

/// Handle to a running connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    tx: mpsc::UnboundedSender<Command>,
    peer_addr: SocketAddr,
}

impl PeerHandle {
    /// Sends an application request and waits for its answer (matched by
    /// hop-by-hop id). No timeout here: wrap it in `tokio::time::timeout`.
    pub async fn request(&self, msg: Message) -> Result<Message, TransportError> {
        self.start_request(msg).await
    }
    /// Queues the request at once, so requests leave in the order of these
    /// calls, and returns the wait for its answer (which may be spawned).
    pub fn start_request(
        &self,
        msg: Message,
    ) -> impl std::future::Future<Output = Result<Message, TransportError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let closed = TransportError::Closed {
            peer: self.peer_addr,
        };
        let queued = self.tx.send(Command::Request(msg, tx)).is_ok();
        async move {
            if !queued {
                return Err(closed);
            }
            rx.await.unwrap_or(Err(closed))
        }
    }
    /// Sends an answer (dropped silently if the connection is gone).
    pub fn answer(&self, msg: Message) {
        let _ = self.tx.send(Command::Answer(msg));
    }
    /// Writes bytes as they are, bypassing the peer (hostile tests).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(Command::Raw(bytes));
    }
    /// Sends DPR and waits (up to the peer's capabilities timeout, plus a
    /// margin) for DPA and the end of the connection.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }
    /// Drops the connection at once, without DPR (as a process that
    /// exits would); the last event is `Closed { reason: Aborted }`.
    pub fn abort(&self) {
        let _ = self.tx.send(Command::Abort);
    }
    /// Remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
    /// True once the driver has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Runs `peer` over `stream` on a new task. Events other than answers to
/// [`PeerHandle::request`] arrive on the receiver; the last is `Closed`.
pub fn spawn(stream: TcpStream, peer: Peer) -> (PeerHandle, mpsc::UnboundedReceiver<PeerEvent>) {
    spawn_recorded(stream, peer, None)
}

/// [`spawn`], recording every read from and write to `stream` into
/// `recorder` (the bytes as they were, one event per call).
pub fn spawn_recorded(
    stream: TcpStream,
    peer: Peer,
    recorder: Option<WireRecorder>,
) -> (PeerHandle, mpsc::UnboundedReceiver<PeerEvent>) {
    let peer_addr = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let recording = match (recorder, stream.local_addr()) {
        (Some(recorder), Ok(local)) => Some(Recording {
            recorder,
            local,
            remote: peer_addr,
        }),
        _ => None,
    };
    tokio::spawn(drive(stream, peer, peer_addr, cmd_rx, ev_tx, recording));
    (
        PeerHandle {
            tx: cmd_tx,
            peer_addr,
        },
        ev_rx,
    )
}

/// Where a connection's bytes are recorded, and on which addresses.
struct Recording {
    recorder: WireRecorder,
    local: SocketAddr,
    remote: SocketAddr,
}

impl Recording {
    fn record(this: &Option<Self>, direction: Direction, bytes: &[u8]) {
        if let Some(r) = this {
            r.recorder
                .record(direction, WireTransport::Tcp, r.local, r.remote, bytes);
        }
    }
}

struct Driver {
    peer: Peer,
    peer_addr: SocketAddr,
    waiting: HashMap<u32, oneshot::Sender<Result<Message, TransportError>>>,
    closers: Vec<oneshot::Sender<()>>,
    events: mpsc::UnboundedSender<PeerEvent>,
}

impl Driver {
    /// Moves the peer's events out, answers to their waiters.
    fn dispatch_events(&mut self) {
        while let Some(ev) = self.peer.poll_event() {
            match ev {
                PeerEvent::Answer(msg) => match self.waiting.remove(&msg.header.hop_by_hop) {
                    Some(w) => {
                        let _ = w.send(Ok(msg));
                    }
                    None => {
                        let _ = self.events.send(PeerEvent::Answer(msg));
                    }
                },
                other => {
                    let _ = self.events.send(other);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command, raw_out: &mut Vec<u8>) {
        match cmd {
            Command::Request(msg, reply) => match self.peer.send_request(msg) {
                Ok(hbh) => {
                    self.waiting.insert(hbh, reply);
                }
                Err(source) => {
                    let _ = reply.send(Err(TransportError::Refused {
                        peer: self.peer_addr,
                        source,
                    }));
                }
            },
            Command::Answer(msg) => {
                if let Err(e) = self.peer.send_answer(msg) {
                    let _ = self
                        .events
                        .send(PeerEvent::Warning(format!("answer not sent: {e}")));
                }
            }
            Command::Raw(bytes) => raw_out.extend_from_slice(&bytes),
            Command::Close(done) => {
                self.closers.push(done);
                self.peer.disconnect(
                    disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU,
                    std::time::Instant::now(),
                );
            }
            Command::Abort => self.peer.abort(),
        }
    }
}

/// Up to `max` bytes of `data` as text a person can read: printable ASCII
/// as is, everything else escaped (`\r`, `\n`, `\t`, `\xNN`).
pub fn escape_bytes(data: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in data.iter().take(max) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if data.len() > max {
        out.push('…');
    }
    out
}

async fn drive(
    stream: TcpStream,
    peer: Peer,
    peer_addr: SocketAddr,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<PeerEvent>,
    recording: Option<Recording>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut d = Driver {
        peer,
        peer_addr,
        waiting: HashMap::new(),
        closers: Vec::new(),
        events,
    };
    let mut decoder = FrameDecoder::new();
    let mut read_buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    let mut commands_open = true;
    loop {
        // Outputs first: bytes, then events.
        while let Some(m) = d.peer.poll_transmit() {
            m.encode_into(&mut out);
        }
        if !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                d.peer.handle_connection_lost();
            } else {
                Recording::record(&recording, Direction::Sent, &out);
            }
            out.clear();
        }
        d.dispatch_events();
        if d.peer.state() == PeerState::Closed {
            break;
        }
        let timeout = d.peer.poll_timeout();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = reader.read(&mut read_buf) => match r {
                Ok(0) | Err(_) => d.peer.handle_connection_lost(),
                Ok(n) => {
                    Recording::record(&recording, Direction::Received, &read_buf[..n]);
                    decoder.push(&read_buf[..n]);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => {
                                let now = std::time::Instant::now();
                                match Message::decode(&frame) {
                                    Ok(m) => d.peer.handle_message(m, now),
                                    Err(e) => d.peer.handle_frame_error(&frame, e, now),
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // Say what the bytes were: a lab wants to
                                // know who talks HTTP to its Diameter port.
                                let head = decoder.head(33);
                                d.peer.handle_framing_error(format!(
                                    "{e} (bytes \"{}\")",
                                    escape_bytes(&head, 32)
                                ));
                                break;
                            }
                        }
                    }
                }
            },
            c = cmd_rx.recv(), if commands_open => match c {
                Some(c) => d.on_command(c, &mut out),
                None => {
                    // Every handle dropped: nobody can use the connection.
                    commands_open = false;
                    d.peer.disconnect(disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU, std::time::Instant::now());
                }
            },
            () = sleep => d.peer.handle_timeout(std::time::Instant::now()),
        }
    }
    // Flush what the last step produced (a DPA, an error CEA).
    while let Some(m) = d.peer.poll_transmit() {
        m.encode_into(&mut out);
    }
    if !out.is_empty() && writer.write_all(&out).await.is_ok() {
        Recording::record(&recording, Direction::Sent, &out);
    }
    let _ = writer.shutdown().await;
    for (_, w) in d.waiting.drain() {
        let _ = w.send(Err(TransportError::Closed { peer: peer_addr }));
    }
    for c in d.closers.drain(..) {
        let _ = c.send(());
    }
    // Drain briefly so unread bytes do not turn our close into a reset
    // that could destroy the last answer in flight.
    let drain = async {
        while let Ok(n) = reader.read(&mut read_buf).await {
            if n == 0 {
                break;
            }
            Recording::record(&recording, Direction::Received, &read_buf[..n]);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
    drop(cmd_rx);
}
