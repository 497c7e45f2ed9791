//! The Diameter peer state machine (RFC 6733 section 5, RFC 3539 watchdog),
//! sans-IO in the style of quinn-proto: messages and time come in through
//! `handle_*`, messages, events and the next deadline leave through
//! `poll_*`. No sockets, no clocks, no randomness: two peers can be driven
//! against each other on a virtual clock.
//!
//! Simplifications, on purpose: no election (one connection per pair is
//! the transport's business), no Tw jitter (deterministic tests), the DPA
//! wait uses `capabilities_timeout`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::codec::{DecodeError, Header, Message};
use super::commands::{self, LocalIdentity, RemoteIdentity};
use super::dictionary;
use super::{code, command, result};

/// Which side opened the transport connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connected out; sends CER.
    Initiator,
    /// Accepted; waits for CER.
    Responder,
}

/// Timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Tw: silence before a DWR, and how long a DWA may take.
    pub watchdog_interval: Duration,
    /// How long CER/CEA (and DPR/DPA) may take.
    pub capabilities_timeout: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            watchdog_interval: Duration::from_secs(30),
            capabilities_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the peer connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Initiator: CER sent, waiting for CEA.
    WaitCea,
    /// Responder: waiting for CER.
    WaitCer,
    /// Capabilities exchanged; application messages flow.
    Open,
    /// DPR sent, waiting for DPA.
    Closing,
    /// Done; the transport should close once transmits are drained.
    Closed,
}

/// Why the connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No DWA (or any traffic) within Tw after a DWR.
    WatchdogTimeout,
    /// No CER/CEA within `capabilities_timeout`.
    CapabilitiesTimeout,
    /// The CEA carried a Result-Code other than 2001.
    CapabilitiesRejected {
        /// Result-Code of the CEA (0 if absent).
        result_code: u32,
    },
    /// We answered CER with 5010.
    NoCommonApplication,
    /// The other side sent DPR.
    DisconnectedByPeer {
        /// Its Disconnect-Cause, if readable.
        cause: Option<i32>,
    },
    /// We sent DPR and got DPA, or closed before Open.
    LocalDisconnect,
    /// We sent DPR and no DPA came.
    DisconnectTimeout,
    /// The transport went away (EOF, reset).
    ConnectionLost,
    /// The byte stream could not be framed.
    Framing(String),
    /// The first message on an accepted connection was not a CER
    /// (RFC 6733 5.3: capabilities are exchanged first).
    NoCapabilitiesExchange {
        /// One-line description of what came instead.
        first: String,
    },
    /// Closed locally at once, without DPR (as a process that exits).
    Aborted,
}

/// What the application learns.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// Capabilities exchanged.
    Opened {
        /// What the other side said about itself.
        remote: RemoteIdentity,
    },
    /// An application request to answer with [`Peer::send_answer`].
    Request(Message),
    /// An answer to one of our [`Peer::send_request`]s.
    Answer(Message),
    /// An application request the peer answered by itself (5001 for an
    /// unknown M-bit AVP); also reported as a Warning.
    Rejected {
        /// The request as received.
        request: Message,
        /// The answer sent.
        answer: Message,
    },
    /// The connection is closed.
    Closed {
        /// Why.
        reason: CloseReason,
    },
    /// Something odd but survivable, for the report.
    Warning(String),
}

/// A command the state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Application requests need an Open connection.
    #[error("cannot send a request: peer is {state:?}, not Open")]
    NotOpen {
        /// Current state.
        state: PeerState,
    },
    /// Nothing can be sent on a closed connection.
    #[error("peer connection is closed")]
    Closed,
}

/// The peer state machine.
#[derive(Debug)]
pub struct Peer {
    role: Role,
    local: LocalIdentity,
    config: PeerConfig,
    state: PeerState,
    remote: Option<RemoteIdentity>,
    transmits: VecDeque<Message>,
    events: VecDeque<PeerEvent>,
    next_hbh: u32,
    next_e2e: u32,
    /// Hop-by-hop ids of our application requests still unanswered.
    pending: HashSet<u32>,
    last_rx: Instant,
    /// Hop-by-hop id and send time of our unanswered DWR.
    dwr: Option<(u32, Instant)>,
    /// CER/CEA or DPR/DPA deadline.
    deadline: Option<Instant>,
    /// Hop-by-hop of our CER or DPR.
    control_hbh: Option<u32>,
}

