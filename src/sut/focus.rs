//! The reference CPM server's Controlling Function: a conference focus for
//! group sessions, as a sans-IO state machine, charging offline as
//! `spec/flows.md` says for 6.2.3.2, 6.2.3.3 and 6.2.3.7.
//!
//! A group session starts with an INVITE to the conference factory carrying
//! a `resource-lists+xml` recipient list (an ad-hoc group, RFC 5366), or to a
//! pre-defined group's URI. The focus answers the originator at once with
//! the session's own URI (`isfocus` in its Contact, RFC 4579) and invites
//! every member. Afterwards: a participant dials in with an INVITE to the
//! session URI; the chair adds one with a REFER to the session (the focus
//! then invites them) or removes one with a REFER whose Refer-To says
//! `method=BYE` (the focus sends BYE); a participant leaves with BYE; the
//! operator ends the session (BYE to everyone). The focus sends no NOTIFY
//! for a REFER: its 202 carries `Refer-Sub: false` (RFC 4488).
//!
//! Charging, one CH-1 session for the Controlling Function, with
//! PoC-Server-Role controlling and Number-Of-Participants:
//! - StartRequest once the originator's leg is established (the focus's
//!   200 OK to the originator), counting everyone the session was set up
//!   for (the originator and the invited members);
//! - an InterimRequest with the attached count after each event that
//!   completes a join or a departure (6.2.3.3 (a)–(d)): an invitee's 200 OK,
//!   the 200 OK to the focus's BYE (or its 481 or timeout: gone all the
//!   same), a participant's BYE, a dial-in once answered; a join that fails
//!   changes nothing and charges nothing;
//! - an InterimRequest after the focus answers a re-INVITE (6.2.3.4);
//! - a StopRequest when the last participant has gone.
//!
//! Online (6.3.3.2, 6.3.3.3), when the server's `online.functions` lists
//! the Controlling Function: its own CH-2 session per group session.
//! - The chair's INVITE is held: a CH-2 InitialRequest (CC-Request-Number
//!   0, units requested, PoC-Information with the invited count, role
//!   controlling, Subscription-Id the chair) goes out first; on a
//!   successful Response the chair gets its 200 OK and the members their
//!   invitations; a refusal answers the chair with `refusal_status` and
//!   invites nobody, with no TerminationRequest; no answer (the driver
//!   reports one after Tx) is RFC 4006 failure handling: 504 or go on
//!   uncontrolled.
//! - Each Response may arm Charging Trigger Conditions (a Trigger with
//!   Trigger-Types), or disarm them (an empty Trigger). With
//!   CHANGE_IN_PARTICIPANTS_NMB (50) armed, every completed join or
//!   departure (the same events as the Interims above) sends an
//!   UpdateRequest (Reporting-Reason RATING_CONDITION_CHANGE, a Trigger
//!   naming 50, the new count, units used and requested); with
//!   CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51) armed, only a change that
//!   makes the count meet the operator's `participant_threshold` from
//!   below, or drop under it; with neither, no UpdateRequest at all.
//! - A refused Update ends the group session (BYE to everyone).
//! - A TerminationRequest (units used) when the group session ends.
//!
//! Events and time go in ([`FocusCore::handle_sip`],
//! [`FocusCore::terminate`]); actions come out ([`FocusCore::poll_action`]),
//! the same [`Action`]s as the proxy's.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rsip::headers::UntypedHeader as _;

use super::config::FailureHandlingMode;
use super::deviation::Deviation;
use super::proxy::Action;
use crate::charging::ch1::{Ch1Request, ChargedRole, RecordType};
use crate::charging::ch2::{
    Ch2Request, Ch2Response, ReportingReason, RequestType, ServiceUnits, TriggerType,
};
use crate::profile::ChargedFunction;
use crate::sip::dialog::{new_branch, new_call_id, new_tag, uri_text};
use crate::sip::message;
use crate::sip::transaction::{Role, Target, TransportKind, TxEvent, TxKey, response_to};

/// What the focus needs to know beyond the SIP addresses.
#[derive(Debug, Clone)]
pub struct FocusConfig {
    /// The served domain.
    pub domain: String,
    /// The user part of the conference factory URI (ad-hoc groups).
    pub factory_user: String,
    /// Pre-defined groups: group user part → member URIs.
    pub groups: HashMap<String, Vec<String>>,
    /// Where every member is reached (the harness's SIP endpoint).
    pub route_users_to: SocketAddr,
    /// Charging identity; `None`: the focus does not charge.
    pub charging: Option<FocusCharging>,
    /// Online charging of the Controlling Function; `None`: offline only.
    pub online: Option<FocusOnline>,
    /// Named deviations: the one policy that makes this focus charge wrong,
    /// for proving the suite catches it.
    pub deviations: Vec<Deviation>,
}

impl FocusConfig {
    fn has(&self, deviation: Deviation) -> bool {
        self.deviations.contains(&deviation)
    }
}

/// The Controlling Function as a Diameter client.
#[derive(Debug, Clone)]
pub struct FocusCharging {
    pub origin_host: String,
    pub service_context_id: String,
}

/// The Controlling Function as an online charging client (CH-2).
#[derive(Debug, Clone)]
pub struct FocusOnline {
    pub origin_host: String,
    pub service_context_id: String,
    /// CC-Time asked for in each InitialRequest and UpdateRequest, seconds.
    pub requested_time: u32,
    /// The answer to the chair's INVITE when the InitialRequest is refused.
    pub refusal_status: u16,
    /// What to do when the driver reports no answer within Tx.
    pub failure_handling: FailureHandlingMode,
    /// The operator's participant threshold (trigger 51); `None`: 51 never fires.
    pub participant_threshold: Option<u32>,
}

/// Where the Controlling Function's CH-2 session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreditState {
    /// The InitialRequest waits for its answer.
    New,
    /// Granted: credit control applies.
    Open,
    /// Going on without credit control (failure handling CONTINUE).
    Uncontrolled,
    /// Refused, terminated or given up: nothing more is sent.
    Closed,
}

/// The Controlling Function's CH-2 session for one conference.
#[derive(Debug)]
struct ConferenceCredit {
    session_id: String,
    origin_host: String,
    service_context_id: String,
    /// The chair: the served user (Subscription-Id).
    served_user: String,
    call_id: String,
    requested_time: u32,
    next_number: u32,
    state: CreditState,
    /// Kinds of the requests sent and not answered, oldest first.
    pending: VecDeque<RequestType>,
    /// Usage not reported yet runs from here.
    usage_from: Option<Instant>,
    /// The Charging Trigger Conditions armed by the last Responses.
    armed: Vec<TriggerType>,
    /// The attached count at the last join or departure.
    last_count: u32,
}

impl ConferenceCredit {
    fn request(&mut self, kind: RequestType, participants: u32) -> Ch2Request {
        let mut r = Ch2Request::new(kind, self.session_id.clone(), self.next_number)
            .served_user(self.served_user.clone())
            .role(ChargedRole::ControllingFunction)
            .participants(participants);
        self.next_number += 1;
        self.pending.push_back(kind);
        r.origin_host = self.origin_host.clone();
        r.service_context_id = Some(self.service_context_id.clone());
        r.call_id = Some(self.call_id.clone());
        r.calling_party = Some(self.served_user.clone());
        r.event_timestamp = Some(SystemTime::now());
        r
    }

    /// Seconds used since the last report, to the nearest second; usage
    /// runs again from `now`.
    fn take_used(&mut self, now: Instant) -> u32 {
        let used = self.usage_from.map_or(0, |from| {
            let ms = now.saturating_duration_since(from).as_millis();
            u32::try_from((ms + 500) / 1000).unwrap_or(u32::MAX)
        });
        self.usage_from = self.usage_from.map(|_| now);
        used
    }

    fn initial(&mut self, invited: u32) -> Ch2Request {
        let units = ServiceUnits::seconds(self.requested_time);
        self.request(RequestType::Initial, invited)
            .request_units(units)
    }

    fn update(&mut self, count: u32, trigger: Option<TriggerType>, now: Instant) -> Ch2Request {
        let used = self.take_used(now);
        let units = ServiceUnits::seconds(self.requested_time);
        let r = self
            .request(RequestType::Update, count)
            .request_units(units)
            .report_used(
                ServiceUnits::seconds(used),
                ReportingReason::RatingConditionChange,
            );
        match trigger {
            Some(t) => r.triggered_by(t),
            None => r,
        }
    }

    /// The TerminationRequest, once, for an open CH-2 session.
    fn termination(&mut self, count: u32, now: Instant) -> Option<Ch2Request> {
        if self.state != CreditState::Open {
            return None;
        }
        self.state = CreditState::Closed;
        let used = self.take_used(now);
        Some(
            self.request(RequestType::Termination, count)
                .report_used(ServiceUnits::seconds(used), ReportingReason::Final),
        )
    }
}

