//! What one charged function of a session reports, as a state machine: no I/O.
//!
//! The server tells it what happened in SIP terms (answered, modified,
//! ended); it answers with the CH-1 requests to send, in order. The named
//! deviations that concern numbering and identity live here, in one place.

use std::time::{Instant, SystemTime};

use super::config::SutConfig;
use super::deviation::Deviation;
use crate::charging::ch1::{Ch1Request, ChargedRole, RecordType};
use crate::charging::ch2::{
    Ch2Request, Ch2Response, FinalUnitAction, ReportingReason, RequestType, ServiceUnits,
};
use crate::profile::ChargedFunction;

/// The charging session of one charged function (originating PF, terminating PF).
#[derive(Debug)]
pub struct FunctionCharging {
    pub function: ChargedFunction,
    session_id: String,
    origin_host: String,
    service_context_id: String,
    served_user: String,
    calling_party: String,
    called_party: String,
    call_id: String,
    next_record: u32,
    /// Name the served user in the StartRequest only.
    identity_in_start_only: bool,
    started: bool,
    stopped: bool,
    /// InterimRequests sent so far.
    interims: u32,
    deviations: Vec<Deviation>,
}

/// The originator's side (A, who sent the initial INVITE) or the
/// recipient's (B) of a 1-1 session, in either shape of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Which charged function serves the user of a side.
pub(crate) fn serves(function: ChargedFunction, side: Side) -> bool {
    matches!(
        (function, side),
        (ChargedFunction::OriginatingPf, Side::A) | (ChargedFunction::TerminatingPf, Side::B)
    )
}

/// Identities of a 1-1 session, as the server saw them on the originating leg.
#[derive(Debug, Clone)]
pub struct SessionParties {
    pub calling_party: String,
    pub called_party: String,
    pub call_id: String,
}

impl FunctionCharging {
    pub fn new(
        function: ChargedFunction,
        config: &SutConfig,
        parties: &SessionParties,
        unique: u64,
    ) -> Option<Self> {
        let charging = config.charging.as_ref()?;
        let served_user = match function {
            ChargedFunction::OriginatingPf => parties.calling_party.clone(),
            ChargedFunction::TerminatingPf => parties.called_party.clone(),
            // 1-1 sessions have no controlling function.
            ChargedFunction::ControllingFunction => return None,
        };
        let role = match function {
            ChargedFunction::OriginatingPf => "orig",
            ChargedFunction::TerminatingPf => "term",
            ChargedFunction::ControllingFunction => "cf",
        };
        Some(Self {
            function,
            session_id: format!("{};{};{unique};{role}", charging.origin_host, boot_id()),
            origin_host: charging.origin_host.clone(),
            service_context_id: charging.service_context_id.clone(),
            served_user,
            calling_party: parties.calling_party.clone(),
            called_party: parties.called_party.clone(),
            call_id: parties.call_id.clone(),
            next_record: u32::from(config.deviations.contains(&Deviation::RecordNumberFromOne)),
            identity_in_start_only: charging.served_user_in_start_only,
            started: false,
            stopped: false,
            interims: 0,
            deviations: config.deviations.clone(),
        })
    }

    fn has(&self, d: Deviation) -> bool {
        self.deviations.contains(&d)
    }

    fn request(&mut self, kind: RecordType) -> Ch1Request {
        let record_number = self.next_record;
        self.next_record += if self.has(Deviation::RecordNumberSkips) {
            2
        } else {
            1
        };
        let mut session_id = self.session_id.clone();
        if kind == RecordType::Stop && self.has(Deviation::NewSessionIdOnStop) {
            session_id.push_str(";stop");
        }
        let named = kind == RecordType::Start || !self.identity_in_start_only;
        Ch1Request {
            kind,
            session_id,
            record_number,
            origin_host: self.origin_host.clone(),
            served_user: named.then(|| self.served_user.clone()),
            served_user_source: None,
            role: Some(match self.function {
                ChargedFunction::OriginatingPf => ChargedRole::OriginatingPf,
                ChargedFunction::TerminatingPf => ChargedRole::TerminatingPf,
                ChargedFunction::ControllingFunction => ChargedRole::ControllingFunction,
            }),
            call_id: Some(self.call_id.clone()),
            calling_party: named.then(|| self.calling_party.clone()),
            called_party: named.then(|| self.called_party.clone()),
            service_context_id: Some(self.service_context_id.clone()),
            participants: Some(2),
            session_type: Some(0),
            event_timestamp: Some(SystemTime::now()),
        }
    }

