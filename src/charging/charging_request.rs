//! One view of a charging request over both interfaces, for what does not
//! care whether it came on CH-1 (Rf) or CH-2 (Ro): correlation by session
//! and served user, ordering against SIP, the every-flow rules, reports.

use std::fmt;
use std::time::SystemTime;

use crate::diameter::{app, command};

use super::ch1::{Ch1Request, ChargedRole, RecordType, ServedUserSource};
use super::ch2::{Ch2Request, ReportingReason, RequestType, ServiceUnits, TriggerType};

/// Which charging interface a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interface {
    /// CH-1, offline, Diameter Rf.
    Ch1,
    /// CH-2, online, Diameter Ro.
    Ch2,
}

impl Interface {
    /// The interface of a request by its command code: ACR (271) CH-1, CCR
    /// (272) CH-2.
    pub fn of_command(command_code: u32) -> Option<Interface> {
        match command_code {
            command::ACCOUNTING => Some(Interface::Ch1),
            command::CREDIT_CONTROL => Some(Interface::Ch2),
            _ => None,
        }
    }
    /// Its Diameter application id: Rf 3, Ro 4.
    pub fn application_id(self) -> u32 {
        match self {
            Interface::Ch1 => app::ACCOUNTING_RF,
            Interface::Ch2 => app::CREDIT_CONTROL_RO,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interface::Ch1 => "CH-1",
            Interface::Ch2 => "CH-2",
        })
    }
}

/// The request kind common to both interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// CH-1 StartRequest / CH-2 InitialRequest.
    Start,
    /// CH-1 InterimRequest / CH-2 UpdateRequest.
    Interim,
    /// CH-1 StopRequest / CH-2 TerminationRequest.
    Stop,
    /// EventRequest on either.
    Event,
}

impl From<RecordType> for RequestKind {
    fn from(t: RecordType) -> Self {
        match t {
            RecordType::Start => RequestKind::Start,
            RecordType::Interim => RequestKind::Interim,
            RecordType::Stop => RequestKind::Stop,
            RecordType::Event => RequestKind::Event,
        }
    }
}

impl From<RequestType> for RequestKind {
    fn from(t: RequestType) -> Self {
        match t {
            RequestType::Initial => RequestKind::Start,
            RequestType::Update => RequestKind::Interim,
            RequestType::Termination => RequestKind::Stop,
            RequestType::Event => RequestKind::Event,
        }
    }
}

impl RequestKind {
    /// The name the flows use on this interface, e.g. "UpdateRequest".
    pub fn name_on(self, interface: Interface) -> &'static str {
        match (interface, self) {
            (Interface::Ch1, RequestKind::Start) => "StartRequest",
            (Interface::Ch1, RequestKind::Interim) => "InterimRequest",
            (Interface::Ch1, RequestKind::Stop) => "StopRequest",
            (Interface::Ch2, RequestKind::Start) => "InitialRequest",
            (Interface::Ch2, RequestKind::Interim) => "UpdateRequest",
            (Interface::Ch2, RequestKind::Stop) => "TerminationRequest",
            (_, RequestKind::Event) => "EventRequest",
        }
    }
}

/// A charging request of either interface, as correlation, ordering, the
/// rules and reports need it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChargingRequest {
    /// CH-1 or CH-2.
    pub interface: Interface,
    /// Session-Id.
    pub session_id: String,
    /// Accounting-Record-Number (CH-1) or CC-Request-Number (CH-2).
    pub sequence_number: u32,
    /// Start/Initial, Interim/Update, Stop/Termination, Event.
    pub kind: RequestKind,
    /// The served user.
    pub served_user: Option<String>,
    /// Where the request named its served user.
    pub served_user_source: Option<ServedUserSource>,
    /// Which charged function sent it.
    pub role: Option<ChargedRole>,
    /// Number-Of-Participants.
    pub participants: Option<u32>,
    /// SIP Call-ID (User-Session-Id).
    pub call_id: Option<String>,
    /// Event-Timestamp.
    pub event_timestamp: Option<SystemTime>,
    /// Units asked for (CH-2 only): None when no Requested-Service-Unit.
    pub units_requested: Option<ServiceUnits>,
    /// Units reported used (CH-2 only): None when no Used-Service-Unit.
    pub units_used: Option<ServiceUnits>,
    /// Reporting-Reason (CH-2 only).
    pub reporting_reason: Option<ReportingReason>,
    /// Trigger-Types named as the cause of the request (CH-2 only).
    pub triggers: Vec<TriggerType>,
}

impl From<Ch1Request> for ChargingRequest {
    fn from(r: Ch1Request) -> Self {
        ChargingRequest {
            interface: Interface::Ch1,
            session_id: r.session_id,
            sequence_number: r.record_number,
            kind: r.kind.into(),
            served_user: r.served_user,
            served_user_source: r.served_user_source,
            role: r.role,
            participants: r.participants,
            call_id: r.call_id,
            event_timestamp: r.event_timestamp,
            units_requested: None,
            units_used: None,
            reporting_reason: None,
            triggers: Vec::new(),
        }
    }
}

