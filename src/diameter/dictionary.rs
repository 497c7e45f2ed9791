//! Names and types of the AVPs of `spec/binding.md` (RFC 6733, RFC 4006,
//! 3GPP TS 32.299), the `code::*` constants, the M-bit check, and a
//! multi-line pretty printer for reports.

use std::fmt::Write as _;

use super::VENDOR_3GPP;
use super::avp::Avp;
use super::codec::Message;

/// The data type of an AVP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AvpKind {
    /// OctetString.
    OctetString,
    /// Integer32.
    Integer32,
    /// Integer64.
    Integer64,
    /// Unsigned32.
    Unsigned32,
    /// Unsigned64.
    Unsigned64,
    /// Float32.
    Float32,
    /// Float64.
    Float64,
    /// Grouped.
    Grouped,
    /// Address.
    Address,
    /// Time.
    Time,
    /// UTF8String.
    Utf8String,
    /// DiameterIdentity.
    DiameterIdentity,
    /// DiameterURI.
    DiameterUri,
    /// Enumerated.
    Enumerated,
}

impl AvpKind {
    /// Minimum data length of the type (for Failed-AVP payloads).
    pub fn min_len(self) -> usize {
        match self {
            AvpKind::Integer32
            | AvpKind::Unsigned32
            | AvpKind::Float32
            | AvpKind::Time
            | AvpKind::Enumerated => 4,
            AvpKind::Integer64 | AvpKind::Unsigned64 | AvpKind::Float64 => 8,
            AvpKind::Address => 6,
            _ => 0,
        }
    }
}

/// One dictionary entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvpDef {
    /// Name as the specs spell it.
    pub name: &'static str,
    /// AVP code.
    pub code: u32,
    /// Vendor-Id (None for IETF AVPs).
    pub vendor: Option<u32>,
    /// Data type.
    pub kind: AvpKind,
    /// Whether the defining spec has senders set the M bit.
    pub mandatory: bool,
}

macro_rules! avps {
    ($($konst:ident = $code:literal, $name:literal, $vendor:ident, $kind:ident, $m:literal;)*) => {
        /// AVP codes of every AVP in the dictionary. Vendor: see [`lookup`].
        pub mod code {
            $(
                #[doc = $name]
                pub const $konst: u32 = $code;
            )*
        }
        static DEFS: &[AvpDef] = &[
            $(AvpDef { name: $name, code: $code, vendor: avps!(@v $vendor), kind: AvpKind::$kind, mandatory: $m },)*
        ];
    };
    (@v ietf) => { None };
    (@v tgpp) => { Some(VENDOR_3GPP) };
}

