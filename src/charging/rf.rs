//! CH-1 over Diameter Rf: [`Ch1Request`] to ACR and back, ACA building and
//! reading (3GPP TS 32.299 on RFC 6733 accounting, `spec/binding.md`).
//!
//! Reading is liberal: only Session-Id, Accounting-Record-Type and
//! Accounting-Record-Number are required; everything odd is a warning.

use std::time::{Duration, Instant, SystemTime};

use crate::diameter::codec::Header;
use crate::diameter::{
    Avp, LocalIdentity, Message, VENDOR_3GPP, app, code, command, dictionary, error_answer, result,
};

use super::ch1::{Ch1Request, Ch1Response, ChargedRole, RecordType, ServedUserSource};

const V: Option<u32> = Some(VENDOR_3GPP);

/// Subscription-Id-Type END_USER_SIP_URI.
pub const END_USER_SIP_URI: i32 = 2;
/// Node-Functionality AS.
pub const NODE_FUNCTIONALITY_AS: i32 = 6;

/// A request or answer that cannot be read as CH-1 (ACR/ACA) or CH-2
/// (CCR/CCA): the same three ways for both interfaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Not the command expected (an ACR, an ACA, a CCR, a CCA).
    #[error("{command} is not {expected}")]
    WrongCommand {
        /// One-line description of the message.
        command: String,
        /// What was expected: "an accounting request", "a credit-control answer".
        expected: &'static str,
    },
    /// A required AVP is absent: answer 5005.
    #[error("required AVP {name} ({code}) is missing")]
    MissingAvp {
        /// AVP name.
        name: &'static str,
        /// AVP code.
        code: u32,
    },
    /// A required AVP has a value that cannot be used: answer 5004.
    #[error("AVP {name} ({code}) has an invalid value: {reason}")]
    InvalidAvp {
        /// AVP name.
        name: &'static str,
        /// AVP code.
        code: u32,
        /// What is wrong with it.
        reason: String,
        /// The AVP as received.
        avp: Avp,
    },
}

impl MappingError {
    /// Result-Code to answer with.
    pub fn result_code(&self) -> u32 {
        match self {
            MappingError::WrongCommand { .. } => result::COMMAND_UNSUPPORTED,
            MappingError::MissingAvp { .. } => result::MISSING_AVP,
            MappingError::InvalidAvp { .. } => result::INVALID_AVP_VALUE,
        }
    }
    /// The AVP for Failed-AVP: the bad one, or for a missing one an
    /// example with a zero-filled payload (RFC 6733 7.1.5, 5005).
    pub fn failed_avp(&self) -> Option<Avp> {
        match self {
            MappingError::WrongCommand { .. } => None,
            MappingError::MissingAvp { code, .. } => {
                let min = dictionary::lookup(*code, None).map_or(0, |d| d.kind.min_len());
                Some(Avp::new(*code, vec![0; min]).mandatory(true))
            }
            MappingError::InvalidAvp { avp, .. } => Some(avp.clone()),
        }
    }
}

fn m3(a: Avp) -> Avp {
    a.vendor(VENDOR_3GPP).mandatory(true)
}

