//! CH-2 over Diameter Ro: [`Ch2Request`] to CCR and back, [`Ch2Response`]
//! to CCA and back (RFC 4006 credit control with the 3GPP TS 32.299 AVPs,
//! `spec/binding.md`).
//!
//! Reading is liberal: only Session-Id, CC-Request-Type and
//! CC-Request-Number are required. Everything odd (unknown AVPs, values of
//! the wrong shape, 3GPP AVPs without their vendor, the single-service
//! form of RFC 4006, Subscription-Id inside Service-Information) is read
//! where it can be and reported as a warning; unknown top-level AVPs are
//! kept in [`Ch2Request::unknown_avps`].

use std::time::{Duration, SystemTime};

use crate::diameter::codec::Header;
use crate::diameter::commands::AppId;
use crate::diameter::{
    Avp, LocalIdentity, Message, VENDOR_3GPP, app, code, command, dictionary, error_answer, result,
};

use super::ch1::{ChargedRole, ServedUserSource};
use super::ch2::{
    Ch2Request, Ch2Response, CreditGrant, CreditRequest, FailureHandling, FinalUnitAction,
    ReportingReason, RequestType, RequestedAction, ServiceKey, ServiceUnits, TriggerArming,
    TriggerType,
};

const V: Option<u32> = Some(VENDOR_3GPP);

pub use super::rf::{END_USER_SIP_URI, NODE_FUNCTIONALITY_AS};
/// Multiple-Services-Indicator MULTIPLE_SERVICES_SUPPORTED.
pub const MULTIPLE_SERVICES_SUPPORTED: i32 = 1;

/// A CCR (or CCA) that cannot be read as CH-2: the same error as Rf's.
pub use super::rf::MappingError as RoMappingError;

/// What a Ro client (the reference SUT's online charging) says about
/// itself: Auth-Application-Id 4, bare and 3GPP vendor-specific.
pub fn ro_client_identity(
    origin_host: &str,
    origin_realm: &str,
    host_ip: std::net::IpAddr,
) -> LocalIdentity {
    let mut id = LocalIdentity::rf_client(origin_host, origin_realm, host_ip);
    id.acct_application_ids.clear();
    id.auth_application_ids = vec![app::CREDIT_CONTROL_RO];
    id.vendor_specific_applications = vec![(VENDOR_3GPP, AppId::Auth(app::CREDIT_CONTROL_RO))];
    id
}

fn m(a: Avp) -> Avp {
    a.mandatory(true)
}

fn m3(a: Avp) -> Avp {
    a.vendor(VENDOR_3GPP).mandatory(true)
}

fn units_avp(code: u32, u: &ServiceUnits) -> Avp {
    let mut c = Vec::new();
    if let Some(t) = u.time {
        c.push(m(Avp::unsigned32(code::CC_TIME, t)));
    }
    if let Some(n) = u.total_octets {
        c.push(m(Avp::unsigned64(code::CC_TOTAL_OCTETS, n)));
    }
    if let Some(n) = u.input_octets {
        c.push(m(Avp::unsigned64(code::CC_INPUT_OCTETS, n)));
    }
    if let Some(n) = u.output_octets {
        c.push(m(Avp::unsigned64(code::CC_OUTPUT_OCTETS, n)));
    }
    if let Some(n) = u.service_specific {
        c.push(m(Avp::unsigned64(code::CC_SERVICE_SPECIFIC_UNITS, n)));
    }
    m(Avp::grouped(code, c))
}

fn service_key_avps(k: &ServiceKey, out: &mut Vec<Avp>) {
    if let Some(s) = k.service_identifier {
        out.push(m(Avp::unsigned32(code::SERVICE_IDENTIFIER, s)));
    }
    if let Some(r) = k.rating_group {
        out.push(m(Avp::unsigned32(code::RATING_GROUP, r)));
    }
}

fn trigger_avp(types: &[TriggerType]) -> Avp {
    m3(Avp::grouped(
        code::TRIGGER,
        types
            .iter()
            .map(|t| m3(Avp::enumerated(code::TRIGGER_TYPE, t.as_i32())))
            .collect(),
    ))
}

