//! CH-2 requests and responses as the online flows of `spec/flows.md` speak
//! of them: InitialRequest, UpdateRequest, TerminationRequest, EventRequest
//! ("reserve units", "debit units"), each answered by a CH-2 Response that
//! may arm a Charging Trigger Condition.
//!
//! Independent of Diameter; [`super::ro`] maps them onto CCR/CCA.

use std::fmt;
use std::time::SystemTime;

use crate::diameter::Avp;

pub use super::ch1::{ChargedRole, ServedUserSource};

/// CC-Request-Type; the CH-2 request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestType {
    /// INITIAL_REQUEST: CH-2 InitialRequest.
    Initial = 1,
    /// UPDATE_REQUEST: CH-2 UpdateRequest.
    Update = 2,
    /// TERMINATION_REQUEST: CH-2 TerminationRequest.
    Termination = 3,
    /// EVENT_REQUEST: CH-2 EventRequest.
    Event = 4,
}

impl RequestType {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            4 => RequestType::Event,
            _ => return None,
        })
    }
    /// The wire value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
    /// The CH-2 name, e.g. "InitialRequest".
    pub fn ch2_name(self) -> &'static str {
        match self {
            RequestType::Initial => "InitialRequest",
            RequestType::Update => "UpdateRequest",
            RequestType::Termination => "TerminationRequest",
            RequestType::Event => "EventRequest",
        }
    }
    /// Every kind, in wire order.
    pub const ALL: [RequestType; 4] = [
        RequestType::Initial,
        RequestType::Update,
        RequestType::Termination,
        RequestType::Event,
    ];
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestType::Initial => "INITIAL",
            RequestType::Update => "UPDATE",
            RequestType::Termination => "TERMINATION",
            RequestType::Event => "EVENT",
        })
    }
}

/// An amount of service units (Requested-, Granted- or Used-Service-Unit).
/// All absent is a legal value: an empty Requested-Service-Unit asks the
/// server to choose the amount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceUnits {
    /// CC-Time, seconds.
    pub time: Option<u32>,
    /// CC-Service-Specific-Units.
    pub service_specific: Option<u64>,
    /// CC-Total-Octets.
    pub total_octets: Option<u64>,
    /// CC-Input-Octets.
    pub input_octets: Option<u64>,
    /// CC-Output-Octets.
    pub output_octets: Option<u64>,
}

impl ServiceUnits {
    /// Only time, in seconds.
    pub fn seconds(s: u32) -> Self {
        ServiceUnits {
            time: Some(s),
            ..Self::default()
        }
    }
    /// Only service-specific units.
    pub fn units(n: u64) -> Self {
        ServiceUnits {
            service_specific: Some(n),
            ..Self::default()
        }
    }
    /// True when no amount is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// True when no amount is above zero.
    pub fn is_zero(&self) -> bool {
        self.time.unwrap_or(0) == 0
            && [
                self.service_specific,
                self.total_octets,
                self.input_octets,
                self.output_octets,
            ]
            .iter()
            .all(|v| v.unwrap_or(0) == 0)
    }
    /// Field-wise sum (absent + absent stays absent; saturating).
    pub fn plus(&self, other: &ServiceUnits) -> ServiceUnits {
        fn add32(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            }
        }
        fn add64(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            }
        }
        ServiceUnits {
            time: add32(self.time, other.time),
            service_specific: add64(self.service_specific, other.service_specific),
            total_octets: add64(self.total_octets, other.total_octets),
            input_octets: add64(self.input_octets, other.input_octets),
            output_octets: add64(self.output_octets, other.output_octets),
        }
    }
}

impl fmt::Display for ServiceUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = self.time {
            parts.push(format!("{t}s"));
        }
        if let Some(n) = self.service_specific {
            parts.push(format!("{n} units"));
        }
        if let Some(n) = self.total_octets {
            parts.push(format!("{n} octets"));
        }
        if let Some(n) = self.input_octets {
            parts.push(format!("{n} in-octets"));
        }
        if let Some(n) = self.output_octets {
            parts.push(format!("{n} out-octets"));
        }
        if parts.is_empty() {
            f.write_str("(any)")
        } else {
            f.write_str(&parts.join("+"))
        }
    }
}