impl Ch1Request {
    /// Builds the ACR. AVP order: Session-Id, Origin-Host, Origin-Realm,
    /// Destination-Realm, Accounting-Record-Type, Accounting-Record-Number,
    /// Acct-Application-Id, Service-Context-Id, User-Name, Event-Timestamp,
    /// Subscription-Id, Service-Information. Hop-by-hop and end-to-end ids
    /// are left 0 for the peer to assign.
    pub fn to_acr(&self, local: &LocalIdentity, destination_realm: &str) -> Message {
        let mut m = Message::request(command::ACCOUNTING, app::ACCOUNTING_RF)
            .with(Avp::utf8(code::SESSION_ID, &self.session_id).mandatory(true))
            .with(Avp::diameter_identity(code::ORIGIN_HOST, &local.origin_host).mandatory(true))
            .with(Avp::diameter_identity(code::ORIGIN_REALM, &local.origin_realm).mandatory(true))
            .with(
                Avp::diameter_identity(code::DESTINATION_REALM, destination_realm).mandatory(true),
            )
            .with(
                Avp::enumerated(code::ACCOUNTING_RECORD_TYPE, self.kind.as_u32() as i32)
                    .mandatory(true),
            )
            .with(
                Avp::unsigned32(code::ACCOUNTING_RECORD_NUMBER, self.record_number).mandatory(true),
            )
            .with(Avp::unsigned32(code::ACCT_APPLICATION_ID, app::ACCOUNTING_RF).mandatory(true));
        if let Some(ctx) = &self.service_context_id {
            m.push(Avp::utf8(code::SERVICE_CONTEXT_ID, ctx).mandatory(true));
        }
        if let Some(u) = &self.served_user {
            m.push(Avp::utf8(code::USER_NAME, u).mandatory(true));
        }
        if let Some(t) = self.event_timestamp {
            m.push(Avp::time(code::EVENT_TIMESTAMP, t).mandatory(true));
        }
        if let Some(u) = &self.served_user {
            m.push(
                Avp::grouped(
                    code::SUBSCRIPTION_ID,
                    vec![
                        Avp::enumerated(code::SUBSCRIPTION_ID_TYPE, END_USER_SIP_URI)
                            .mandatory(true),
                        Avp::utf8(code::SUBSCRIPTION_ID_DATA, u).mandatory(true),
                    ],
                )
                .mandatory(true),
            );
        }
        m.push(service_information(&ServiceParties {
            role: self.role,
            call_id: self.call_id.as_deref(),
            calling_party: self.calling_party.as_deref(),
            called_party: self.called_party.as_deref(),
            participants: self.participants,
            session_type: self.session_type,
        }));
        m
    }

    /// Reads an ACR liberally; see [`Ch1Request::from_acr_with_warnings`].
    pub fn from_acr(msg: &Message) -> Result<Ch1Request, MappingError> {
        Self::from_acr_with_warnings(msg).map(|(r, _)| r)
    }