    /// The session is established (or, deviating, about to be).
    pub fn start(&mut self) -> Vec<Ch1Request> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let mut out = vec![self.request(RecordType::Start)];
        if self.has(Deviation::DuplicateStart) {
            let mut again = out[0].clone();
            again.record_number = self.next_record;
            self.next_record += 1;
            out.push(again);
        }
        if self.has(Deviation::InterimWithStart) {
            self.interims += 1;
            out.push(self.request(RecordType::Interim));
        }
        if self.has(Deviation::StopWithStart) {
            self.stopped = true;
            out.push(self.request(RecordType::Stop));
        }
        out
    }

    /// The session attempt failed: an EventRequest records it (IMS practice),
    /// as a charging session of its own.
    pub fn failed_attempt(&mut self) -> Vec<Ch1Request> {
        let mut event = self.request(RecordType::Event);
        event.session_id.push_str(";event");
        event.record_number = 0;
        vec![event]
    }

    /// The session was modified.
    pub fn interim(&mut self) -> Vec<Ch1Request> {
        if !self.started || self.stopped {
            return Vec::new();
        }
        self.interims += 1;
        let mut out = vec![self.request(RecordType::Interim)];
        if self.has(Deviation::InterimTwicePerReinvite) {
            out.push(self.request(RecordType::Interim));
        }
        out
    }

    /// The session ended.
    pub fn stop(&mut self) -> Vec<Ch1Request> {
        if !self.started || self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        if self.interims > 0 && self.has(Deviation::NoStopAfterInterim) {
            return Vec::new();
        }
        let mut out = vec![self.request(RecordType::Stop)];
        if self.has(Deviation::DuplicateStop) {
            out.push(self.request(RecordType::Stop));
        }
        if self.has(Deviation::InterimAfterStop) {
            out.push(self.request(RecordType::Interim));
        }
        out
    }

    pub fn started(&self) -> bool {
        self.started
    }
}

/// Where one online charging session (one charged function) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreditState {
    /// Nothing sent yet, or the InitialRequest waits for its answer.
    New,
    /// The InitialRequest was granted: the charging session is open.
    Open,
    /// Credit control no longer applies (failure handling CONTINUE, or a
    /// refusal ignored by deviation): the session goes on unchecked.
    Uncontrolled,
    /// Terminated, refused, or given up: nothing more is sent.
    Closed,
}

/// What an answer (or its absence) means to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreditOutcome {
    Granted,
    Refused,
    NoAnswer,
}

/// The online charging session of one charged function (6.3.3): builds
/// its CH-2 requests, numbers them, keeps the granted quota and the
/// requests waiting for an answer. Time is only the `now` passed in.
#[derive(Debug)]
pub(crate) struct CreditControl {
    pub(crate) function: ChargedFunction,
    session_id: String,
    origin_host: String,
    service_context_id: String,
    served_user: String,
    calling_party: String,
    called_party: String,
    call_id: String,
    requested_time: u32,
    tx: std::time::Duration,
    next_number: u32,
    deviations: Vec<Deviation>,
    pub(crate) state: CreditState,
    /// Requests sent and not answered, oldest first, with their Tx deadline.
    pending: std::collections::VecDeque<(RequestType, Instant)>,
    /// Usage not reported yet runs from here (None: the session is not
    /// established, nothing is used).
    usage_from: Option<Instant>,
    /// The last grant's CC-Time, counted from `usage_from`.
    granted: Option<u32>,
    /// The last grant was the final one (Final-Unit-Action TERMINATE).
    pub(crate) final_units: bool,
    /// The last grant's Validity-Time ends here.
    validity_until: Option<Instant>,
}