/// Reporting-Reason (3GPP TS 32.299; vendor 10415). Values not named here
/// are kept as [`ReportingReason::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportingReason {
    /// THRESHOLD (0).
    Threshold,
    /// QHT (1).
    Qht,
    /// FINAL (2).
    Final,
    /// QUOTA_EXHAUSTED (3).
    QuotaExhausted,
    /// VALIDITY_TIME (4).
    ValidityTime,
    /// OTHER_QUOTA_TYPE (5).
    OtherQuotaType,
    /// RATING_CONDITION_CHANGE (6): a Charging Trigger Condition fired.
    RatingConditionChange,
    /// FORCED_REAUTHORISATION (7).
    ForcedReauthorisation,
    /// POOL_EXHAUSTED (8).
    PoolExhausted,
    /// Anything else, as on the wire.
    Other(i32),
}

impl ReportingReason {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Threshold,
            1 => Self::Qht,
            2 => Self::Final,
            3 => Self::QuotaExhausted,
            4 => Self::ValidityTime,
            5 => Self::OtherQuotaType,
            6 => Self::RatingConditionChange,
            7 => Self::ForcedReauthorisation,
            8 => Self::PoolExhausted,
            o => Self::Other(o),
        }
    }
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Threshold => 0,
            Self::Qht => 1,
            Self::Final => 2,
            Self::QuotaExhausted => 3,
            Self::ValidityTime => 4,
            Self::OtherQuotaType => 5,
            Self::RatingConditionChange => 6,
            Self::ForcedReauthorisation => 7,
            Self::PoolExhausted => 8,
            Self::Other(o) => o,
        }
    }
}

impl fmt::Display for ReportingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.as_i32();
        match crate::diameter::dictionary::enum_name(
            crate::diameter::code::REPORTING_REASON,
            Some(crate::diameter::VENDOR_3GPP),
            v,
        ) {
            Some(n) => f.write_str(n),
            None => write!(f, "{v}"),
        }
    }
}

/// Trigger-Type (3GPP TS 32.299; vendor 10415): the Charging Trigger
/// Conditions of the CPM flows, and any other value as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TriggerType {
    /// CHANGE_IN_MEDIA_COMPOSITION (40).
    ChangeInMediaComposition,
    /// CHANGE_IN_PARTICIPANTS_NMB (50): ask again on every change of the
    /// participant count.
    ChangeInParticipantsNmb,
    /// CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51): ask again when the count
    /// crosses the operator's threshold.
    ChangeInThresholdOfParticipantsNmb,
    /// Any other value.
    Other(i32),
}

impl TriggerType {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            40 => Self::ChangeInMediaComposition,
            50 => Self::ChangeInParticipantsNmb,
            51 => Self::ChangeInThresholdOfParticipantsNmb,
            o => Self::Other(o),
        }
    }
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::ChangeInMediaComposition => 40,
            Self::ChangeInParticipantsNmb => 50,
            Self::ChangeInThresholdOfParticipantsNmb => 51,
            Self::Other(o) => o,
        }
    }
    /// The 3GPP name (the spelling of TS 32.299).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::ChangeInMediaComposition => Some("CHANGE_IN_MEDIA_COMPOSITION"),
            Self::ChangeInParticipantsNmb => Some("CHANGE_IN_PARTICIPANTS_NMB"),
            Self::ChangeInThresholdOfParticipantsNmb => {
                Some("CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB")
            }
            Self::Other(_) => None,
        }
    }
    /// Reads a name as a feature file or profile writes it: the 3GPP
    /// spelling, the printed spec's "CHANGE_IN_THRSHLD_OF_ PARTICIPANTS_NMB"
    /// (stray space), any case, spaces or hyphens for underscores, or the
    /// number itself.
    pub fn from_name(text: &str) -> Option<Self> {
        let t = text.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Some(Self::from_i32(n));
        }
        let norm: String = t
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        match norm.as_str() {
            "CHANGE_IN_MEDIA_COMPOSITION" => Some(Self::ChangeInMediaComposition),
            "CHANGE_IN_PARTICIPANTS_NMB" => Some(Self::ChangeInParticipantsNmb),
            "CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB" | "CHANGE_IN_THRESHOLD_OF_PARTICIPANTS_NMB" => {
                Some(Self::ChangeInThresholdOfParticipantsNmb)
            }
            _ => None,
        }
    }
}

impl fmt::Display for TriggerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.as_i32()),
            None => write!(f, "Trigger-Type {}", self.as_i32()),
        }
    }
}