    /// Reads an ACR. Fails only on a missing or unusable Session-Id,
    /// Accounting-Record-Type or Accounting-Record-Number; everything else
    /// that is odd (unknown AVPs, values of the wrong shape, a missing
    /// Acct-Application-Id) becomes a warning.
    pub fn from_acr_with_warnings(
        msg: &Message,
    ) -> Result<(Ch1Request, Vec<String>), MappingError> {
        if msg.header.command_code != command::ACCOUNTING || !msg.is_request() {
            return Err(MappingError::WrongCommand {
                command: msg.describe(),
                expected: "an accounting request",
            });
        }
        let mut warnings = Vec::new();
        let required = |c: u32, name: &'static str| {
            msg.avp(c).ok_or(MappingError::MissingAvp { name, code: c })
        };
        let invalid = |a: &Avp, name: &'static str, reason: String| MappingError::InvalidAvp {
            name,
            code: a.code,
            reason,
            avp: a.clone(),
        };
        let sid_avp = required(code::SESSION_ID, "Session-Id")?;
        let session_id = sid_avp
            .as_utf8()
            .map_err(|e| invalid(sid_avp, "Session-Id", e.to_string()))?
            .to_owned();
        let t_avp = required(code::ACCOUNTING_RECORD_TYPE, "Accounting-Record-Type")?;
        let t = t_avp
            .as_u32()
            .map_err(|e| invalid(t_avp, "Accounting-Record-Type", e.to_string()))?;
        let kind = RecordType::from_u32(t)
            .ok_or_else(|| invalid(t_avp, "Accounting-Record-Type", format!("{t} is not 1..=4")))?;
        let n_avp = required(code::ACCOUNTING_RECORD_NUMBER, "Accounting-Record-Number")?;
        let record_number = n_avp
            .as_u32()
            .map_err(|e| invalid(n_avp, "Accounting-Record-Number", e.to_string()))?;

        if msg.avps.first().is_some_and(|a| a.code != code::SESSION_ID) {
            warnings.push("Session-Id is not the first AVP".to_owned());
        }
        for (c, name) in [
            (code::SESSION_ID, "Session-Id"),
            (code::ACCOUNTING_RECORD_TYPE, "Accounting-Record-Type"),
            (code::ACCOUNTING_RECORD_NUMBER, "Accounting-Record-Number"),
        ] {
            let n = msg.avps_with(c, None).count();
            if n > 1 {
                warnings.push(format!("{name} occurs {n} times; the first is used"));
            }
        }
        match msg.avp(code::ACCT_APPLICATION_ID).map(Avp::as_u32) {
            Some(Ok(app::ACCOUNTING_RF)) => {}
            Some(Ok(other)) => warnings.push(format!("Acct-Application-Id is {other}, expected 3")),
            Some(Err(e)) => warnings.push(format!("Acct-Application-Id: {e}")),
            None => {
                if msg.avp(code::VENDOR_SPECIFIC_APPLICATION_ID).is_none() {
                    warnings.push("no Acct-Application-Id".to_owned());
                }
            }
        }
        if msg.header.application_id != app::ACCOUNTING_RF {
            warnings.push(format!(
                "header application id is {}, expected 3",
                msg.header.application_id
            ));
        }

        let text = |a: Option<Avp>, name: &str, warnings: &mut Vec<String>| -> Option<String> {
            let a = a?;
            match a.as_utf8() {
                Ok(s) => Some(s.to_owned()),
                Err(e) => {
                    warnings.push(format!("{name}: {e}; read lossily"));
                    Some(String::from_utf8_lossy(&a.data).into_owned())
                }
            }
        };
        let origin_host = text(
            msg.avp(code::ORIGIN_HOST).cloned(),
            "Origin-Host",
            &mut warnings,
        )
        .unwrap_or_else(|| {
            warnings.push("no Origin-Host".to_owned());
            String::new()
        });
        let service_context_id = text(
            msg.avp(code::SERVICE_CONTEXT_ID).cloned(),
            "Service-Context-Id",
            &mut warnings,
        );
        let user_name = text(
            msg.avp(code::USER_NAME).cloned(),
            "User-Name",
            &mut warnings,
        );
        let event_timestamp = match msg.avp(code::EVENT_TIMESTAMP) {
            None => None,
            Some(a) => match a.as_ntp_seconds() {
                Ok(raw) => {
                    if raw & 0x8000_0000 == 0 {
                        warnings.push(format!(
                            "Event-Timestamp {raw} is before 1968 or after 2036 (read as era 1)"
                        ));
                    }
                    a.as_time().ok()
                }
                Err(e) => {
                    warnings.push(format!("Event-Timestamp: {e}"));
                    None
                }
            },
        };

        // Subscription-Id at the top level (Ro, and many Rf clients).
        let mut subscription =
            subscription_id(msg.avps_with(code::SUBSCRIPTION_ID, None), &mut warnings);
        let si = msg.avp_vendor(code::SERVICE_INFORMATION, V);
        let (ims, poc) = match si.map(Avp::as_grouped) {
            None => (None, None),
            Some(Err(e)) => {
                warnings.push(format!("Service-Information: {e}"));
                (None, None)
            }
            Some(Ok(children)) => {
                for c in &children {
                    if dictionary::lookup(c.code, c.vendor_id).is_none() {
                        warnings.push(format!(
                            "unknown AVP {} in Service-Information kept",
                            dictionary::avp_name(c.code, c.vendor_id)
                        ));
                    }
                }
                let pick = |code: u32, name: &str, warnings: &mut Vec<String>| {
                    let a = children.iter().find(|a| a.is(code, V))?;
                    match a.as_grouped() {
                        Ok(c) => Some(c),
                        Err(e) => {
                            warnings.push(format!("{name}: {e}"));
                            None
                        }
                    }
                };
                // TS 32.299 puts Subscription-Id inside Service-Information on Rf.
                if subscription.is_none() {
                    subscription = subscription_id(
                        children.iter().filter(|a| a.code == code::SUBSCRIPTION_ID),
                        &mut warnings,
                    )
                    .map(|(u, _)| (u, ServedUserSource::ServiceInformationSubscriptionId));
                }
                (
                    pick(code::IMS_INFORMATION, "IMS-Information", &mut warnings),
                    pick(code::POC_INFORMATION, "PoC-Information", &mut warnings),
                )
            }
        };
        let find = |group: &Option<Vec<Avp>>, c: u32| {
            group
                .as_ref()
                .and_then(|g| g.iter().find(|a| a.is(c, V)).cloned())
        };
        let mut enum_of = |group: &Option<Vec<Avp>>, c: u32, name: &str| -> Option<i32> {
            let a = find(group, c)?;
            match a.as_i32() {
                Ok(v) => Some(v),
                Err(e) => {
                    warnings.push(format!("{name}: {e}"));
                    None
                }
            }
        };
        let role_of_node = enum_of(&ims, code::ROLE_OF_NODE, "Role-Of-Node");
        let server_role = enum_of(&poc, code::POC_SERVER_ROLE, "PoC-Server-Role");
        let session_type = enum_of(&poc, code::POC_SESSION_TYPE, "PoC-Session-Type")
            .and_then(|v| u32::try_from(v).ok());
        let role = match (server_role, role_of_node) {
            (Some(1), _) => Some(ChargedRole::ControllingFunction),
            (_, Some(0)) => Some(ChargedRole::OriginatingPf),
            (_, Some(1)) => Some(ChargedRole::TerminatingPf),
            (s, r) => {
                if s.is_some() || r.is_some() {
                    warnings.push(format!(
                        "role not recognised: PoC-Server-Role {s:?}, Role-Of-Node {r:?}"
                    ));
                }
                None
            }
        };
        let call_id = text(
            find(&ims, code::USER_SESSION_ID),
            "User-Session-Id",
            &mut warnings,
        );
        let calling_party = text(
            find(&ims, code::CALLING_PARTY_ADDRESS),
            "Calling-Party-Address",
            &mut warnings,
        );
        let called_party = text(
            find(&ims, code::CALLED_PARTY_ADDRESS),
            "Called-Party-Address",
            &mut warnings,
        );
        let participants = match find(&poc, code::NUMBER_OF_PARTICIPANTS) {
            None => None,
            Some(a) => match a.as_u32() {
                Ok(n) => Some(n),
                Err(e) => {
                    warnings.push(format!("Number-Of-Participants: {e}"));
                    None
                }
            },
        };
        for a in &msg.avps {
            if dictionary::lookup(a.code, a.vendor_id).is_none() {
                warnings.push(format!(
                    "unknown AVP {} kept",
                    dictionary::avp_name(a.code, a.vendor_id)
                ));
            }
        }
        let by_role = match role {
            Some(ChargedRole::TerminatingPf) => called_party
                .clone()
                .map(|u| (u, ServedUserSource::CalledPartyAddress)),
            _ => calling_party
                .clone()
                .map(|u| (u, ServedUserSource::CallingPartyAddress)),
        };
        let (served_user, served_user_source) = match subscription
            .or(by_role)
            .or(user_name.map(|u| (u, ServedUserSource::UserName)))
        {
            Some((u, from)) => (Some(u), Some(from)),
            None => (None, None),
        };
        if served_user.is_none() {
            warnings
                .push("no served user (Subscription-Id, party address or User-Name)".to_owned());
        }
        Ok((
            Ch1Request {
                kind,
                session_id,
                record_number,
                origin_host,
                served_user,
                served_user_source,
                role,
                call_id,
                calling_party,
                called_party,
                service_context_id,
                participants,
                session_type,
                event_timestamp,
            },
            warnings,
        ))
    }
}