avps! {
    // RFC 6733 base
    USER_NAME = 1, "User-Name", ietf, Utf8String, true;
    CLASS = 25, "Class", ietf, OctetString, true;
    SESSION_TIMEOUT = 27, "Session-Timeout", ietf, Unsigned32, true;
    PROXY_STATE = 33, "Proxy-State", ietf, OctetString, true;
    ACCT_SESSION_ID = 44, "Acct-Session-Id", ietf, OctetString, true;
    ACCT_MULTI_SESSION_ID = 50, "Acct-Multi-Session-Id", ietf, Utf8String, true;
    EVENT_TIMESTAMP = 55, "Event-Timestamp", ietf, Time, true;
    ACCT_INTERIM_INTERVAL = 85, "Acct-Interim-Interval", ietf, Unsigned32, true;
    HOST_IP_ADDRESS = 257, "Host-IP-Address", ietf, Address, true;
    AUTH_APPLICATION_ID = 258, "Auth-Application-Id", ietf, Unsigned32, true;
    ACCT_APPLICATION_ID = 259, "Acct-Application-Id", ietf, Unsigned32, true;
    VENDOR_SPECIFIC_APPLICATION_ID = 260, "Vendor-Specific-Application-Id", ietf, Grouped, true;
    REDIRECT_HOST_USAGE = 261, "Redirect-Host-Usage", ietf, Enumerated, true;
    REDIRECT_MAX_CACHE_TIME = 262, "Redirect-Max-Cache-Time", ietf, Unsigned32, true;
    SESSION_ID = 263, "Session-Id", ietf, Utf8String, true;
    ORIGIN_HOST = 264, "Origin-Host", ietf, DiameterIdentity, true;
    SUPPORTED_VENDOR_ID = 265, "Supported-Vendor-Id", ietf, Unsigned32, true;
    VENDOR_ID = 266, "Vendor-Id", ietf, Unsigned32, true;
    FIRMWARE_REVISION = 267, "Firmware-Revision", ietf, Unsigned32, false;
    RESULT_CODE = 268, "Result-Code", ietf, Unsigned32, true;
    PRODUCT_NAME = 269, "Product-Name", ietf, Utf8String, false;
    SESSION_BINDING = 270, "Session-Binding", ietf, Unsigned32, true;
    SESSION_SERVER_FAILOVER = 271, "Session-Server-Failover", ietf, Enumerated, true;
    MULTI_ROUND_TIME_OUT = 272, "Multi-Round-Time-Out", ietf, Unsigned32, true;
    DISCONNECT_CAUSE = 273, "Disconnect-Cause", ietf, Enumerated, true;
    AUTH_REQUEST_TYPE = 274, "Auth-Request-Type", ietf, Enumerated, true;
    AUTH_GRACE_PERIOD = 276, "Auth-Grace-Period", ietf, Unsigned32, true;
    AUTH_SESSION_STATE = 277, "Auth-Session-State", ietf, Enumerated, true;
    ORIGIN_STATE_ID = 278, "Origin-State-Id", ietf, Unsigned32, true;
    FAILED_AVP = 279, "Failed-AVP", ietf, Grouped, true;
    PROXY_HOST = 280, "Proxy-Host", ietf, DiameterIdentity, true;
    ERROR_MESSAGE = 281, "Error-Message", ietf, Utf8String, false;
    ROUTE_RECORD = 282, "Route-Record", ietf, DiameterIdentity, true;
    DESTINATION_REALM = 283, "Destination-Realm", ietf, DiameterIdentity, true;
    PROXY_INFO = 284, "Proxy-Info", ietf, Grouped, true;
    RE_AUTH_REQUEST_TYPE = 285, "Re-Auth-Request-Type", ietf, Enumerated, true;
    ACCOUNTING_SUB_SESSION_ID = 287, "Accounting-Sub-Session-Id", ietf, Unsigned64, true;
    AUTHORIZATION_LIFETIME = 291, "Authorization-Lifetime", ietf, Unsigned32, true;
    REDIRECT_HOST = 292, "Redirect-Host", ietf, DiameterUri, true;
    DESTINATION_HOST = 293, "Destination-Host", ietf, DiameterIdentity, true;
    ERROR_REPORTING_HOST = 294, "Error-Reporting-Host", ietf, DiameterIdentity, false;
    TERMINATION_CAUSE = 295, "Termination-Cause", ietf, Enumerated, true;
    ORIGIN_REALM = 296, "Origin-Realm", ietf, DiameterIdentity, true;
    EXPERIMENTAL_RESULT = 297, "Experimental-Result", ietf, Grouped, true;
    EXPERIMENTAL_RESULT_CODE = 298, "Experimental-Result-Code", ietf, Unsigned32, true;
    INBAND_SECURITY_ID = 299, "Inband-Security-Id", ietf, Unsigned32, true;
    ACCOUNTING_RECORD_TYPE = 480, "Accounting-Record-Type", ietf, Enumerated, true;
    ACCOUNTING_REALTIME_REQUIRED = 483, "Accounting-Realtime-Required", ietf, Enumerated, true;
    ACCOUNTING_RECORD_NUMBER = 485, "Accounting-Record-Number", ietf, Unsigned32, true;
    // RFC 4006 / 8506 credit control
    CC_CORRELATION_ID = 411, "CC-Correlation-Id", ietf, OctetString, false;
    CC_INPUT_OCTETS = 412, "CC-Input-Octets", ietf, Unsigned64, true;
    CC_MONEY = 413, "CC-Money", ietf, Grouped, true;
    CC_OUTPUT_OCTETS = 414, "CC-Output-Octets", ietf, Unsigned64, true;
    CC_REQUEST_NUMBER = 415, "CC-Request-Number", ietf, Unsigned32, true;
    CC_REQUEST_TYPE = 416, "CC-Request-Type", ietf, Enumerated, true;
    CC_SERVICE_SPECIFIC_UNITS = 417, "CC-Service-Specific-Units", ietf, Unsigned64, true;
    CC_SESSION_FAILOVER = 418, "CC-Session-Failover", ietf, Enumerated, true;
    CC_SUB_SESSION_ID = 419, "CC-Sub-Session-Id", ietf, Unsigned64, true;
    CC_TIME = 420, "CC-Time", ietf, Unsigned32, true;
    CC_TOTAL_OCTETS = 421, "CC-Total-Octets", ietf, Unsigned64, true;
    CHECK_BALANCE_RESULT = 422, "Check-Balance-Result", ietf, Enumerated, true;
    COST_INFORMATION = 423, "Cost-Information", ietf, Grouped, true;
    COST_UNIT = 424, "Cost-Unit", ietf, Utf8String, true;
    CURRENCY_CODE = 425, "Currency-Code", ietf, Unsigned32, true;
    CREDIT_CONTROL = 426, "Credit-Control", ietf, Enumerated, true;
    CREDIT_CONTROL_FAILURE_HANDLING = 427, "Credit-Control-Failure-Handling", ietf, Enumerated, true;
    DIRECT_DEBITING_FAILURE_HANDLING = 428, "Direct-Debiting-Failure-Handling", ietf, Enumerated, true;
    EXPONENT = 429, "Exponent", ietf, Integer32, true;
    FINAL_UNIT_INDICATION = 430, "Final-Unit-Indication", ietf, Grouped, true;
    GRANTED_SERVICE_UNIT = 431, "Granted-Service-Unit", ietf, Grouped, true;
    RATING_GROUP = 432, "Rating-Group", ietf, Unsigned32, true;
    REDIRECT_ADDRESS_TYPE = 433, "Redirect-Address-Type", ietf, Enumerated, true;
    REDIRECT_SERVER = 434, "Redirect-Server", ietf, Grouped, true;
    REDIRECT_SERVER_ADDRESS = 435, "Redirect-Server-Address", ietf, Utf8String, true;
    REQUESTED_ACTION = 436, "Requested-Action", ietf, Enumerated, true;
    REQUESTED_SERVICE_UNIT = 437, "Requested-Service-Unit", ietf, Grouped, true;
    RESTRICTION_FILTER_RULE = 438, "Restriction-Filter-Rule", ietf, OctetString, true;
    SERVICE_IDENTIFIER = 439, "Service-Identifier", ietf, Unsigned32, true;
    SERVICE_PARAMETER_INFO = 440, "Service-Parameter-Info", ietf, Grouped, false;
    SERVICE_PARAMETER_TYPE = 441, "Service-Parameter-Type", ietf, Unsigned32, false;
    SERVICE_PARAMETER_VALUE = 442, "Service-Parameter-Value", ietf, OctetString, false;
    SUBSCRIPTION_ID = 443, "Subscription-Id", ietf, Grouped, true;
    SUBSCRIPTION_ID_DATA = 444, "Subscription-Id-Data", ietf, Utf8String, true;
    UNIT_VALUE = 445, "Unit-Value", ietf, Grouped, true;
    USED_SERVICE_UNIT = 446, "Used-Service-Unit", ietf, Grouped, true;
    VALUE_DIGITS = 447, "Value-Digits", ietf, Integer64, true;
    VALIDITY_TIME = 448, "Validity-Time", ietf, Unsigned32, true;
    FINAL_UNIT_ACTION = 449, "Final-Unit-Action", ietf, Enumerated, true;
    SUBSCRIPTION_ID_TYPE = 450, "Subscription-Id-Type", ietf, Enumerated, true;
    TARIFF_TIME_CHANGE = 451, "Tariff-Time-Change", ietf, Time, true;
    TARIFF_CHANGE_USAGE = 452, "Tariff-Change-Usage", ietf, Enumerated, true;
    G_S_U_POOL_IDENTIFIER = 453, "G-S-U-Pool-Identifier", ietf, Unsigned32, true;
    CC_UNIT_TYPE = 454, "CC-Unit-Type", ietf, Enumerated, true;
    MULTIPLE_SERVICES_INDICATOR = 455, "Multiple-Services-Indicator", ietf, Enumerated, true;
    MULTIPLE_SERVICES_CREDIT_CONTROL = 456, "Multiple-Services-Credit-Control", ietf, Grouped, true;
    G_S_U_POOL_REFERENCE = 457, "G-S-U-Pool-Reference", ietf, Grouped, true;
    USER_EQUIPMENT_INFO = 458, "User-Equipment-Info", ietf, Grouped, false;
    USER_EQUIPMENT_INFO_TYPE = 459, "User-Equipment-Info-Type", ietf, Enumerated, false;
    USER_EQUIPMENT_INFO_VALUE = 460, "User-Equipment-Info-Value", ietf, OctetString, false;
    SERVICE_CONTEXT_ID = 461, "Service-Context-Id", ietf, Utf8String, true;
    // 3GPP TS 32.299 (vendor 10415)
    EVENT_TYPE = 823, "Event-Type", tgpp, Grouped, true;
    SIP_METHOD = 824, "SIP-Method", tgpp, Utf8String, true;
    ROLE_OF_NODE = 829, "Role-Of-Node", tgpp, Enumerated, true;
    USER_SESSION_ID = 830, "User-Session-Id", tgpp, Utf8String, true;
    CALLING_PARTY_ADDRESS = 831, "Calling-Party-Address", tgpp, Utf8String, true;
    CALLED_PARTY_ADDRESS = 832, "Called-Party-Address", tgpp, Utf8String, true;
    TIME_STAMPS = 833, "Time-Stamps", tgpp, Grouped, true;
    SIP_REQUEST_TIMESTAMP = 834, "SIP-Request-Timestamp", tgpp, Time, true;
    SIP_RESPONSE_TIMESTAMP = 835, "SIP-Response-Timestamp", tgpp, Time, true;
    APPLICATION_SERVER = 836, "Application-Server", tgpp, Utf8String, true;
    INTER_OPERATOR_IDENTIFIER = 838, "Inter-Operator-Identifier", tgpp, Grouped, true;
    ORIGINATING_IOI = 839, "Originating-IOI", tgpp, Utf8String, true;
    TERMINATING_IOI = 840, "Terminating-IOI", tgpp, Utf8String, true;
    IMS_CHARGING_IDENTIFIER = 841, "IMS-Charging-Identifier", tgpp, Utf8String, true;
    SDP_SESSION_DESCRIPTION = 842, "SDP-Session-Description", tgpp, Utf8String, true;
    SERVED_PARTY_IP_ADDRESS = 848, "Served-Party-IP-Address", tgpp, Address, true;
    APPLICATION_SERVER_INFORMATION = 850, "Application-Server-Information", tgpp, Grouped, true;
    POC_CONTROLLING_ADDRESS = 858, "PoC-Controlling-Address", tgpp, Utf8String, true;
    POC_GROUP_NAME = 859, "PoC-Group-Name", tgpp, Utf8String, true;
    CAUSE_CODE = 861, "Cause-Code", tgpp, Integer32, true;
    NODE_FUNCTIONALITY = 862, "Node-Functionality", tgpp, Enumerated, true;
    TIME_QUOTA_THRESHOLD = 868, "Time-Quota-Threshold", tgpp, Unsigned32, true;
    VOLUME_QUOTA_THRESHOLD = 869, "Volume-Quota-Threshold", tgpp, Unsigned32, true;
    TRIGGER_TYPE = 870, "Trigger-Type", tgpp, Enumerated, true;
    QUOTA_HOLDING_TIME = 871, "Quota-Holding-Time", tgpp, Unsigned32, true;
    REPORTING_REASON = 872, "Reporting-Reason", tgpp, Enumerated, true;
    SERVICE_INFORMATION = 873, "Service-Information", tgpp, Grouped, true;
    IMS_INFORMATION = 876, "IMS-Information", tgpp, Grouped, true;
    POC_INFORMATION = 879, "PoC-Information", tgpp, Grouped, true;
    QUOTA_CONSUMPTION_TIME = 881, "Quota-Consumption-Time", tgpp, Unsigned32, true;
    POC_SERVER_ROLE = 883, "PoC-Server-Role", tgpp, Enumerated, true;
    POC_SESSION_TYPE = 884, "PoC-Session-Type", tgpp, Enumerated, true;
    NUMBER_OF_PARTICIPANTS = 885, "Number-Of-Participants", tgpp, Unsigned32, true;
    PARTICIPANTS_INVOLVED = 887, "Participants-Involved", tgpp, Utf8String, true;
    UNIT_QUOTA_THRESHOLD = 1226, "Unit-Quota-Threshold", tgpp, Unsigned32, true;
    POC_SESSION_ID = 1229, "PoC-Session-Id", tgpp, Utf8String, true;
    SERVICE_GENERIC_INFORMATION = 1256, "Service-Generic-Information", tgpp, Grouped, true;
    PARTICIPANT_GROUP = 1260, "Participant-Group", tgpp, Grouped, true;
    TRIGGER = 1264, "Trigger", tgpp, Grouped, true;
    PARTICIPANT_ACTION_TYPE = 2049, "Participant-Action-Type", tgpp, Enumerated, true;
    LOW_BALANCE_INDICATION = 2020, "Low-Balance-Indication", tgpp, Enumerated, true;
    REMAINING_BALANCE = 2021, "Remaining-Balance", tgpp, Grouped, true;
    APPLICATION_SERVER_ID = 2101, "Application-Server-Id", tgpp, Utf8String, true;
    APPLICATION_SERVICE_TYPE = 2102, "Application-Service-Type", tgpp, Enumerated, true;
    APPLICATION_SESSION_ID = 2103, "Application-Session-Id", tgpp, Unsigned32, true;
}