impl Ch2Request {
    /// Builds the CCR. AVP order (RFC 4006 8.2, TS 32.299 6.4.2):
    /// Session-Id, Origin-Host, Origin-Realm, Destination-Realm,
    /// Auth-Application-Id, Service-Context-Id, CC-Request-Type,
    /// CC-Request-Number, Event-Timestamp, Subscription-Id,
    /// Requested-Action, Multiple-Services-Indicator,
    /// Multiple-Services-Credit-Control*, Service-Information, then the kept
    /// unknown AVPs. Hop-by-hop and end-to-end ids are left 0 for the peer.
    pub fn to_ccr(&self, local: &LocalIdentity, destination_realm: &str) -> Message {
        let mut msg = Message::request(command::CREDIT_CONTROL, app::CREDIT_CONTROL_RO)
            .with(m(Avp::utf8(code::SESSION_ID, &self.session_id)))
            .with(m(Avp::diameter_identity(
                code::ORIGIN_HOST,
                &local.origin_host,
            )))
            .with(m(Avp::diameter_identity(
                code::ORIGIN_REALM,
                &local.origin_realm,
            )))
            .with(m(Avp::diameter_identity(
                code::DESTINATION_REALM,
                destination_realm,
            )))
            .with(m(Avp::unsigned32(
                code::AUTH_APPLICATION_ID,
                app::CREDIT_CONTROL_RO,
            )));
        if let Some(ctx) = &self.service_context_id {
            msg.push(m(Avp::utf8(code::SERVICE_CONTEXT_ID, ctx)));
        }
        msg.push(m(Avp::enumerated(
            code::CC_REQUEST_TYPE,
            self.kind.as_u32() as i32,
        )));
        msg.push(m(Avp::unsigned32(
            code::CC_REQUEST_NUMBER,
            self.request_number,
        )));
        if let Some(t) = self.event_timestamp {
            msg.push(m(Avp::time(code::EVENT_TIMESTAMP, t)));
        }
        if let Some(u) = &self.served_user {
            msg.push(m(Avp::grouped(
                code::SUBSCRIPTION_ID,
                vec![
                    m(Avp::enumerated(
                        code::SUBSCRIPTION_ID_TYPE,
                        END_USER_SIP_URI,
                    )),
                    m(Avp::utf8(code::SUBSCRIPTION_ID_DATA, u)),
                ],
            )));
        }
        if let Some(a) = self.requested_action {
            msg.push(m(Avp::enumerated(code::REQUESTED_ACTION, a.as_i32())));
        }
        if !self.credits.is_empty() {
            msg.push(m(Avp::enumerated(
                code::MULTIPLE_SERVICES_INDICATOR,
                MULTIPLE_SERVICES_SUPPORTED,
            )));
        }
        for c in &self.credits {
            let mut g = Vec::new();
            if let Some(r) = &c.requested {
                g.push(units_avp(code::REQUESTED_SERVICE_UNIT, r));
            }
            if let Some(u) = &c.used {
                g.push(units_avp(code::USED_SERVICE_UNIT, u));
            }
            service_key_avps(&c.service, &mut g);
            if let Some(r) = c.reporting_reason {
                g.push(m3(Avp::enumerated(code::REPORTING_REASON, r.as_i32())));
            }
            if !c.triggers.is_empty() {
                g.push(trigger_avp(&c.triggers));
            }
            msg.push(m(Avp::grouped(code::MULTIPLE_SERVICES_CREDIT_CONTROL, g)));
        }
        if self.service_information {
            msg.push(self.service_information_avp());
        }
        msg.avps.extend(self.unknown_avps.iter().cloned());
        msg
    }

    fn service_information_avp(&self) -> Avp {
        super::rf::service_information(&super::rf::ServiceParties {
            role: self.role,
            call_id: self.call_id.as_deref(),
            calling_party: self.calling_party.as_deref(),
            called_party: self.called_party.as_deref(),
            participants: self.participants,
            session_type: None,
        })
    }

    /// Reads a CCR, dropping the warnings.
    pub fn from_ccr(msg: &Message) -> Result<Ch2Request, RoMappingError> {
        Self::from_ccr_with_warnings(msg).map(|(r, _)| r)
    }

    /// Reads a CCR. Fails only on a missing or unusable Session-Id,
    /// CC-Request-Type or CC-Request-Number; everything else that is odd
    /// becomes a warning (one line each, naming the AVP).
    pub fn from_ccr_with_warnings(
        msg: &Message,
    ) -> Result<(Ch2Request, Vec<String>), RoMappingError> {
        if msg.header.command_code != command::CREDIT_CONTROL || !msg.is_request() {
            return Err(RoMappingError::WrongCommand {
                command: msg.describe(),
                expected: "a credit-control request",
            });
        }
        let mut w = Vec::new();
        let required = |c: u32, name: &'static str| {
            msg.avp(c)
                .ok_or(RoMappingError::MissingAvp { name, code: c })
        };
        let invalid = |a: &Avp, name: &'static str, reason: String| RoMappingError::InvalidAvp {
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
        let t_avp = required(code::CC_REQUEST_TYPE, "CC-Request-Type")?;
        let t = t_avp
            .as_u32()
            .map_err(|e| invalid(t_avp, "CC-Request-Type", e.to_string()))?;
        let kind = RequestType::from_u32(t)
            .ok_or_else(|| invalid(t_avp, "CC-Request-Type", format!("{t} is not 1..=4")))?;
        let n_avp = required(code::CC_REQUEST_NUMBER, "CC-Request-Number")?;
        let request_number = n_avp
            .as_u32()
            .map_err(|e| invalid(n_avp, "CC-Request-Number", e.to_string()))?;

