//! The cucumber World: one scenario's test users, its SIP history and its
//! view of the Charging Enabler's records.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::rules::Rule;
use super::verdict::{ScenarioResult, StepFailure, Violation};
use crate::charging::ch1::RecordType;
use crate::charging::enabler::{AnswerOutcome, ChargingRecord, Enabler};
use crate::profile::{ChargedFunction, SutProfile};
use crate::sip::agent::{Agent, TestUser};
use crate::sip::dialog::Dialog;
use crate::sip::transaction::{Target, TxKey};
use crate::timeline::{Stamp, stamp};

/// What every scenario of a run shares: the SUT's description and the
/// harness's two faces (SIP agent, Charging Enabler).
#[derive(Debug)]
pub struct Context {
    pub profile: SutProfile,
    pub agent: Agent,
    pub enabler: Enabler,
    /// Where test users send out-of-dialog requests.
    pub sut_sip: Target,
    /// The embedded server's admin address, for `{sut_admin}` in stimuli.
    pub sut_admin: Option<SocketAddr>,
    pub results: Mutex<Vec<ScenarioResult>>,
    /// Judged scenarios, to judge again what arrives after their verdict.
    pub ledgers: Mutex<Vec<super::Ledger>>,
    /// Every test user name of the run, to find charging requests that
    /// belong to no scenario.
    pub user_names: Mutex<std::collections::HashSet<String>>,
}

static CONTEXT: RwLock<Option<Arc<Context>>> = RwLock::new(None);

/// Installs the context the next run's Worlds are made from. One process
/// runs one suite at a time (cucumber makes Worlds with no arguments).
pub fn install(context: Arc<Context>) {
    *CONTEXT.write().unwrap_or_else(PoisonError::into_inner) = Some(context);
}

fn installed() -> Option<Arc<Context>> {
    CONTEXT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Worlds are made only inside a run that installed its context.
#[derive(Debug, thiserror::Error)]
#[error("no harness context installed: scenarios run through cpmcc::harness::run")]
pub struct NoContext;

/// A SIP message a test user sent or received, on the harness timeline.
#[derive(Debug, Clone)]
pub struct SipEvent {
    pub stamp: Stamp,
    /// The user's role name in the scenario (`alice`).
    pub user: String,
    pub sent: bool,
    pub what: SipWhat,
}

/// What a logged SIP message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipWhat {
    Request {
        method: rsip::Method,
        reinvite: bool,
    },
    Response {
        status: u16,
        method: rsip::Method,
        reinvite: bool,
    },
}

pub use super::expect::Forbidden;

/// What the judge found on a scenario's whole charging.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub facts: ScenarioFacts,
    /// Broken rules of the SUT, in the judge's order.
    pub violations: Vec<super::verdict::Violation>,
    /// A broken rule of the harness itself: no verdict on the SUT holds.
    pub harness: Option<super::verdict::Violation>,
}

/// A request a test user received and has not answered yet.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub key: TxKey,
    pub request: rsip::Request,
    pub stamp: Stamp,
}

/// One test user's leg of the scenario's session.
#[derive(Debug)]
pub struct Leg {
    /// The initial INVITE, sent (originator) or received (recipient).
    pub invite: rsip::Request,
    /// The recipient's server transaction for the initial INVITE.
    pub invite_key: Option<TxKey>,
    pub local_tag: String,
    pub dialog: Option<Dialog>,
    /// Requests received and not answered yet (held back or to be answered).
    pub pending: Vec<PendingRequest>,
    pub ended: bool,
}

impl Leg {
    /// Whether a received `method` request waits for this user's answer.
    pub fn holds(&self, method: rsip::Method) -> bool {
        self.pending.iter().any(|p| p.request.method == method)
    }

    /// Takes the oldest received `method` request still to be answered.
    pub fn take_pending(&mut self, method: rsip::Method) -> Option<PendingRequest> {
        let i = self
            .pending
            .iter()
            .position(|p| p.request.method == method)?;
        Some(self.pending.remove(i))
    }
}

/// A group session of the scenario, hosted by the SUT's Controlling Function.
#[derive(Debug, Clone, Default)]
pub struct GroupSession {
    /// The session's own URI (the focus's Contact in its 200 OK to the
    /// chair), where dial-ins go.
    pub session_uri: Option<String>,
    /// Everyone the SUT was asked to invite (the list, the group's members,
    /// those added by REFER): the teardown declines an invitation that
    /// comes late, so that the group session ends.
    pub invited: Vec<String>,
    /// The participant whose re-INVITE the focus is forwarding.
    pub modifier: Option<String>,
}