/// What Service-Information says of a CPM session, on Rf and Ro alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceParties<'a> {
    pub role: Option<ChargedRole>,
    pub call_id: Option<&'a str>,
    pub calling_party: Option<&'a str>,
    pub called_party: Option<&'a str>,
    pub participants: Option<u32>,
    pub session_type: Option<u32>,
}

/// Service-Information (3GPP): IMS-Information (role of node, node
/// functionality, Call-ID, parties) and, with a role or a count,
/// PoC-Information (server role, session type, participants).
pub(crate) fn service_information(p: &ServiceParties<'_>) -> Avp {
    let mut ims = Vec::new();
    match p.role {
        Some(ChargedRole::OriginatingPf) => ims.push(m3(Avp::enumerated(code::ROLE_OF_NODE, 0))),
        Some(ChargedRole::TerminatingPf) => ims.push(m3(Avp::enumerated(code::ROLE_OF_NODE, 1))),
        _ => {}
    }
    ims.push(m3(Avp::enumerated(
        code::NODE_FUNCTIONALITY,
        NODE_FUNCTIONALITY_AS,
    )));
    for (c, value) in [
        (code::USER_SESSION_ID, p.call_id),
        (code::CALLING_PARTY_ADDRESS, p.calling_party),
        (code::CALLED_PARTY_ADDRESS, p.called_party),
    ] {
        if let Some(v) = value {
            ims.push(m3(Avp::utf8(c, v)));
        }
    }
    let mut poc = Vec::new();
    if let Some(role) = p.role {
        let server_role = i32::from(role == ChargedRole::ControllingFunction);
        poc.push(m3(Avp::enumerated(code::POC_SERVER_ROLE, server_role)));
        let session_type = p.session_type.unwrap_or(0);
        poc.push(m3(Avp::enumerated(
            code::POC_SESSION_TYPE,
            i32::try_from(session_type).unwrap_or(0),
        )));
    }
    if let Some(n) = p.participants {
        poc.push(m3(Avp::unsigned32(code::NUMBER_OF_PARTICIPANTS, n)));
    }
    let mut si = vec![m3(Avp::grouped(code::IMS_INFORMATION, ims))];
    if !poc.is_empty() {
        si.push(m3(Avp::grouped(code::POC_INFORMATION, poc)));
    }
    m3(Avp::grouped(code::SERVICE_INFORMATION, si))
}