        if msg.avps.first().is_some_and(|a| a.code != code::SESSION_ID) {
            w.push("Session-Id is not the first AVP".to_owned());
        }
        for (c, name) in [
            (code::SESSION_ID, "Session-Id"),
            (code::CC_REQUEST_TYPE, "CC-Request-Type"),
            (code::CC_REQUEST_NUMBER, "CC-Request-Number"),
        ] {
            let n = msg.avps_with(c, None).count();
            if n > 1 {
                w.push(format!("{name} occurs {n} times; the first is used"));
            }
        }
        check_application(msg, &mut w);

        let origin_host =
            text(msg.avp(code::ORIGIN_HOST), "Origin-Host", &mut w).unwrap_or_else(|| {
                w.push("no Origin-Host".to_owned());
                String::new()
            });
        let service_context_id = text(
            msg.avp(code::SERVICE_CONTEXT_ID),
            "Service-Context-Id",
            &mut w,
        );
        if service_context_id.is_none() {
            w.push("no Service-Context-Id (required on Ro)".to_owned());
        }
        let user_name = text(msg.avp(code::USER_NAME), "User-Name", &mut w);
        let event_timestamp = match msg.avp(code::EVENT_TIMESTAMP) {
            None => None,
            Some(a) => match a.as_ntp_seconds() {
                Ok(raw) => {
                    if raw & 0x8000_0000 == 0 {
                        w.push(format!(
                            "Event-Timestamp {raw} is before 1968 or after 2036 (read as era 1)"
                        ));
                    }
                    a.as_time().ok()
                }
                Err(e) => {
                    w.push(format!("Event-Timestamp: {e}"));
                    None
                }
            },
        };
        let requested_action = enum_of(msg.avp(code::REQUESTED_ACTION), "Requested-Action", &mut w)
            .map(RequestedAction::from_i32);
        if kind == RequestType::Event && requested_action.is_none() {
            w.push("EventRequest without Requested-Action (required with EVENT)".to_owned());
        }

        let mut subscription = subscription_id(msg.avps_with(code::SUBSCRIPTION_ID, None), &mut w)
            .map(|u| (u, ServedUserSource::SubscriptionId));

        // Multiple-Services-Credit-Control, and the single-service form of
        // RFC 4006 (units at the top level) read as one more MSCC.
        let mut credits = Vec::new();
        for g in msg.avps_with(code::MULTIPLE_SERVICES_CREDIT_CONTROL, None) {
            match g.as_grouped() {
                Ok(children) => credits.push(credit_request(&children, &mut w)),
                Err(e) => w.push(format!("Multiple-Services-Credit-Control: {e}")),
            }
        }
        let top_level: Vec<Avp> = msg
            .avps
            .iter()
            .filter(|a| {
                a.is(code::REQUESTED_SERVICE_UNIT, None)
                    || a.is(code::USED_SERVICE_UNIT, None)
                    || a.is(code::SERVICE_IDENTIFIER, None)
                    || a.is(code::RATING_GROUP, None)
            })
            .cloned()
            .collect();
        if top_level
            .iter()
            .any(|a| a.code != code::SERVICE_IDENTIFIER && a.code != code::RATING_GROUP)
        {
            w.push(
                "units at the top level (RFC 4006 single-service form) read as one more \
                 Multiple-Services-Credit-Control"
                    .to_owned(),
            );
            credits.push(credit_request(&top_level, &mut w));
        }
        if let Some(t) = find3(&msg.avps, code::TRIGGER, "Trigger", &mut w) {
            w.push("Trigger at the top level (expected inside an MSCC); read anyway".to_owned());
            let types = trigger_types(&t, &mut w);
            if credits.is_empty() {
                credits.push(CreditRequest::default());
            }
            credits[0].triggers.extend(types);
        }

