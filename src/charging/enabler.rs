//! The Charging Enabler in its offline (CDF) role: the Diameter server the
//! harness plays. It accepts any number of SUT connections, records every
//! application request with a timeline stamp, and answers by script
//! (default 2001).
//!
//! Seam for the online (OCS, CH-2) role: [`Shared::decide`] routes by
//! command; CCR (272) is answered 3001 for now and is where a Ro handler
//! will plug in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::diameter::{
    CloseReason, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, PeerHandle, RemoteIdentity,
    Role, command, error_answer, result, transport,
};
use crate::timeline::{Stamp, stamp};

use super::ch1::{Ch1Request, RecordType};
use super::rf::{MappingError, aca_for};

/// Where and as whom the Enabler listens.
#[derive(Clone, Debug)]
pub struct EnablerConfig {
    /// Listen address (port 0 for any).
    pub listen: SocketAddr,
    /// What the Enabler says about itself (see
    /// [`LocalIdentity::charging_server`]).
    pub identity: LocalIdentity,
    /// Tw for every connection.
    pub watchdog_interval: Duration,
}

/// The Enabler could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnablerError {
    /// The listen address could not be bound.
    #[error("cannot listen for Diameter on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What became of the answer to a recorded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Scripted with a delay; not sent yet.
    Pending,
    /// Sent, with this Result-Code, stamped just before writing.
    Answered {
        /// Result-Code sent.
        result_code: u32,
        /// When (on the harness timeline).
        stamp: Stamp,
    },
    /// Deliberately never answered.
    Withheld,
}

/// One application request the Enabler received.
#[derive(Clone, Debug)]
pub struct ChargingRecord {
    /// Stamped as soon as the request was read.
    pub stamp: Stamp,
    /// The SUT connection it came on.
    pub peer: SocketAddr,
    /// The request as decoded (unknown AVPs kept raw).
    pub message: Message,
    /// The request read as CH-1, or why not.
    pub ch1: Result<Ch1Request, MappingError>,
    /// Odd but legal things seen while reading it.
    pub warnings: Vec<String>,
    /// What was answered.
    pub answer: AnswerOutcome,
}

impl ChargingRecord {
    /// Served user, if the request mapped and named one.
    pub fn served_user(&self) -> Option<&str> {
        self.ch1.as_ref().ok()?.served_user.as_deref()
    }
    /// Record type, if the request mapped.
    pub fn record_type(&self) -> Option<RecordType> {
        self.ch1.as_ref().ok().map(|r| r.kind)
    }
    /// Session-Id as on the wire.
    pub fn session_id(&self) -> Option<&str> {
        self.message.session_id()
    }
    /// One line for reports.
    pub fn describe(&self) -> String {
        let ans = match &self.answer {
            AnswerOutcome::Pending => "pending".to_owned(),
            AnswerOutcome::Answered { result_code, .. } => format!("answered {result_code}"),
            AnswerOutcome::Withheld => "withheld".to_owned(),
        };
        format!(
            "#{} {} from {} -> {ans}",
            self.stamp.seq,
            self.message.describe(),
            self.peer
        )
    }
}

/// Which requests a [`ScriptedAnswer`] applies to. Every field set must
/// match; an empty selector matches every request that maps to CH-1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerSelector {
    /// Substring of the served user.
    pub served_user: Option<String>,
    /// Exact Session-Id.
    pub session_id: Option<String>,
    /// Record type.
    pub record_type: Option<RecordType>,
}

impl AnswerSelector {
    /// Matches any CH-1 request.
    pub fn any() -> Self {
        Self::default()
    }
    /// Matches requests whose served user contains `user`.
    pub fn served_user(user: impl Into<String>) -> Self {
        AnswerSelector {
            served_user: Some(user.into()),
            ..Self::default()
        }
    }
    /// Narrows to one record type.
    pub fn record_type(mut self, t: RecordType) -> Self {
        self.record_type = Some(t);
        self
    }
    /// Narrows to one Session-Id.
    pub fn session_id(mut self, s: impl Into<String>) -> Self {
        self.session_id = Some(s.into());
        self
    }
    /// True if `req` is selected.
    pub fn matches(&self, req: &Ch1Request) -> bool {
        self.served_user.as_ref().is_none_or(|u| {
            req.served_user
                .as_ref()
                .is_some_and(|s| s.contains(u.as_str()))
        }) && self
            .session_id
            .as_ref()
            .is_none_or(|s| *s == req.session_id)
            && self.record_type.is_none_or(|t| t == req.kind)
    }
}

/// How to answer selected requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptedAnswer {
    /// Result-Code of the ACA (3xxx get the E bit).
    pub result_code: u32,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Never answer.
    pub withhold: bool,
    /// Apply to this many requests, then expire (None: forever).
    pub times: Option<u32>,
}