/// The state of one scenario.
#[derive(Debug, cucumber::World)]
#[world(init = Self::new)]
pub struct World {
    pub ctx: Arc<Context>,
    /// Makes this scenario's user names unique in the run.
    pub suffix: String,
    pub users: BTreeMap<String, TestUser>,
    pub legs: HashMap<String, Leg>,
    pub originator: Option<String>,
    pub recipient: Option<String>,
    /// The group session the scenario's originator (its chair) started;
    /// None in a 1-1 scenario.
    pub group: Option<GroupSession>,
    pub sip_log: Vec<SipEvent>,
    /// Charging requests at or before this stamp have been accounted for by
    /// an earlier step; "no request arrives" looks only after it.
    pub watermark: Stamp,
    /// Per charged function, its last request a step has accounted for: the
    /// next "arrives" step looks after it (functions report independently,
    /// so one function's mark says nothing of another's).
    pub marks: HashMap<ChargedFunction, Stamp>,
    /// The same per function for CH-2 requests (a function may charge on
    /// both interfaces, each its own session).
    pub online_marks: HashMap<ChargedFunction, Stamp>,
    /// The failure that ended the scenario, with its verdict.
    pub outcome: Option<StepFailure>,
    /// The judge's findings, once the scenario was judged.
    pub judgement: Option<Judgement>,
    /// Requests a step said must not arrive (after a stamp); judged again
    /// after the scenario and at the end of the run, however late they come.
    pub forbidden: Vec<Forbidden>,
    pub warnings: Vec<String>,
    pub started: Instant,
    /// The scenario's first point on the timeline.
    pub started_at: Stamp,
}

impl World {
    async fn new() -> Result<Self, NoContext> {
        let ctx = installed().ok_or(NoContext)?;
        let started = stamp();
        Ok(Self {
            ctx,
            suffix: unique_suffix(started.seq),
            users: BTreeMap::new(),
            legs: HashMap::new(),
            originator: None,
            recipient: None,
            group: None,
            sip_log: Vec::new(),
            watermark: started,
            marks: HashMap::new(),
            online_marks: HashMap::new(),
            outcome: None,
            forbidden: Vec::new(),
            judgement: None,
            warnings: Vec::new(),
            started: started.at,
            started_at: started,
        })
    }

    pub fn profile(&self) -> &SutProfile {
        &self.ctx.profile
    }