/// The chair's INVITE while the InitialRequest waits for its answer.
#[derive(Debug)]
struct Held {
    key: TxKey,
    request: rsip::Request,
    members: Vec<String>,
    invited: u32,
}

/// Where a participant stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Presence {
    /// The focus invited them; no final answer yet.
    Invited,
    /// Their leg is established.
    Joined,
    /// The focus sent BYE; no answer yet.
    Removing,
    /// Gone (left, removed, or never joined).
    Gone,
}

#[derive(Debug)]
struct Participant {
    /// The participant's address of record (`sip:carol@domain`).
    uri: String,
    call_id: String,
    /// The focus's tag and the participant's in this leg's dialog.
    local_tag: String,
    remote_tag: Option<String>,
    /// The participant's Contact, where in-dialog requests go.
    remote_target: Option<String>,
    /// The focus's next CSeq in this leg.
    cseq: u32,
    presence: Presence,
    /// The INVITE the focus sent (to build the ACK), when it invited them.
    invite: Option<rsip::Request>,
}

/// What a client transaction the focus started is for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Invite(usize),
    Bye(usize),
    /// A participant's re-INVITE, forwarded to this other participant.
    Reinvite(usize),
}

/// A participant's re-INVITE while the focus forwards it to the others
/// (6.2.3.4: forwarded, answered by the recipients, then charged).
#[derive(Debug)]
struct Modification {
    from: usize,
    key: TxKey,
    request: rsip::Request,
    /// Forwarded copies not answered yet.
    waiting: usize,
    /// A recipient refused it (its final status).
    refused: Option<u16>,
}

#[derive(Debug)]
struct Conference {
    /// The session's own user part (`conf-N`): its URI is the focus's.
    user: String,
    participants: Vec<Participant>,
    charging: Option<ConferenceCharging>,
    modification: Option<Modification>,
    /// Online charging by the Controlling Function.
    credit: Option<ConferenceCredit>,
    /// The chair's INVITE, until the InitialRequest is answered.
    held: Option<Held>,
}

/// The Controlling Function's CH-1 session for one conference.
#[derive(Debug)]
struct ConferenceCharging {
    session_id: String,
    origin_host: String,
    service_context_id: String,
    /// The originator: the served user of the CF's records.
    served_user: String,
    call_id: String,
    /// PoC-Session-Type: 2 pre-arranged group, 3 ad-hoc group.
    session_type: u32,
    next_record: u32,
    started: bool,
    stopped: bool,
    /// The count the last request carried.
    last_count: u32,
}

impl ConferenceCharging {
    fn request(&mut self, kind: RecordType, participants: u32) -> Ch1Request {
        let mut r = Ch1Request::new(kind, self.session_id.clone(), self.next_record)
            .served_user(self.served_user.clone())
            .role(ChargedRole::ControllingFunction)
            .participants(participants);
        r.session_type = Some(self.session_type);
        self.next_record += 1;
        r.origin_host = self.origin_host.clone();
        r.call_id = Some(self.call_id.clone());
        r.calling_party = Some(self.served_user.clone());
        r.service_context_id = Some(self.service_context_id.clone());
        r.event_timestamp = Some(SystemTime::now());
        r
    }
}

/// The focus: every group session, by its user part.
#[derive(Debug)]
pub struct FocusCore {
    config: FocusConfig,
    local: SocketAddr,
    transport: TransportKind,
    conferences: HashMap<u64, Conference>,
    /// Leg Call-ID → (conference, participant index).
    legs: HashMap<String, (u64, usize)>,
    clients: HashMap<TxKey, (u64, Purpose)>,
    actions: VecDeque<Action>,
    next_id: u64,
    /// The time of the event being handled.
    clock: Option<Instant>,
}