/// The served user from Subscription-Id AVPs: END_USER_SIP_URI preferred,
/// else the first with data; where it was found is the top level unless the
/// caller says otherwise.
pub(crate) fn subscription_id<'a>(
    avps: impl Iterator<Item = &'a Avp>,
    warnings: &mut Vec<String>,
) -> Option<(String, ServedUserSource)> {
    let mut found: Option<String> = None;
    for g in avps {
        let children = match g.as_grouped() {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("Subscription-Id: {e}"));
                continue;
            }
        };
        let ty = children
            .iter()
            .find(|a| a.is(code::SUBSCRIPTION_ID_TYPE, None))
            .and_then(|a| a.as_i32().ok());
        let data = children
            .iter()
            .find(|a| a.is(code::SUBSCRIPTION_ID_DATA, None))
            .map(|a| String::from_utf8_lossy(&a.data).into_owned());
        match (ty, data) {
            (Some(END_USER_SIP_URI), Some(d)) => {
                return Some((d, ServedUserSource::SubscriptionId));
            }
            (other, Some(d)) => {
                warnings.push(format!(
                    "Subscription-Id of type {other:?} (not END_USER_SIP_URI): {d}"
                ));
                found.get_or_insert(d);
            }
            (_, None) => warnings.push("Subscription-Id without Subscription-Id-Data".to_owned()),
        }
    }
    found.map(|d| (d, ServedUserSource::SubscriptionId))
}