/// Requested-Action (RFC 4006), required on an EventRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestedAction {
    /// DIRECT_DEBITING (0).
    DirectDebiting,
    /// REFUND_ACCOUNT (1).
    RefundAccount,
    /// CHECK_BALANCE (2).
    CheckBalance,
    /// PRICE_ENQUIRY (3).
    PriceEnquiry,
    /// Any other value.
    Other(i32),
}

impl RequestedAction {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::DirectDebiting,
            1 => Self::RefundAccount,
            2 => Self::CheckBalance,
            3 => Self::PriceEnquiry,
            o => Self::Other(o),
        }
    }
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::DirectDebiting => 0,
            Self::RefundAccount => 1,
            Self::CheckBalance => 2,
            Self::PriceEnquiry => 3,
            Self::Other(o) => o,
        }
    }
}

/// Final-Unit-Action (RFC 4006) of a Final-Unit-Indication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalUnitAction {
    /// TERMINATE (0): the SUT must end the session when the units are used.
    Terminate,
    /// REDIRECT (1).
    Redirect,
    /// RESTRICT_ACCESS (2).
    RestrictAccess,
    /// Any other value.
    Other(i32),
}

impl FinalUnitAction {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Terminate,
            1 => Self::Redirect,
            2 => Self::RestrictAccess,
            o => Self::Other(o),
        }
    }
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Terminate => 0,
            Self::Redirect => 1,
            Self::RestrictAccess => 2,
            Self::Other(o) => o,
        }
    }
}

/// Credit-Control-Failure-Handling (RFC 4006): what the SUT does when the
/// charging server does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureHandling {
    /// TERMINATE (0).
    Terminate,
    /// CONTINUE (1).
    Continue,
    /// RETRY_AND_TERMINATE (2).
    RetryAndTerminate,
    /// Any other value.
    Other(i32),
}

impl FailureHandling {
    /// From the wire value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            0 => Self::Terminate,
            1 => Self::Continue,
            2 => Self::RetryAndTerminate,
            o => Self::Other(o),
        }
    }
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::Terminate => 0,
            Self::Continue => 1,
            Self::RetryAndTerminate => 2,
            Self::Other(o) => o,
        }
    }
}

/// Which service a Multiple-Services-Credit-Control is about: its
/// Service-Identifier and Rating-Group (either may be absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Service-Identifier.
    pub service_identifier: Option<u32>,
    /// Rating-Group.
    pub rating_group: Option<u32>,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.service_identifier, self.rating_group) {
            (None, None) => f.write_str("service (unnamed)"),
            (Some(s), None) => write!(f, "service {s}"),
            (None, Some(r)) => write!(f, "rating group {r}"),
            (Some(s), Some(r)) => write!(f, "service {s}/rating group {r}"),
        }
    }
}

/// One Multiple-Services-Credit-Control of a request: units asked for
/// ("reserve units") and units used ("debit units") for one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditRequest {
    /// Service-Identifier / Rating-Group.
    pub service: ServiceKey,
    /// Requested-Service-Unit (Some(empty) = asked without an amount).
    pub requested: Option<ServiceUnits>,
    /// Used-Service-Unit (several are summed on reading).
    pub used: Option<ServiceUnits>,
    /// Reporting-Reason, at MSCC level or inside Used-Service-Unit.
    pub reporting_reason: Option<ReportingReason>,
    /// Trigger-Types of a Trigger in this MSCC: the events that caused the
    /// request.
    pub triggers: Vec<TriggerType>,
}

/// One CH-2 request (any kind).
#[derive(Clone, Debug, PartialEq)]
pub struct Ch2Request {
    /// Initial, Update, Termination or Event.
    pub kind: RequestType,
    /// Session-Id: one per charging session, Initial to Termination.
    pub session_id: String,
    /// CC-Request-Number: 0 on Initial, +1 after.
    pub request_number: u32,
    /// Origin-Host as received. On encode the [`LocalIdentity`]'s is used.
    ///
    /// [`LocalIdentity`]: crate::diameter::LocalIdentity
    pub origin_host: String,
    /// The served user (a SIP URI): Subscription-Id (top level, Ro; or
    /// inside Service-Information), else the calling or called party by
    /// role, else User-Name.
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
    /// Event-Timestamp.
    pub event_timestamp: Option<SystemTime>,
    /// Requested-Action (required with Event).
    pub requested_action: Option<RequestedAction>,
    /// Multiple-Services-Credit-Control, one per service.
    pub credits: Vec<CreditRequest>,
    /// Whether Service-Information was present (received) or is to be sent.
    pub service_information: bool,
    /// Top-level AVPs the dictionary does not know, kept as received; sent
    /// after the known ones on encode.
    pub unknown_avps: Vec<Avp>,
}