        let si = find3(
            &msg.avps,
            code::SERVICE_INFORMATION,
            "Service-Information",
            &mut w,
        );
        let service_information = si.is_some();
        let (ims, poc) = match si.as_ref().map(Avp::as_grouped) {
            None => {
                w.push("no Service-Information".to_owned());
                (None, None)
            }
            Some(Err(e)) => {
                w.push(format!("Service-Information: {e}"));
                (None, None)
            }
            Some(Ok(children)) => {
                unknown_children(&children, "Service-Information", &mut w);
                let inner = children
                    .iter()
                    .filter(|a| a.code == code::SUBSCRIPTION_ID)
                    .collect::<Vec<_>>();
                if !inner.is_empty() {
                    if subscription.is_none() {
                        w.push(
                            "Subscription-Id inside Service-Information (the Rf placement; \
                             Ro has it at the top level); read anyway"
                                .to_owned(),
                        );
                        subscription = subscription_id(inner.into_iter(), &mut w)
                            .map(|u| (u, ServedUserSource::ServiceInformationSubscriptionId));
                    } else {
                        w.push(
                            "Subscription-Id both at the top level and inside \
                             Service-Information; the top-level one is used"
                                .to_owned(),
                        );
                    }
                }
                (
                    group3(&children, code::IMS_INFORMATION, "IMS-Information", &mut w),
                    group3(&children, code::POC_INFORMATION, "PoC-Information", &mut w),
                )
            }
        };
        let ims = ims.unwrap_or_default();
        let poc = poc.unwrap_or_default();
        let role_of_node = enum_of(
            find3(&ims, code::ROLE_OF_NODE, "Role-Of-Node", &mut w).as_ref(),
            "Role-Of-Node",
            &mut w,
        );
        let server_role = enum_of(
            find3(&poc, code::POC_SERVER_ROLE, "PoC-Server-Role", &mut w).as_ref(),
            "PoC-Server-Role",
            &mut w,
        );
        let role = match (server_role, role_of_node) {
            (Some(1), _) => Some(ChargedRole::ControllingFunction),
            (_, Some(0)) => Some(ChargedRole::OriginatingPf),
            (_, Some(1)) => Some(ChargedRole::TerminatingPf),
            (s, r) => {
                if s.is_some() || r.is_some() {
                    w.push(format!(
                        "role not recognised: PoC-Server-Role {s:?}, Role-Of-Node {r:?}"
                    ));
                }
                None
            }
        };
        let call_id = text(
            find3(&ims, code::USER_SESSION_ID, "User-Session-Id", &mut w).as_ref(),
            "User-Session-Id",
            &mut w,
        );
        let calling_party = text(
            find3(
                &ims,
                code::CALLING_PARTY_ADDRESS,
                "Calling-Party-Address",
                &mut w,
            )
            .as_ref(),
            "Calling-Party-Address",
            &mut w,
        );
        let called_party = text(
            find3(
                &ims,
                code::CALLED_PARTY_ADDRESS,
                "Called-Party-Address",
                &mut w,
            )
            .as_ref(),
            "Called-Party-Address",
            &mut w,
        );
        let participants = match find3(
            &poc,
            code::NUMBER_OF_PARTICIPANTS,
            "Number-Of-Participants",
            &mut w,
        ) {
            None => None,
            Some(a) => match a.as_u32() {
                Ok(n) => Some(n),
                Err(e) => {
                    w.push(format!("Number-Of-Participants: {e}"));
                    None
                }
            },
        };

        let mut unknown_avps = Vec::new();
        for a in &msg.avps {
            // Vendorless Service-Information and Trigger were read above
            // (with a warning); keeping them would send them twice.
            let read_anyway = a.is(code::SERVICE_INFORMATION, None) || a.is(code::TRIGGER, None);
            if dictionary::lookup(a.code, a.vendor_id).is_none() && !read_anyway {
                w.push(format!(
                    "unknown AVP {} kept",
                    dictionary::avp_name(a.code, a.vendor_id)
                ));
                unknown_avps.push(a.clone());
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
            None => {
                w.push("no served user (Subscription-Id, party address or User-Name)".to_owned());
                (None, None)
            }
        };
        Ok((
            Ch2Request {
                kind,
                session_id,
                request_number,
                origin_host,
                served_user,
                served_user_source,
                role,
                call_id,
                calling_party,
                called_party,
                service_context_id,
                participants,
                event_timestamp,
                requested_action,
                credits,
                service_information,
                unknown_avps,
            },
            w,
        ))
    }
}