impl FocusCore {
    /// A focus reachable at `local` over `transport`.
    pub fn new(config: FocusConfig, local: SocketAddr, transport: TransportKind) -> Self {
        Self {
            config,
            local,
            transport,
            conferences: HashMap::new(),
            legs: HashMap::new(),
            clients: HashMap::new(),
            actions: VecDeque::new(),
            next_id: 1,
            clock: None,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether this request is the focus's: an INVITE to the factory or a
    /// group, or anything in one of its legs or to one of its sessions.
    pub fn wants(&self, request: &rsip::Request) -> bool {
        let to_focus = message::request_uri_user(request).is_some_and(|user| {
            user == self.config.factory_user
                || self.config.groups.contains_key(&user)
                || self.conferences.values().any(|c| c.user == user)
        });
        to_focus || message::call_id(request).is_ok_and(|id| self.legs.contains_key(&id))
    }

    /// Whether this client transaction is one the focus started.
    pub fn owns(&self, key: &TxKey) -> bool {
        self.clients.contains_key(key)
    }

    /// Operator stimulus: ends the session one of whose legs has this
    /// Call-ID, with a BYE to every participant.
    pub fn terminate(&mut self, call_id: &str, now: Instant) -> bool {
        self.clock = Some(now);
        let Some(&(conf, _)) = self.legs.get(call_id) else {
            return false;
        };
        self.bye_all(conf);
        true
    }

    /// BYE to every joined participant.
    fn bye_all(&mut self, conf: u64) {
        let joined: Vec<usize> = self.conferences[&conf]
            .participants
            .iter()
            .enumerate()
            .filter(|(_, p)| p.presence == Presence::Joined)
            .map(|(i, _)| i)
            .collect();
        for i in joined {
            self.send_bye(conf, i);
        }
    }

    /// A SIP event from the transaction layer.
    pub fn handle_sip(&mut self, event: TxEvent, now: Instant) {
        self.clock = Some(now);
        match event {
            TxEvent::Request {
                key,
                request,
                source,
            } => self.request(key, request, source),
            TxEvent::Response { key, response, .. } => self.response(key, response),
            TxEvent::Timeout { key } => self.timeout(key),
            _ => {}
        }
    }

    fn request(&mut self, key: Option<TxKey>, request: rsip::Request, source: Target) {
        let Some(key) = key else {
            return; // an ACK: the focus's 2xx was answered; nothing to do
        };
        let in_leg = message::call_id(&request)
            .ok()
            .and_then(|id| self.legs.get(&id).copied());
        let has_to_tag = message::to_tag(&request).is_some();
        match (request.method, in_leg, has_to_tag) {
            (rsip::Method::Invite, Some((conf, i)), true) => self.reinvite(conf, i, &key, &request),
            (rsip::Method::Bye, Some((conf, i)), true) => self.bye(conf, i, &key, &request),
            (rsip::Method::Refer, Some((conf, i)), true) => self.refer(conf, i, &key, &request),
            (rsip::Method::Invite, None, false) => self.invite(key, request, source),
            (_, None, true) => self.respond(&key, &request, 481, None),
            _ => self.respond(&key, &request, 405, None),
        }
    }

    /// A new INVITE: a new group session, or a dial-in to a running one.
    fn invite(&mut self, key: TxKey, request: rsip::Request, _source: Target) {
        let user = message::request_uri_user(&request).unwrap_or_default();
        if let Some(conf) = self
            .conferences
            .iter()
            .find(|(_, c)| c.user == user)
            .map(|(id, _)| *id)
        {
            let i = self.accept_leg(conf, &key, &request);
            if self.config.has(Deviation::NoInterimOnDialIn) {
                self.credit_changed(conf);
            } else {
                self.participant_changed(conf, i);
            }
            return;
        }
        let members = if user == self.config.factory_user {
            recipient_list(&request)
        } else if let Some(members) = self.config.groups.get(&user) {
            members.clone()
        } else {
            return self.respond(&key, &request, 404, None);
        };
        if members.is_empty() {
            // RFC 5366: a recipient-list INVITE without a list.
            return self.respond(&key, &request, 400, None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let originator = message::from_uri(&request).unwrap_or_default();
        let credit = self.config.online.as_ref().map(|o| ConferenceCredit {
            session_id: format!("{};focus;{id};ro", o.origin_host),
            origin_host: o.origin_host.clone(),
            service_context_id: o.service_context_id.clone(),
            served_user: originator.clone(),
            call_id: message::call_id(&request).unwrap_or_default(),
            requested_time: o.requested_time,
            next_number: 0,
            state: CreditState::New,
            pending: VecDeque::new(),
            usage_from: None,
            armed: Vec::new(),
            last_count: 0,
        });
        let charging = self.config.charging.as_ref().map(|c| ConferenceCharging {
            session_id: format!("{};focus;{id}", c.origin_host),
            origin_host: c.origin_host.clone(),
            service_context_id: c.service_context_id.clone(),
            served_user: originator.clone(),
            call_id: message::call_id(&request).unwrap_or_default(),
            session_type: if user == self.config.factory_user {
                3
            } else {
                2
            },
            next_record: 0,
            started: false,
            stopped: false,
            last_count: 0,
        });
        self.conferences.insert(
            id,
            Conference {
                user: format!("conf-{id}"),
                participants: Vec::new(),
                charging,
                modification: None,
                credit,
                held: None,
            },
        );
        let invited = 1 + members.len() as u32;
        let held = Held {
            key,
            request,
            members,
            invited,
        };
        let online = self
            .conferences
            .get_mut(&id)
            .and_then(|c| c.credit.as_mut())
            .map(|credit| credit.initial(invited));
        match online {
            // 6.3.3.2: the invitations wait for the InitialRequest's answer.
            Some(initial) => {
                self.actions.push_back(Action::Credit {
                    session: id,
                    function: ChargedFunction::ControllingFunction,
                    request: initial,
                });
                if self.config.has(Deviation::InvitationsBeforeCreditAnswer) {
                    self.proceed(id, held);
                } else if let Some(c) = self.conferences.get_mut(&id) {
                    c.held = Some(held);
                }
            }
            None => self.proceed(id, held),
        }
    }

    /// The group session goes on: the chair's 200 OK, the CH-1 Start, the
    /// members' invitations.
    fn proceed(&mut self, id: u64, held: Held) {
        self.accept_leg(id, &held.key, &held.request);
        let invited = if self.config.has(Deviation::GroupStartCountsOriginatorOnly) {
            1
        } else {
            held.invited
        };
        if !self.config.has(Deviation::GroupStartOnFirstJoin) {
            self.charge(id, RecordType::Start, invited);
        }
        let attached = self.attached(id);
        if let Some(credit) = self
            .conferences
            .get_mut(&id)
            .and_then(|c| c.credit.as_mut())
        {
            credit.last_count = attached;
        }
        for member in held.members {
            self.invite_member(id, &member);
        }
    }

    /// The answer to the oldest unanswered CH-2 request of this conference
    /// (or, `Err`, why none came within Tx).
    pub fn handle_charging_answer(
        &mut self,
        conf: u64,
        function: ChargedFunction,
        answer: Result<Ch2Response, String>,
        now: Instant,
    ) {
        self.clock = Some(now);
        if function != ChargedFunction::ControllingFunction {
            return;
        }
        let Some(online) = self.config.online.clone() else {
            return;
        };
        let after_refusal = self.config.has(Deviation::GroupInvitationsAfterRefusal);
        let Some(c) = self.conferences.get_mut(&conf) else {
            return; // ended: a late answer (to its Termination, say)
        };
        let Some(credit) = c.credit.as_mut() else {
            return;
        };
        let Some(kind) = credit.pending.pop_front() else {
            return;
        };
        if kind == RequestType::Termination
            || !matches!(credit.state, CreditState::New | CreditState::Open)
        {
            return;
        }
        let initial = credit.state == CreditState::New;
        enum Next {
            GoOn,
            Reject(u16),
            End,
        }
        let next = match answer {
            Ok(a) if a.is_full_success() => {
                credit.armed = a.triggers.apply(&credit.armed);
                if initial {
                    credit.state = CreditState::Open;
                    credit.usage_from = Some(now);
                }
                Next::GoOn
            }
            Ok(a) if initial => {
                tracing::info!(session = %credit.session_id, code = a.result_code, "focus: InitialRequest refused");
                if after_refusal {
                    credit.state = CreditState::Uncontrolled;
                    Next::GoOn
                } else {
                    // A refused Initial ends the CH-2 session: no Termination.
                    credit.state = CreditState::Closed;
                    Next::Reject(online.refusal_status)
                }
            }
            // A refused Update ends the group session (BYE, Termination).
            Ok(_) => Next::End,
            Err(why) => {
                tracing::warn!(session = %credit.session_id, %why, "focus: no CH-2 answer");
                if online.failure_handling == FailureHandlingMode::Continue {
                    credit.state = CreditState::Uncontrolled;
                    Next::GoOn
                } else {
                    credit.state = CreditState::Closed;
                    if initial {
                        Next::Reject(504)
                    } else {
                        Next::End
                    }
                }
            }
        };
        let held = c.held.take();
        match (next, held) {
            (Next::GoOn, Some(held)) => self.proceed(conf, held),
            (Next::GoOn, None) => {}
            (Next::Reject(status), Some(held)) => {
                self.respond(&held.key, &held.request, status, None);
                self.drop_conference(conf);
            }
            (Next::Reject(_), None) | (Next::End, _) => self.bye_all(conf),
        }
    }

    /// A conference that never started: gone, with its charging queues.
    fn drop_conference(&mut self, conf: u64) {
        if let Some(c) = self.conferences.remove(&conf) {
            for p in &c.participants {
                self.legs.remove(&p.call_id);
            }
        }
        self.clients.retain(|_, (id, _)| *id != conf);
        self.actions.push_back(Action::Forget { session: conf });
    }

    /// A join or a departure completed: an UpdateRequest when an armed
    /// Charging Trigger Condition asks for one (6.3.3.3).
    fn credit_changed(&mut self, conf: u64) {
        let (Some(now), Some(online)) = (self.clock, self.config.online.as_ref()) else {
            return;
        };
        let threshold = online.participant_threshold;
        if !self.conferences.contains_key(&conf) {
            return;
        }
        let n = self.attached(conf);
        let no_update_on_50 = self
            .config
            .has(Deviation::NoUpdateWhenParticipantsTriggerArmed);
        let update_unarmed = self.config.has(Deviation::UpdateOnJoinWhenNothingArmed);
        let every_on_51 = self
            .config
            .has(Deviation::UpdateOnEveryJoinWhenOnlyThresholdArmed);
        let Some(credit) = self
            .conferences
            .get_mut(&conf)
            .and_then(|c| c.credit.as_mut())
        else {
            return;
        };
        let before = std::mem::replace(&mut credit.last_count, n);
        if credit.state != CreditState::Open || before == n {
            return;
        }
        let count = TriggerType::ChangeInParticipantsNmb;
        let threshold_type = TriggerType::ChangeInThresholdOfParticipantsNmb;
        let crossed = threshold.is_some_and(|t| (before >= t) != (n >= t));
        // Some(trigger): an Update naming it (None: naming none).
        let update = if credit.armed.contains(&count) {
            (!no_update_on_50).then_some(Some(count))
        } else if credit.armed.contains(&threshold_type) {
            (crossed || every_on_51).then_some(Some(threshold_type))
        } else {
            update_unarmed.then_some(None)
        };
        if let Some(trigger) = update {
            let request = credit.update(n, trigger, now);
            self.actions.push_back(Action::Credit {
                session: conf,
                function: ChargedFunction::ControllingFunction,
                request,
            });
        }
    }

    /// Answers an INVITE to the session with 200 OK and the session URI;
    /// the caller is a participant from now on.
    fn accept_leg(&mut self, conf: u64, key: &TxKey, request: &rsip::Request) -> usize {
        let local_tag = new_tag();
        let call_id = message::call_id(request).unwrap_or_default();
        let participant = Participant {
            uri: message::from_uri(request).unwrap_or_default(),
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: message::from_tag(request),
            remote_target: contact_of(&request.headers),
            cseq: 1,
            presence: Presence::Joined,
            invite: None,
        };
        let c = self.conferences.get_mut(&conf).expect("conference exists");
        c.participants.push(participant);
        let index = c.participants.len() - 1;
        let user = c.user.clone();
        self.legs.insert(call_id, (conf, index));
        self.respond(key, request, 200, Some((&local_tag, &user)));
        index
    }

    fn invite_member(&mut self, conf: u64, member: &str) {
        let call_id = new_call_id(&self.local.ip().to_string());
        let local_tag = new_tag();
        let (via, branch) = self.via();
        let user = self.conferences[&conf].user.clone();
        let text = format!(
            "INVITE {member} SIP/2.0\r\n\
             {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={local_tag}\r\n\
             To: <{member}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: {contact}\r\n\
             Content-Length: 0\r\n\r\n",
            domain = self.config.domain,
            contact = self.contact(&user),
        );
        let Ok(invite) = message::parse_request(text) else {
            tracing::warn!(%member, "focus: cannot build an INVITE to this member");
            return;
        };
        let c = self.conferences.get_mut(&conf).expect("conference exists");
        c.participants.push(Participant {
            uri: member.to_string(),
            call_id: call_id.clone(),
            local_tag,
            remote_tag: None,
            remote_target: None,
            cseq: 2,
            presence: Presence::Invited,
            invite: Some(invite.clone()),
        });
        let index = c.participants.len() - 1;
        self.legs.insert(call_id, (conf, index));
        let key = client_key(branch, "INVITE");
        self.clients
            .insert(key.clone(), (conf, Purpose::Invite(index)));
        self.actions.push_back(Action::Request {
            key,
            request: invite,
            target: Target {
                transport: self.transport,
                addr: self.config.route_users_to,
            },
        });
        if self.config.has(Deviation::InterimBeforeJoinAnswer) {
            let n = self.attached(conf) + 1;
            self.charge(conf, RecordType::Interim, n);
        }
    }

    fn send_bye(&mut self, conf: u64, i: usize) {
        self.participant_mut(conf, i).presence = Presence::Removing;
        self.send_in_dialog(conf, i, "BYE", None, Purpose::Bye(i));
    }

    /// Sends `method` in participant `i`'s dialog, with an optional body
    /// (content type, bytes), as a client transaction for `purpose`.
    fn send_in_dialog(
        &mut self,
        conf: u64,
        i: usize,
        method: &str,
        body: Option<(String, Vec<u8>)>,
        purpose: Purpose,
    ) {
        let (via, branch) = self.via();
        let user = self.conferences[&conf].user.clone();
        let domain = self.config.domain.clone();
        let contact = self.contact(&user);
        let p = &mut self
            .conferences
            .get_mut(&conf)
            .expect("conference exists")
            .participants[i];
        let cseq = p.cseq;
        p.cseq += 1;
        let target = p.remote_target.clone().unwrap_or_else(|| p.uri.clone());
        let remote_tag = p
            .remote_tag
            .as_deref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let contact_line = if method == "INVITE" {
            format!("Contact: {contact}\r\n")
        } else {
            String::new()
        };
        let (content_type, bytes) = match &body {
            Some((ct, b)) => (format!("Content-Type: {ct}\r\n"), b.as_slice()),
            None => (String::new(), &[][..]),
        };
        let text = format!(
            "{method} {target} SIP/2.0\r\n\
             {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={local}\r\n\
             To: <{uri}>{remote_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             {contact_line}{content_type}\
             Content-Length: {len}\r\n\r\n{body}",
            local = p.local_tag,
            uri = p.uri,
            call_id = p.call_id,
            len = bytes.len(),
            body = String::from_utf8_lossy(bytes),
        );
        let Ok(request) = message::parse_request(text) else {
            tracing::warn!(%target, %method, "focus: cannot build a request to this participant");
            return;
        };
        let key = client_key(branch, method);
        self.clients.insert(key.clone(), (conf, purpose));
        self.actions.push_back(Action::Request {
            key,
            request,
            target: Target {
                transport: self.transport,
                addr: self.config.route_users_to,
            },
        });
    }

    fn reinvite(&mut self, conf: u64, i: usize, key: &TxKey, request: &rsip::Request) {
        let (local_tag, user) = {
            let c = &self.conferences[&conf];
            (c.participants[i].local_tag.clone(), c.user.clone())
        };
        if let Some(target) = contact_of(&request.headers) {
            self.participant_mut(conf, i).remote_target = Some(target);
        }
        if self.conferences[&conf].modification.is_some() {
            // RFC 3261 14.2: one re-INVITE at a time in a session.
            return self.respond(key, request, 491, None);
        }
        if self.config.has(Deviation::InterimBeforeReinviteAnswer) {
            // Charged on receipt, before anyone accepted it.
            let n = self.attached(conf);
            self.charge(conf, RecordType::Interim, n);
        }
        let others: Vec<usize> = self.conferences[&conf]
            .participants
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != i && p.presence == Presence::Joined)
            .map(|(j, _)| j)
            .collect();
        if others.is_empty() {
            self.respond(key, request, 200, Some((&local_tag, &user)));
            let n = self.attached(conf);
            self.charge(conf, RecordType::Interim, n);
            return;
        }
        // Forwarded to every other participant; answered and charged once
        // they have all answered.
        let body = (!request.body.is_empty()).then(|| {
            let ct = request
                .headers
                .iter()
                .find_map(|h| match h {
                    rsip::Header::ContentType(c) => Some(c.value().to_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| "application/sdp".into());
            (ct, request.body.clone())
        });
        self.conferences
            .get_mut(&conf)
            .expect("conference exists")
            .modification = Some(Modification {
            from: i,
            key: key.clone(),
            request: request.clone(),
            waiting: others.len(),
            refused: None,
        });
        for j in others {
            self.send_in_dialog(conf, j, "INVITE", body.clone(), Purpose::Reinvite(j));
        }
    }

    /// A recipient answered (or never answered) the forwarded re-INVITE;
    /// once all have, the sender gets its answer, and an accepted
    /// modification is charged.
    fn reinvite_answered(
        &mut self,
        conf: u64,
        j: usize,
        status: u16,
        response: Option<&rsip::Response>,
    ) {
        if (200..300).contains(&status)
            && let Some(response) = response
        {
            self.ack_2xx(conf, j, response);
        }
        let Some(m) = self
            .conferences
            .get_mut(&conf)
            .and_then(|c| c.modification.as_mut())
        else {
            return;
        };
        m.waiting = m.waiting.saturating_sub(1);
        if status >= 300 {
            m.refused.get_or_insert(status);
        }
        if m.waiting > 0 {
            return;
        }
        let Some(m) = self
            .conferences
            .get_mut(&conf)
            .and_then(|c| c.modification.take())
        else {
            return;
        };
        let (local_tag, user) = {
            let c = &self.conferences[&conf];
            (c.participants[m.from].local_tag.clone(), c.user.clone())
        };
        match m.refused {
            None => {
                self.respond(&m.key, &m.request, 200, Some((&local_tag, &user)));
                let uncharged = self.config.has(Deviation::NoInterimOnReinvite)
                    || self.config.has(Deviation::InterimBeforeReinviteAnswer);
                if !uncharged {
                    let n = self.attached(conf);
                    self.charge(conf, RecordType::Interim, n);
                }
            }
            Some(status) => {
                self.respond(&m.key, &m.request, status, Some((&local_tag, &user)));
                if self.config.has(Deviation::InterimOnRejectedReinvite) {
                    let n = self.attached(conf);
                    self.charge(conf, RecordType::Interim, n);
                }
            }
        }
    }

    /// The ACK to a participant's 2xx to a re-INVITE the focus sent.
    fn ack_2xx(&mut self, conf: u64, j: usize, response: &rsip::Response) {
        let Ok((cseq, _)) = message::cseq(response) else {
            return;
        };
        let (via, _) = self.via();
        let user = self.conferences[&conf].user.clone();
        let domain = self.config.domain.clone();
        let p = &self.conferences[&conf].participants[j];
        let target = p.remote_target.clone().unwrap_or_else(|| p.uri.clone());
        let remote_tag = p
            .remote_tag
            .as_deref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let text = format!(
            "ACK {target} SIP/2.0\r\n\
             {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={local}\r\n\
             To: <{uri}>{remote_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            local = p.local_tag,
            uri = p.uri,
            call_id = p.call_id,
        );
        if let Ok(ack) = message::parse_request(text) {
            self.actions.push_back(Action::Stateless {
                message: ack.into(),
                target: Target {
                    transport: self.transport,
                    addr: self.config.route_users_to,
                },
            });
        }
    }

    fn bye(&mut self, conf: u64, i: usize, key: &TxKey, request: &rsip::Request) {
        self.respond(key, request, 200, None);
        if self.participant_mut(conf, i).presence == Presence::Joined {
            self.participant_mut(conf, i).presence = Presence::Gone;
            if self.config.has(Deviation::StopWhileParticipantsRemain) {
                // Charged as if the first departure ended the session.
                self.charge(conf, RecordType::Stop, self.attached(conf));
            }
            self.participant_changed(conf, i);
        }
    }

    /// The chair adds a participant (the focus invites them) or removes one
    /// (`method=BYE` in Refer-To: the focus sends BYE).
    fn refer(&mut self, conf: u64, _i: usize, key: &TxKey, request: &rsip::Request) {
        let Some(refer_to) = refer_to(&request.headers) else {
            return self.respond(key, request, 400, None);
        };
        let uri = uri_text(&refer_to);
        // RFC 4579 5.5: `method=BYE` as a URI parameter (`;method=BYE`);
        // some clients put it among the URI headers (`?method=BYE`).
        let (address, headers) = uri.split_once('?').unwrap_or((uri, ""));
        let mut parts = address.split(';');
        let target = parts.next().unwrap_or(address).to_string();
        let remove = parts
            .chain(headers.split('&'))
            .any(|p| p.trim().eq_ignore_ascii_case("method=BYE"));
        // Not `StatusCode::Accepted`: rsip 0.4 gives that the code 201.
        let status = rsip::StatusCode::Other(202, "Accepted".into());
        let mut accepted = response_to(request, status, None);
        accepted
            .headers
            .push(rsip::Header::Other("Refer-Sub".into(), "false".into()));
        self.actions.push_back(Action::Respond {
            key: key.clone(),
            response: accepted,
        });
        if remove {
            let found = self.conferences[&conf]
                .participants
                .iter()
                .position(|p| p.presence == Presence::Joined && same_user(&p.uri, &target));
            if let Some(j) = found {
                self.send_bye(conf, j);
            }
        } else {
            self.invite_member(conf, &target);
        }
    }

    fn response(&mut self, key: TxKey, response: rsip::Response) {
        let code = response.status_code.code();
        if code < 200 {
            return;
        }
        let Some((conf, purpose)) = self.clients.remove(&key) else {
            return;
        };
        if !self.conferences.contains_key(&conf) {
            return;
        }
        match purpose {
            Purpose::Invite(i) if (200..300).contains(&code) => {
                let ack = {
                    let p = self.participant_mut(conf, i);
                    p.remote_tag = message::to_tag(&response);
                    p.remote_target = contact_of(&response.headers);
                    p.presence = Presence::Joined;
                    p.invite.as_ref().map(|invite| ack_for(invite, &response))
                };
                if let Some(ack) = ack {
                    self.actions.push_back(Action::Stateless {
                        message: ack.into(),
                        target: Target {
                            transport: self.transport,
                            addr: self.config.route_users_to,
                        },
                    });
                }
                if self.config.has(Deviation::InterimBeforeJoinAnswer) {
                    self.credit_changed(conf);
                } else {
                    self.participant_changed(conf, i);
                }
            }
            // A join that failed changes nothing.
            Purpose::Invite(i) => {
                self.participant_mut(conf, i).presence = Presence::Gone;
                if !self.end_if_empty(conf) && self.config.has(Deviation::InterimOnFailedJoin) {
                    let n = self.attached(conf);
                    self.charge(conf, RecordType::Interim, n);
                }
            }
            Purpose::Reinvite(j) => self.reinvite_answered(conf, j, code, Some(&response)),
            // 200, 481 or any final answer: the participant is gone.
            Purpose::Bye(i) => {
                self.participant_mut(conf, i).presence = Presence::Gone;
                if self.config.has(Deviation::NoInterimOnServerRemoval) {
                    if !self.end_if_empty(conf) {
                        self.credit_changed(conf);
                    }
                } else {
                    self.participant_changed(conf, i);
                }
            }
        }
    }

    fn timeout(&mut self, key: TxKey) {
        let Some((conf, purpose)) = self.clients.remove(&key) else {
            return;
        };
        if !self.conferences.contains_key(&conf) {
            return;
        }
        match purpose {
            Purpose::Invite(i) => {
                self.participant_mut(conf, i).presence = Presence::Gone;
                self.end_if_empty(conf);
            }
            Purpose::Bye(i) => {
                self.participant_mut(conf, i).presence = Presence::Gone;
                self.participant_changed(conf, i);
            }
            // Never answered: the modification failed (408).
            Purpose::Reinvite(j) => self.reinvite_answered(conf, j, 408, None),
        }
    }

    /// A join or a departure completed: an Interim with the new count, or
    /// the Stop when nobody is left.
    fn participant_changed(&mut self, conf: u64, _i: usize) {
        if self.end_if_empty(conf) {
            return;
        }
        let n = self.attached(conf);
        let started = self.conferences[&conf]
            .charging
            .as_ref()
            .is_some_and(|c| c.started);
        if !started && self.config.has(Deviation::GroupStartOnFirstJoin) {
            self.charge(conf, RecordType::Start, n);
        } else {
            self.charge(conf, RecordType::Interim, n);
        }
        self.credit_changed(conf);
    }

    /// Ends the session when no participant is attached or about to be.
    fn end_if_empty(&mut self, conf: u64) -> bool {
        let c = &self.conferences[&conf];
        let anyone = c.participants.iter().any(|p| p.presence != Presence::Gone);
        if anyone {
            return false;
        }
        self.charge(conf, RecordType::Stop, 0);
        let now = self.clock;
        let termination = self
            .conferences
            .get_mut(&conf)
            .and_then(|c| c.credit.as_mut())
            .zip(now)
            .and_then(|(credit, now)| credit.termination(0, now));
        if let Some(request) = termination {
            self.actions.push_back(Action::Credit {
                session: conf,
                function: ChargedFunction::ControllingFunction,
                request,
            });
        }
        if let Some(c) = self.conferences.remove(&conf) {
            for p in &c.participants {
                self.legs.remove(&p.call_id);
            }
        }
        self.clients.retain(|_, (id, _)| *id != conf);
        self.actions.push_back(Action::Forget { session: conf });
        true
    }

    /// Parties currently attached: joined, or joined and not yet out.
    fn attached(&self, conf: u64) -> u32 {
        self.conferences[&conf]
            .participants
            .iter()
            .filter(|p| matches!(p.presence, Presence::Joined | Presence::Removing))
            .count() as u32
    }

    fn participant_mut(&mut self, conf: u64, i: usize) -> &mut Participant {
        &mut self
            .conferences
            .get_mut(&conf)
            .expect("conference exists")
            .participants[i]
    }

    fn charge(&mut self, conf: u64, kind: RecordType, participants: u32) {
        let c = self.conferences.get_mut(&conf).expect("conference exists");
        let Some(charging) = c.charging.as_mut() else {
            return;
        };
        let due = match kind {
            RecordType::Start => !charging.started,
            RecordType::Interim | RecordType::Stop => charging.started && !charging.stopped,
            RecordType::Event => false,
        };
        if !due {
            return;
        }
        match kind {
            RecordType::Start => charging.started = true,
            RecordType::Stop => charging.stopped = true,
            _ => {}
        }
        let participants =
            if kind == RecordType::Interim && self.config.has(Deviation::StaleParticipantCount) {
                charging.last_count
            } else {
                participants
            };
        charging.last_count = participants;
        let request = charging.request(kind, participants);
        self.actions.push_back(Action::Charge {
            session: conf,
            function: ChargedFunction::ControllingFunction,
            request,
        });
    }

    fn respond(
        &mut self,
        key: &TxKey,
        request: &rsip::Request,
        status: u16,
        focus: Option<(&str, &str)>,
    ) {
        let tag = focus.map(|(tag, _)| tag);
        let mut response = response_to(request, rsip::StatusCode::from(status), tag);
        if let Some((_, user)) = focus {
            response
                .headers
                .push(rsip::Header::Contact(rsip::headers::Contact::new(
                    self.contact(user),
                )));
        }
        self.actions.push_back(Action::Respond {
            key: key.clone(),
            response,
        });
    }

    /// The session's URI as a focus Contact (RFC 4579 `isfocus`).
    fn contact(&self, user: &str) -> String {
        let t = match self.transport {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        };
        format!("<sip:{user}@{};transport={t}>;isfocus", self.local)
    }

    fn via(&self) -> (String, String) {
        let branch = new_branch();
        (
            format!(
                "Via: SIP/2.0/{} {};branch={branch};rport",
                self.transport.via_token(),
                self.local
            ),
            branch,
        )
    }
}

fn client_key(branch: String, method: &str) -> TxKey {
    TxKey {
        branch,
        method: method.into(),
        sent_by: String::new(),
        role: Role::Client,
    }
}

fn contact_of(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Contact(c) => Some(uri_text(c.value()).to_string()),
        _ => None,
    })
}

/// Refer-To (compact `r`), whether rsip typed it or not.
fn refer_to(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| {
        let text = h.to_string();
        let (name, value) = text.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("Refer-To") || name.eq_ignore_ascii_case("r"))
            .then(|| value.trim().to_string())
    })
}

fn same_user(a: &str, b: &str) -> bool {
    message::uri_user(a).is_some() && message::uri_user(a) == message::uri_user(b)
}

/// The ACK to a 2xx for the focus's own INVITE: a new transaction, to the
/// participant's Contact, with the To tag the 2xx gave.
fn ack_for(invite: &rsip::Request, response: &rsip::Response) -> rsip::Request {
    let mut ack = invite.clone();
    ack.method = rsip::Method::Ack;
    if let Some(target) = contact_of(&response.headers)
        && let Ok(uri) = rsip::Uri::try_from(target.as_str())
    {
        ack.uri = uri;
    }
    let mut headers = rsip::Headers::default();
    for h in invite.headers.iter() {
        match h {
            rsip::Header::To(_) => {
                if let Some(to) = response.headers.iter().find_map(|r| match r {
                    rsip::Header::To(t) => Some(t.clone()),
                    _ => None,
                }) {
                    headers.push(rsip::Header::To(to));
                }
            }
            rsip::Header::CSeq(c) => {
                let n = c.value().split_whitespace().next().unwrap_or("1");
                headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new(format!(
                    "{n} ACK"
                ))));
            }
            rsip::Header::Via(v) => {
                let fresh = format!("z9hG4bK{}", &new_branch()[7..]);
                let text = v.value();
                let replaced = match text.split_once("branch=") {
                    Some((before, after)) => {
                        let rest = after.split_once(';').map(|(_, r)| r);
                        match rest {
                            Some(r) => format!("{before}branch={fresh};{r}"),
                            None => format!("{before}branch={fresh}"),
                        }
                    }
                    None => text.to_string(),
                };
                headers.push(rsip::Header::Via(rsip::headers::Via::new(replaced)));
            }
            other => headers.push(other.clone()),
        }
    }
    ack.headers = headers;
    ack.body = Vec::new();
    ack
}

