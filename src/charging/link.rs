//! The reference SUT's Diameter link as a sans-IO state machine: when to
//! connect, what to send, which answer goes to which caller. No sockets and
//! no clocks: events and `now` come in through `handle_*` and
//! [`Link::submit`], actions leave through [`Link::poll_action`], the next
//! deadline through [`Link::poll_timeout`]. The async task around it
//! ([`super::client`]) only moves messages.
//!
//! What it does, after RFC 6733:
//! - connects at once, and after every failed attempt or dropped link again
//!   after a backoff: `reconnect_initial`, doubling up to `reconnect_max`,
//!   back to `reconnect_initial` once a link is Open;
//! - keeps requests made while disconnected, in submission order, and sends
//!   them when the link opens;
//! - gives every request an end-to-end id when submitted; a request sent
//!   on a link that dropped before its answer came is sent again on the
//!   next link with the T flag and the same end-to-end id (5.5.4);
//! - times a request out only while it waits for its answer on an open
//!   link (a queued request waits for the link as long as it takes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::diameter::{Header, Message};

/// Timers of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Wait before the first reconnection attempt.
    pub reconnect_initial: Duration,
    /// The backoff doubles up to this.
    pub reconnect_max: Duration,
    /// How long a sent request may wait for its answer (default for
    /// [`Link::submit`]).
    pub request_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A submitted request, as the caller knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Where the link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No link; the next attempt starts at this time.
    Waiting {
        /// When [`LinkAction::Connect`] will be emitted.
        retry_at: Instant,
    },
    /// An attempt is under way (TCP, CER/CEA).
    Connecting,
    /// Capabilities exchanged; requests flow.
    Open,
    /// Stopped for good.
    Stopped,
}

/// Why a request will get no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFailure {
    /// Sent, but no answer within its timeout.
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The link was stopped.
    Stopped,
}

/// What the task around the link must do.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkAction {
    /// Start a connection attempt now; report it with
    /// [`Link::handle_connected`] or [`Link::handle_connect_failed`].
    Connect,
    /// Send this request on the open link (T flag and end-to-end id are
    /// set already); report its answer with [`Link::handle_answer`].
    Send {
        /// The request.
        id: RequestId,
        /// The message to write.
        message: Message,
    },
    /// Give this answer to the caller of this request.
    Deliver {
        /// The request.
        id: RequestId,
        /// Its answer.
        answer: Message,
    },
    /// Tell the caller of this request that no answer will come.
    Fail {
        /// The request.
        id: RequestId,
        /// Why.
        failure: LinkFailure,
    },
    /// Close the open link (sent after [`Link::stop`]).
    Disconnect,
}

#[derive(Debug)]
struct Pending {
    id: RequestId,
    message: Message,
    timeout: Duration,
    /// How often it was handed out for sending.
    sends: u32,
    /// When it was last sent on the current link; None while queued.
    sent_at: Option<Instant>,
}

/// The link state machine.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    state: LinkState,
    /// The next backoff delay.
    backoff: Duration,
    /// Every unanswered request, in submission order.
    pending: VecDeque<Pending>,
    next_id: u64,
    next_e2e: u32,
    actions: VecDeque<LinkAction>,
    opened: u32,
}

impl Link {
    /// A link that wants to connect at `now`. End-to-end ids start at
    /// `e2e_base` (RFC 6733 6.3 suggests the low 12 bits of the time in the
    /// high 12 bits and a random low part).
    pub fn new(config: LinkConfig, e2e_base: u32, now: Instant) -> Self {
        Link {
            config,
            state: LinkState::Waiting { retry_at: now },
            backoff: config.reconnect_initial,
            pending: VecDeque::new(),
            next_id: 1,
            next_e2e: e2e_base.max(1),
            actions: VecDeque::new(),
            opened: 0,
        }
    }

    /// Current state.
    pub fn state(&self) -> LinkState {
        self.state
    }
    /// How many times a link opened.
    pub fn times_opened(&self) -> u32 {
        self.opened
    }
    /// Requests not answered yet (queued or in flight).
    pub fn unanswered(&self) -> usize {
        self.pending.len()
    }