    /// Records a broken rule for the verdict and returns it for the step to
    /// fail with. `subject` says where it broke (`originating PF serving alice`).
    pub fn fail(
        &mut self,
        rule: &'static Rule,
        subject: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> StepFailure {
        let f = StepFailure::Fail(Violation::new(rule, subject, expected, observed));
        self.outcome.get_or_insert(f.clone());
        f
    }

    pub fn inconclusive(&mut self, why: impl Into<String>) -> StepFailure {
        let f = StepFailure::Inconclusive(why.into());
        self.outcome.get_or_insert(f.clone());
        f
    }

    pub fn harness_error(&mut self, why: impl Into<String>) -> StepFailure {
        let f = StepFailure::Harness(why.into());
        self.outcome.get_or_insert(f.clone());
        f
    }

    /// Says that no request of `kind` may arrive after `after`.
    pub fn forbid(&mut self, kind: RecordType, after: Stamp, rule: &'static Rule) {
        self.forbidden.push(Forbidden { kind, after, rule });
    }

    /// Whether a test user sent a BYE (the client ended the session).
    pub fn client_sent_bye(&self) -> bool {
        self.sip_log.iter().any(|e| {
            e.sent
                && matches!(
                    e.what,
                    SipWhat::Request {
                        method: rsip::Method::Bye,
                        ..
                    }
                )
        })
    }

    /// Whether the originator received a 2xx to the initial INVITE.
    pub fn established(&self) -> bool {
        self.sip_log.iter().any(|e| {
            !e.sent
                && matches!(
                    e.what,
                    SipWhat::Response {
                        status: 200..=299,
                        method: rsip::Method::Invite,
                        reinvite: false
                    }
                )
        })
    }

    /// The first BYE of the session, sent by a client or received from the
    /// SUT: what ended it.
    pub fn session_end(&self) -> Option<Stamp> {
        self.sip_log
            .iter()
            .filter(|e| {
                matches!(
                    e.what,
                    SipWhat::Request {
                        method: rsip::Method::Bye,
                        ..
                    }
                )
            })
            .map(|e| e.stamp)
            .min()
    }

    /// Re-INVITEs the test users sent, and how many of them the far end
    /// accepted (its 2xx sent).
    pub fn modifications(&self) -> (usize, usize) {
        let sent = self
            .sip_log
            .iter()
            .filter(|e| {
                e.sent
                    && matches!(
                        e.what,
                        SipWhat::Request {
                            method: rsip::Method::Invite,
                            reinvite: true
                        }
                    )
            })
            .count();
        let completed = self
            .sip_log
            .iter()
            .filter(|e| {
                e.sent
                    && matches!(
                        e.what,
                        SipWhat::Response {
                            status: 200..=299,
                            method: rsip::Method::Invite,
                            reinvite: true
                        }
                    )
            })
            .count();
        (sent, completed)
    }

    /// Registers a test user for role `name`.
    pub fn add_user(&mut self, name: &str) {
        let unique = format!("{name}.{}", self.suffix);
        self.add_user_as(name, &unique);
    }

    /// Registers a test user for role `name` with a given user part (a
    /// member of a group provisioned on the SUT).
    pub fn add_user_as(&mut self, name: &str, unique: &str) {
        let unique = unique.to_owned();
        self.ctx
            .user_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(unique.clone());
        let user = self.ctx.agent.user(&unique);
        self.users.insert(name.to_owned(), user);
    }

    pub fn user(&mut self, name: &str) -> Result<&mut TestUser, StepFailure> {
        if !self.users.contains_key(name) {
            return Err(self.harness_error(format!(
                "no CPM client \"{name}\" in this scenario: add it with Given"
            )));
        }
        self.users
            .get_mut(name)
            .ok_or_else(|| StepFailure::Harness(format!("no CPM client \"{name}\"")))
    }

    pub fn leg(&mut self, name: &str) -> Result<&mut Leg, StepFailure> {
        if !self.legs.contains_key(name) {
            return Err(self.harness_error(format!("{name} has no session in this scenario")));
        }
        self.legs
            .get_mut(name)
            .ok_or_else(|| StepFailure::Harness(format!("{name} has no session")))
    }

    pub fn log_sip(&mut self, stamp: Stamp, user: &str, sent: bool, what: SipWhat) {
        self.sip_log.push(SipEvent {
            stamp,
            user: user.to_owned(),
            sent,
            what,
        });
    }

    /// The last SIP event matching `what` that `user` sent (or received).
    pub fn sip_event(&self, user: &str, sent: bool, what: &SipWhat) -> Option<Stamp> {
        self.sip_log
            .iter()
            .rev()
            .find(|e| e.user == user && e.sent == sent && &e.what == what)
            .map(|e| e.stamp)
    }

    /// Where `name`'s in-dialog requests go: the dialog's next hop, else the SUT.
    pub fn in_dialog_target(&mut self, name: &str) -> Target {
        let sut = self.ctx.sut_sip;
        self.legs
            .get(name)
            .and_then(|l| l.dialog.as_ref())
            .and_then(Dialog::next_hop)
            .map(|addr| Target {
                transport: sut.transport,
                addr,
            })
            .unwrap_or(sut)
    }

    /// The charged functions of a 1-1 session the profile declares for
    /// offline charging: the Participating Functions (a 1-1 session has no
    /// Controlling Function).
    ///
    /// In a group session, the Controlling Function, when the profile lists
    /// it (whether the participants' PFs charge too is not judged yet).
    pub fn offline_functions(&self) -> Vec<ChargedFunction> {
        let group = self.group.is_some();
        self.profile()
            .offline()
            .map(|o| {
                o.functions
                    .iter()
                    .copied()
                    .filter(|f| (*f == ChargedFunction::ControllingFunction) == group)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The role name of the user a function serves in a 1-1 session.
    pub fn served_user(&self, function: ChargedFunction) -> Option<String> {
        match function {
            ChargedFunction::OriginatingPf => self.originator.clone(),
            ChargedFunction::TerminatingPf => self.recipient.clone(),
            // The CF's records name the chair, the group session's originator.
            ChargedFunction::ControllingFunction => {
                self.group.as_ref().and(self.originator.clone())
            }
        }
    }

    /// The stream of a charged function: the function and the test user it
    /// serves in this scenario.
    pub fn stream(&self, function: ChargedFunction) -> Option<Stream> {
        let role_name = self.served_user(function)?;
        let served = self.users.get(&role_name)?.name.clone();
        Some(Stream {
            function,
            role_name,
            served,
        })
    }

    /// What the judge needs of this scenario, to judge it now and again at
    /// the end of the run. `teardown_from` is where the harness's own
    /// teardown began: an established session not ended by then was ended
    /// by the teardown's BYE.
    pub fn facts(&self, teardown_from: Option<Stamp>) -> ScenarioFacts {
        let offline = self.profile().offline();
        ScenarioFacts {
            streams: self
                .offline_functions()
                .into_iter()
                .filter_map(|f| self.stream(f))
                .collect(),
            user_names: self.users.values().map(|u| u.name.clone()).collect(),
            session_end: self
                .session_end()
                .or(teardown_from.filter(|_| self.established())),
            reinvites: self.modifications(),
            group: self.group.is_some(),
            forbidden: self.forbidden.clone(),
            ordering: offline.map(|o| o.ordering).unwrap_or_default(),
            pinned_service_context: offline.and_then(|o| o.service_context_id.clone()),
        }
    }

    /// This scenario's records for a function, in arrival order: those that
    /// name its served user, and any later request of a Session-Id one of
    /// them opened (a SUT may name the served user in the Start only).
    pub fn records_for(&self, function: ChargedFunction) -> Vec<ChargingRecord> {
        match self.stream(function) {
            Some(stream) => super::expect::stream_records(self.ctx.enabler.records(), &stream),
            None => Vec::new(),
        }
    }

    /// Every record of this scenario, whatever the function: those naming
    /// one of its users, and those continuing a Session-Id such a record opened.
    pub fn scenario_records(&self) -> Vec<ChargingRecord> {
        super::expect::scenario_records(self.ctx.enabler.records(), &self.facts(None))
    }

    /// Waits for `function`'s first record of `kind` after `after`, sleeping
    /// on the Enabler's notifications (never spinning: every scenario of the
    /// run shares this task).
    pub async fn wait_record(
        &self,
        function: ChargedFunction,
        kind: RecordType,
        after: Stamp,
        timeout: Duration,
    ) -> Option<ChargingRecord> {
        let stream = self.stream(function);
        let wanted =
            |r: &ChargingRecord| r.stamp > after && r.ch1.as_ref().is_ok_and(|c| c.kind == kind);
        if let Some(r) = self.records_for(function).into_iter().find(|r| wanted(r)) {
            return Some(r);
        }
        // A request of this kind that names the served user, or continues a
        // session already attributed to the function.
        let sessions: Vec<String> = self
            .records_for(function)
            .iter()
            .filter_map(|r| r.ch1.as_ref().ok().map(|c| c.session_id.clone()))
            .collect();
        self.ctx
            .enabler
            .wait_for(
                |r| {
                    wanted(r)
                        && (stream.as_ref().is_some_and(|s| names_stream(r, s))
                            || r.ch1
                                .as_ref()
                                .is_ok_and(|c| sessions.contains(&c.session_id)))
                },
                timeout,
            )
            .await
    }
}

impl World {
    /// The functions the profile declares for online charging (1-1: the
    /// Participating Functions).
    pub fn online_functions(&self) -> Vec<ChargedFunction> {
        let group = self.group.is_some();
        self.profile()
            .online()
            .map(|o| {
                o.functions
                    .iter()
                    .copied()
                    .filter(|f| (*f == ChargedFunction::ControllingFunction) == group)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// This scenario's CH-2 requests for a function, in arrival order.
    pub fn online_records_for(
        &self,
        function: ChargedFunction,
    ) -> Vec<super::online::OnlineRecord> {
        match self.stream(function) {
            Some(stream) => super::online::stream_records(self.ctx.enabler.records(), &stream),
            None => Vec::new(),
        }
    }

    /// Waits for `function`'s first CH-2 request of `kind` after `after`.
    pub async fn wait_online(
        &self,
        function: ChargedFunction,
        kind: crate::charging::ch2::RequestType,
        after: Stamp,
        timeout: Duration,
    ) -> Option<super::online::OnlineRecord> {
        let found = |w: &World| {
            w.online_records_for(function)
                .into_iter()
                .find(|r| r.record.stamp > after && r.request.kind == kind)
        };
        if let Some(r) = found(self) {
            return Some(r);
        }
        let stream = self.stream(function)?;
        let sessions: Vec<String> = self
            .online_records_for(function)
            .iter()
            .map(|r| r.request.session_id.clone())
            .collect();
        let record = self
            .ctx
            .enabler
            .wait_for(
                |r| {
                    r.stamp > after
                        && r.ch2().and_then(Result::ok).is_some_and(|c| {
                            c.kind == kind
                                && (super::online::names_stream(&c, &stream)
                                    || sessions.contains(&c.session_id))
                        })
                },
                timeout,
            )
            .await?;
        let request = record.ch2()?.ok()?;
        Some(super::online::OnlineRecord { record, request })
    }
}

pub use super::expect::{
    ScenarioFacts, Stream, belonging_to, names_stream, record_line, role_matches, served_user_of,
};

/// Whether the harness answered a record.
pub fn answered(record: &ChargingRecord) -> bool {
    !matches!(record.answer, AnswerOutcome::Withheld)
}

fn unique_suffix(seq: u64) -> String {
    // A random part keeps names unique across runs against one long-lived SUT.
    let r: u32 = rand::random();
    format!("{seq}x{r:08x}")
}