impl Ch2Request {
    /// A request with only the three fields every CH-2 request needs (and
    /// Service-Information to be sent).
    pub fn new(kind: RequestType, session_id: impl Into<String>, request_number: u32) -> Self {
        Ch2Request {
            kind,
            session_id: session_id.into(),
            request_number,
            origin_host: String::new(),
            served_user: None,
            served_user_source: None,
            role: None,
            call_id: None,
            calling_party: None,
            called_party: None,
            service_context_id: None,
            participants: None,
            event_timestamp: None,
            requested_action: None,
            credits: Vec::new(),
            service_information: true,
            unknown_avps: Vec::new(),
        }
    }
    /// InitialRequest (request number 0).
    pub fn initial(session_id: impl Into<String>) -> Self {
        Self::new(RequestType::Initial, session_id, 0)
    }
    /// UpdateRequest.
    pub fn update(session_id: impl Into<String>, request_number: u32) -> Self {
        Self::new(RequestType::Update, session_id, request_number)
    }
    /// TerminationRequest.
    pub fn termination(session_id: impl Into<String>, request_number: u32) -> Self {
        Self::new(RequestType::Termination, session_id, request_number)
    }
    /// EventRequest (request number 0, DIRECT_DEBITING).
    pub fn event(session_id: impl Into<String>) -> Self {
        let mut r = Self::new(RequestType::Event, session_id, 0);
        r.requested_action = Some(RequestedAction::DirectDebiting);
        r
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
    /// Asks for units ("reserve units") in the first MSCC (created if none).
    pub fn request_units(mut self, units: ServiceUnits) -> Self {
        self.first_credit().requested = Some(units);
        self
    }
    /// Reports used units ("debit units") in the first MSCC.
    pub fn report_used(mut self, units: ServiceUnits, reason: ReportingReason) -> Self {
        let c = self.first_credit();
        c.used = Some(units);
        c.reporting_reason = Some(reason);
        self
    }
    /// Names the Charging Trigger Condition that caused the request (with
    /// Reporting-Reason RATING_CONDITION_CHANGE unless one is set).
    pub fn triggered_by(mut self, trigger: TriggerType) -> Self {
        let c = self.first_credit();
        c.triggers.push(trigger);
        c.reporting_reason
            .get_or_insert(ReportingReason::RatingConditionChange);
        self
    }
    /// Adds an MSCC.
    pub fn credit(mut self, credit: CreditRequest) -> Self {
        self.credits.push(credit);
        self
    }

    fn first_credit(&mut self) -> &mut CreditRequest {
        if self.credits.is_empty() {
            self.credits.push(CreditRequest::default());
        }
        &mut self.credits[0]
    }

    /// Units asked for, summed over the MSCCs; None if no MSCC carried a
    /// Requested-Service-Unit.
    pub fn requested_units(&self) -> Option<ServiceUnits> {
        sum(self.credits.iter().filter_map(|c| c.requested))
    }
    /// Units reported used, summed over the MSCCs; None if none carried a
    /// Used-Service-Unit.
    pub fn used_units(&self) -> Option<ServiceUnits> {
        sum(self.credits.iter().filter_map(|c| c.used))
    }
    /// The first Reporting-Reason of any MSCC.
    pub fn reporting_reason(&self) -> Option<ReportingReason> {
        self.credits.iter().find_map(|c| c.reporting_reason)
    }
    /// Every Trigger-Type reported, in order, without repeats.
    pub fn triggers(&self) -> Vec<TriggerType> {
        let mut v: Vec<TriggerType> = Vec::new();
        for t in self.credits.iter().flat_map(|c| &c.triggers) {
            if !v.contains(t) {
                v.push(*t);
            }
        }
        v
    }
}

fn sum(it: impl Iterator<Item = ServiceUnits>) -> Option<ServiceUnits> {
    it.reduce(|a, b| a.plus(&b))
}

impl fmt::Display for Ch2Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} {}",
            self.kind.ch2_name(),
            self.request_number,
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
        if let Some(u) = self.requested_units() {
            write!(f, " requested={u}")?;
        }
        if let Some(u) = self.used_units() {
            write!(f, " used={u}")?;
        }
        Ok(())
    }
}