/// The ACA to an ACR: Session-Id, Result-Code, Origin-Host, Origin-Realm,
/// Accounting-Record-Type and -Number copied, Acct-Application-Id. Protocol
/// errors (3xxx) get the E bit.
pub fn aca_for(acr: &Message, local: &LocalIdentity, result_code: u32) -> Message {
    if result::is_protocol_error(result_code) {
        return error_answer(acr, local, result_code, None, None);
    }
    let mut m = acr.answer();
    m.push(Avp::unsigned32(code::RESULT_CODE, result_code).mandatory(true));
    m.push(Avp::diameter_identity(code::ORIGIN_HOST, &local.origin_host).mandatory(true));
    m.push(Avp::diameter_identity(code::ORIGIN_REALM, &local.origin_realm).mandatory(true));
    for c in [code::ACCOUNTING_RECORD_TYPE, code::ACCOUNTING_RECORD_NUMBER] {
        if let Some(a) = acr.avp(c) {
            m.push(a.clone());
        }
    }
    m.push(Avp::unsigned32(code::ACCT_APPLICATION_ID, app::ACCOUNTING_RF).mandatory(true));
    m
}

impl Ch1Response {
    /// Reads an ACA (or an error answer to an ACR). Requires Result-Code.
    pub fn from_aca(msg: &Message) -> Result<Ch1Response, MappingError> {
        if msg.header.command_code != command::ACCOUNTING || msg.header.flags & Header::REQUEST != 0
        {
            return Err(MappingError::WrongCommand {
                command: msg.describe(),
                expected: "an accounting answer",
            });
        }
        let rc = msg.avp(code::RESULT_CODE).ok_or(MappingError::MissingAvp {
            name: "Result-Code",
            code: code::RESULT_CODE,
        })?;
        let result_code = rc.as_u32().map_err(|e| MappingError::InvalidAvp {
            name: "Result-Code",
            code: code::RESULT_CODE,
            reason: e.to_string(),
            avp: rc.clone(),
        })?;
        Ok(Ch1Response {
            session_id: msg.session_id().unwrap_or_default().to_owned(),
            result_code,
            record_type: msg
                .avp(code::ACCOUNTING_RECORD_TYPE)
                .and_then(|a| a.as_u32().ok())
                .and_then(RecordType::from_u32),
            record_number: msg
                .avp(code::ACCOUNTING_RECORD_NUMBER)
                .and_then(|a| a.as_u32().ok()),
        })
    }
}

/// A realistic ACR Start of a group session's CF (for benchmarks and
/// golden tests).
pub fn sample_acr_start() -> (Ch1Request, LocalIdentity) {
    let local = LocalIdentity::rf_client(
        "cpm.sut.test.invalid",
        "sut.test.invalid",
        std::net::IpAddr::from([192, 0, 2, 10]),
    );
    let mut req = Ch1Request::start("cpm.sut.test.invalid;1700000000;42;cf")
        .served_user("sip:alice.r7s3@test.invalid")
        .role(ChargedRole::ControllingFunction)
        .participants(3);
    req.session_type = Some(3); // an ad-hoc group
    req.call_id = Some("a84b4c76e66710@pc33.test.invalid".to_owned());
    req.calling_party = Some("sip:alice.r7s3@test.invalid".to_owned());
    req.called_party = Some("sip:group.r7s3@test.invalid".to_owned());
    req.service_context_id = Some("32260@3gpp.org".to_owned());
    req.event_timestamp = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    (req, local)
}

/// Encodes, decodes and maps back a realistic ACR `iterations` times;
/// returns the elapsed time. For the benchmark harness.
pub fn bench_acr_roundtrip(iterations: u64) -> Duration {
    let (req, local) = sample_acr_start();
    let start = Instant::now();
    let mut buf = Vec::with_capacity(512);
    for _ in 0..iterations {
        buf.clear();
        req.to_acr(&local, "cdf.test.invalid").encode_into(&mut buf);
        let decoded = Message::decode(std::hint::black_box(&buf));
        let mapped = decoded.as_ref().ok().map(Ch1Request::from_acr);
        std::hint::black_box(mapped);
    }
    start.elapsed()
}