impl CreditControl {
    pub(crate) fn new(
        function: ChargedFunction,
        config: &SutConfig,
        parties: &SessionParties,
        unique: u64,
    ) -> Option<Self> {
        let charging = config.charging.as_ref()?;
        let online = config.online.as_ref()?;
        let (served_user, role) = match function {
            ChargedFunction::OriginatingPf => (parties.calling_party.clone(), "orig"),
            ChargedFunction::TerminatingPf => (parties.called_party.clone(), "term"),
            ChargedFunction::ControllingFunction => return None,
        };
        Some(Self {
            function,
            session_id: format!("{};{};{unique};{role};ro", charging.origin_host, boot_id()),
            origin_host: charging.origin_host.clone(),
            service_context_id: charging.service_context_id.clone(),
            served_user,
            calling_party: parties.calling_party.clone(),
            called_party: parties.called_party.clone(),
            call_id: parties.call_id.clone(),
            requested_time: online.requested_time,
            tx: online.tx,
            next_number: 0,
            deviations: config.deviations.clone(),
            state: CreditState::New,
            pending: Default::default(),
            usage_from: None,
            granted: None,
            final_units: false,
            validity_until: None,
        })
    }

    fn has(&self, d: Deviation) -> bool {
        self.deviations.contains(&d)
    }

    /// Whether requests still go out for this function.
    pub(crate) fn controlled(&self) -> bool {
        matches!(self.state, CreditState::New | CreditState::Open)
    }

    pub(crate) fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn request(&mut self, kind: RequestType, now: Instant) -> Ch2Request {
        let number = self.next_number;
        self.next_number += if self.has(Deviation::CreditRequestNumberSkips) {
            2
        } else {
            1
        };
        self.pending.push_back((kind, now + self.tx));
        let mut r = Ch2Request::new(kind, self.session_id.clone(), number)
            .served_user(self.served_user.clone())
            .role(match self.function {
                ChargedFunction::OriginatingPf => ChargedRole::OriginatingPf,
                ChargedFunction::TerminatingPf => ChargedRole::TerminatingPf,
                ChargedFunction::ControllingFunction => ChargedRole::ControllingFunction,
            });
        r.origin_host = self.origin_host.clone();
        r.service_context_id = Some(self.service_context_id.clone());
        r.call_id = Some(self.call_id.clone());
        r.calling_party = Some(self.calling_party.clone());
        r.called_party = Some(self.called_party.clone());
        r.event_timestamp = Some(SystemTime::now());
        r
    }

    /// Seconds used since the last report, rounded to the nearest second;
    /// usage starts again from `now`.
    fn take_used(&mut self, now: Instant) -> u32 {
        if self.has(Deviation::UsedUnitsFromRequested) {
            self.usage_from = self.usage_from.map(|_| now);
            return self.requested_time;
        }
        let used = self.usage_from.map_or(0, |from| {
            let ms = now.saturating_duration_since(from).as_millis();
            u32::try_from((ms + 500) / 1000).unwrap_or(u32::MAX)
        });
        self.usage_from = self.usage_from.map(|_| now);
        used
    }

    /// The InitialRequest: reserve units.
    pub(crate) fn initial(&mut self, now: Instant) -> Ch2Request {
        let r = self.request(RequestType::Initial, now);
        if self.has(Deviation::NoRequestedUnitsInInitial) {
            r
        } else {
            r.request_units(ServiceUnits::seconds(self.requested_time))
        }
    }

    /// An UpdateRequest: debit what was used since the last report,
    /// reserve anew. The quota in hand is spent until the answer comes.
    pub(crate) fn update(&mut self, now: Instant, reason: ReportingReason) -> Ch2Request {
        let used = self.take_used(now);
        self.granted = None;
        self.validity_until = None;
        let kind = if self.has(Deviation::SecondInitialOnReinvite)
            && reason == ReportingReason::RatingConditionChange
        {
            RequestType::Initial
        } else {
            RequestType::Update
        };
        self.request(kind, now)
            .request_units(ServiceUnits::seconds(self.requested_time))
            .report_used(ServiceUnits::seconds(used), reason)
    }

