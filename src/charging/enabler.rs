//! The Charging Enabler: the Diameter server the harness plays, in both
//! roles at once. It accepts any number of SUT connections, records every
//! application request with a timeline stamp, and answers:
//! - an ACR (Rf, CH-1; the CDF role) by script ([`Enabler::script`],
//!   default 2001);
//! - a CCR (Ro, CH-2; the OCS role) as the sans-IO OCS core
//!   ([`super::ocs::Ocs`]) decides, fed the CCR and the time it arrived:
//!   at once, after a scripted delay (a timer in this task; the core keeps
//!   no clock), or never ([`Enabler::script_ocs`]). The core's per-session
//!   ledger and the online every-flow rules over it are read with
//!   [`Enabler::ocs_sessions`] and [`Enabler::online_violations`]. A CCR
//!   is served on a link whose CER advertised Ro (4, bare or
//!   vendor-specific, or Relay); on an Rf-only link it is answered 3001 and
//!   recorded with [`ChargingRecord::protocol_error`].
//!
//! Every record, of either interface, gives the common view of the request
//! ([`ChargingRecord::charging_request`]: interface, kind, Session-Id,
//! sequence number, served user, role, participants, units), so
//! correlation, ordering and reports need not care which it came on.
//!
//! The link itself is part of what the harness observes:
//! - [`Enabler::wait_for_peer`] resolves when a SUT has completed CER/CEA;
//! - [`Enabler::link_events`] says when each SUT connection opened and
//!   closed and why, on the harness timeline, so a report can name the
//!   scenarios a drop overlapped;
//! - a request retransmitted with the T flag (same Origin-Host and
//!   end-to-end id as one recorded) is answered again with the same answer
//!   and counted on the first record ([`ChargingRecord::retransmissions`]),
//!   never as a second request (for a CCR, the OCS ledger counts it on its
//!   exchange too);
//! - an ACR or CCR for another application is answered 3007 or 3001
//!   (header) or 5004 (Acct-/Auth-Application-Id) and recorded with
//!   [`ChargingRecord::protocol_error`]; a request that does not map
//!   (missing CC-Request-Type, ...) gets the RFC 6733 error answer;
//! - connections that never complete CER/CEA (garbage, no CER first, no
//!   common application) and framing errors are kept as [`Stray`] entries,
//!   truncated and capped ([`Enabler::strays`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::diameter::{
    Avp, CloseReason, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, PeerHandle,
    RemoteIdentity, Role, app, code, command, error_answer, result, transport,
};
use crate::report::capture::WireRecorder;
use crate::timeline::{Stamp, stamp};

use super::ch1::{Ch1Request, RecordType};
use super::ch2::Ch2Request;
use super::charging_request::{ChargingRequest, Interface};
use super::ocs::{Ocs, OcsAnswer, OcsConfig, OcsSelector, OcsSession};
use super::online_rules::OnlineViolation;
use super::rf::{MappingError, aca_for};
use super::ro::RoMappingError;

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
    /// The request read as CH-1, or why not (a CCR is not CH-1: see
    /// [`ChargingRecord::ch2`] and [`ChargingRecord::charging_request`]).
    pub ch1: Result<Ch1Request, MappingError>,
    /// Odd but legal things seen while reading it.
    pub warnings: Vec<String>,
    /// What was answered.
    pub answer: AnswerOutcome,
    /// How many copies of it came again with the T flag (same Origin-Host
    /// and end-to-end id); each was answered with the same answer and is
    /// not a request of its own. Each also adds a warning.
    pub retransmissions: u32,
    /// The request broke the base protocol in a way the answer says (3007
    /// for an application the Enabler does not serve, 5004 for a wrong
    /// Acct-Application-Id): what, for the harness to judge.
    pub protocol_error: Option<String>,
}