/// The definition of an AVP, if the dictionary knows it.
pub fn lookup(code: u32, vendor: Option<u32>) -> Option<&'static AvpDef> {
    DEFS.iter().find(|d| d.code == code && d.vendor == vendor)
}

/// Every definition (for documentation and tests).
pub fn all() -> &'static [AvpDef] {
    DEFS
}

/// Name of an enumerated value, where the dictionary knows it.
pub fn enum_name(code: u32, vendor: Option<u32>, value: i32) -> Option<&'static str> {
    use crate::diameter::code as c;
    let values: &[(i32, &str)] = match (code, vendor) {
        (c::ACCOUNTING_RECORD_TYPE, None) => &[
            (1, "EVENT_RECORD"),
            (2, "START_RECORD"),
            (3, "INTERIM_RECORD"),
            (4, "STOP_RECORD"),
        ],
        (c::CC_REQUEST_TYPE, None) => &[
            (1, "INITIAL_REQUEST"),
            (2, "UPDATE_REQUEST"),
            (3, "TERMINATION_REQUEST"),
            (4, "EVENT_REQUEST"),
        ],
        (c::SUBSCRIPTION_ID_TYPE, None) => &[
            (0, "END_USER_E164"),
            (1, "END_USER_IMSI"),
            (2, "END_USER_SIP_URI"),
            (3, "END_USER_NAI"),
            (4, "END_USER_PRIVATE"),
        ],
        (c::DISCONNECT_CAUSE, None) => &[
            (0, "REBOOTING"),
            (1, "BUSY"),
            (2, "DO_NOT_WANT_TO_TALK_TO_YOU"),
        ],
        (c::REQUESTED_ACTION, None) => &[
            (0, "DIRECT_DEBITING"),
            (1, "REFUND_ACCOUNT"),
            (2, "CHECK_BALANCE"),
            (3, "PRICE_ENQUIRY"),
        ],
        (c::CC_UNIT_TYPE, None) => &[
            (0, "TIME"),
            (1, "MONEY"),
            (2, "TOTAL-OCTETS"),
            (3, "INPUT-OCTETS"),
            (4, "OUTPUT-OCTETS"),
            (5, "SERVICE-SPECIFIC-UNITS"),
        ],
        (c::MULTIPLE_SERVICES_INDICATOR, None) => &[
            (0, "MULTIPLE_SERVICES_NOT_SUPPORTED"),
            (1, "MULTIPLE_SERVICES_SUPPORTED"),
        ],
        (c::TERMINATION_CAUSE, None) => &[
            (1, "DIAMETER_LOGOUT"),
            (2, "DIAMETER_SERVICE_NOT_PROVIDED"),
            (3, "DIAMETER_BAD_ANSWER"),
            (4, "DIAMETER_ADMINISTRATIVE"),
            (5, "DIAMETER_LINK_BROKEN"),
            (6, "DIAMETER_AUTH_EXPIRED"),
            (7, "DIAMETER_USER_MOVED"),
            (8, "DIAMETER_SESSION_TIMEOUT"),
        ],
        (c::LOW_BALANCE_INDICATION, Some(VENDOR_3GPP)) => &[(0, "NOT-APPLICABLE"), (1, "YES")],
        (c::FINAL_UNIT_ACTION, None) => {
            &[(0, "TERMINATE"), (1, "REDIRECT"), (2, "RESTRICT_ACCESS")]
        }
        (c::CREDIT_CONTROL_FAILURE_HANDLING, None) => &[
            (0, "TERMINATE"),
            (1, "CONTINUE"),
            (2, "RETRY_AND_TERMINATE"),
        ],
        (c::ROLE_OF_NODE, Some(VENDOR_3GPP)) => &[
            (0, "ORIGINATING_ROLE"),
            (1, "TERMINATING_ROLE"),
            (2, "FORWARDING_ROLE"),
        ],
        (c::NODE_FUNCTIONALITY, Some(VENDOR_3GPP)) => &[
            (0, "S-CSCF"),
            (1, "P-CSCF"),
            (2, "I-CSCF"),
            (5, "BGCF"),
            (6, "AS"),
            (7, "IBCF"),
        ],
        (c::POC_SERVER_ROLE, Some(VENDOR_3GPP)) => &[
            (0, "PARTICIPATING_POC_SERVER"),
            (1, "CONTROLLING_POC_SERVER"),
            (2, "INTERWORKING_FUNCTION"),
            (3, "INTERWORKING_SELECTION_FUNCTION"),
        ],
        (c::POC_SESSION_TYPE, Some(VENDOR_3GPP)) => &[
            (0, "1_TO_1_POC_SESSION"),
            (1, "CHAT_POC_GROUP_SESSION"),
            (2, "PRE_ARRANGED_POC_GROUP_SESSION"),
            (3, "AD_HOC_POC_GROUP_SESSION"),
        ],
        (c::PARTICIPANT_ACTION_TYPE, Some(VENDOR_3GPP)) => &[
            (0, "CREATE_CONF"),
            (1, "JOIN_CONF"),
            (2, "INVITE_INTO_CONF"),
            (3, "QUIT_CONF"),
        ],
        (c::TRIGGER_TYPE, Some(VENDOR_3GPP)) => &[
            (40, "CHANGE_IN_MEDIA_COMPOSITION"),
            (50, "CHANGE_IN_PARTICIPANTS_NMB"),
            (51, "CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB"),
        ],
        (c::REPORTING_REASON, Some(VENDOR_3GPP)) => &[
            (0, "THRESHOLD"),
            (1, "QHT"),
            (2, "FINAL"),
            (3, "QUOTA_EXHAUSTED"),
            (4, "VALIDITY_TIME"),
            (5, "OTHER_QUOTA_TYPE"),
            (6, "RATING_CONDITION_CHANGE"),
            (7, "FORCED_REAUTHORISATION"),
            (8, "POOL_EXHAUSTED"),
        ],
        (c::APPLICATION_SERVICE_TYPE, Some(VENDOR_3GPP)) => &[
            (100, "SENDING"),
            (101, "RECEIVING"),
            (102, "RETRIEVAL"),
            (103, "INVITING"),
            (104, "LEAVING"),
            (105, "JOINING"),
        ],
        _ => &[],
    };
    values.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