impl From<Ch2Request> for ChargingRequest {
    fn from(r: Ch2Request) -> Self {
        let units_requested = r.requested_units();
        let units_used = r.used_units();
        let reporting_reason = r.reporting_reason();
        let triggers = r.triggers();
        ChargingRequest {
            interface: Interface::Ch2,
            session_id: r.session_id,
            sequence_number: r.request_number,
            kind: r.kind.into(),
            served_user: r.served_user,
            served_user_source: r.served_user_source,
            role: r.role,
            participants: r.participants,
            call_id: r.call_id,
            event_timestamp: r.event_timestamp,
            units_requested,
            units_used,
            reporting_reason,
            triggers,
        }
    }
}

impl From<&Ch1Request> for ChargingRequest {
    fn from(r: &Ch1Request) -> Self {
        r.clone().into()
    }
}

impl From<&Ch2Request> for ChargingRequest {
    fn from(r: &Ch2Request) -> Self {
        r.clone().into()
    }
}

impl ChargingRequest {
    /// The flows' name of the request, e.g. "CH-2 UpdateRequest".
    pub fn name(&self) -> String {
        format!("{} {}", self.interface, self.kind.name_on(self.interface))
    }

    /// One line for reports, e.g. `CH-2 UpdateRequest #1 sess;1
    /// user=sip:alice@x (Subscription-Id) role=ControllingFunction
    /// participants=4 requested=60s used=30s reason=RATING_CONDITION_CHANGE
    /// triggers=[50]`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} #{} {}",
            self.name(),
            self.sequence_number,
            self.session_id
        );
        if let Some(u) = &self.served_user {
            s.push_str(&format!(" user={u}"));
            if let Some(from) = self.served_user_source {
                s.push_str(&format!(" ({from})"));
            }
        }
        if let Some(r) = self.role {
            s.push_str(&format!(" role={r:?}"));
        }
        if let Some(n) = self.participants {
            s.push_str(&format!(" participants={n}"));
        }
        if let Some(u) = self.units_requested {
            s.push_str(&format!(" requested={u}"));
        }
        if let Some(u) = self.units_used {
            s.push_str(&format!(" used={u}"));
        }
        if let Some(r) = self.reporting_reason {
            s.push_str(&format!(" reason={r}"));
        }
        if !self.triggers.is_empty() {
            let t: Vec<String> = self
                .triggers
                .iter()
                .map(|t| t.as_i32().to_string())
                .collect();
            s.push_str(&format!(" triggers=[{}]", t.join(",")));
        }
        s
    }
}

impl fmt::Display for ChargingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_interfaces_meet_in_one_view() {
        let c1: ChargingRequest = Ch1Request::interim("s1", 2)
            .served_user("sip:alice@x")
            .role(ChargedRole::ControllingFunction)
            .participants(4)
            .into();
        assert_eq!(c1.kind, RequestKind::Interim);
        assert_eq!(c1.sequence_number, 2);
        assert_eq!(
            c1.describe(),
            "CH-1 InterimRequest #2 s1 user=sip:alice@x role=ControllingFunction participants=4"
        );

        let mut r2 = Ch2Request::update("s2", 1)
            .served_user("sip:bob@x")
            .participants(5)
            .request_units(ServiceUnits::seconds(60))
            .report_used(
                ServiceUnits::seconds(30),
                ReportingReason::RatingConditionChange,
            )
            .triggered_by(TriggerType::ChangeInParticipantsNmb);
        r2.served_user_source = Some(ServedUserSource::SubscriptionId);
        let c2 = ChargingRequest::from(&r2);
        assert_eq!(c2.interface, Interface::Ch2);
        assert_eq!(c2.kind, RequestKind::Interim);
        assert_eq!(c2.units_used, Some(ServiceUnits::seconds(30)));
        assert_eq!(c2.triggers, vec![TriggerType::ChangeInParticipantsNmb]);
        assert_eq!(
            c2.describe(),
            "CH-2 UpdateRequest #1 s2 user=sip:bob@x (Subscription-Id) participants=5 \
             requested=60s used=30s reason=RATING_CONDITION_CHANGE triggers=[50]"
        );
        for (t, k, n) in [
            (RequestType::Initial, RequestKind::Start, "InitialRequest"),
            (
                RequestType::Termination,
                RequestKind::Stop,
                "TerminationRequest",
            ),
            (RequestType::Event, RequestKind::Event, "EventRequest"),
        ] {
            assert_eq!(RequestKind::from(t), k);
            assert_eq!(k.name_on(Interface::Ch2), n);
        }
        assert_eq!(RequestKind::Stop.name_on(Interface::Ch1), "StopRequest");
        assert_eq!(Interface::of_command(271), Some(Interface::Ch1));
        assert_eq!(Interface::of_command(272), Some(Interface::Ch2));
        assert_eq!(Interface::of_command(257), None);
        assert_eq!(Interface::Ch2.application_id(), 4);
        assert_eq!(Interface::Ch1.application_id(), 3);
    }
}