impl Peer {
    /// A new peer. An Initiator queues its CER at once.
    pub fn new(role: Role, local: LocalIdentity, config: PeerConfig, now: Instant) -> Self {
        let mut p = Peer {
            role,
            next_e2e: (local.origin_state_id & 0xfff) << 20,
            local,
            config,
            state: match role {
                Role::Initiator => PeerState::WaitCea,
                Role::Responder => PeerState::WaitCer,
            },
            remote: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_hbh: 1,
            pending: HashSet::new(),
            last_rx: now,
            dwr: None,
            deadline: Some(now + config.capabilities_timeout),
            control_hbh: None,
        };
        if role == Role::Initiator {
            let cer = commands::cer(&p.local);
            p.control_hbh = Some(p.queue_request(cer));
        }
        p
    }

    /// Current state.
    pub fn state(&self) -> PeerState {
        self.state
    }
    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Our identity.
    pub fn local(&self) -> &LocalIdentity {
        &self.local
    }
    /// The other side's identity, once its CER/CEA arrived.
    pub fn remote(&self) -> Option<&RemoteIdentity> {
        self.remote.as_ref()
    }
    /// Hop-by-hop ids of application requests still waiting for answers.
    pub fn pending_requests(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending.iter().copied()
    }

    fn queue_request(&mut self, mut msg: Message) -> u32 {
        let hbh = self.next_hbh;
        self.next_hbh = self.next_hbh.wrapping_add(1).max(1);
        msg.header.flags |= Header::REQUEST;
        msg.header.hop_by_hop = hbh;
        // A caller that manages its own end-to-end ids (a retransmission
        // with T, or a client that may have to retransmit later) sets one.
        if msg.header.end_to_end == 0 {
            msg.header.end_to_end = self.next_e2e;
            self.next_e2e =
                (self.next_e2e & 0xfff0_0000) | (self.next_e2e.wrapping_add(1) & 0xf_ffff);
        }
        self.transmits.push_back(msg);
        hbh
    }

    fn close(&mut self, reason: CloseReason) {
        if self.state != PeerState::Closed {
            self.state = PeerState::Closed;
            self.deadline = None;
            self.dwr = None;
            self.events.push_back(PeerEvent::Closed { reason });
        }
    }

    fn warn(&mut self, text: String) {
        self.events.push_back(PeerEvent::Warning(text));
    }

    /// A message the transport decoded.
    pub fn handle_message(&mut self, msg: Message, now: Instant) {
        self.last_rx = now;
        // Any traffic proves the peer alive (RFC 3539 3.4.1).
        self.dwr = None;
        let cmd = msg.header.command_code;
        let req = msg.is_request();
        match self.state {
            PeerState::Closed => {
                self.warn(format!("{} received after close; ignored", msg.describe()));
            }
            PeerState::WaitCer => {
                if cmd == command::CAPABILITIES_EXCHANGE && req {
                    self.on_cer(msg);
                } else {
                    let first = msg.describe();
                    self.warn(format!("{first} received before CER; closing"));
                    self.close(CloseReason::NoCapabilitiesExchange { first });
                }
            }
            PeerState::WaitCea => {
                if cmd == command::CAPABILITIES_EXCHANGE && !req {
                    self.on_cea(msg, now);
                } else {
                    self.warn(format!("{} received before CEA; ignored", msg.describe()));
                }
            }
            PeerState::Open | PeerState::Closing => self.on_open_message(msg, now),
        }
    }

    fn on_cer(&mut self, cer: Message) {
        let remote = RemoteIdentity::from_capabilities(&cer);
        if commands::has_common_application(&self.local, &remote) {
            let cea = commands::cea(&cer, &self.local, result::SUCCESS);
            self.transmits.push_back(cea);
            self.state = PeerState::Open;
            self.deadline = None;
            self.remote = Some(remote.clone());
            self.events.push_back(PeerEvent::Opened { remote });
        } else {
            let cea = commands::cea(&cer, &self.local, result::NO_COMMON_APPLICATION);
            self.transmits.push_back(cea);
            self.warn(format!(
                "CER from {:?} names applications {:?}, none in common with ours {:?}",
                remote.origin_host,
                remote.application_ids(),
                self.local.application_ids()
            ));
            self.remote = Some(remote);
            self.close(CloseReason::NoCommonApplication);
        }
    }