/// Auth-Application-Id 4 at the top level or inside
/// Vendor-Specific-Application-Id, and application 4 in the header.
fn check_application(msg: &Message, w: &mut Vec<String>) {
    match msg.avp(code::AUTH_APPLICATION_ID).map(Avp::as_u32) {
        Some(Ok(app::CREDIT_CONTROL_RO)) => {}
        Some(Ok(other)) => w.push(format!("Auth-Application-Id is {other}, expected 4")),
        Some(Err(e)) => w.push(format!("Auth-Application-Id: {e}")),
        None => {
            let in_vsai = msg
                .avps_with(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
                .filter_map(|g| g.find(code::AUTH_APPLICATION_ID))
                .any(|a| a.as_u32() == Ok(app::CREDIT_CONTROL_RO));
            if !in_vsai {
                w.push("no Auth-Application-Id 4".to_owned());
            }
        }
    }
    if msg.header.application_id != app::CREDIT_CONTROL_RO {
        w.push(format!(
            "header application id is {}, expected 4",
            msg.header.application_id
        ));
    }
}

fn text(a: Option<&Avp>, name: &str, w: &mut Vec<String>) -> Option<String> {
    let a = a?;
    match a.as_utf8() {
        Ok(s) => Some(s.to_owned()),
        Err(e) => {
            w.push(format!("{name}: {e}; read lossily"));
            Some(String::from_utf8_lossy(&a.data).into_owned())
        }
    }
}

fn enum_of(a: Option<&Avp>, name: &str, w: &mut Vec<String>) -> Option<i32> {
    match a?.as_i32() {
        Ok(v) => Some(v),
        Err(e) => {
            w.push(format!("{name}: {e}"));
            None
        }
    }
}

fn u32_of(a: Option<&Avp>, name: &str, w: &mut Vec<String>) -> Option<u32> {
    match a?.as_u32() {
        Ok(v) => Some(v),
        Err(e) => {
            w.push(format!("{name}: {e}"));
            None
        }
    }
}

/// A 3GPP AVP among `avps`: with vendor 10415, or (with a warning) without.
fn find3(avps: &[Avp], c: u32, name: &str, w: &mut Vec<String>) -> Option<Avp> {
    if let Some(a) = avps.iter().find(|a| a.is(c, V)) {
        return Some(a.clone());
    }
    let a = avps.iter().find(|a| a.is(c, None))?;
    w.push(format!("{name} ({c}) without vendor 10415; read anyway"));
    Some(a.clone())
}

fn group3(avps: &[Avp], c: u32, name: &str, w: &mut Vec<String>) -> Option<Vec<Avp>> {
    let a = find3(avps, c, name, w)?;
    match a.as_grouped() {
        Ok(children) => {
            unknown_children(&children, name, w);
            Some(children)
        }
        Err(e) => {
            w.push(format!("{name}: {e}"));
            None
        }
    }
}

fn unknown_children(children: &[Avp], parent: &str, w: &mut Vec<String>) {
    for c in children {
        if dictionary::lookup(c.code, c.vendor_id).is_none() {
            w.push(format!(
                "unknown AVP {} in {parent} kept",
                dictionary::avp_name(c.code, c.vendor_id)
            ));
        }
    }
}

fn units(a: &Avp, name: &str, w: &mut Vec<String>) -> ServiceUnits {
    let children = match a.as_grouped() {
        Ok(c) => c,
        Err(e) => {
            w.push(format!("{name}: {e}"));
            return ServiceUnits::default();
        }
    };
    let u64_of = |c: u32, n: &str, w: &mut Vec<String>| {
        let a = children.iter().find(|a| a.is(c, None))?;
        match a.as_u64() {
            Ok(v) => Some(v),
            // Some clients send 32-bit counters.
            Err(e) => match a.as_u32() {
                Ok(v) => {
                    w.push(format!("{name}/{n} is 4 bytes, Unsigned64 expected; read"));
                    Some(u64::from(v))
                }
                Err(_) => {
                    w.push(format!("{name}/{n}: {e}"));
                    None
                }
            },
        }
    };
    let u = ServiceUnits {
        time: u32_of(
            children.iter().find(|a| a.is(code::CC_TIME, None)),
            &format!("{name}/CC-Time"),
            w,
        ),
        service_specific: u64_of(
            code::CC_SERVICE_SPECIFIC_UNITS,
            "CC-Service-Specific-Units",
            w,
        ),
        total_octets: u64_of(code::CC_TOTAL_OCTETS, "CC-Total-Octets", w),
        input_octets: u64_of(code::CC_INPUT_OCTETS, "CC-Input-Octets", w),
        output_octets: u64_of(code::CC_OUTPUT_OCTETS, "CC-Output-Octets", w),
    };
    for c in &children {
        let known = [
            code::CC_TIME,
            code::CC_SERVICE_SPECIFIC_UNITS,
            code::CC_TOTAL_OCTETS,
            code::CC_INPUT_OCTETS,
            code::CC_OUTPUT_OCTETS,
        ]
        .contains(&c.code)
            && c.vendor_id.is_none();
        if !known && !c.is(code::REPORTING_REASON, V) {
            w.push(format!(
                "{} in {name} not read",
                dictionary::avp_name(c.code, c.vendor_id)
            ));
        }
    }
    u
}

fn service_key(children: &[Avp], parent: &str, w: &mut Vec<String>) -> ServiceKey {
    ServiceKey {
        service_identifier: u32_of(
            children
                .iter()
                .find(|a| a.is(code::SERVICE_IDENTIFIER, None)),
            &format!("{parent}/Service-Identifier"),
            w,
        ),
        rating_group: u32_of(
            children.iter().find(|a| a.is(code::RATING_GROUP, None)),
            &format!("{parent}/Rating-Group"),
            w,
        ),
    }
}

fn trigger_types(trigger: &Avp, w: &mut Vec<String>) -> Vec<TriggerType> {
    match trigger.as_grouped() {
        Ok(children) => children
            .iter()
            .filter(|a| a.code == code::TRIGGER_TYPE)
            .filter_map(|a| {
                if a.vendor_id.is_none() {
                    w.push("Trigger-Type without vendor 10415; read anyway".to_owned());
                }
                enum_of(Some(a), "Trigger-Type", w)
            })
            .map(TriggerType::from_i32)
            .collect(),
        Err(e) => {
            w.push(format!("Trigger: {e}"));
            Vec::new()
        }
    }
}

/// One MSCC of a request (or the top-level single-service AVPs).
fn credit_request(children: &[Avp], w: &mut Vec<String>) -> CreditRequest {
    let name = "Multiple-Services-Credit-Control";
    unknown_children(children, name, w);
    let requested = children
        .iter()
        .find(|a| a.is(code::REQUESTED_SERVICE_UNIT, None))
        .map(|a| units(a, "Requested-Service-Unit", w));
    let mut used: Option<ServiceUnits> = None;
    let mut reporting_reason = None;
    for a in children
        .iter()
        .filter(|a| a.is(code::USED_SERVICE_UNIT, None))
    {
        let u = units(a, "Used-Service-Unit", w);
        used = Some(used.map_or(u, |x| x.plus(&u)));
        // TS 32.299 allows Reporting-Reason inside Used-Service-Unit.
        if let Some(r) = a.find_vendor(code::REPORTING_REASON, V) {
            reporting_reason = enum_of(Some(&r), "Reporting-Reason", w);
        }
    }
    if let Some(r) = find3(children, code::REPORTING_REASON, "Reporting-Reason", w) {
        reporting_reason = enum_of(Some(&r), "Reporting-Reason", w).or(reporting_reason);
    }
    let mut triggers = Vec::new();
    if let Some(t) = find3(children, code::TRIGGER, "Trigger", w) {
        triggers = trigger_types(&t, w);
    }
    let loose: Vec<&Avp> = children
        .iter()
        .filter(|a| a.code == code::TRIGGER_TYPE)
        .collect();
    if !loose.is_empty() {
        w.push(format!(
            "Trigger-Type directly in {name} (expected inside Trigger); read anyway"
        ));
        for a in loose {
            if let Some(v) = enum_of(Some(a), "Trigger-Type", w) {
                triggers.push(TriggerType::from_i32(v));
            }
        }
    }
    CreditRequest {
        service: service_key(children, name, w),
        requested,
        used,
        reporting_reason: reporting_reason.map(ReportingReason::from_i32),
        triggers,
    }
}

/// The served user from Subscription-Id AVPs (Rf's reader: END_USER_SIP_URI
/// preferred, else the first with data).
fn subscription_id<'a>(avps: impl Iterator<Item = &'a Avp>, w: &mut Vec<String>) -> Option<String> {
    super::rf::subscription_id(avps, w).map(|(user, _)| user)
}