/// The first AVP (top level, or inside a known grouped AVP) with the M bit
/// set that the dictionary does not know: answer 5001 with it in Failed-AVP.
pub fn check_mandatory(msg: &Message) -> Result<(), Avp> {
    check_avps(&msg.avps, 0)
}

fn check_avps(avps: &[Avp], depth: usize) -> Result<(), Avp> {
    for a in avps {
        match lookup(a.code, a.vendor_id) {
            None if a.is_mandatory() => return Err(a.clone()),
            Some(def) if def.kind == AvpKind::Grouped && depth < 16 => {
                // A malformed group is a 5004/5014 matter, not ours.
                if let Ok(children) = a.as_grouped() {
                    check_avps(&children, depth + 1)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Human-readable value of an AVP, by its dictionary type; hex otherwise.
pub fn format_value(a: &Avp) -> String {
    let Some(def) = lookup(a.code, a.vendor_id) else {
        return hex(&a.data);
    };
    let shown = match def.kind {
        AvpKind::Unsigned32 => a.as_u32().map(|v| v.to_string()).ok(),
        AvpKind::Unsigned64 => a.as_u64().map(|v| v.to_string()).ok(),
        AvpKind::Integer32 => a.as_i32().map(|v| v.to_string()).ok(),
        AvpKind::Integer64 => a.as_i64().map(|v| v.to_string()).ok(),
        AvpKind::Float32 => a.as_f32().map(|v| v.to_string()).ok(),
        AvpKind::Float64 => a.as_f64().map(|v| v.to_string()).ok(),
        AvpKind::Enumerated => a
            .as_i32()
            .ok()
            .map(|v| match enum_name(a.code, a.vendor_id, v) {
                Some(n) => format!("{n} ({v})"),
                None => v.to_string(),
            }),
        AvpKind::Utf8String | AvpKind::DiameterIdentity | AvpKind::DiameterUri => {
            a.as_utf8().map(|s| format!("{s:?}")).ok()
        }
        AvpKind::Address => a.as_address().map(|v| v.to_string()).ok(),
        AvpKind::Time => a.as_ntp_seconds().ok().map(|raw| {
            let t = super::avp::ntp_to_system_time(raw);
            match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => format!("unix {} (ntp {raw})", d.as_secs()),
                Err(e) => format!("unix -{} (ntp {raw})", e.duration().as_secs()),
            }
        }),
        AvpKind::OctetString | AvpKind::Grouped => Some(hex(&a.data)),
    };
    shown.unwrap_or_else(|| format!("<invalid {:?}> {}", def.kind, hex(&a.data)))
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2 + 2);
    s.push_str("0x");
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Name of an AVP, or `AVP 1234 (vendor 99)` if unknown.
pub fn avp_name(code: u32, vendor: Option<u32>) -> String {
    match (lookup(code, vendor), vendor) {
        (Some(d), _) => d.name.to_owned(),
        (None, Some(v)) => format!("AVP {code} (vendor {v})"),
        (None, None) => format!("AVP {code}"),
    }
}

impl Message {
    /// Multi-line dump: header then one AVP a line, indented by group.
    pub fn pretty(&self) -> String {
        let h = &self.header;
        let mut s = format!(
            "{} (cmd {}, app {}, flags {:#04x}, hbh {:#010x}, e2e {:#010x})\n",
            self.command_name(),
            h.command_code,
            h.application_id,
            h.flags,
            h.hop_by_hop,
            h.end_to_end
        );
        pretty_avps(&self.avps, 1, &mut s);
        s
    }
}

fn pretty_avps(avps: &[Avp], depth: usize, s: &mut String) {
    for a in avps {
        let indent = "  ".repeat(depth);
        let flags = format!(
            "{}{}{}",
            if a.is_vendor_specific() { "V" } else { "" },
            if a.is_mandatory() { "M" } else { "" },
            if a.flags & Avp::PROTECTED != 0 {
                "P"
            } else {
                ""
            }
        );
        let name = avp_name(a.code, a.vendor_id);
        let grouped = lookup(a.code, a.vendor_id).is_some_and(|d| d.kind == AvpKind::Grouped);
        if grouped {
            match a.as_grouped() {
                Ok(children) => {
                    let _ = writeln!(s, "{indent}{name} [{flags}]");
                    pretty_avps(&children, depth + 1, s);
                }
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "{indent}{name} [{flags}] <malformed: {e}> {}",
                        hex(&a.data)
                    );
                }
            }
        } else {
            let _ = writeln!(s, "{indent}{name} [{flags}] = {}", format_value(a));
        }
    }
}