impl ScriptedAnswer {
    /// Answer at once with this Result-Code.
    pub fn result(result_code: u32) -> Self {
        ScriptedAnswer {
            result_code,
            delay: Duration::ZERO,
            withhold: false,
            times: None,
        }
    }
    /// Do not answer.
    pub fn withhold() -> Self {
        ScriptedAnswer {
            withhold: true,
            ..Self::result(result::SUCCESS)
        }
    }
    /// Delay the answer.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// Apply only `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// A SUT connection, for reports.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// Its CER, once received.
    pub remote: Option<RemoteIdentity>,
    /// Open now.
    pub open: bool,
    /// Why it closed, once closed.
    pub closed: Option<CloseReason>,
    /// Peer warnings (frame errors, unexpected messages).
    pub warnings: Vec<String>,
}

#[derive(Debug)]
struct Script {
    selector: AnswerSelector,
    answer: ScriptedAnswer,
    used: u32,
}

#[derive(Debug, Default)]
struct State {
    records: Vec<ChargingRecord>,
    scripts: Vec<Script>,
    connections: Vec<ConnectionInfo>,
    handles: Vec<PeerHandle>,
}

#[derive(Debug)]
struct Shared {
    local_addr: SocketAddr,
    identity: LocalIdentity,
    peer_config: PeerConfig,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

/// How to answer one request.
#[derive(Debug)]
enum Decision {
    Answer {
        message: Message,
        result_code: u32,
        delay: Duration,
    },
    Withhold,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Charging Enabler. Cheap to clone; the listener stops when the last
/// clone is dropped (open connections run until the SUT closes them).
#[derive(Clone, Debug)]
pub struct Enabler {
    shared: Arc<Shared>,
    _accept: Arc<AbortOnDrop>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The answer for a request, by command. CCR and anything else that is
    /// not an ACR ends here with 3001 until the OCS role exists.
    fn decide(&self, msg: &Message, ch1: &Result<Ch1Request, MappingError>) -> Decision {
        if msg.header.command_code != command::ACCOUNTING {
            return Decision::Answer {
                message: error_answer(
                    msg,
                    &self.identity,
                    result::COMMAND_UNSUPPORTED,
                    None,
                    Some("the Charging Enabler answers ACR (Rf) only"),
                ),
                result_code: result::COMMAND_UNSUPPORTED,
                delay: Duration::ZERO,
            };
        }
        let req = match ch1 {
            Ok(r) => r,
            Err(e) => {
                let rc = e.result_code();
                return Decision::Answer {
                    message: error_answer(
                        msg,
                        &self.identity,
                        rc,
                        e.failed_avp(),
                        Some(&e.to_string()),
                    ),
                    result_code: rc,
                    delay: Duration::ZERO,
                };
            }
        };
        let scripted = {
            let mut st = self.lock();
            st.scripts
                .iter_mut()
                .find(|s| s.answer.times.is_none_or(|t| s.used < t) && s.selector.matches(req))
                .map(|s| {
                    s.used += 1;
                    s.answer
                })
        };
        let a = scripted.unwrap_or(ScriptedAnswer::result(result::SUCCESS));
        if a.withhold {
            return Decision::Withhold;
        }
        Decision::Answer {
            message: aca_for(msg, &self.identity, a.result_code),
            result_code: a.result_code,
            delay: a.delay,
        }
    }

    fn push_record(&self, record: ChargingRecord) -> usize {
        let idx = {
            let mut st = self.lock();
            st.records.push(record);
            st.records.len() - 1
        };
        self.notify();
        idx
    }

    fn set_answer(&self, idx: usize, outcome: AnswerOutcome) {
        if let Some(r) = self.lock().records.get_mut(idx) {
            r.answer = outcome;
        }
        self.notify();
    }

    fn on_request(self: &Arc<Self>, peer: SocketAddr, msg: Message, handle: &PeerHandle) {
        let received = stamp();
        let (ch1, warnings) = if msg.header.command_code == command::ACCOUNTING {
            match Ch1Request::from_acr_with_warnings(&msg) {
                Ok((r, w)) => (Ok(r), w),
                Err(e) => (Err(e), Vec::new()),
            }
        } else {
            (
                Err(MappingError::WrongCommand {
                    command: msg.describe(),
                    expected: "request",
                }),
                Vec::new(),
            )
        };
        let decision = self.decide(&msg, &ch1);
        let idx = self.push_record(ChargingRecord {
            stamp: received,
            peer,
            message: msg,
            ch1,
            warnings,
            answer: AnswerOutcome::Pending,
        });
        match decision {
            Decision::Withhold => self.set_answer(idx, AnswerOutcome::Withheld),
            Decision::Answer {
                message,
                result_code,
                delay,
            } => {
                if delay.is_zero() {
                    let s = stamp();
                    handle.answer(message);
                    self.set_answer(
                        idx,
                        AnswerOutcome::Answered {
                            result_code,
                            stamp: s,
                        },
                    );
                } else {
                    let shared = Arc::clone(self);
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let s = stamp();
                        handle.answer(message);
                        shared.set_answer(
                            idx,
                            AnswerOutcome::Answered {
                                result_code,
                                stamp: s,
                            },
                        );
                    });
                }
            }
        }
    }

