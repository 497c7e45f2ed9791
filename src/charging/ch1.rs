//! CH-1 requests and responses as the flows of `spec/flows.md` speak of
//! them: StartRequest, InterimRequest, StopRequest, EventRequest, each
//! answered by a CH-1 Response.

use std::fmt;
use std::time::SystemTime;

/// Accounting-Record-Type; the CH-1 request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// EVENT_RECORD: CH-1 EventRequest.
    Event = 1,
    /// START_RECORD: CH-1 StartRequest.
    Start = 2,
    /// INTERIM_RECORD: CH-1 InterimRequest.
    Interim = 3,
    /// STOP_RECORD: CH-1 StopRequest.
    Stop = 4,
}

impl RecordType {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => RecordType::Event,
            2 => RecordType::Start,
            3 => RecordType::Interim,
            4 => RecordType::Stop,
            _ => return None,
        })
    }
    /// The wire value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// The CH-1 name, e.g. "StartRequest".
    pub fn ch1_name(self) -> &'static str {
        match self {
            RecordType::Event => "EventRequest",
            RecordType::Start => "StartRequest",
            RecordType::Interim => "InterimRequest",
            RecordType::Stop => "StopRequest",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::Event => "EVENT",
            RecordType::Start => "START",
            RecordType::Interim => "INTERIM",
            RecordType::Stop => "STOP",
        })
    }
}

/// Which charged function sent the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargedRole {
    /// Participating Function of the originating user: Role-Of-Node 0,
    /// PoC-Server-Role 0.
    OriginatingPf,
    /// Participating Function of a terminating user: Role-Of-Node 1,
    /// PoC-Server-Role 0.
    TerminatingPf,
    /// Controlling Function: PoC-Server-Role 1.
    ControllingFunction,
}

/// Where a request named its served user (TS 32.299 has several places).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServedUserSource {
    /// Subscription-Id at the top level of the request.
    SubscriptionId,
    /// Subscription-Id inside Service-Information (Rf, TS 32.299).
    ServiceInformationSubscriptionId,
    /// IMS-Information's Calling-Party-Address (an originating function).
    CallingPartyAddress,
    /// IMS-Information's Called-Party-Address (a terminating function).
    CalledPartyAddress,
    /// User-Name.
    UserName,
}

impl fmt::Display for ServedUserSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SubscriptionId => "Subscription-Id",
            Self::ServiceInformationSubscriptionId => "Service-Information/Subscription-Id",
            Self::CallingPartyAddress => "IMS-Information/Calling-Party-Address",
            Self::CalledPartyAddress => "IMS-Information/Called-Party-Address",
            Self::UserName => "User-Name",
        })
    }
}

/// One CH-1 request (any kind).
#[derive(Clone, Debug, PartialEq)]
pub struct Ch1Request {
    /// Start, Interim, Stop or Event.
    pub kind: RecordType,
    /// Session-Id: one per charging session, Start to Stop.
    pub session_id: String,
    /// Accounting-Record-Number: 0 on Start, +1 after.
    pub record_number: u32,
    /// Origin-Host as received. On encode the [`LocalIdentity`]'s is used.
    ///
    /// [`LocalIdentity`]: crate::diameter::LocalIdentity
    pub origin_host: String,
    /// The served user (a SIP URI): Subscription-Id, else the calling or
    /// called party by role, else User-Name.
    pub served_user: Option<String>,
    /// Where a received request named its served user (None when built here).
    pub served_user_source: Option<ServedUserSource>,
    /// Which charged function sent it.
    pub role: Option<ChargedRole>,
    /// SIP Call-ID (User-Session-Id).
    pub call_id: Option<String>,
    /// Calling-Party-Address.
    pub calling_party: Option<String>,
    /// Called-Party-Address.
    pub called_party: Option<String>,
    /// Service-Context-Id.
    pub service_context_id: Option<String>,
    /// Number-Of-Participants.
    pub participants: Option<u32>,
    /// PoC-Session-Type: 0 one-to-one, 1 chat group, 2 pre-arranged group,
    /// 3 ad-hoc group (`spec/binding.md`); None: one-to-one when a role is sent.
    pub session_type: Option<u32>,
    /// Event-Timestamp.
    pub event_timestamp: Option<SystemTime>,
}

impl Ch1Request {
    /// A request with only the three fields every CH-1 request needs.
    pub fn new(kind: RecordType, session_id: impl Into<String>, record_number: u32) -> Self {
        Ch1Request {
            kind,
            session_id: session_id.into(),
            record_number,
            origin_host: String::new(),
            served_user: None,
            served_user_source: None,
            role: None,
            call_id: None,
            calling_party: None,
            called_party: None,
            service_context_id: None,
            participants: None,
            session_type: None,
            event_timestamp: None,
        }
    }
    /// StartRequest (record number 0).
    pub fn start(session_id: impl Into<String>) -> Self {
        Self::new(RecordType::Start, session_id, 0)
    }
    /// InterimRequest.
    pub fn interim(session_id: impl Into<String>, record_number: u32) -> Self {
        Self::new(RecordType::Interim, session_id, record_number)
    }
    /// StopRequest.
    pub fn stop(session_id: impl Into<String>, record_number: u32) -> Self {
        Self::new(RecordType::Stop, session_id, record_number)
    }
    /// EventRequest (record number 0).
    pub fn event(session_id: impl Into<String>) -> Self {
        Self::new(RecordType::Event, session_id, 0)
    }
    /// Sets the served user.
    pub fn served_user(mut self, user: impl Into<String>) -> Self {
        self.served_user = Some(user.into());
        self
    }
    /// Sets the role.
    pub fn role(mut self, role: ChargedRole) -> Self {
        self.role = Some(role);
        self
    }
    /// Sets the participant count.
    pub fn participants(mut self, n: u32) -> Self {
        self.participants = Some(n);
        self
    }
}

impl fmt::Display for Ch1Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} {}",
            self.kind.ch1_name(),
            self.record_number,
            self.session_id
        )?;
        if let Some(u) = &self.served_user {
            write!(f, " user={u}")?;
        }
        if let Some(r) = &self.role {
            write!(f, " role={r:?}")?;
        }
        if let Some(n) = self.participants {
            write!(f, " participants={n}")?;
        }
        Ok(())
    }
}

/// A CH-1 Response (an ACA, read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ch1Response {
    /// Session-Id ("" if the answer had none).
    pub session_id: String,
    /// Result-Code.
    pub result_code: u32,
    /// Accounting-Record-Type, if present and known.
    pub record_type: Option<RecordType>,
    /// Accounting-Record-Number, if present.
    pub record_number: Option<u32>,
}

impl Ch1Response {
    /// True for 2xxx.
    pub fn is_success(&self) -> bool {
        (2000..3000).contains(&self.result_code)
    }
}