    /// The TerminationRequest, once, for an open charging session.
    pub(crate) fn termination(&mut self, now: Instant) -> Option<Ch2Request> {
        if self.state != CreditState::Open {
            return None;
        }
        self.state = CreditState::Closed;
        let used = self.take_used(now);
        let r = self.request(RequestType::Termination, now);
        Some(if self.has(Deviation::NoUsedUnitsInTermination) {
            r
        } else {
            r.report_used(ServiceUnits::seconds(used), ReportingReason::Final)
        })
    }

    /// The session is established: usage starts counting.
    pub(crate) fn start_usage(&mut self, now: Instant) {
        if self.usage_from.is_none() {
            self.usage_from = Some(now);
        }
    }

    /// No more requests for this function: the session goes on without it
    /// (`uncontrolled`) or the charging session is given up.
    pub(crate) fn stop_control(&mut self, uncontrolled: bool) {
        self.state = if uncontrolled {
            CreditState::Uncontrolled
        } else {
            CreditState::Closed
        };
        self.pending.clear();
        self.granted = None;
        self.validity_until = None;
    }

    /// The answer to the oldest pending request; None if nothing was
    /// pending (a late answer after Tx ran out).
    pub(crate) fn answered(
        &mut self,
        answer: Result<Ch2Response, String>,
        now: Instant,
    ) -> Option<(RequestType, CreditOutcome)> {
        let (kind, _) = self.pending.pop_front()?;
        let answer = match answer {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(session = %self.session_id, %why, "reference server: no CH-2 answer");
                return Some((kind, CreditOutcome::NoAnswer));
            }
        };
        if kind == RequestType::Termination || !self.controlled() {
            return Some((kind, CreditOutcome::Granted));
        }
        if !answer.is_full_success() {
            return Some((kind, CreditOutcome::Refused));
        }
        if kind == RequestType::Initial && self.state == CreditState::New {
            self.state = CreditState::Open;
        }
        self.granted = answer.granted_units().and_then(|u| u.time);
        self.final_units = answer.final_unit_action() == Some(FinalUnitAction::Terminate);
        self.validity_until = answer
            .credits
            .iter()
            .find_map(|c| c.validity_time)
            .map(|v| now + std::time::Duration::from_secs(u64::from(v)));
        Some((kind, CreditOutcome::Granted))
    }

    /// The oldest pending request's Tx ran out at `now`.
    pub(crate) fn tx_expired(&self, now: Instant) -> bool {
        self.pending.front().is_some_and(|(_, at)| *at <= now)
    }

    /// When the granted time runs out (only while usage runs and nothing
    /// is pending).
    pub(crate) fn quota_deadline(&self) -> Option<Instant> {
        if self.is_pending() || self.state != CreditState::Open {
            return None;
        }
        let from = self.usage_from?;
        let granted = self.granted?;
        Some(from + std::time::Duration::from_secs(u64::from(granted)))
    }

    /// Deviations: forget the grant's limits, as a server that never asks
    /// again when its quota is spent (`keep_quota` false) or its validity
    /// time runs out (`keep_validity` false) would.
    pub(crate) fn forget_limits(&mut self, keep_quota: bool, keep_validity: bool) {
        if !keep_quota && !self.final_units {
            self.granted = None;
        }
        if !keep_validity {
            self.validity_until = None;
        }
    }

    /// When the grant's Validity-Time runs out (same conditions).
    pub(crate) fn validity_deadline(&self) -> Option<Instant> {
        if self.is_pending() || self.state != CreditState::Open || self.usage_from.is_none() {
            return None;
        }
        self.validity_until
    }

    /// When the oldest pending request's Tx runs out.
    pub(crate) fn tx_deadline(&self) -> Option<Instant> {
        self.pending.front().map(|(_, at)| *at)
    }

    /// The earliest of this function's deadlines.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let tx = self.pending.front().map(|(_, at)| *at);
        [tx, self.quota_deadline(), self.validity_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Names the online application (4, Ro) in an ACR's Acct-Application-Id:
/// the `wrong_application_id` deviation.
pub fn name_wrong_application(acr: &mut crate::diameter::Message) {
    use crate::diameter::{Avp, app, code};
    for a in acr.avps.iter_mut() {
        if a.code == code::ACCT_APPLICATION_ID {
            *a = Avp::unsigned32(code::ACCT_APPLICATION_ID, app::CREDIT_CONTROL_RO).mandatory(true);
        }
    }
}

/// Distinguishes this server run in Session-Ids (RFC 6733 §8.8 suggests a
/// boot-time value in the middle part).
fn boot_id() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Transport;
    use crate::sut::config::{ChargingConfig, SipConfig};

    fn config(deviations: Vec<Deviation>) -> SutConfig {
        SutConfig {
            sip: SipConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                transport: Transport::Udp,
                t1: None,
            },
            shape: Default::default(),
            domain: "d".into(),
            route_users_to: "127.0.0.1:1".parse().unwrap(),
            charging: Some(ChargingConfig {
                server: "127.0.0.1:2".parse().unwrap(),
                origin_host: "h".into(),
                origin_realm: "r".into(),
                destination_realm: "dr".into(),
                functions: vec![ChargedFunction::OriginatingPf],
                service_context_id: "s".into(),
                served_user_in_start_only: false,
                reconnect_max: None,
                connect_after: None,
            }),
            inactivity_timer: None,
            admin: None,
            deviations,
            conference: None,
            online: None,
        }
    }

    fn parties() -> SessionParties {
        SessionParties {
            calling_party: "sip:a@d".into(),
            called_party: "sip:b@d".into(),
            call_id: "c".into(),
        }
    }

    fn kinds(reqs: &[Ch1Request]) -> Vec<(RecordType, u32)> {
        reqs.iter().map(|r| (r.kind, r.record_number)).collect()
    }

    #[test]
    fn a_correct_function_numbers_start_interim_stop_from_zero() {
        let mut f = FunctionCharging::new(
            ChargedFunction::OriginatingPf,
            &config(vec![]),
            &parties(),
            1,
        )
        .unwrap();
        assert!(f.interim().is_empty(), "no Interim before Start");
        let mut all = f.start();
        all.extend(f.interim());
        all.extend(f.stop());
        all.extend(f.stop());
        all.extend(f.interim());
        assert_eq!(
            kinds(&all),
            vec![
                (RecordType::Start, 0),
                (RecordType::Interim, 1),
                (RecordType::Stop, 2)
            ]
        );
        assert!(all.iter().all(|r| r.session_id == all[0].session_id));
        assert_eq!(all[0].served_user.as_deref(), Some("sip:a@d"));
    }

    #[test]
    fn start_only_identity_names_the_served_user_in_the_start_alone() {
        let mut config = config(vec![]);
        if let Some(c) = config.charging.as_mut() {
            c.served_user_in_start_only = true;
        }
        let mut f =
            FunctionCharging::new(ChargedFunction::OriginatingPf, &config, &parties(), 3).unwrap();
        let start = f.start();
        let stop = f.stop();
        assert_eq!(start[0].served_user.as_deref(), Some("sip:a@d"));
        assert_eq!(stop[0].served_user, None);
        assert_eq!(stop[0].calling_party, None);
        assert_eq!(stop[0].session_id, start[0].session_id);
    }

    #[test]
    fn deviations_break_numbering_and_identity() {
        let mut f = FunctionCharging::new(
            ChargedFunction::TerminatingPf,
            &config(vec![
                Deviation::RecordNumberSkips,
                Deviation::NewSessionIdOnStop,
            ]),
            &parties(),
            2,
        )
        .unwrap();
        let start = f.start();
        let stop = f.stop();
        assert_eq!(stop[0].record_number, 2);
        assert_ne!(stop[0].session_id, start[0].session_id);
        assert_eq!(start[0].served_user.as_deref(), Some("sip:b@d"));
    }
}
