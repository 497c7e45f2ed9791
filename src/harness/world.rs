//! The cucumber World: one scenario's test users, its SIP history and its
//! view of the Charging Enabler's records.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::verdict::{ScenarioResult, StepFailure};
use crate::charging::ch1::{ChargedRole, RecordType};
use crate::charging::enabler::{AnswerOutcome, ChargingRecord, Enabler};
use crate::profile::{ChargedFunction, SutProfile};
use crate::sip::agent::{Agent, TestUser};
use crate::sip::dialog::Dialog;
use crate::sip::message;
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
    pub sip_log: Vec<SipEvent>,
    /// Charging requests at or before this stamp have been accounted for by
    /// an earlier step; "no request arrives" looks only after it.
    pub watermark: Stamp,
    /// The failure that ended the scenario, with its verdict.
    pub outcome: Option<StepFailure>,
    pub warnings: Vec<String>,
    pub started: Instant,
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
            sip_log: Vec::new(),
            watermark: started,
            outcome: None,
            warnings: Vec::new(),
            started: started.at,
        })
    }

    pub fn profile(&self) -> &SutProfile {
        &self.ctx.profile
    }

    /// Records a failure for the verdict and returns it for the step to fail with.
    pub fn fail(
        &mut self,
        clause: &str,
        rule: &str,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> StepFailure {
        let f = StepFailure::Fail {
            clause: clause.to_owned(),
            rule: rule.to_owned(),
            expected: expected.into(),
            observed: observed.into(),
        };
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

    /// Registers a test user for role `name`.
    pub fn add_user(&mut self, name: &str) {
        let unique = format!("{name}.{}", self.suffix);
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
    pub fn offline_functions(&self) -> Vec<ChargedFunction> {
        self.profile()
            .offline()
            .map(|o| {
                o.functions
                    .iter()
                    .copied()
                    .filter(|f| *f != ChargedFunction::ControllingFunction)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The role name of the user a function serves in a 1-1 session.
    pub fn served_user(&self, function: ChargedFunction) -> Option<String> {
        match function {
            ChargedFunction::OriginatingPf => self.originator.clone(),
            ChargedFunction::TerminatingPf => self.recipient.clone(),
            ChargedFunction::ControllingFunction => None,
        }
    }

    /// Whether a record names `function`'s served user of this scenario (and,
    /// when it reports a role, that function's role).
    fn names_served_user(&self, record: &ChargingRecord, function: ChargedFunction) -> bool {
        let Some(role) = self.served_user(function) else {
            return false;
        };
        let Some(user) = self.users.get(&role) else {
            return false;
        };
        let Ok(req) = &record.ch1 else {
            return false;
        };
        let served = req.served_user.as_deref().and_then(message::uri_user);
        if served != Some(user.name.as_str()) {
            return false;
        }
        match req.role {
            Some(r) => role_matches(r, function),
            None => true,
        }
    }

    /// This scenario's records for a function, in arrival order: those that
    /// name its served user, and any later request of a Session-Id one of
    /// them opened (a SUT may name the served user in the Start only).
    pub fn records_for(&self, function: ChargedFunction) -> Vec<ChargingRecord> {
        let mut v = belonging_to(self.ctx.enabler.records(), |r| {
            self.names_served_user(r, function)
        });
        v.sort_by_key(|r| r.stamp);
        v
    }

    /// Every record of this scenario, whatever the function: those naming
    /// one of its users, and those continuing a Session-Id such a record opened.
    pub fn scenario_records(&self) -> Vec<ChargingRecord> {
        let names: Vec<&str> = self.users.values().map(|u| u.name.as_str()).collect();
        let mut v = belonging_to(self.ctx.enabler.records(), |r| {
            served_user_of(r).is_some_and(|u| names.contains(&u))
        });
        v.sort_by_key(|r| r.stamp);
        v
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
                        && (self.names_served_user(r, function)
                            || r.ch1
                                .as_ref()
                                .is_ok_and(|c| sessions.contains(&c.session_id)))
                },
                timeout,
            )
            .await
    }
}

/// The served user a record names, as a user part (`alice.r7s3`).
pub fn served_user_of(record: &ChargingRecord) -> Option<&str> {
    record
        .ch1
        .as_ref()
        .ok()
        .and_then(|c| c.served_user.as_deref())
        .and_then(message::uri_user)
}

/// The records `names_ours` accepts (they name one of our users), and those
/// continuing a Session-Id that such a record opened (a SUT may name the
/// served user in its first request only). The one rule of correlation, for
/// functions, scenarios and strays alike.
pub fn belonging_to(
    records: Vec<ChargingRecord>,
    names_ours: impl Fn(&ChargingRecord) -> bool,
) -> Vec<ChargingRecord> {
    let sessions: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| names_ours(r))
        .filter_map(|r| r.ch1.as_ref().ok().map(|c| c.session_id.clone()))
        .collect();
    records
        .into_iter()
        .filter(|r| {
            names_ours(r)
                || r.ch1
                    .as_ref()
                    .is_ok_and(|c| sessions.contains(&c.session_id))
        })
        .collect()
}

/// Whether a reported role is the one a function plays.
pub fn role_matches(role: ChargedRole, function: ChargedFunction) -> bool {
    matches!(
        (role, function),
        (ChargedRole::OriginatingPf, ChargedFunction::OriginatingPf)
            | (ChargedRole::TerminatingPf, ChargedFunction::TerminatingPf)
            | (
                ChargedRole::ControllingFunction,
                ChargedFunction::ControllingFunction
            )
    )
}

/// One line for a sequence: `StartRequest #0 Session-Id=…`.
pub fn record_line(record: &ChargingRecord) -> String {
    match &record.ch1 {
        Ok(c) => format!(
            "{} #{} Session-Id={}",
            c.kind.ch1_name(),
            c.record_number,
            c.session_id
        ),
        Err(e) => format!("unreadable ACR: {e}"),
    }
}

/// Whether the harness answered a record.
pub fn answered(record: &ChargingRecord) -> bool {
    !matches!(record.answer, AnswerOutcome::Withheld)
}

fn unique_suffix(seq: u64) -> String {
    // A random part keeps names unique across runs against one long-lived SUT.
    let r: u32 = rand::random();
    format!("{seq}x{r:08x}")
}
