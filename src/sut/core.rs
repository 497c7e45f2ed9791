//! The seam between the reference server's session logic and its I/O.
//!
//! Each shape of the server (B2BUA, proxy, later a conference focus) is a
//! sans-IO state machine: SIP events and time go in through `handle_*`,
//! what to send comes out through [`SessionCore::poll_action`], and the next
//! deadline through [`SessionCore::poll_timeout`]. The task in `server.rs`
//! only moves messages between a core and the sockets, so every core is
//! tested on a virtual clock.

use std::time::Instant;

use crate::charging::ch1::Ch1Request;
use crate::charging::ch2::{Ch2Request, Ch2Response};
use crate::profile::ChargedFunction;
use crate::sip::transaction::{Target, TxEvent, TxKey};

/// What a core asks its task to do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Start a client transaction; `key` is the one the transaction layer
    /// will give it (the core chose the branch). If it cannot be sent, the
    /// task calls [`SessionCore::send_failed`].
    Request {
        key: TxKey,
        request: rsip::Request,
        target: Target,
    },
    /// Answer on a server transaction.
    Respond {
        key: TxKey,
        response: rsip::Response,
    },
    /// Send outside any transaction: an ACK, a 2xx retransmission.
    Stateless {
        message: rsip::SipMessage,
        target: Target,
    },
    /// Send a CH-1 request on the charged function's ordered queue.
    Charge {
        session: u64,
        function: ChargedFunction,
        request: Ch1Request,
    },
    /// Send a CH-2 request on the charged function's ordered queue; its
    /// answer (or why there is none) comes back through
    /// [`SessionCore::handle_charging_answer`].
    Credit {
        session: u64,
        function: ChargedFunction,
        request: Ch2Request,
    },
    /// The session is over: nothing more will be charged on its queues.
    Forget { session: u64 },
}

/// A sans-IO session state machine of the reference server. Object safe, so
/// that one task can drive several (`Box<dyn SessionCore + Send>`).
pub trait SessionCore {
    /// A SIP event from the transaction layer, at `now`.
    fn handle_sip(&mut self, event: TxEvent, now: Instant);

    /// Fires what is due at `now` (see [`SessionCore::poll_timeout`]).
    fn handle_timeout(&mut self, now: Instant);

    /// The next thing to do.
    fn poll_action(&mut self) -> Option<Action>;

    /// The earliest time `handle_timeout` has something to do.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Operator stimulus: ends the established session with this Call-ID
    /// (of either leg); false if there is none.
    fn terminate(&mut self, call_id: &str, now: Instant) -> bool;

    /// The answer to the oldest unanswered [`Action::Credit`] of this
    /// (session, function): the CH-2 Response, or why none came (no answer
    /// within Tx, the link failed). By default ignored: a core that sends
    /// no Credit gets none.
    fn handle_charging_answer(
        &mut self,
        session: u64,
        function: ChargedFunction,
        answer: Result<Ch2Response, String>,
        now: Instant,
    ) {
        let _ = (session, function, answer, now);
    }

    /// The request of an [`Action::Request`] could not be sent. By default
    /// that is taken as its transaction timing out.
    fn send_failed(&mut self, key: TxKey, now: Instant) {
        self.handle_sip(TxEvent::Timeout { key }, now);
    }
}

/// The client transaction key the transaction layer gives `request`: its top
/// Via's branch and its method.
pub fn client_key(request: &rsip::Request) -> TxKey {
    TxKey {
        branch: crate::sip::transaction::top_via(&request.headers)
            .and_then(|v| v.branch)
            .unwrap_or_default(),
        method: request.method.to_string(),
        sent_by: String::new(),
        role: crate::sip::transaction::Role::Client,
    }
}

/// Focus session ids live above this bit, so that the charging queues of a
/// group session never meet a 1-1 session's (each core counts from 0).
const FOCUS_SESSION_BIT: u64 = 1 << 63;

/// A 1-1 core (B2BUA or proxy) with the Controlling Function beside it:
/// what is the focus's (an INVITE to the factory, a group or a running
/// session, anything in one of its legs, the answers to its requests) goes
/// to the focus, everything else to the 1-1 core.
pub struct WithFocus {
    one_to_one: Box<dyn SessionCore + Send>,
    focus: super::focus::FocusCore,
}

impl std::fmt::Debug for WithFocus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithFocus")
            .field("focus", &self.focus)
            .finish_non_exhaustive()
    }
}

impl WithFocus {
    pub fn new(one_to_one: Box<dyn SessionCore + Send>, focus: super::focus::FocusCore) -> Self {
        Self { one_to_one, focus }
    }

    fn focus_owns(&self, event: &TxEvent) -> bool {
        match event {
            TxEvent::Request { request, .. } => self.focus.wants(request),
            TxEvent::Response { key, .. } | TxEvent::Timeout { key } => self.focus.owns(key),
            _ => false,
        }
    }
}

impl SessionCore for WithFocus {
    fn handle_sip(&mut self, event: TxEvent, now: Instant) {
        if self.focus_owns(&event) {
            self.focus.handle_sip(event, now);
        } else {
            self.one_to_one.handle_sip(event, now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.one_to_one.handle_timeout(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        match self.focus.poll_action() {
            Some(Action::Charge {
                session,
                function,
                request,
            }) => Some(Action::Charge {
                session: session | FOCUS_SESSION_BIT,
                function,
                request,
            }),
            Some(Action::Credit {
                session,
                function,
                request,
            }) => Some(Action::Credit {
                session: session | FOCUS_SESSION_BIT,
                function,
                request,
            }),
            Some(Action::Forget { session }) => Some(Action::Forget {
                session: session | FOCUS_SESSION_BIT,
            }),
            Some(other) => Some(other),
            None => self.one_to_one.poll_action(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.one_to_one.poll_timeout()
    }

    fn terminate(&mut self, call_id: &str, now: Instant) -> bool {
        self.focus.terminate(call_id, now) || self.one_to_one.terminate(call_id, now)
    }

    fn handle_charging_answer(
        &mut self,
        session: u64,
        function: ChargedFunction,
        answer: Result<Ch2Response, String>,
        now: Instant,
    ) {
        // The focus's sessions carry the high bit: their answers go back to
        // it (the Controlling Function's CH-2, 6.3.3.2 and 6.3.3.3).
        if session & FOCUS_SESSION_BIT == 0 {
            self.one_to_one
                .handle_charging_answer(session, function, answer, now);
        } else {
            self.focus
                .handle_charging_answer(session & !FOCUS_SESSION_BIT, function, answer, now);
        }
    }

    fn send_failed(&mut self, key: TxKey, now: Instant) {
        if self.focus.owns(&key) {
            self.focus.handle_sip(TxEvent::Timeout { key }, now);
        } else {
            self.one_to_one.send_failed(key, now);
        }
    }
}