/// What a response says about Charging Trigger Conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum TriggerArming {
    /// No Trigger AVP: whatever was armed stays armed.
    #[default]
    Unchanged,
    /// A Trigger with no Trigger-Type: disarm all.
    DisarmAll,
    /// A Trigger with these Trigger-Types: arm exactly these.
    Arm(Vec<TriggerType>),
}

impl TriggerArming {
    /// Arms these trigger types (an empty list disarms all).
    pub fn arm(types: impl IntoIterator<Item = TriggerType>) -> Self {
        let v: Vec<TriggerType> = types.into_iter().collect();
        if v.is_empty() {
            TriggerArming::DisarmAll
        } else {
            TriggerArming::Arm(v)
        }
    }
    /// What is armed after this, given what was armed before.
    pub fn apply(&self, before: &[TriggerType]) -> Vec<TriggerType> {
        match self {
            TriggerArming::Unchanged => before.to_vec(),
            TriggerArming::DisarmAll => Vec::new(),
            TriggerArming::Arm(v) => v.clone(),
        }
    }
}

/// One Multiple-Services-Credit-Control of a response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditGrant {
    /// Service-Identifier / Rating-Group.
    pub service: ServiceKey,
    /// Result-Code at MSCC level (a failure here refuses this service even
    /// when the command succeeded).
    pub result_code: Option<u32>,
    /// Granted-Service-Unit.
    pub granted: Option<ServiceUnits>,
    /// Validity-Time, seconds.
    pub validity_time: Option<u32>,
    /// Final-Unit-Indication's Final-Unit-Action.
    pub final_unit_action: Option<FinalUnitAction>,
}

impl CreditGrant {
    /// True unless an MSCC Result-Code other than 2xxx is present.
    pub fn is_success(&self) -> bool {
        self.result_code.is_none_or(|rc| (2000..3000).contains(&rc))
    }
}

/// A CH-2 Response (a CCA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ch2Response {
    /// Session-Id ("" if the answer had none).
    pub session_id: String,
    /// Result-Code at command level.
    pub result_code: u32,
    /// CC-Request-Type echoed (None if absent or unknown).
    pub request_type: Option<RequestType>,
    /// CC-Request-Number echoed.
    pub request_number: Option<u32>,
    /// Multiple-Services-Credit-Control, one per service.
    pub credits: Vec<CreditGrant>,
    /// Charging Trigger Conditions armed (sent inside the first MSCC).
    pub triggers: TriggerArming,
    /// Credit-Control-Failure-Handling.
    pub failure_handling: Option<FailureHandling>,
}

impl Ch2Response {
    /// A response with a command-level Result-Code and nothing else,
    /// echoing the request's type and number.
    pub fn for_request(req: &Ch2Request, result_code: u32) -> Self {
        Ch2Response {
            session_id: req.session_id.clone(),
            result_code,
            request_type: Some(req.kind),
            request_number: Some(req.request_number),
            credits: Vec::new(),
            triggers: TriggerArming::Unchanged,
            failure_handling: None,
        }
    }
    /// True for a 2xxx command-level Result-Code.
    pub fn is_success(&self) -> bool {
        (2000..3000).contains(&self.result_code)
    }
    /// True when the command succeeded and no MSCC failed.
    pub fn is_full_success(&self) -> bool {
        self.is_success() && self.credits.iter().all(CreditGrant::is_success)
    }
    /// Whether the response refuses this service: a command-level failure,
    /// or an MSCC for it (same Service-Identifier and Rating-Group) that
    /// failed.
    pub fn refuses(&self, service: &ServiceKey) -> bool {
        !self.is_success()
            || self
                .credits
                .iter()
                .any(|c| c.service == *service && !c.is_success())
    }
    /// Granted units, summed over the successful MSCCs.
    pub fn granted_units(&self) -> Option<ServiceUnits> {
        sum(self
            .credits
            .iter()
            .filter(|c| c.is_success())
            .filter_map(|c| c.granted))
    }
    /// The Final-Unit-Action of any MSCC.
    pub fn final_unit_action(&self) -> Option<FinalUnitAction> {
        self.credits.iter().find_map(|c| c.final_unit_action)
    }
}