impl ChargingRecord {
    /// Served user, if the request mapped (as CH-1 or CH-2) and named one.
    pub fn served_user(&self) -> Option<&str> {
        match &self.ch1 {
            Ok(r) => r.served_user.as_deref(),
            Err(_) => {
                let user = self.ch2()?.ok()?.served_user?;
                text_in(&self.message, &user)
            }
        }
    }
    /// CH-1 record type, if the request is an ACR that mapped (None for a
    /// CCR: see [`ChargingRecord::charging_request`] for a kind of both).
    pub fn record_type(&self) -> Option<RecordType> {
        self.ch1.as_ref().ok().map(|r| r.kind)
    }
    /// The interface by command: ACR CH-1, CCR CH-2; None for any other
    /// command.
    pub fn interface(&self) -> Option<Interface> {
        Interface::of_command(self.message.header.command_code)
    }
    /// True for a CCR (CH-2, online).
    pub fn is_online(&self) -> bool {
        self.interface() == Some(Interface::Ch2)
    }
    /// The request read as CH-2, or why not; None when it is not a CCR.
    /// Read from [`ChargingRecord::message`] on each call (records are
    /// plain data that code outside builds field by field).
    pub fn ch2(&self) -> Option<Result<Ch2Request, RoMappingError>> {
        self.is_online()
            .then(|| Ch2Request::from_ccr(&self.message))
    }
    /// The common view of the request, whichever interface it came on:
    /// interface, kind, Session-Id, sequence number (Accounting-Record-Number
    /// or CC-Request-Number), served user, role, participants, units. None
    /// when it did not map (see [`ChargingRecord::ch1`] and
    /// [`ChargingRecord::ch2`] for why).
    pub fn charging_request(&self) -> Option<ChargingRequest> {
        match &self.ch1 {
            Ok(r) => Some(r.into()),
            Err(_) => self.ch2()?.ok().map(ChargingRequest::from),
        }
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
        let retx = match self.retransmissions {
            0 => String::new(),
            n => format!(" (retransmitted {n}x)"),
        };
        let protocol = self
            .protocol_error
            .as_ref()
            .map(|e| format!(" [protocol error: {e}]"))
            .unwrap_or_default();
        format!(
            "#{} {} from {} -> {ans}{retx}{protocol}",
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
    /// Peer warnings (frame errors, unexpected messages); the first
    /// [`WARNINGS_KEPT`] are kept.
    pub warnings: Vec<String>,
    /// When it was accepted.
    pub accepted: Stamp,
    /// When CER/CEA completed.
    pub opened: Option<Stamp>,
    /// When it closed.
    pub closed_at: Option<Stamp>,
}

/// Warnings kept per connection.
pub const WARNINGS_KEPT: usize = 100;
/// Stray entries kept (the total counts on).
pub const STRAYS_KEPT: usize = 100;
/// Longest text of a stray entry's reason, in bytes.
pub const STRAY_TEXT_MAX: usize = 200;

/// A change of a SUT's Diameter link (a connection that completed CER/CEA).
#[derive(Clone, Debug)]
pub struct LinkEvent {
    /// When, on the harness timeline.
    pub stamp: Stamp,
    /// The connection's remote address.
    pub peer: SocketAddr,
    /// What the SUT said about itself in its CER.
    pub remote: RemoteIdentity,
    /// Opened or closed.
    pub kind: LinkEventKind,
}

/// What happened to the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEventKind {
    /// CER/CEA completed: the connection is Open.
    Opened,
    /// The open connection ended.
    Closed {
        /// Why.
        reason: CloseReason,
        /// When it had opened.
        opened: Stamp,
    },
}

impl fmt::Display for LinkEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = format!(
            "{} ({}, {})",
            self.remote.origin_host,
            self.remote
                .product_name
                .as_deref()
                .unwrap_or("no Product-Name"),
            self.peer
        );
        match &self.kind {
            LinkEventKind::Opened => write!(f, "#{} Diameter link opened: {who}", self.stamp.seq),
            LinkEventKind::Closed { reason, opened } => write!(
                f,
                "#{} Diameter link closed: {who}, open since #{}: {reason:?}",
                self.stamp.seq, opened.seq
            ),
        }
    }
}

/// A connection or byte stream that was not a Diameter peer: garbage, no
/// CER first, no common application, a framing error.
#[derive(Clone, Debug)]
pub struct Stray {
    /// When it was noticed.
    pub stamp: Stamp,
    /// Remote address.
    pub peer: SocketAddr,
    /// What was wrong, at most [`STRAY_TEXT_MAX`] bytes, control
    /// characters escaped.
    pub reason: String,
}

impl fmt::Display for Stray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} from {}: {}", self.stamp.seq, self.peer, self.reason)
    }
}

/// At most `max` bytes of `text` (on a char boundary, "…" marking a cut),
/// control characters escaped: safe to keep and print whatever a peer sent.
pub fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    let budget = max.saturating_sub('…'.len_utf8());
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > budget {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
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
    link_events: Vec<LinkEvent>,
    strays: Vec<Stray>,
    stray_total: usize,
    /// (Origin-Host, end-to-end id) of every record: finds retransmissions.
    by_e2e: HashMap<(String, u32), usize>,
    /// The answer sent to each record, to send again to a retransmission.
    answers: HashMap<usize, Message>,
    /// Retransmissions of a record whose answer is still delayed: where to
    /// send it too (connection, hop-by-hop id).
    waiters: HashMap<usize, Vec<(PeerHandle, u32)>>,
    /// The OCS core: scripts and per-session ledger of CH-2.
    ocs: Ocs,
    /// Records whose CCR the OCS core took (retransmissions go to it too).
    online: HashSet<usize>,
}