    fn on_cea(&mut self, cea: Message, now: Instant) {
        if Some(cea.header.hop_by_hop) != self.control_hbh {
            self.warn(format!(
                "CEA with hop-by-hop {:#x}, expected {:?}",
                cea.header.hop_by_hop, self.control_hbh
            ));
        }
        self.control_hbh = None;
        let remote = RemoteIdentity::from_capabilities(&cea);
        let rc = cea.result_code();
        self.remote = Some(remote.clone());
        if rc == Some(result::SUCCESS) {
            self.state = PeerState::Open;
            self.deadline = None;
            self.last_rx = now;
            self.events.push_back(PeerEvent::Opened { remote });
        } else {
            self.close(CloseReason::CapabilitiesRejected {
                result_code: rc.unwrap_or(0),
            });
        }
    }

    fn on_open_message(&mut self, msg: Message, now: Instant) {
        let _ = now;
        let req = msg.is_request();
        match (msg.header.command_code, req) {
            (command::DEVICE_WATCHDOG, true) => {
                let dwa = commands::dwa(&msg, &self.local);
                self.transmits.push_back(dwa);
            }
            (command::DEVICE_WATCHDOG, false) => {}
            (command::DISCONNECT_PEER, true) => {
                let dpa = commands::dpa(&msg, &self.local);
                self.transmits.push_back(dpa);
                let cause = msg
                    .avp(code::DISCONNECT_CAUSE)
                    .and_then(|a| a.as_i32().ok());
                self.close(CloseReason::DisconnectedByPeer { cause });
            }
            (command::DISCONNECT_PEER, false) => {
                if self.state == PeerState::Closing {
                    self.close(CloseReason::LocalDisconnect);
                } else {
                    self.warn("DPA received without a DPR; ignored".to_owned());
                }
            }
            (command::CAPABILITIES_EXCHANGE, true) => {
                let ans = commands::error_answer(
                    &msg,
                    &self.local,
                    result::UNABLE_TO_COMPLY,
                    None,
                    Some("capabilities already exchanged on this connection"),
                );
                self.transmits.push_back(ans);
                self.warn("CER received on an open connection; answered 5012".to_owned());
            }
            (command::CAPABILITIES_EXCHANGE, false) => {
                self.warn("CEA received on an open connection; ignored".to_owned());
            }
            (_, true) => {
                if let Err(failed) = dictionary::check_mandatory(&msg) {
                    let name = dictionary::avp_name(failed.code, failed.vendor_id);
                    let answer = commands::error_answer(
                        &msg,
                        &self.local,
                        result::AVP_UNSUPPORTED,
                        Some(failed),
                        Some(&format!("{name} has the M bit set and is not supported")),
                    );
                    self.transmits.push_back(answer.clone());
                    self.warn(format!(
                        "{}: unknown {name} with the M bit; answered 5001",
                        msg.describe()
                    ));
                    self.events.push_back(PeerEvent::Rejected {
                        request: msg,
                        answer,
                    });
                } else {
                    self.events.push_back(PeerEvent::Request(msg));
                }
            }
            (_, false) => {
                if self.pending.remove(&msg.header.hop_by_hop) {
                    self.events.push_back(PeerEvent::Answer(msg));
                } else {
                    self.warn(format!(
                        "{} matches no request of ours; discarded",
                        msg.describe()
                    ));
                }
            }
        }
    }

    /// A frame that did not decode. If it was a request with a readable
    /// header, queue the error answer RFC 6733 asks for.
    pub fn handle_frame_error(&mut self, frame: &[u8], err: DecodeError, now: Instant) {
        self.last_rx = now;
        self.dwr = None;
        let header = Header::peek(frame);
        let is_req = header.is_some_and(|h| h.is_request() && !h.is_error());
        self.warn(format!(
            "undecodable message ({} bytes): {err}",
            frame.len()
        ));
        if let (Some(mut header), true) = (header, is_req) {
            if self.state == PeerState::Closed {
                return;
            }
            header.version = 1;
            let mut req = Message {
                header,
                avps: Vec::new(),
            };
            // Keep the Session-Id if the first AVP is one and readable.
            if let Ok(m) = Message::decode(&truncate_to_first_avp(frame)) {
                req.avps = m.avps;
            }
            let answer = commands::error_answer(
                &req,
                &self.local,
                err.result_code(),
                err.failed_avp(),
                Some(&err.to_string()),
            );
            self.transmits.push_back(answer);
        }
    }