    /// A request to send, with the default timeout.
    pub fn submit(&mut self, message: Message, now: Instant) -> RequestId {
        self.submit_with_timeout(message, self.config.request_timeout, now)
    }

    /// A request to send; `timeout` counts from each send. Keeps an
    /// end-to-end id already set, else assigns one.
    pub fn submit_with_timeout(
        &mut self,
        mut message: Message,
        timeout: Duration,
        now: Instant,
    ) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        if self.state == LinkState::Stopped {
            self.actions.push_back(LinkAction::Fail {
                id,
                failure: LinkFailure::Stopped,
            });
            return id;
        }
        if message.header.end_to_end == 0 {
            message.header.end_to_end = self.next_e2e;
            self.next_e2e = (self.next_e2e & 0xfff0_0000)
                | (self.next_e2e.wrapping_add(1) & 0x000f_ffff).max(1);
        }
        self.pending.push_back(Pending {
            id,
            message,
            timeout,
            sends: 0,
            sent_at: None,
        });
        if self.state == LinkState::Open {
            self.send_queued(now);
        }
        id
    }

    /// The caller is gone; forget the request (it is not sent again).
    pub fn cancel(&mut self, id: RequestId) {
        self.pending.retain(|p| p.id != id);
    }

    fn send_queued(&mut self, now: Instant) {
        for p in self.pending.iter_mut().filter(|p| p.sent_at.is_none()) {
            let mut message = p.message.clone();
            if p.sends > 0 {
                message.header.flags |= Header::RETRANSMIT;
            }
            p.sends += 1;
            p.sent_at = Some(now);
            self.actions
                .push_back(LinkAction::Send { id: p.id, message });
        }
    }

    fn wait(&mut self, now: Instant) {
        self.state = LinkState::Waiting {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
    }

    /// The attempt succeeded: the link is Open. Queued requests go out,
    /// those sent on an earlier link with the T flag.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state == LinkState::Stopped {
            self.actions.push_back(LinkAction::Disconnect);
            return;
        }
        self.state = LinkState::Open;
        self.opened += 1;
        self.backoff = self.config.reconnect_initial;
        self.send_queued(now);
    }

    /// The attempt failed (TCP refused, CER/CEA failed or timed out).
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if self.state == LinkState::Connecting {
            self.wait(now);
        }
    }

    /// The open link is gone. Requests in flight wait for the next link.
    pub fn handle_closed(&mut self, now: Instant) {
        if self.state != LinkState::Open {
            return;
        }
        for p in &mut self.pending {
            p.sent_at = None;
        }
        self.wait(now);
    }

    /// An answer to a request; false if the request is no longer waiting
    /// (answered, timed out, cancelled). An answer that comes late from a
    /// link that has dropped is still the answer.
    pub fn handle_answer(&mut self, id: RequestId, answer: Message) -> bool {
        let Some(i) = self.pending.iter().position(|p| p.id == id) else {
            return false;
        };
        self.pending.remove(i);
        self.actions.push_back(LinkAction::Deliver { id, answer });
        true
    }

    /// Time has reached (or passed) [`Link::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let LinkState::Waiting { retry_at } = self.state
            && now >= retry_at
        {
            self.state = LinkState::Connecting;
            self.actions.push_back(LinkAction::Connect);
        }
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            match p.sent_at {
                Some(at) if now >= at + p.timeout => {
                    let after = p.timeout;
                    let id = p.id;
                    self.pending.remove(i);
                    self.actions.push_back(LinkAction::Fail {
                        id,
                        failure: LinkFailure::Timeout { after },
                    });
                }
                _ => i += 1,
            }
        }
    }

    /// Stops for good: every unanswered request fails, an open link is
    /// closed, no attempt follows.
    pub fn stop(&mut self) {
        if self.state == LinkState::Open {
            self.actions.push_back(LinkAction::Disconnect);
        }
        self.state = LinkState::Stopped;
        for p in self.pending.drain(..) {
            self.actions.push_back(LinkAction::Fail {
                id: p.id,
                failure: LinkFailure::Stopped,
            });
        }
    }

    /// Next action.
    pub fn poll_action(&mut self) -> Option<LinkAction> {
        self.actions.pop_front()
    }

    /// When [`Link::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.state {
            LinkState::Waiting { retry_at } => Some(retry_at),
            _ => None,
        };
        self.pending
            .iter()
            .filter_map(|p| p.sent_at.map(|at| at + p.timeout))
            .chain(retry)
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::diameter::{Avp, code};

    fn acr(sid: &str) -> Message {
        Message::request(271, 3).with(Avp::utf8(code::SESSION_ID, sid))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn actions(l: &mut Link) -> Vec<LinkAction> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    fn sent(actions: &[LinkAction]) -> Vec<(String, bool, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                LinkAction::Send { message, .. } => Some((
                    message.session_id().unwrap_or("").to_owned(),
                    message.header.is_retransmit(),
                    message.header.end_to_end,
                )),
                _ => None,
            })
            .collect()
    }

    /// Drives the link on a virtual clock, failing every attempt, and
    /// returns the times of the Connect actions.
    fn attempts_while_down(l: &mut Link, t0: Instant, until: Duration) -> Vec<Duration> {
        let mut at = Vec::new();
        let mut now = t0;
        while let Some(t) = l.poll_timeout() {
            if t > t0 + until {
                break;
            }
            now = now.max(t);
            l.handle_timeout(now);
            for a in actions(l) {
                if a == LinkAction::Connect {
                    at.push(now - t0);
                    l.handle_connect_failed(now);
                }
            }
        }
        at
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_open() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            reconnect_initial: ms(100),
            reconnect_max: ms(1000),
            request_timeout: ms(5000),
        };
        let mut l = Link::new(cfg, 1, t0);
        assert_eq!(l.poll_timeout(), Some(t0), "connects at once");
        let at = attempts_while_down(&mut l, t0, ms(5000));
        assert_eq!(
            at,
            [0, 100, 300, 700, 1500, 2500, 3500, 4500].map(ms).to_vec()
        );
        // A link opens, then drops: the first retry is quick again.
        let now = t0 + ms(4500);
        l.handle_timeout(t0 + ms(5500));
        assert_eq!(actions(&mut l), [LinkAction::Connect]);
        l.handle_connected(now);
        assert_eq!(l.state(), LinkState::Open);
        assert_eq!(l.poll_timeout(), None, "nothing to wait for");
        l.handle_closed(t0 + ms(9000));
        assert_eq!(
            l.state(),
            LinkState::Waiting {
                retry_at: t0 + ms(9100)
            }
        );
        assert_eq!(l.times_opened(), 1);
    }

    #[test]
    fn requests_made_while_down_go_out_in_order_on_open() {
        let t0 = Instant::now();
        let mut l = Link::new(LinkConfig::default(), 0x0010_0000, t0);
        l.handle_timeout(t0);
        assert_eq!(actions(&mut l), [LinkAction::Connect]);
        l.handle_connect_failed(t0 + ms(1));
        let ids: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|s| l.submit(acr(s), t0 + ms(2)))
            .collect();
        assert!(actions(&mut l).is_empty(), "nothing sent while down");
        // Queued requests never time out.
        let retry = l.poll_timeout().unwrap();
        assert_eq!(retry, t0 + ms(101));
        l.handle_timeout(retry);
        assert_eq!(actions(&mut l), [LinkAction::Connect]);
        l.handle_connected(retry + ms(5));
        let out = actions(&mut l);
        assert_eq!(
            sent(&out),
            [
                ("a".into(), false, 0x0010_0000),
                ("b".into(), false, 0x0010_0001),
                ("c".into(), false, 0x0010_0002)
            ]
        );
        // A request made while open goes out at once.
        let d = l.submit(acr("d"), retry + ms(6));
        assert_eq!(sent(&actions(&mut l)), [("d".into(), false, 0x0010_0003)]);
        // Answers reach their callers, whatever their order.
        assert!(l.handle_answer(ids[1], acr("b").answer()));
        assert!(l.handle_answer(d, acr("d").answer()));
        assert!(!l.handle_answer(d, acr("d").answer()), "answered once");
        assert_eq!(
            actions(&mut l)
                .iter()
                .map(|a| match a {
                    LinkAction::Deliver { id, .. } => *id,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            [ids[1], d]
        );
        assert_eq!(l.unanswered(), 2);
    }

    #[test]
    fn unanswered_requests_are_resent_with_t_after_a_drop_and_answered_ones_are_not() {
        let t0 = Instant::now();
        let mut l = Link::new(LinkConfig::default(), 0x0020_0000, t0);
        l.handle_timeout(t0);
        actions(&mut l);
        l.handle_connected(t0);
        let a = l.submit(acr("a"), t0);
        let b = l.submit(acr("b"), t0);
        actions(&mut l);
        assert!(l.handle_answer(a, acr("a").answer()));
        actions(&mut l);
        // The link drops with b unanswered; c is made while down.
        l.handle_closed(t0 + ms(10));
        let c = l.submit(acr("c"), t0 + ms(20));
        assert!(actions(&mut l).is_empty());
        // b's timeout does not run while it waits for a link.
        assert_eq!(l.poll_timeout(), Some(t0 + ms(110)));
        l.handle_timeout(t0 + ms(110));
        assert_eq!(actions(&mut l), [LinkAction::Connect]);
        l.handle_connected(t0 + ms(120));
        let out = actions(&mut l);
        assert_eq!(
            sent(&out),
            [
                ("b".into(), true, 0x0020_0001),
                ("c".into(), false, 0x0020_0002)
            ],
            "b again with T and its end-to-end id, then c; never a"
        );
        // The answer to b from the old link, arriving late, still counts.
        assert!(l.handle_answer(b, acr("b").answer()));
        assert!(l.handle_answer(c, acr("c").answer()));
        assert_eq!(l.unanswered(), 0);
        // Another drop resends nothing.
        l.handle_closed(t0 + ms(200));
        l.handle_timeout(t0 + ms(300));
        l.handle_connected(t0 + ms(301));
        assert!(
            sent(&actions(&mut l))
                .iter()
                .all(|(s, _, _)| s != "b" && s != "a")
        );
    }

    #[test]
    fn a_sent_request_times_out_on_an_open_link() {
        let t0 = Instant::now();
        let mut l = Link::new(LinkConfig::default(), 1, t0);
        l.handle_timeout(t0);
        l.handle_connected(t0);
        actions(&mut l);
        let a = l.submit_with_timeout(acr("a"), ms(300), t0);
        actions(&mut l);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(300)));
        l.handle_timeout(t0 + ms(299));
        assert!(actions(&mut l).is_empty());
        l.handle_timeout(t0 + ms(300));
        assert_eq!(
            actions(&mut l),
            [LinkAction::Fail {
                id: a,
                failure: LinkFailure::Timeout { after: ms(300) }
            }]
        );
        assert!(!l.handle_answer(a, acr("a").answer()), "too late");
        // Nothing left to resend after a drop.
        l.handle_closed(t0 + ms(400));
        l.handle_timeout(t0 + ms(500));
        l.handle_connected(t0 + ms(500));
        assert_eq!(actions(&mut l), [LinkAction::Connect]);
    }

    #[test]
    fn stop_fails_what_is_left_and_connects_no_more() {
        let t0 = Instant::now();
        let mut l = Link::new(LinkConfig::default(), 1, t0);
        let a = l.submit(acr("a"), t0);
        l.stop();
        assert_eq!(
            actions(&mut l),
            [LinkAction::Fail {
                id: a,
                failure: LinkFailure::Stopped
            }]
        );
        assert_eq!(l.poll_timeout(), None);
        let b = l.submit(acr("b"), t0);
        assert_eq!(
            actions(&mut l),
            [LinkAction::Fail {
                id: b,
                failure: LinkFailure::Stopped
            }]
        );
        // An attempt that was under way and succeeds is closed at once.
        l.handle_connected(t0);
        assert_eq!(actions(&mut l), [LinkAction::Disconnect]);
    }
}