impl State {
    fn add_stray(&mut self, peer: SocketAddr, reason: &str) {
        self.stray_total += 1;
        if self.strays.len() < STRAYS_KEPT {
            self.strays.push(Stray {
                stamp: stamp(),
                peer,
                reason: clip(reason, STRAY_TEXT_MAX),
            });
        }
    }
}

#[derive(Debug)]
struct Shared {
    local_addr: SocketAddr,
    identity: LocalIdentity,
    peer_config: PeerConfig,
    /// Where every connection's bytes are recorded, if anywhere.
    recorder: Option<WireRecorder>,
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

/// The accept task; aborted when the last [`Enabler`] clone goes.
#[derive(Debug)]
struct Acceptor(Mutex<Option<JoinHandle<()>>>);
impl Drop for Acceptor {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The Charging Enabler. Cheap to clone; the listener stops when the last
/// clone is dropped (open connections run until the SUT closes them) or at
/// [`Enabler::shutdown`].
#[derive(Clone, Debug)]
pub struct Enabler {
    shared: Arc<Shared>,
    accept: Arc<Acceptor>,
}

/// `text` as it occurs in the bytes of one of `msg`'s AVPs (nested AVPs
/// are contiguous inside their group's data), borrowed from the message.
fn text_in<'a>(msg: &'a Message, text: &str) -> Option<&'a str> {
    let needle = text.as_bytes();
    if needle.is_empty() {
        return None;
    }
    msg.avps.iter().find_map(|a| {
        let i = a.data.windows(needle.len()).position(|w| w == needle)?;
        std::str::from_utf8(&a.data[i..i + needle.len()]).ok()
    })
}