impl Ch2Response {
    /// Builds the CCA answering `request` (the CCR as received: its ids,
    /// Session-Id, and, where this response does not say, its
    /// CC-Request-Type and -Number are copied). AVP order (RFC 4006 8.3):
    /// Session-Id, Result-Code, Origin-Host, Origin-Realm,
    /// Auth-Application-Id, CC-Request-Type, CC-Request-Number,
    /// Multiple-Services-Credit-Control*, Credit-Control-Failure-Handling.
    /// A protocol error (3xxx) is an error answer with the E bit.
    ///
    /// The Trigger goes inside the first MSCC; with no MSCC, in an MSCC of
    /// its own.
    pub fn to_cca(&self, request: &Message, local: &LocalIdentity) -> Message {
        if result::is_protocol_error(self.result_code) {
            return error_answer(request, local, self.result_code, None, None);
        }
        let mut msg = request.answer();
        if msg.avps.is_empty() && !self.session_id.is_empty() {
            msg.push(m(Avp::utf8(code::SESSION_ID, &self.session_id)));
        }
        msg.push(m(Avp::unsigned32(code::RESULT_CODE, self.result_code)));
        msg.push(m(Avp::diameter_identity(
            code::ORIGIN_HOST,
            &local.origin_host,
        )));
        msg.push(m(Avp::diameter_identity(
            code::ORIGIN_REALM,
            &local.origin_realm,
        )));
        msg.push(m(Avp::unsigned32(
            code::AUTH_APPLICATION_ID,
            app::CREDIT_CONTROL_RO,
        )));
        match self.request_type {
            Some(t) => msg.push(m(Avp::enumerated(code::CC_REQUEST_TYPE, t.as_u32() as i32))),
            None => {
                if let Some(a) = request.avp(code::CC_REQUEST_TYPE) {
                    msg.push(a.clone());
                }
            }
        }
        match self.request_number {
            Some(n) => msg.push(m(Avp::unsigned32(code::CC_REQUEST_NUMBER, n))),
            None => {
                if let Some(a) = request.avp(code::CC_REQUEST_NUMBER) {
                    msg.push(a.clone());
                }
            }
        }
        let trigger = match &self.triggers {
            TriggerArming::Unchanged => None,
            TriggerArming::DisarmAll => Some(trigger_avp(&[])),
            TriggerArming::Arm(v) => Some(trigger_avp(v)),
        };
        for (i, c) in self.credits.iter().enumerate() {
            let mut g = Vec::new();
            if let Some(u) = &c.granted {
                g.push(units_avp(code::GRANTED_SERVICE_UNIT, u));
            }
            service_key_avps(&c.service, &mut g);
            if let Some(v) = c.validity_time {
                g.push(m(Avp::unsigned32(code::VALIDITY_TIME, v)));
            }
            if let Some(rc) = c.result_code {
                g.push(m(Avp::unsigned32(code::RESULT_CODE, rc)));
            }
            if let Some(a) = c.final_unit_action {
                g.push(m(Avp::grouped(
                    code::FINAL_UNIT_INDICATION,
                    vec![m(Avp::enumerated(code::FINAL_UNIT_ACTION, a.as_i32()))],
                )));
            }
            if i == 0
                && let Some(t) = &trigger
            {
                g.push(t.clone());
            }
            msg.push(m(Avp::grouped(code::MULTIPLE_SERVICES_CREDIT_CONTROL, g)));
        }
        if self.credits.is_empty()
            && let Some(t) = trigger
        {
            msg.push(m(Avp::grouped(
                code::MULTIPLE_SERVICES_CREDIT_CONTROL,
                vec![t],
            )));
        }
        if let Some(f) = self.failure_handling {
            msg.push(m(Avp::enumerated(
                code::CREDIT_CONTROL_FAILURE_HANDLING,
                f.as_i32(),
            )));
        }
        msg
    }