    /// The transport is gone.
    pub fn handle_connection_lost(&mut self) {
        self.close(CloseReason::ConnectionLost);
    }

    /// Closes at once without DPR (the transport drops the connection).
    pub fn abort(&mut self) {
        self.close(CloseReason::Aborted);
    }

    /// The transport could not frame the byte stream.
    pub fn handle_framing_error(&mut self, description: String) {
        self.close(CloseReason::Framing(description));
    }

    /// Time has reached (or passed) [`Peer::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            PeerState::Closed => {}
            PeerState::WaitCea | PeerState::WaitCer => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.close(CloseReason::CapabilitiesTimeout);
                }
            }
            PeerState::Closing if self.deadline.is_some_and(|d| now >= d) => {
                self.close(CloseReason::DisconnectTimeout);
            }
            PeerState::Open | PeerState::Closing => {
                let tw = self.config.watchdog_interval;
                match self.dwr {
                    Some((_, sent)) if now >= sent + tw => {
                        self.close(CloseReason::WatchdogTimeout);
                    }
                    Some(_) => {}
                    None if now >= self.last_rx + tw => {
                        let dwr = commands::dwr(&self.local);
                        let hbh = self.queue_request(dwr);
                        self.dwr = Some((hbh, now));
                    }
                    None => {}
                }
            }
        }
    }

    /// Next message to write.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }
    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }
    /// When [`Peer::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tw = self.config.watchdog_interval;
        match self.state {
            PeerState::Closed => None,
            PeerState::WaitCea | PeerState::WaitCer => self.deadline,
            PeerState::Open | PeerState::Closing => {
                let wd = match self.dwr {
                    Some((_, sent)) => sent + tw,
                    None => self.last_rx + tw,
                };
                Some(self.deadline.map_or(wd, |d| d.min(wd)))
            }
        }
    }

    /// Sends an application request: sets R, assigns the hop-by-hop id and,
    /// unless the message already has one, the end-to-end id (a caller that
    /// may retransmit with T picks its own, RFC 6733 5.5.4).
    pub fn send_request(&mut self, msg: Message) -> Result<u32, PeerError> {
        if self.state != PeerState::Open {
            return Err(PeerError::NotOpen { state: self.state });
        }
        let hbh = self.queue_request(msg);
        self.pending.insert(hbh);
        Ok(hbh)
    }

    /// Sends an answer as given.
    pub fn send_answer(&mut self, msg: Message) -> Result<(), PeerError> {
        if self.state == PeerState::Closed {
            return Err(PeerError::Closed);
        }
        self.transmits.push_back(msg);
        Ok(())
    }

    /// Starts closing: DPR with this Disconnect-Cause when Open, at once
    /// otherwise.
    pub fn disconnect(&mut self, cause: u32, now: Instant) {
        match self.state {
            PeerState::Open => {
                let dpr = commands::dpr(&self.local, cause);
                self.control_hbh = Some(self.queue_request(dpr));
                self.state = PeerState::Closing;
                self.deadline = Some(now + self.config.capabilities_timeout);
            }
            PeerState::Closing | PeerState::Closed => {}
            PeerState::WaitCea | PeerState::WaitCer => self.close(CloseReason::LocalDisconnect),
        }
    }
}

/// The header plus the first AVP if it is a complete Session-Id, with the
/// length field fixed up; otherwise just the header. Used to salvage the
/// Session-Id of a request that did not decode.
fn truncate_to_first_avp(frame: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = frame
        .iter()
        .take(super::codec::HEADER_LEN)
        .copied()
        .collect();
    if out.len() < super::codec::HEADER_LEN {
        return out;
    }
    out[0] = 1;
    let first = frame.get(20..28).and_then(|h| {
        let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        (code == code::SESSION_ID && h[4] & 0x80 == 0 && len >= 8)
            .then(|| frame.get(20..20 + ((len + 3) & !3)))
            .flatten()
    });
    if let Some(avp) = first {
        out.extend_from_slice(avp);
    }
    let len = (out.len() as u32).to_be_bytes();
    out[1..4].copy_from_slice(&len[1..]);
    out[4] &= !Header::ERROR;
    out
}