/// Origin-Host of a message, as text ("" if absent).
fn origin_host(msg: &Message) -> String {
    msg.avp(code::ORIGIN_HOST)
        .map(|a| String::from_utf8_lossy(&a.data).into_owned())
        .unwrap_or_default()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn error(&self, msg: &Message, rc: u32, failed: Option<Avp>, text: &str) -> Decision {
        Decision::Answer {
            message: error_answer(msg, &self.identity, rc, failed, Some(text)),
            result_code: rc,
            delay: Duration::ZERO,
        }
    }

    /// A request for an application other than its interface's (an ACR
    /// not for Rf, a CCR not for Ro): the answer RFC 6733 asks for and what
    /// to record. Header application id first (3007, or 3001 for an
    /// application the Enabler serves but that has no such command), then
    /// the Acct-/Auth-Application-Id, bare or inside
    /// Vendor-Specific-Application-Id (5004 with Failed-AVP).
    fn application_error(&self, msg: &Message, interface: Interface) -> Option<(Decision, String)> {
        let (cmd, want, id_avp, id_name, iface, what) = match interface {
            Interface::Ch1 => (
                "ACR",
                app::ACCOUNTING_RF,
                code::ACCT_APPLICATION_ID,
                "Acct-Application-Id",
                "Rf",
                "accounting",
            ),
            Interface::Ch2 => (
                "CCR",
                app::CREDIT_CONTROL_RO,
                code::AUTH_APPLICATION_ID,
                "Auth-Application-Id",
                "Ro",
                "credit control",
            ),
        };
        let header_app = msg.header.application_id;
        if header_app != want {
            let served = self.identity.application_ids().contains(&header_app);
            let (rc, text) = if served {
                (
                    result::COMMAND_UNSUPPORTED,
                    format!(
                        "{cmd} in the header's application {header_app}, which has no {cmd}; {iface} is {want}"
                    ),
                )
            } else {
                (
                    result::APPLICATION_UNSUPPORTED,
                    format!(
                        "{cmd} for application {header_app} in the header; this Charging Enabler serves {iface} ({want}) {what}"
                    ),
                )
            };
            return Some((
                self.error(msg, rc, None, &text),
                format!("{text}; answered {rc}"),
            ));
        }
        let wrong = |a: &Avp| a.as_u32() != Ok(want);
        let value = |a: &Avp| match a.as_u32() {
            Ok(v) => v.to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        let bare: Vec<&Avp> = msg.avps_with(id_avp, None).collect();
        let bad = if let Some(a) = bare.iter().find(|a| wrong(a)) {
            Some((
                (*a).clone(),
                format!("{id_name} is {}, expected {want} ({iface})", value(a)),
            ))
        } else if bare.is_empty() {
            msg.avps_with(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
                .find_map(|g| {
                    let id = g.find(id_avp)?;
                    wrong(&id).then(|| {
                        (
                            g.clone(),
                            format!(
                                "{id_name} in Vendor-Specific-Application-Id is {}, expected {want} ({iface})",
                                value(&id)
                            ),
                        )
                    })
                })
        } else {
            None
        };
        let (failed, text) = bad?;
        let rc = result::INVALID_AVP_VALUE;
        Some((
            self.error(msg, rc, Some(failed), &text),
            format!("{text}; answered {rc}"),
        ))
    }

    /// A CCR the OCS must not see: on a link whose CER did not advertise
    /// Ro (3001: on that link the Enabler is a CDF only), or for another
    /// application ([`Shared::application_error`]).
    fn credit_control_error(&self, peer: SocketAddr, msg: &Message) -> Option<(Decision, String)> {
        let remote = self
            .lock()
            .connections
            .iter()
            .rev()
            .find(|c| c.peer == peer)
            .and_then(|c| c.remote.clone());
        if let Some(remote) = remote {
            let ids = remote.application_ids();
            if !ids.contains(&app::CREDIT_CONTROL_RO) && !ids.contains(&app::RELAY) {
                let text = format!(
                    "CCR on a link whose CER advertised no Ro (Auth-Application-Id 4) but {ids:?}: the Charging Enabler answers ACR (Rf) only there"
                );
                let rc = result::COMMAND_UNSUPPORTED;
                return Some((
                    self.error(msg, rc, None, &text),
                    format!("{text}; answered {rc}"),
                ));
            }
        }
        self.application_error(msg, Interface::Ch2)
    }

    /// A CCR through the OCS core at `now`: the decision (the CCA at once,
    /// delayed, or withheld; a CCR that does not map gets the RFC 6733
    /// error answer), the reading's warnings, and whether the core took
    /// the request into a session's ledger.
    fn decide_ccr(&self, msg: &Message, now: Instant) -> (Decision, Vec<String>, bool) {
        let outcome = self.lock().ocs.handle_ccr(msg, &self.identity, now);
        let decision = match outcome.answer {
            Some((message, at)) => Decision::Answer {
                result_code: message.result_code().unwrap_or(0),
                message,
                delay: at.saturating_duration_since(now),
            },
            None => Decision::Withhold,
        };
        (decision, outcome.warnings, outcome.request.is_some())
    }

    /// The answer for a request that is not a CCR: an ACR by script,
    /// anything else 3001.
    fn decide(
        &self,
        msg: &Message,
        ch1: &Result<Ch1Request, MappingError>,
    ) -> (Decision, Option<String>) {
        if msg.header.command_code != command::ACCOUNTING {
            return (
                self.error(
                    msg,
                    result::COMMAND_UNSUPPORTED,
                    None,
                    "the Charging Enabler answers ACR (Rf) and CCR (Ro) only",
                ),
                None,
            );
        }
        if let Some((d, why)) = self.application_error(msg, Interface::Ch1) {
            return (d, Some(why));
        }
        let req = match ch1 {
            Ok(r) => r,
            Err(e) => {
                return (
                    self.error(msg, e.result_code(), e.failed_avp(), &e.to_string()),
                    None,
                );
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
            return (Decision::Withhold, None);
        }
        (
            Decision::Answer {
                message: aca_for(msg, &self.identity, a.result_code),
                result_code: a.result_code,
                delay: a.delay,
            },
            None,
        )
    }

    fn set_answer(&self, idx: usize, outcome: AnswerOutcome) {
        if let Some(r) = self.lock().records.get_mut(idx) {
            r.answer = outcome;
        }
        self.notify();
    }

    /// Sends the answer of record `idx` on `handle`, and to every
    /// retransmission waiting for it; keeps it for later ones.
    fn send_answer(&self, idx: usize, message: Message, result_code: u32, handle: &PeerHandle) {
        let s = stamp();
        handle.answer(message.clone());
        let waiting = {
            let mut st = self.lock();
            st.answers.insert(idx, message.clone());
            st.waiters.remove(&idx).unwrap_or_default()
        };
        for (h, hop_by_hop) in waiting {
            let mut again = message.clone();
            again.header.hop_by_hop = hop_by_hop;
            h.answer(again);
        }
        self.set_answer(
            idx,
            AnswerOutcome::Answered {
                result_code,
                stamp: s,
            },
        );
    }

    fn carry_out(self: &Arc<Self>, idx: usize, decision: Decision, handle: &PeerHandle) {
        match decision {
            Decision::Withhold => self.set_answer(idx, AnswerOutcome::Withheld),
            Decision::Answer {
                message,
                result_code,
                delay,
            } => {
                if delay.is_zero() {
                    self.send_answer(idx, message, result_code, handle);
                } else {
                    let shared = Arc::clone(self);
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        shared.send_answer(idx, message, result_code, &handle);
                    });
                }
            }
        }
    }

    /// Records a request once: a copy with the T flag of one already
    /// recorded is counted on it (Some(idx) returned), else None.
    fn count_retransmission(
        &self,
        peer: SocketAddr,
        msg: &Message,
        received: Stamp,
    ) -> Option<usize> {
        if !msg.header.is_retransmit() {
            return None;
        }
        let key = (origin_host(msg), msg.header.end_to_end);
        let idx = {
            let mut st = self.lock();
            let idx = *st.by_e2e.get(&key)?;
            let rec = st.records.get_mut(idx)?;
            rec.retransmissions += 1;
            rec.warnings.push(format!(
                "retransmitted with the T flag (end-to-end id {:#010x}) from {peer} at #{}; answered again, counted once",
                key.1, received.seq
            ));
            idx
        };
        self.notify();
        Some(idx)
    }

    /// A retransmission of record `idx`: the same answer again (when it is
    /// sent, if it is still delayed); a withheld one is decided again.
    /// For a CCR the OCS took, the OCS counts it on its exchange too and
    /// decides again for a withheld one (withheld again).
    fn on_retransmission(
        self: &Arc<Self>,
        idx: usize,
        msg: Message,
        handle: &PeerHandle,
        now: Instant,
    ) {
        enum Then {
            Replay(Message),
            Wait,
            Decide,
        }
        let online = {
            let mut st = self.lock();
            st.online
                .contains(&idx)
                .then(|| st.ocs.handle_ccr(&msg, &self.identity, now))
        };
        let then = {
            let mut st = self.lock();
            match st.answers.get(&idx) {
                Some(a) => Then::Replay(a.clone()),
                None => match st.records.get(idx).map(|r| &r.answer) {
                    Some(AnswerOutcome::Withheld) => Then::Decide,
                    _ => {
                        st.waiters
                            .entry(idx)
                            .or_default()
                            .push((handle.clone(), msg.header.hop_by_hop));
                        Then::Wait
                    }
                },
            }
        };
        match then {
            Then::Replay(mut a) => {
                a.header.hop_by_hop = msg.header.hop_by_hop;
                handle.answer(a);
            }
            Then::Wait => {}
            Then::Decide => {
                let decision = match online {
                    Some(outcome) => match outcome.answer {
                        Some((message, at)) => Decision::Answer {
                            result_code: message.result_code().unwrap_or(0),
                            message,
                            delay: at.saturating_duration_since(now),
                        },
                        None => Decision::Withhold,
                    },
                    None => {
                        let ch1 = Ch1Request::from_acr(&msg);
                        self.decide(&msg, &ch1).0
                    }
                };
                self.carry_out(idx, decision, handle);
            }
        }
    }

    /// Pushes a record, indexed by Origin-Host and end-to-end id; warns if
    /// the id was used before without the T flag. `online`: the OCS took
    /// its CCR.
    fn push_record(&self, mut record: ChargingRecord, online: bool) -> usize {
        let key = (
            origin_host(&record.message),
            record.message.header.end_to_end,
        );
        let idx = {
            let mut st = self.lock();
            let idx = st.records.len();
            match st.by_e2e.get(&key) {
                Some(&first) => {
                    let seq = st.records.get(first).map_or(0, |r| r.stamp.seq);
                    record.warnings.push(format!(
                        "end-to-end id {:#010x} of {} used again (first by #{seq}){}",
                        key.1,
                        key.0,
                        if record.message.header.is_retransmit() {
                            ""
                        } else {
                            " without the T flag: recorded as a new request"
                        }
                    ));
                }
                None => {
                    if record.message.header.is_retransmit() {
                        record.warnings.push(
                            "T flag set, but this Enabler saw no earlier copy (sent before it started, or lost)"
                                .to_owned(),
                        );
                    }
                    st.by_e2e.insert(key, idx);
                }
            }
            st.records.push(record);
            if online {
                st.online.insert(idx);
            }
            idx
        };
        self.notify();
        idx
    }

    fn on_request(self: &Arc<Self>, peer: SocketAddr, msg: Message, handle: &PeerHandle) {
        let received = stamp();
        let now = Instant::now();
        if let Some(idx) = self.count_retransmission(peer, &msg, received) {
            self.on_retransmission(idx, msg, handle, now);
            return;
        }
        if msg.header.command_code == command::CREDIT_CONTROL {
            self.on_ccr(peer, msg, handle, received, now);
            return;
        }
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
        let (decision, protocol_error) = self.decide(&msg, &ch1);
        let idx = self.push_record(
            ChargingRecord {
                stamp: received,
                peer,
                message: msg,
                ch1,
                warnings,
                answer: AnswerOutcome::Pending,
                retransmissions: 0,
                protocol_error,
            },
            false,
        );
        self.carry_out(idx, decision, handle);
    }

    /// A CCR (first transmission): through the OCS core unless the link or
    /// the application is wrong; recorded either way.
    fn on_ccr(
        self: &Arc<Self>,
        peer: SocketAddr,
        msg: Message,
        handle: &PeerHandle,
        received: Stamp,
        now: Instant,
    ) {
        let (decision, warnings, protocol_error, online) =
            match self.credit_control_error(peer, &msg) {
                Some((d, why)) => (d, Vec::new(), Some(why), false),
                None => {
                    let (d, w, online) = self.decide_ccr(&msg, now);
                    (d, w, None, online)
                }
            };
        let ch1 = Err(MappingError::WrongCommand {
            command: msg.describe(),
            expected: "an accounting request (a CCR is CH-2)",
        });
        let idx = self.push_record(
            ChargingRecord {
                stamp: received,
                peer,
                message: msg,
                ch1,
                warnings,
                answer: AnswerOutcome::Pending,
                retransmissions: 0,
                protocol_error,
            },
            online,
        );
        self.carry_out(idx, decision, handle);
    }

    fn on_rejected(&self, peer: SocketAddr, request: Message, answer: &Message) {
        let s = stamp();
        // The peer layer has answered the copy already.
        if self.count_retransmission(peer, &request, s).is_some() {
            return;
        }
        let ch1 = Ch1Request::from_acr(&request);
        self.push_record(
            ChargingRecord {
                stamp: s,
                peer,
                message: request,
                ch1,
                warnings: vec![format!("rejected by the peer layer: {}", answer.describe())],
                answer: AnswerOutcome::Answered {
                    result_code: answer.result_code().unwrap_or(0),
                    stamp: s,
                },
                retransmissions: 0,
                protocol_error: None,
            },
            false,
        );
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

    fn on_warning(&self, peer: SocketAddr, warning: String) {
        self.update_connection(peer, |c| match c.warnings.len() {
            n if n < WARNINGS_KEPT => c.warnings.push(clip(&warning, 1000)),
            n if n == WARNINGS_KEPT => c.warnings.push("… later warnings not kept".to_owned()),
            _ => {}
        });
    }

    fn on_opened(&self, peer: SocketAddr, remote: RemoteIdentity) {
        let s = stamp();
        {
            let mut st = self.lock();
            if let Some(c) = st.connections.iter_mut().rev().find(|c| c.peer == peer) {
                c.remote = Some(remote.clone());
                c.open = true;
                c.opened = Some(s);
            }
            st.link_events.push(LinkEvent {
                stamp: s,
                peer,
                remote,
                kind: LinkEventKind::Opened,
            });
        }
        self.notify();
    }

    /// A connection ended. One that had opened is a link event; one that
    /// never did is a stray and leaves the connection list (1,000 junk
    /// connections must not grow it).
    fn on_closed(&self, peer: SocketAddr, reason: CloseReason) {
        let s = stamp();
        {
            let mut st = self.lock();
            let Some(i) = st.connections.iter().rposition(|c| c.peer == peer) else {
                return;
            };
            match st.connections[i].opened {
                Some(opened) => {
                    let c = &mut st.connections[i];
                    c.open = false;
                    c.closed = Some(reason.clone());
                    c.closed_at = Some(s);
                    let remote = c.remote.clone().unwrap_or_default();
                    if let CloseReason::Framing(text) = &reason {
                        st.add_stray(peer, &format!("framing error on the open link: {text}"));
                    }
                    st.link_events.push(LinkEvent {
                        stamp: s,
                        peer,
                        remote,
                        kind: LinkEventKind::Closed { reason, opened },
                    });
                }
                None => {
                    let c = st.connections.remove(i);
                    let why = self.stray_reason(&c, &reason);
                    st.add_stray(peer, &why);
                }
            }
        }
        self.notify();
    }

    fn stray_reason(&self, c: &ConnectionInfo, reason: &CloseReason) -> String {
        match reason {
            CloseReason::Framing(text) => format!("not Diameter: {text}"),
            CloseReason::NoCapabilitiesExchange { first } => {
                format!("sent {first} before any CER")
            }
            CloseReason::CapabilitiesTimeout => {
                format!("no CER within {:?}", self.peer_config.capabilities_timeout)
            }
            // The peer's warning names the CER's Origin-Host and ids.
            CloseReason::NoCommonApplication => format!(
                "answered 5010: {}",
                c.warnings
                    .iter()
                    .find(|w| w.starts_with("CER from"))
                    .map_or("no common application", String::as_str)
            ),
            CloseReason::ConnectionLost => match c.warnings.first() {
                Some(w) => format!("closed before CER/CEA completed ({w})"),
                None => "closed before sending a CER".to_owned(),
            },
            other => format!("closed before CER/CEA completed: {other:?}"),
        }
    }

    fn serve(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let peer = Peer::new(
            Role::Responder,
            self.identity.clone(),
            self.peer_config,
            Instant::now(),
        );
        let (handle, mut events) = transport::spawn_recorded(stream, peer, self.recorder.clone());
        {
            let mut st = self.lock();
            st.connections.push(ConnectionInfo {
                peer: addr,
                remote: None,
                open: false,
                closed: None,
                warnings: Vec::new(),
                accepted: stamp(),
                opened: None,
                closed_at: None,
            });
            st.handles.push(handle.clone());
        }
        self.notify();
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    PeerEvent::Opened { remote } => shared.on_opened(addr, remote),
                    PeerEvent::Request(msg) => shared.on_request(addr, msg, &handle),
                    PeerEvent::Rejected { request, answer } => {
                        shared.on_rejected(addr, request, &answer)
                    }
                    PeerEvent::Answer(msg) => {
                        shared.on_warning(addr, format!("unexpected answer {}", msg.describe()))
                    }
                    PeerEvent::Warning(w) => shared.on_warning(addr, w),
                    PeerEvent::Closed { reason } => shared.on_closed(addr, reason),
                }
            }
            shared.lock().handles.retain(|h| !h.is_closed());
        });
    }

    /// Waits until `f` finds something in the state (checked now and on
    /// every change), or None at the timeout.
    async fn wait_until<T>(&self, timeout: Duration, f: impl Fn(&State) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(t) = f(&self.lock()) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

impl Enabler {
    /// Binds the listener and starts accepting SUT connections.
    pub async fn bind(config: EnablerConfig) -> Result<Enabler, EnablerError> {
        Self::bind_recorded(config, None).await
    }

    /// [`Enabler::bind`], recording what every SUT connection's socket
    /// reads and writes into `recorder`.
    pub async fn bind_recorded(
        config: EnablerConfig,
        recorder: Option<WireRecorder>,
    ) -> Result<Enabler, EnablerError> {
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
            recorder,
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
            accept: Arc::new(Acceptor(Mutex::new(Some(task)))),
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

    /// Adds a scripted OCS answer for CCRs (see [`Ocs::script`]): the
    /// first script, in the order added, that matches and is not used up
    /// answers. Returns its index, e.g. for [`Enabler::ocs_script_uses`].
    /// Without a script the OCS grants what was asked with 2001.
    pub fn script_ocs(&self, selector: OcsSelector, answer: OcsAnswer) -> usize {
        self.shared.lock().ocs.script(selector, answer)
    }

    /// Keeps only the OCS scripts `keep` says yes to (indices shift down).
    pub fn retain_ocs_scripts(&self, keep: impl FnMut(&OcsSelector, &OcsAnswer) -> bool) {
        self.shared.lock().ocs.retain_scripts(keep);
    }

    /// Removes every OCS script.
    pub fn clear_ocs_scripts(&self) {
        self.retain_ocs_scripts(|_, _| false);
    }

    /// How many CCRs OCS script `index` has answered.
    pub fn ocs_script_uses(&self, index: usize) -> Option<u32> {
        self.shared.lock().ocs.script_uses(index)
    }

    /// How the OCS answers unscripted CCRs from now on (default quota,
    /// Validity-Time, Credit-Control-Failure-Handling).
    pub fn set_ocs_config(&self, config: OcsConfig) {
        self.shared.lock().ocs.set_config(config);
    }

    /// The OCS ledger of one charging session (Session-Id): exchanges in
    /// arrival order, units granted, reserved and debited, what is armed.
    pub fn ocs_session(&self, session_id: &str) -> Option<OcsSession> {
        self.shared.lock().ocs.session(session_id).cloned()
    }

    /// Every OCS session ledger, in the order their first CCR arrived.
    pub fn ocs_sessions(&self) -> Vec<OcsSession> {
        self.shared.lock().ocs.sessions().cloned().collect()
    }

    /// The online every-flow rules
    /// ([`super::online_rules::check_online_session`]) over every OCS
    /// session: (Session-Id, what broke) for each session that broke one,
    /// in order of arrival.
    pub fn online_violations(&self) -> Vec<(String, Vec<OnlineViolation>)> {
        self.shared
            .lock()
            .ocs
            .sessions()
            .map(|s| (s.session_id.clone(), s.check()))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Waits until an OCS session ledger satisfies `predicate` (those there
    /// now included, checked on every change); the first in order of
    /// arrival, or None at the timeout.
    pub async fn wait_for_ocs_session(
        &self,
        predicate: impl Fn(&OcsSession) -> bool,
        timeout: Duration,
    ) -> Option<OcsSession> {
        self.shared
            .wait_until(timeout, |st| {
                st.ocs.sessions().find(|s| predicate(s)).cloned()
            })
            .await
    }

    /// Runs `f` on the OCS core itself (scripts, ledger), under the
    /// Enabler's lock: keep it short and do not call the Enabler from it.
    pub fn with_ocs<T>(&self, f: impl FnOnce(&mut Ocs) -> T) -> T {
        let t = f(&mut self.shared.lock().ocs);
        self.shared.notify();
        t
    }

    /// The common view of every record that mapped, both interfaces, in
    /// arrival order, with the record's stamp.
    pub fn charging_requests(&self) -> Vec<(Stamp, ChargingRequest)> {
        self.shared
            .lock()
            .records
            .iter()
            .filter_map(|r| Some((r.stamp, r.charging_request()?)))
            .collect()
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
        self.shared
            .wait_until(timeout, |st| {
                st.records.iter().find(|r| predicate(r)).cloned()
            })
            .await
    }

    /// Waits until a SUT peer's connection is Open (CER/CEA completed) and
    /// returns it, with what its CER said (Origin-Host, Origin-Realm,
    /// Product-Name, Vendor-Id, application ids); at once if one is open
    /// now (the latest). None at the timeout.
    pub async fn wait_for_peer(&self, timeout: Duration) -> Option<ConnectionInfo> {
        self.shared
            .wait_until(timeout, |st| {
                st.connections.iter().rev().find(|c| c.open).cloned()
            })
            .await
    }

    /// Waits until a link event satisfies `predicate` (those there now
    /// included); the first in order, or None at the timeout.
    pub async fn wait_for_link_event(
        &self,
        predicate: impl Fn(&LinkEvent) -> bool,
        timeout: Duration,
    ) -> Option<LinkEvent> {
        self.shared
            .wait_until(timeout, |st| {
                st.link_events.iter().find(|e| predicate(e)).cloned()
            })
            .await
    }

    /// Every SUT link opened or closed, in order, with timeline stamps:
    /// compare them with a scenario's stamps to see if a drop overlapped it.
    pub fn link_events(&self) -> Vec<LinkEvent> {
        self.shared.lock().link_events.clone()
    }

    /// Connections and byte streams that were not a Diameter peer: the
    /// first [`STRAYS_KEPT`] entries, and how many there were in all.
    pub fn strays(&self) -> (Vec<Stray>, usize) {
        let st = self.shared.lock();
        (st.strays.clone(), st.stray_total)
    }

    /// Waits until at least `total` strays have been seen in all; false at
    /// the timeout.
    pub async fn wait_for_strays(&self, total: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |st| (st.stray_total >= total).then_some(()))
            .await
            .is_some()
    }

    /// Drops every connection at once, without DPR, and keeps listening:
    /// what a SUT sees when the link breaks. Records are kept, so a request
    /// the SUT sends again with the T flag is recognised.
    pub fn drop_connections(&self) {
        let handles = self.shared.lock().handles.clone();
        for h in handles {
            h.abort();
        }
    }

    /// Stops listening (the port is free when this returns) and drops every
    /// connection without DPR, as a harness process that exits would.
    pub async fn shutdown(&self) {
        let task = self
            .accept
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.drop_connections();
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

    /// Every SUT connection seen, open or closed, and those still waiting
    /// for their CER. A connection that closed without completing CER/CEA
    /// is not here but in [`Enabler::strays`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_escapes_control_characters_and_cuts_on_a_char_boundary() {
        assert_eq!(clip("a\r\nb\x1b", 200), "a\\r\\nb\\u{1b}");
        let long = "é".repeat(500);
        let c = clip(&long, STRAY_TEXT_MAX);
        assert!(c.len() <= STRAY_TEXT_MAX, "{}", c.len());
        assert!(c.ends_with('…'));
        assert!(c.starts_with("éé"));
    }
}