    /// Reads a CCA (or an error answer to a CCR). Requires Result-Code.
    pub fn from_cca(msg: &Message) -> Result<Ch2Response, RoMappingError> {
        Self::from_cca_with_warnings(msg).map(|(r, _)| r)
    }

    /// Reads a CCA, with a warning for everything odd. An MSCC that holds
    /// only a Trigger gives no [`CreditGrant`].
    pub fn from_cca_with_warnings(
        msg: &Message,
    ) -> Result<(Ch2Response, Vec<String>), RoMappingError> {
        if msg.header.command_code != command::CREDIT_CONTROL
            || msg.header.flags & Header::REQUEST != 0
        {
            return Err(RoMappingError::WrongCommand {
                command: msg.describe(),
                expected: "a credit-control answer",
            });
        }
        let rc = msg
            .avp(code::RESULT_CODE)
            .ok_or(RoMappingError::MissingAvp {
                name: "Result-Code",
                code: code::RESULT_CODE,
            })?;
        let result_code = rc.as_u32().map_err(|e| RoMappingError::InvalidAvp {
            name: "Result-Code",
            code: code::RESULT_CODE,
            reason: e.to_string(),
            avp: rc.clone(),
        })?;
        let mut w = Vec::new();
        let request_type = u32_of(msg.avp(code::CC_REQUEST_TYPE), "CC-Request-Type", &mut w)
            .and_then(|t| {
                let k = RequestType::from_u32(t);
                if k.is_none() {
                    w.push(format!("CC-Request-Type {t} is not 1..=4"));
                }
                k
            });
        let request_number = u32_of(
            msg.avp(code::CC_REQUEST_NUMBER),
            "CC-Request-Number",
            &mut w,
        );
        let mut credits = Vec::new();
        let mut triggers = TriggerArming::Unchanged;
        for g in msg.avps_with(code::MULTIPLE_SERVICES_CREDIT_CONTROL, None) {
            let children = match g.as_grouped() {
                Ok(c) => c,
                Err(e) => {
                    w.push(format!("Multiple-Services-Credit-Control: {e}"));
                    continue;
                }
            };
            unknown_children(&children, "Multiple-Services-Credit-Control", &mut w);
            if let Some(t) = find3(&children, code::TRIGGER, "Trigger", &mut w) {
                if triggers != TriggerArming::Unchanged {
                    w.push("Trigger in more than one MSCC; the first is used".to_owned());
                } else {
                    triggers = TriggerArming::arm(trigger_types(&t, &mut w));
                }
            }
            if children.iter().all(|a| a.code == code::TRIGGER) {
                continue;
            }
            credits.push(CreditGrant {
                service: service_key(&children, "Multiple-Services-Credit-Control", &mut w),
                result_code: u32_of(
                    children.iter().find(|a| a.is(code::RESULT_CODE, None)),
                    "MSCC Result-Code",
                    &mut w,
                ),
                granted: children
                    .iter()
                    .find(|a| a.is(code::GRANTED_SERVICE_UNIT, None))
                    .map(|a| units(a, "Granted-Service-Unit", &mut w)),
                validity_time: u32_of(
                    children.iter().find(|a| a.is(code::VALIDITY_TIME, None)),
                    "Validity-Time",
                    &mut w,
                ),
                final_unit_action: children
                    .iter()
                    .find(|a| a.is(code::FINAL_UNIT_INDICATION, None))
                    .and_then(|fui| {
                        let action = fui.find(code::FINAL_UNIT_ACTION);
                        if action.is_none() {
                            w.push("Final-Unit-Indication without Final-Unit-Action".to_owned());
                        }
                        enum_of(action.as_ref(), "Final-Unit-Action", &mut w)
                    })
                    .map(FinalUnitAction::from_i32),
            });
        }
        if let Some(t) = find3(&msg.avps, code::TRIGGER, "Trigger", &mut w) {
            w.push("Trigger at the top level (expected inside an MSCC); read anyway".to_owned());
            if triggers == TriggerArming::Unchanged {
                triggers = TriggerArming::arm(trigger_types(&t, &mut w));
            }
        }
        let failure_handling = enum_of(
            msg.avp(code::CREDIT_CONTROL_FAILURE_HANDLING),
            "Credit-Control-Failure-Handling",
            &mut w,
        )
        .map(FailureHandling::from_i32);
        for a in &msg.avps {
            if dictionary::lookup(a.code, a.vendor_id).is_none() {
                w.push(format!(
                    "unknown AVP {} ignored",
                    dictionary::avp_name(a.code, a.vendor_id)
                ));
            }
        }
        Ok((
            Ch2Response {
                session_id: msg.session_id().unwrap_or_default().to_owned(),
                result_code,
                request_type,
                request_number,
                credits,
                triggers,
                failure_handling,
            },
            w,
        ))
    }
}

