//! What one charged function of a session reports, as a state machine: no I/O.
//!
//! The server tells it what happened in SIP terms (answered, modified,
//! ended); it answers with the CH-1 requests to send, in order. The named
//! deviations that concern numbering and identity live here, in one place.

use std::time::SystemTime;

use super::config::SutConfig;
use super::deviation::Deviation;
use crate::charging::ch1::{Ch1Request, ChargedRole, RecordType};
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