    fn on_rejected(&self, peer: SocketAddr, request: Message, answer: &Message) {
        let s = stamp();
        let ch1 = Ch1Request::from_acr(&request);
        self.push_record(ChargingRecord {
            stamp: s,
            peer,
            message: request,
            ch1,
            warnings: vec![format!("rejected by the peer layer: {}", answer.describe())],
            answer: AnswerOutcome::Answered {
                result_code: answer.result_code().unwrap_or(0),
                stamp: s,
            },
        });
    }

    fn update_connection(&self, peer: SocketAddr, f: impl FnOnce(&mut ConnectionInfo)) {
        if let Some(c) = self
            .lock()
            .connections
            .iter_mut()
            .rev()
            .find(|c| c.peer == peer)
        {
            f(c);
        }
        self.notify();
    }

    fn serve(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let peer = Peer::new(
            Role::Responder,
            self.identity.clone(),
            self.peer_config,
            Instant::now(),
        );
        let (handle, mut events) = transport::spawn(stream, peer);
        {
            let mut st = self.lock();
            st.connections.push(ConnectionInfo {
                peer: addr,
                remote: None,
                open: false,
                closed: None,
                warnings: Vec::new(),
            });
            st.handles.push(handle.clone());
        }
        self.notify();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    PeerEvent::Opened { remote } => shared.update_connection(addr, |c| {
                        c.remote = Some(remote);
                        c.open = true;
                    }),
                    PeerEvent::Request(msg) => shared.on_request(addr, msg, &handle),
                    PeerEvent::Rejected { request, answer } => {
                        shared.on_rejected(addr, request, &answer)
                    }
                    PeerEvent::Answer(msg) => shared.update_connection(addr, |c| {
                        c.warnings
                            .push(format!("unexpected answer {}", msg.describe()))
                    }),
                    PeerEvent::Warning(w) => shared.update_connection(addr, |c| c.warnings.push(w)),
                    PeerEvent::Closed { reason } => shared.update_connection(addr, |c| {
                        c.open = false;
                        c.closed = Some(reason);
                    }),
                }
            }
            shared.lock().handles.retain(|h| !h.is_closed());
        });
    }
}

impl Enabler {
    /// Binds the listener and starts accepting SUT connections.
    pub async fn bind(config: EnablerConfig) -> Result<Enabler, EnablerError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| EnablerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| EnablerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            local_addr,
            identity: config.identity,
            peer_config: PeerConfig {
                watchdog_interval: config.watchdog_interval,
                ..PeerConfig::default()
            },
            state: Mutex::new(State::default()),
            changed,
        });
        let acceptor = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, addr)) => acceptor.serve(stream, addr),
                    // EMFILE and friends: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Enabler {
            shared,
            _accept: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The Enabler's identity.
    pub fn identity(&self) -> &LocalIdentity {
        &self.shared.identity
    }

    /// Adds a script; earlier scripts win when several match.
    pub fn script(&self, selector: AnswerSelector, answer: ScriptedAnswer) {
        self.shared.lock().scripts.push(Script {
            selector,
            answer,
            used: 0,
        });
    }

    /// Removes every script selecting exactly this served user.
    pub fn remove_scripts_for(&self, served_user: &str) {
        self.shared
            .lock()
            .scripts
            .retain(|s| s.selector.served_user.as_deref() != Some(served_user));
    }

    /// Removes every script.
    pub fn clear_scripts(&self) {
        self.shared.lock().scripts.clear();
    }

    /// Snapshot of every record, in arrival order.
    pub fn records(&self) -> Vec<ChargingRecord> {
        self.shared.lock().records.clone()
    }

    /// Records whose served user contains `filter` or whose Session-Id is
    /// `filter`.
    pub fn records_for(&self, filter: &str) -> Vec<ChargingRecord> {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| {
                r.served_user().is_some_and(|u| u.contains(filter))
                    || r.session_id() == Some(filter)
            })
            .cloned()
            .collect()
    }

    /// Waits until a record satisfies `predicate` (checked on the records
    /// there now and on every change, answers included); returns the first
    /// one in arrival order, or None on timeout.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&ChargingRecord) -> bool,
        timeout: Duration,
    ) -> Option<ChargingRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(r) = self.shared.lock().records.iter().find(|r| predicate(r)) {
                return Some(r.clone());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Requests not (yet) answered: pending or withheld.
    pub fn unanswered_count(&self) -> usize {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| !matches!(r.answer, AnswerOutcome::Answered { .. }))
            .count()
    }

    /// Every SUT connection seen, open or closed.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared.lock().connections.clone()
    }

    /// Sends DPR on every open connection and waits for them to close.
    pub async fn disconnect_all(&self) {
        let handles = self.shared.lock().handles.clone();
        for h in handles {
            h.close().await;
        }
    }

    /// Sends an application request (e.g. a future RAR/ASR) on the first
    /// open connection from `peer` and waits for the answer.
    pub async fn request_to(
        &self,
        peer: SocketAddr,
        msg: Message,
    ) -> Option<Result<Message, crate::diameter::TransportError>> {
        let h = self
            .shared
            .lock()
            .handles
            .iter()
            .find(|h| h.peer_addr() == peer && !h.is_closed())
            .cloned()?;
        Some(h.request(msg).await)
    }
}