/// The recipients of an ad-hoc group INVITE: the `entry uri`s of its
/// `application/resource-lists+xml` body part (RFC 5366, RFC 4826), the
/// body being multipart or the list alone. Quotes of either kind.
pub fn recipient_list(request: &rsip::Request) -> Vec<String> {
    let body = String::from_utf8_lossy(&request.body);
    let Some(start) = body.find("<resource-lists") else {
        return Vec::new();
    };
    let end = body[start..]
        .find("</resource-lists>")
        .map(|e| start + e)
        .unwrap_or(body.len());
    let list = &body[start..end];
    let mut out = Vec::new();
    let mut rest = list;
    while let Some(at) = rest.find("<entry") {
        rest = &rest[at + "<entry".len()..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        if let Some(pos) = tag.find("uri=") {
            let value = &tag[pos + 4..];
            let quote = value.chars().next().unwrap_or('"');
            if quote == '"' || quote == '\'' {
                let inner = &value[1..];
                if let Some(close) = inner.find(quote) {
                    out.push(xml_unescape(&inner[..close]));
                }
            }
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FOCUS: &str = "127.0.0.1:5060";
    const HARNESS: &str = "127.0.0.1:5070";

    fn core() -> FocusCore {
        FocusCore::new(
            FocusConfig {
                domain: "test.invalid".into(),
                factory_user: "conf-factory".into(),
                groups: HashMap::from([(
                    "friends".to_string(),
                    vec!["sip:bob@test.invalid".to_string()],
                )]),
                route_users_to: HARNESS.parse().unwrap(),
                deviations: Vec::new(),
                online: None,
                charging: Some(FocusCharging {
                    origin_host: "cf.sut".into(),
                    service_context_id: "32260@3gpp.org".into(),
                }),
            },
            FOCUS.parse().unwrap(),
            TransportKind::Udp,
        )
    }

    fn server_key(request: &rsip::Request) -> TxKey {
        let via = crate::sip::transaction::top_via(&request.headers).unwrap();
        TxKey {
            branch: via.branch.unwrap(),
            method: request.method.to_string(),
            sent_by: via.sent_by,
            role: Role::Server,
        }
    }

    fn incoming(request: rsip::Request) -> TxEvent {
        let key = (request.method != rsip::Method::Ack).then(|| server_key(&request));
        TxEvent::Request {
            key,
            request,
            source: Target::udp(HARNESS.parse().unwrap()),
        }
    }

    const LIST: &str = "<?xml version=\"1.0\"?>\r\n\
        <resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\">\r\n\
        <list>\r\n\
        <entry uri=\"sip:bob@test.invalid\"/>\r\n\
        <entry uri='sip:carol@test.invalid'/>\r\n\
        </list>\r\n\
        </resource-lists>\r\n";

    fn group_invite(to: &str, body: &str) -> rsip::Request {
        let multipart = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\
             --b1\r\nContent-Type: application/resource-lists+xml\r\n\
             Content-Disposition: recipient-list\r\n\r\n{body}--b1--\r\n"
        );
        message::parse_request(format!(
            "INVITE sip:{to}@test.invalid SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch=z9hG4bKgrp\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@test.invalid>;tag=a1\r\n\
             To: <sip:{to}@test.invalid>\r\n\
             Call-ID: group@test\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{HARNESS}>\r\n\
             Require: recipient-list-invite\r\n\
             Content-Type: multipart/mixed;boundary=b1\r\n\
             Content-Length: {}\r\n\r\n{multipart}",
            multipart.len()
        ))
        .unwrap()
    }

    fn drain(core: &mut FocusCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn charges(actions: &[Action]) -> Vec<(RecordType, u32, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Charge { request, .. } => Some((
                    request.kind,
                    request.record_number,
                    request.participants.unwrap(),
                )),
                _ => None,
            })
            .collect()
    }

    fn invites(actions: &[Action]) -> Vec<(TxKey, rsip::Request)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { key, request, .. } if request.method == rsip::Method::Invite => {
                    Some((key.clone(), request.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn answer(request: &rsip::Request, status: u16, tag: &str) -> rsip::Response {
        let mut r = response_to(request, rsip::StatusCode::from(status), Some(tag));
        r.headers
            .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:{tag}@{HARNESS}>"
            ))));
        r
    }

    fn response(key: &TxKey, response: rsip::Response) -> TxEvent {
        TxEvent::Response {
            key: key.clone(),
            response,
            retransmission: false,
            source: Target::udp(HARNESS.parse().unwrap()),
        }
    }

    /// From the focus's 200 OK to alice: her in-dialog request.
    fn in_dialog(method: &str, ok: &rsip::Response, branch: &str, extra: &str) -> rsip::Request {
        let to = ok
            .headers
            .iter()
            .find_map(|h| match h {
                rsip::Header::To(t) => Some(t.value().to_string()),
                _ => None,
            })
            .unwrap();
        message::parse_request(format!(
            "{method} sip:conf-1@{FOCUS} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@test.invalid>;tag=a1\r\n\
             To: {to}\r\n\
             Call-ID: group@test\r\n\
             CSeq: 2 {method}\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        ))
        .unwrap()
    }

    fn ok_to_originator(actions: &[Action]) -> rsip::Response {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Respond { response, .. } if response.status_code.code() == 200 => {
                    Some(response.clone())
                }
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn the_recipient_list_is_read_from_a_multipart_body_with_either_quote() {
        let invite = group_invite("conf-factory", LIST);
        assert_eq!(
            recipient_list(&invite),
            ["sip:bob@test.invalid", "sip:carol@test.invalid"]
        );
    }

    #[test]
    fn an_ad_hoc_group_starts_with_the_invited_count_and_each_join_is_an_interim() {
        let mut core = core();
        let now = Instant::now();
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), now);
        let actions = drain(&mut core);
        let ok = ok_to_originator(&actions);
        let contact = ok
            .headers
            .iter()
            .find_map(|h| match h {
                rsip::Header::Contact(c) => Some(c.value().to_string()),
                _ => None,
            })
            .unwrap();
        assert!(contact.contains(";isfocus"), "{contact}");
        // Start after the 200 OK to the originator, counting alice, bob, carol.
        let ok_at = actions
            .iter()
            .position(|a| matches!(a, Action::Respond { response, .. } if response.status_code.code() == 200))
            .unwrap();
        let start_at = actions
            .iter()
            .position(|a| matches!(a, Action::Charge { .. }))
            .unwrap();
        assert!(ok_at < start_at);
        assert_eq!(charges(&actions), [(RecordType::Start, 0, 3)]);
        let sent = invites(&actions);
        assert_eq!(sent.len(), 2);

        // bob answers: an Interim with two attached, after an ACK.
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), now);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Stateless { message: rsip::SipMessage::Request(r), .. } if r.method == rsip::Method::Ack)
        );
        assert_eq!(charges(&actions), [(RecordType::Interim, 1, 2)]);

        // carol rejects: no Interim.
        core.handle_sip(response(&sent[1].0, answer(&sent[1].1, 486, "c1")), now);
        assert!(charges(&drain(&mut core)).is_empty());
    }

    #[test]
    fn a_participant_leaving_is_an_interim_and_the_last_one_stops() {
        let mut core = core();
        let now = Instant::now();
        core.handle_sip(incoming(group_invite("friends", "")), now);
        let actions = drain(&mut core);
        assert_eq!(charges(&actions), [(RecordType::Start, 0, 2)]);
        let ok = ok_to_originator(&actions);
        let (key, invite) = invites(&actions).remove(0);
        core.handle_sip(response(&key, answer(&invite, 200, "b1")), now);
        assert_eq!(charges(&drain(&mut core)), [(RecordType::Interim, 1, 2)]);

        // alice leaves: bob remains, an Interim with one.
        core.handle_sip(incoming(in_dialog("BYE", &ok, "z9hG4bKbye", "")), now);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 200)
        );
        assert_eq!(charges(&actions), [(RecordType::Interim, 2, 1)]);

        // The operator ends it: BYE to bob, Stop only after his answer.
        assert!(core.terminate("group@test", now));
        let actions = drain(&mut core);
        assert!(charges(&actions).is_empty());
        let (bye_key, bye) = actions
            .iter()
            .find_map(|a| match a {
                Action::Request { key, request, .. } if request.method == rsip::Method::Bye => {
                    Some((key.clone(), request.clone()))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(bye.uri.to_string(), format!("sip:b1@{HARNESS}"));
        core.handle_sip(
            response(&bye_key, response_to(&bye, rsip::StatusCode::OK, None)),
            now,
        );
        let actions = drain(&mut core);
        assert_eq!(charges(&actions), [(RecordType::Stop, 3, 0)]);
        assert!(matches!(actions.last(), Some(Action::Forget { .. })));
    }

    #[test]
    fn the_chair_adds_and_removes_by_refer() {
        let mut core = core();
        let now = Instant::now();
        core.handle_sip(incoming(group_invite("friends", "")), now);
        let actions = drain(&mut core);
        let ok = ok_to_originator(&actions);
        let (key, invite) = invites(&actions).remove(0);
        core.handle_sip(response(&key, answer(&invite, 200, "b1")), now);
        drain(&mut core);

        let add = in_dialog(
            "REFER",
            &ok,
            "z9hG4bKref1",
            "Refer-To: <sip:dave@test.invalid>\r\n",
        );
        core.handle_sip(incoming(add), now);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 202),
            "{actions:?}"
        );
        assert!(
            charges(&actions).is_empty(),
            "no Interim before dave answers"
        );
        let (key, invite) = invites(&actions).remove(0);
        assert_eq!(invite.uri.to_string(), "sip:dave@test.invalid");
        core.handle_sip(response(&key, answer(&invite, 200, "d1")), now);
        assert_eq!(charges(&drain(&mut core)), [(RecordType::Interim, 2, 3)]);

        let remove = in_dialog(
            "REFER",
            &ok,
            "z9hG4bKref2",
            "Refer-To: <sip:bob@test.invalid?method=BYE>\r\n",
        );
        core.handle_sip(incoming(remove), now);
        let actions = drain(&mut core);
        assert!(
            charges(&actions).is_empty(),
            "no Interim before bob's 200 OK"
        );
        let (bye_key, bye) = actions
            .iter()
            .find_map(|a| match a {
                Action::Request { key, request, .. } if request.method == rsip::Method::Bye => {
                    Some((key.clone(), request.clone()))
                }
                _ => None,
            })
            .unwrap();
        core.handle_sip(
            response(&bye_key, response_to(&bye, rsip::StatusCode::OK, None)),
            now,
        );
        assert_eq!(charges(&drain(&mut core)), [(RecordType::Interim, 3, 2)]);
    }

    #[test]
    fn a_dial_in_is_an_interim_once_answered_and_a_reinvite_is_one_too() {
        let mut core = core();
        let now = Instant::now();
        core.handle_sip(incoming(group_invite("friends", "")), now);
        let actions = drain(&mut core);
        let ok = ok_to_originator(&actions);
        let dial_in = message::parse_request(format!(
            "INVITE sip:conf-1@test.invalid SIP/2.0\r\n\
             Via: SIP/2.0/UDP {HARNESS};branch=z9hG4bKdial\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:erin@test.invalid>;tag=e1\r\n\
             To: <sip:conf-1@test.invalid>\r\n\
             Call-ID: dial@test\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:erin@{HARNESS}>\r\n\
             Content-Length: 0\r\n\r\n"
        ))
        .unwrap();
        assert!(core.wants(&dial_in));
        core.handle_sip(incoming(dial_in), now);
        let actions = drain(&mut core);
        let ok_at = actions
            .iter()
            .position(|a| matches!(a, Action::Respond { response, .. } if response.status_code.code() == 200))
            .unwrap();
        let charge_at = actions
            .iter()
            .position(|a| matches!(a, Action::Charge { .. }))
            .unwrap();
        assert!(ok_at < charge_at, "the Interim follows the answer");
        assert_eq!(charges(&actions), [(RecordType::Interim, 1, 2)]);

        // The chair's re-INVITE is forwarded to erin; charged once she answers.
        core.handle_sip(incoming(in_dialog("INVITE", &ok, "z9hG4bKre", "")), now);
        let actions = drain(&mut core);
        assert!(
            charges(&actions).is_empty(),
            "nothing before the recipients answer"
        );
        let forwarded = invites(&actions);
        assert_eq!(forwarded.len(), 1, "forwarded to the one other participant");
        let (key, reinvite) = &forwarded[0];
        assert!(message::to_tag(reinvite).is_some(), "in erin's dialog");
        core.handle_sip(response(key, answer(reinvite, 200, "e1")), now);
        let actions = drain(&mut core);
        let acked = actions.iter().any(|a| {
            matches!(a, Action::Stateless { message: rsip::SipMessage::Request(r), .. } if r.method == rsip::Method::Ack)
        });
        assert!(acked, "erin's 2xx is ACKed");
        let ok_at = actions
            .iter()
            .position(|a| matches!(a, Action::Respond { response, .. } if response.status_code.code() == 200))
            .unwrap();
        let charge_at = actions
            .iter()
            .position(|a| matches!(a, Action::Charge { .. }))
            .unwrap();
        assert!(ok_at < charge_at);
        assert_eq!(charges(&actions), [(RecordType::Interim, 2, 2)]);

        // A re-INVITE erin refuses is answered with her status, uncharged.
        core.handle_sip(incoming(in_dialog("INVITE", &ok, "z9hG4bKre2", "")), now);
        let actions = drain(&mut core);
        let (key, reinvite) = invites(&actions).remove(0);
        core.handle_sip(response(&key, answer(&reinvite, 488, "e1")), now);
        let actions = drain(&mut core);
        assert!(charges(&actions).is_empty());
        assert!(actions.iter().any(
            |a| matches!(a, Action::Respond { response, .. } if response.status_code.code() == 488)
        ));
    }

    #[test]
    fn unknown_groups_and_empty_lists_are_refused_without_charging() {
        let mut core = core();
        let now = Instant::now();
        let to_nobody = group_invite("strangers", LIST);
        assert!(!core.wants(&to_nobody));
        core.handle_sip(incoming(to_nobody), now);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 404)
        );
        core.handle_sip(incoming(group_invite("conf-factory", "")), now);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 400)
        );
        assert!(charges(&actions).is_empty());
    }

    #[test]
    fn a_bye_that_times_out_still_counts_the_participant_gone() {
        let mut core = core();
        let now = Instant::now();
        core.handle_sip(incoming(group_invite("friends", "")), now);
        let actions = drain(&mut core);
        let (key, invite) = invites(&actions).remove(0);
        core.handle_sip(response(&key, answer(&invite, 200, "b1")), now);
        drain(&mut core);
        core.terminate("group@test", now);
        let byes: Vec<TxKey> = drain(&mut core)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(byes.len(), 2);
        core.handle_sip(
            TxEvent::Timeout {
                key: byes[0].clone(),
            },
            now,
        );
        assert_eq!(charges(&drain(&mut core)), [(RecordType::Interim, 2, 1)]);
        core.handle_sip(
            TxEvent::Timeout {
                key: byes[1].clone(),
            },
            now,
        );
        assert_eq!(charges(&drain(&mut core)), [(RecordType::Stop, 3, 0)]);
    }

    // ------------------------------------------------------------ online

    fn online_core(threshold: Option<u32>, deviations: Vec<Deviation>) -> FocusCore {
        let mut c = core();
        c.config.online = Some(FocusOnline {
            origin_host: "cf.sut".into(),
            service_context_id: "32260@3gpp.org".into(),
            requested_time: 60,
            refusal_status: 402,
            failure_handling: FailureHandlingMode::Terminate,
            participant_threshold: threshold,
        });
        c.config.deviations = deviations;
        c
    }

    fn credits(actions: &[Action]) -> Vec<Ch2Request> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Credit { request, .. } => Some(request.clone()),
                _ => None,
            })
            .collect()
    }

    fn granted(req: &Ch2Request, arm: Option<Vec<TriggerType>>) -> Result<Ch2Response, String> {
        let mut a = Ch2Response::for_request(req, 2001);
        if let Some(types) = arm {
            a.triggers = crate::charging::ch2::TriggerArming::arm(types);
        }
        Ok(a)
    }

    const CF: ChargedFunction = ChargedFunction::ControllingFunction;

    /// An ad-hoc session (alice with bob and carol) whose Initial was
    /// granted at `t0`, arming `arm`: the invitations, in order.
    fn online_started(
        core: &mut FocusCore,
        t0: Instant,
        arm: Option<Vec<TriggerType>>,
    ) -> Vec<(TxKey, rsip::Request)> {
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        let actions = drain(core);
        let initial = credits(&actions).remove(0);
        core.handle_charging_answer(1, CF, granted(&initial, arm), t0);
        invites(&drain(core))
    }

    #[test]
    fn online_the_initial_counts_the_invited_and_the_invitations_wait_for_its_answer() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        let actions = drain(&mut core);
        let sent = credits(&actions);
        assert_eq!(sent.len(), 1);
        let initial = &sent[0];
        assert_eq!(
            (initial.kind, initial.request_number, initial.participants),
            (RequestType::Initial, 0, Some(3))
        );
        assert_eq!(initial.role, Some(ChargedRole::ControllingFunction));
        assert_eq!(
            initial.served_user.as_deref(),
            Some("sip:alice@test.invalid")
        );
        assert_eq!(initial.requested_units(), Some(ServiceUnits::seconds(60)));
        assert!(
            invites(&actions).is_empty(),
            "nobody invited before the answer"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Respond { .. })),
            "the chair waits too"
        );
        assert!(charges(&actions).is_empty(), "no CH-1 Start yet");

        core.handle_charging_answer(
            1,
            CF,
            granted(initial, None),
            t0 + Duration::from_millis(300),
        );
        let actions = drain(&mut core);
        let ok_at = actions
            .iter()
            .position(|a| matches!(a, Action::Respond { response, .. } if response.status_code.code() == 200))
            .expect("the chair's 200 OK");
        let first_invite = actions
            .iter()
            .position(|a| matches!(a, Action::Request { request, .. } if request.method == rsip::Method::Invite))
            .unwrap();
        assert!(ok_at < first_invite);
        assert_eq!(invites(&actions).len(), 2);
        assert_eq!(charges(&actions), [(RecordType::Start, 0, 3)]);
    }

    #[test]
    fn online_a_refused_initial_answers_the_chair_invites_nobody_and_terminates_nothing() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        let initial = credits(&drain(&mut core)).remove(0);
        core.handle_charging_answer(1, CF, Ok(Ch2Response::for_request(&initial, 4012)), t0);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 402),
            "{actions:?}"
        );
        assert!(invites(&actions).is_empty());
        assert!(credits(&actions).is_empty(), "no Termination");
        assert!(charges(&actions).is_empty());
        assert!(matches!(
            actions.last(),
            Some(Action::Forget { session: 1 })
        ));
        // A late answer for the gone conference is nobody's.
        core.handle_charging_answer(1, CF, Err("late".into()), t0);
        assert!(drain(&mut core).is_empty());
    }

    #[test]
    fn online_no_answer_within_tx_rejects_the_chair_with_504() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        drain(&mut core);
        core.handle_charging_answer(1, CF, Err("no answer within Tx".into()), t0);
        let actions = drain(&mut core);
        assert!(
            matches!(&actions[0], Action::Respond { response, .. } if response.status_code.code() == 504)
        );
        assert!(invites(&actions).is_empty());
    }

    #[test]
    fn online_participants_trigger_armed_updates_on_every_join_and_departure() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        let sent = online_started(
            &mut core,
            t0,
            Some(vec![TriggerType::ChangeInParticipantsNmb]),
        );
        let t1 = t0 + Duration::from_secs(5);
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t1);
        let updates = credits(&drain(&mut core));
        assert_eq!(updates.len(), 1);
        let u = &updates[0];
        assert_eq!(
            (u.kind, u.request_number, u.participants),
            (RequestType::Update, 1, Some(2))
        );
        assert_eq!(u.triggers(), [TriggerType::ChangeInParticipantsNmb]);
        assert_eq!(
            u.reporting_reason(),
            Some(ReportingReason::RatingConditionChange)
        );
        assert_eq!(u.used_units(), Some(ServiceUnits::seconds(5)));
        assert_eq!(u.requested_units(), Some(ServiceUnits::seconds(60)));
        core.handle_charging_answer(1, CF, granted(u, None), t1);
        drain(&mut core);
        // carol refuses: nothing changed, nothing charged.
        core.handle_sip(response(&sent[1].0, answer(&sent[1].1, 486, "c1")), t1);
        assert!(credits(&drain(&mut core)).is_empty());
    }

    #[test]
    fn online_threshold_trigger_updates_only_when_the_count_meets_or_crosses_it() {
        let mut core = online_core(Some(3), vec![]);
        let t0 = Instant::now();
        let sent = online_started(
            &mut core,
            t0,
            Some(vec![TriggerType::ChangeInThresholdOfParticipantsNmb]),
        );
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        assert!(credits(&drain(&mut core)).is_empty(), "2 < 3: no Update");
        core.handle_sip(response(&sent[1].0, answer(&sent[1].1, 200, "c1")), t0);
        let updates = credits(&drain(&mut core));
        assert_eq!(updates.len(), 1, "3 meets the threshold");
        assert_eq!(updates[0].participants, Some(3));
        assert_eq!(
            updates[0].triggers(),
            [TriggerType::ChangeInThresholdOfParticipantsNmb]
        );
    }

    #[test]
    fn online_nothing_armed_no_update_and_a_later_answer_may_arm_or_disarm() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        let sent = online_started(&mut core, t0, None);
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        let actions = drain(&mut core);
        assert!(credits(&actions).is_empty(), "nothing armed: no Update");
        assert_eq!(
            charges(&actions),
            [(RecordType::Interim, 1, 2)],
            "CH-1 as before"
        );
        // Armed by the Initial's answer, disarmed by the Update's.
        let mut core = online_core(None, vec![]);
        let sent = online_started(
            &mut core,
            t0,
            Some(vec![TriggerType::ChangeInParticipantsNmb]),
        );
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        let update = credits(&drain(&mut core)).remove(0);
        // The Update's answer disarms all (an empty Trigger).
        core.handle_charging_answer(1, CF, granted(&update, Some(vec![])), t0);
        core.handle_sip(response(&sent[1].0, answer(&sent[1].1, 200, "c1")), t0);
        assert!(credits(&drain(&mut core)).is_empty(), "disarmed: no Update");
    }

    #[test]
    fn online_the_end_of_the_group_session_terminates_with_the_time_used() {
        let mut core = online_core(None, vec![]);
        let t0 = Instant::now();
        let sent = online_started(&mut core, t0, None);
        core.handle_sip(response(&sent[1].0, answer(&sent[1].1, 486, "c1")), t0);
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        drain(&mut core);
        let t1 = t0 + Duration::from_secs(7);
        assert!(core.terminate("group@test", t1));
        let byes: Vec<(TxKey, rsip::Request)> = drain(&mut core)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { key, request, .. } => Some((key, request)),
                _ => None,
            })
            .collect();
        for (key, bye) in &byes {
            core.handle_sip(
                response(key, response_to(bye, rsip::StatusCode::OK, None)),
                t1,
            );
        }
        let actions = drain(&mut core);
        let terminations = credits(&actions);
        assert_eq!(terminations.len(), 1);
        let t = &terminations[0];
        assert_eq!((t.kind, t.request_number), (RequestType::Termination, 1));
        assert_eq!(t.used_units(), Some(ServiceUnits::seconds(7)));
        let term_at = actions
            .iter()
            .position(|a| matches!(a, Action::Credit { .. }))
            .unwrap();
        let forget_at = actions
            .iter()
            .position(|a| matches!(a, Action::Forget { .. }))
            .unwrap();
        assert!(term_at < forget_at);
    }

    #[test]
    fn online_deviations_break_one_rule_each() {
        let t0 = Instant::now();
        // Invitations with the Initial, before its answer.
        let mut core = online_core(None, vec![Deviation::InvitationsBeforeCreditAnswer]);
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        let actions = drain(&mut core);
        assert_eq!(credits(&actions).len(), 1);
        assert_eq!(invites(&actions).len(), 2);
        // Invitations although refused.
        let mut core = online_core(None, vec![Deviation::GroupInvitationsAfterRefusal]);
        core.handle_sip(incoming(group_invite("conf-factory", LIST)), t0);
        let initial = credits(&drain(&mut core)).remove(0);
        core.handle_charging_answer(1, CF, Ok(Ch2Response::for_request(&initial, 4012)), t0);
        assert_eq!(invites(&drain(&mut core)).len(), 2);
        // 50 armed, no Update.
        let mut core = online_core(None, vec![Deviation::NoUpdateWhenParticipantsTriggerArmed]);
        let sent = online_started(
            &mut core,
            t0,
            Some(vec![TriggerType::ChangeInParticipantsNmb]),
        );
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        assert!(credits(&drain(&mut core)).is_empty());
        // Nothing armed, an Update anyway.
        let mut core = online_core(None, vec![Deviation::UpdateOnJoinWhenNothingArmed]);
        let sent = online_started(&mut core, t0, None);
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        assert_eq!(credits(&drain(&mut core)).len(), 1);
        // 51 armed, an Update below the threshold.
        let mut core = online_core(
            Some(3),
            vec![Deviation::UpdateOnEveryJoinWhenOnlyThresholdArmed],
        );
        let sent = online_started(
            &mut core,
            t0,
            Some(vec![TriggerType::ChangeInThresholdOfParticipantsNmb]),
        );
        core.handle_sip(response(&sent[0].0, answer(&sent[0].1, 200, "b1")), t0);
        assert_eq!(credits(&drain(&mut core)).len(), 1);
    }
}