impl fmt::Display for Ch2Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CH-2 Response {}", self.result_code)?;
        if let Some(k) = self.request_type {
            write!(f, " to {}", k.ch2_name())?;
        }
        if let Some(n) = self.request_number {
            write!(f, " #{n}")?;
        }
        for c in &self.credits {
            write!(f, " [{}", c.service)?;
            if let Some(rc) = c.result_code {
                write!(f, " {rc}")?;
            }
            if let Some(g) = c.granted {
                write!(f, " granted={g}")?;
            }
            if let Some(v) = c.validity_time {
                write!(f, " validity={v}s")?;
            }
            if let Some(a) = c.final_unit_action {
                write!(f, " final-unit={a:?}")?;
            }
            f.write_str("]")?;
        }
        match &self.triggers {
            TriggerArming::Unchanged => {}
            TriggerArming::DisarmAll => f.write_str(" triggers=disarm-all")?,
            TriggerArming::Arm(v) => {
                let names: Vec<String> = v.iter().map(|t| t.as_i32().to_string()).collect();
                write!(f, " triggers=[{}]", names.join(","))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_accept_both_spellings_and_numbers() {
        for t in [
            "CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB",
            "CHANGE_IN_THRSHLD_OF_ PARTICIPANTS_NMB",
            "change-in-thrshld-of-participants-nmb",
            "51",
        ] {
            assert_eq!(
                TriggerType::from_name(t),
                Some(TriggerType::ChangeInThresholdOfParticipantsNmb),
                "{t}"
            );
        }
        assert_eq!(
            TriggerType::from_name("CHANGE_IN_PARTICIPANTS_NMB"),
            Some(TriggerType::ChangeInParticipantsNmb)
        );
        assert_eq!(TriggerType::from_name("nonsense"), None);
        assert_eq!(TriggerType::from_i32(77), TriggerType::Other(77));
        assert_eq!(TriggerType::ChangeInParticipantsNmb.as_i32(), 50);
    }

    #[test]
    fn arming_applies_over_what_was_armed() {
        let before = [TriggerType::ChangeInParticipantsNmb];
        assert_eq!(TriggerArming::Unchanged.apply(&before), before.to_vec());
        assert!(TriggerArming::DisarmAll.apply(&before).is_empty());
        assert_eq!(
            TriggerArming::arm([TriggerType::ChangeInThresholdOfParticipantsNmb]).apply(&before),
            vec![TriggerType::ChangeInThresholdOfParticipantsNmb]
        );
        assert_eq!(TriggerArming::arm([]), TriggerArming::DisarmAll);
    }

    #[test]
    fn units_add_field_wise() {
        let a = ServiceUnits::seconds(30);
        let b = ServiceUnits::seconds(15).plus(&ServiceUnits::units(2));
        let s = a.plus(&b);
        assert_eq!(s.time, Some(45));
        assert_eq!(s.service_specific, Some(2));
        assert_eq!(s.total_octets, None);
        assert!(ServiceUnits::default().is_zero());
        assert!(!s.is_zero());
        assert_eq!(s.to_string(), "45s+2 units");
    }

    #[test]
    fn request_sums_and_response_refusals() {
        let r = Ch2Request::update("s", 1)
            .request_units(ServiceUnits::seconds(60))
            .report_used(ServiceUnits::seconds(20), ReportingReason::QuotaExhausted)
            .credit(CreditRequest {
                service: ServiceKey {
                    service_identifier: None,
                    rating_group: Some(2),
                },
                used: Some(ServiceUnits::seconds(5)),
                ..CreditRequest::default()
            });
        assert_eq!(r.used_units(), Some(ServiceUnits::seconds(25)));
        assert_eq!(r.requested_units(), Some(ServiceUnits::seconds(60)));
        assert_eq!(r.reporting_reason(), Some(ReportingReason::QuotaExhausted));
        let mut resp = Ch2Response::for_request(&r, 2001);
        resp.credits.push(CreditGrant {
            service: ServiceKey {
                service_identifier: None,
                rating_group: Some(2),
            },
            result_code: Some(4012),
            ..CreditGrant::default()
        });
        assert!(resp.is_success());
        assert!(!resp.is_full_success());
        assert!(resp.refuses(&resp.credits[0].service.clone()));
        assert!(!resp.refuses(&ServiceKey::default()));
        resp.result_code = 5030;
        assert!(resp.refuses(&ServiceKey::default()));
    }
}