/// A realistic CCR-I of a group session's CF: 3 invited participants, 60 s
/// and 1 unit requested for service 1 / rating group 100 (golden tests,
/// benchmarks, examples).
pub fn sample_ccr_initial() -> (Ch2Request, LocalIdentity) {
    let local = ro_client_identity(
        "cpm.sut.test.invalid",
        "sut.test.invalid",
        std::net::IpAddr::from([192, 0, 2, 10]),
    );
    let mut req = Ch2Request::initial("cpm.sut.test.invalid;1700000000;43;cf-online")
        .served_user("sip:alice.r7s3@test.invalid")
        .role(ChargedRole::ControllingFunction)
        .participants(3)
        .credit(CreditRequest {
            service: ServiceKey {
                service_identifier: Some(1),
                rating_group: Some(100),
            },
            requested: Some(ServiceUnits {
                time: Some(60),
                service_specific: Some(1),
                ..ServiceUnits::default()
            }),
            ..CreditRequest::default()
        });
    req.call_id = Some("a84b4c76e66710@pc33.test.invalid".to_owned());
    req.calling_party = Some("sip:alice.r7s3@test.invalid".to_owned());
    req.called_party = Some("sip:group.r7s3@test.invalid".to_owned());
    req.service_context_id = Some("32260@3gpp.org".to_owned());
    req.event_timestamp = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    (req, local)
}
