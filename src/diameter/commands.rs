//! Builders of the base protocol's own messages (CER/CEA, DWR/DWA,
//! DPR/DPA), error answers, and what a peer says about itself.

use std::net::IpAddr;

use super::avp::Avp;
use super::codec::{Header, Message};
use super::{VENDOR_3GPP, app, code, command, result};

/// An application named in a Vendor-Specific-Application-Id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppId {
    /// Auth-Application-Id.
    Auth(u32),
    /// Acct-Application-Id.
    Acct(u32),
}

impl AppId {
    /// The application id, whichever kind.
    pub fn id(self) -> u32 {
        match self {
            AppId::Auth(i) | AppId::Acct(i) => i,
        }
    }
}

/// What this node says about itself in CER/CEA and on every message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalIdentity {
    /// Origin-Host (FQDN).
    pub origin_host: String,
    /// Origin-Realm.
    pub origin_realm: String,
    /// Host-IP-Address.
    pub host_ip: IpAddr,
    /// Vendor-Id.
    pub vendor_id: u32,
    /// Product-Name.
    pub product_name: String,
    /// Origin-State-Id.
    pub origin_state_id: u32,
    /// Bare Auth-Application-Id values.
    pub auth_application_ids: Vec<u32>,
    /// Bare Acct-Application-Id values.
    pub acct_application_ids: Vec<u32>,
    /// Supported-Vendor-Id values.
    pub supported_vendor_ids: Vec<u32>,
    /// Vendor-Specific-Application-Id groups: (Vendor-Id, application).
    pub vendor_specific_applications: Vec<(u32, AppId)>,
}

impl LocalIdentity {
    /// A charging server facing 3GPP clients: advertises Rf (3) and Ro (4)
    /// both bare and in 3GPP Vendor-Specific-Application-Id groups.
    pub fn charging_server(origin_host: &str, origin_realm: &str, host_ip: IpAddr) -> Self {
        LocalIdentity {
            origin_host: origin_host.to_owned(),
            origin_realm: origin_realm.to_owned(),
            host_ip,
            vendor_id: 0,
            product_name: "cpmcc".to_owned(),
            origin_state_id: 1,
            auth_application_ids: vec![app::CREDIT_CONTROL_RO],
            acct_application_ids: vec![app::ACCOUNTING_RF],
            supported_vendor_ids: vec![VENDOR_3GPP],
            vendor_specific_applications: vec![
                (VENDOR_3GPP, AppId::Auth(app::CREDIT_CONTROL_RO)),
                (VENDOR_3GPP, AppId::Acct(app::ACCOUNTING_RF)),
            ],
        }
    }

    /// An Rf (offline charging) client: Acct-Application-Id 3, bare and
    /// 3GPP vendor-specific.
    pub fn rf_client(origin_host: &str, origin_realm: &str, host_ip: IpAddr) -> Self {
        LocalIdentity {
            origin_host: origin_host.to_owned(),
            origin_realm: origin_realm.to_owned(),
            host_ip,
            vendor_id: 0,
            product_name: "cpmcc-reference-sut".to_owned(),
            origin_state_id: 1,
            auth_application_ids: vec![],
            acct_application_ids: vec![app::ACCOUNTING_RF],
            supported_vendor_ids: vec![VENDOR_3GPP],
            vendor_specific_applications: vec![(VENDOR_3GPP, AppId::Acct(app::ACCOUNTING_RF))],
        }
    }

    /// Every application id advertised, bare or vendor-specific.
    pub fn application_ids(&self) -> Vec<u32> {
        advertised_ids(
            &self.auth_application_ids,
            &self.acct_application_ids,
            &self.vendor_specific_applications,
        )
    }

    fn origin_avps(&self) -> [Avp; 2] {
        [
            Avp::diameter_identity(code::ORIGIN_HOST, &self.origin_host).mandatory(true),
            Avp::diameter_identity(code::ORIGIN_REALM, &self.origin_realm).mandatory(true),
        ]
    }

    fn capability_avps(&self) -> Vec<Avp> {
        let mut v = self.origin_avps().to_vec();
        v.push(Avp::address(code::HOST_IP_ADDRESS, self.host_ip).mandatory(true));
        v.push(Avp::unsigned32(code::VENDOR_ID, self.vendor_id).mandatory(true));
        v.push(Avp::utf8(code::PRODUCT_NAME, &self.product_name));
        v.push(Avp::unsigned32(code::ORIGIN_STATE_ID, self.origin_state_id).mandatory(true));
        for &s in &self.supported_vendor_ids {
            v.push(Avp::unsigned32(code::SUPPORTED_VENDOR_ID, s).mandatory(true));
        }
        for &a in &self.auth_application_ids {
            v.push(Avp::unsigned32(code::AUTH_APPLICATION_ID, a).mandatory(true));
        }
        for &a in &self.acct_application_ids {
            v.push(Avp::unsigned32(code::ACCT_APPLICATION_ID, a).mandatory(true));
        }
        for &(vendor, app) in &self.vendor_specific_applications {
            let inner = match app {
                AppId::Auth(i) => Avp::unsigned32(code::AUTH_APPLICATION_ID, i),
                AppId::Acct(i) => Avp::unsigned32(code::ACCT_APPLICATION_ID, i),
            };
            v.push(
                Avp::grouped(
                    code::VENDOR_SPECIFIC_APPLICATION_ID,
                    vec![
                        Avp::unsigned32(code::VENDOR_ID, vendor).mandatory(true),
                        inner.mandatory(true),
                    ],
                )
                .mandatory(true),
            );
        }
        v
    }
}

/// What the other side said about itself in its CER or CEA. Read
/// liberally: anything missing is left empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// Origin-Host.
    pub origin_host: String,
    /// Origin-Realm.
    pub origin_realm: String,
    /// Host-IP-Address values that parsed.
    pub host_ips: Vec<IpAddr>,
    /// Vendor-Id.
    pub vendor_id: Option<u32>,
    /// Product-Name.
    pub product_name: Option<String>,
    /// Origin-State-Id.
    pub origin_state_id: Option<u32>,
    /// Bare Auth-Application-Id values.
    pub auth_application_ids: Vec<u32>,
    /// Bare Acct-Application-Id values.
    pub acct_application_ids: Vec<u32>,
    /// Supported-Vendor-Id values.
    pub supported_vendor_ids: Vec<u32>,
    /// Vendor-Specific-Application-Id groups that parsed.
    pub vendor_specific_applications: Vec<(u32, AppId)>,
}

impl RemoteIdentity {
    /// Reads a CER or CEA.
    pub fn from_capabilities(msg: &Message) -> RemoteIdentity {
        let s = |c| {
            msg.avp(c)
                .map(|a| String::from_utf8_lossy(&a.data).into_owned())
        };
        let u = |c| msg.avp(c).and_then(|a| a.as_u32().ok());
        let all_u = |c| {
            msg.avps_with(c, None)
                .filter_map(|a| a.as_u32().ok())
                .collect::<Vec<_>>()
        };
        let mut vsa = Vec::new();
        for g in msg.avps_with(code::VENDOR_SPECIFIC_APPLICATION_ID, None) {
            let Ok(children) = g.as_grouped() else {
                continue;
            };
            let vendor = children
                .iter()
                .find(|a| a.is(code::VENDOR_ID, None))
                .and_then(|a| a.as_u32().ok())
                .unwrap_or(0);
            for c in &children {
                match (c.code, c.vendor_id, c.as_u32()) {
                    (code::AUTH_APPLICATION_ID, None, Ok(i)) => vsa.push((vendor, AppId::Auth(i))),
                    (code::ACCT_APPLICATION_ID, None, Ok(i)) => vsa.push((vendor, AppId::Acct(i))),
                    _ => {}
                }
            }
        }
        RemoteIdentity {
            origin_host: s(code::ORIGIN_HOST).unwrap_or_default(),
            origin_realm: s(code::ORIGIN_REALM).unwrap_or_default(),
            host_ips: msg
                .avps_with(code::HOST_IP_ADDRESS, None)
                .filter_map(|a| a.as_address().ok())
                .collect(),
            vendor_id: u(code::VENDOR_ID),
            product_name: s(code::PRODUCT_NAME),
            origin_state_id: u(code::ORIGIN_STATE_ID),
            auth_application_ids: all_u(code::AUTH_APPLICATION_ID),
            acct_application_ids: all_u(code::ACCT_APPLICATION_ID),
            supported_vendor_ids: all_u(code::SUPPORTED_VENDOR_ID),
            vendor_specific_applications: vsa,
        }
    }

    /// Every application id advertised, bare or vendor-specific.
    pub fn application_ids(&self) -> Vec<u32> {
        advertised_ids(
            &self.auth_application_ids,
            &self.acct_application_ids,
            &self.vendor_specific_applications,
        )
    }
}

/// True if the two sides share an application, or either is a relay.
/// The sorted, distinct application ids of a capabilities exchange, whether
/// named bare or inside Vendor-Specific-Application-Id (either side may use
/// either form).
fn advertised_ids(auth: &[u32], acct: &[u32], vendor_specific: &[(u32, AppId)]) -> Vec<u32> {
    let mut v: Vec<u32> = auth
        .iter()
        .chain(acct)
        .copied()
        .chain(vendor_specific.iter().map(|(_, a)| a.id()))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn has_common_application(local: &LocalIdentity, remote: &RemoteIdentity) -> bool {
    let l = local.application_ids();
    let r = remote.application_ids();
    l.contains(&app::RELAY) || r.contains(&app::RELAY) || l.iter().any(|a| r.contains(a))
}

fn base_request(command_code: u32) -> Message {
    let mut m = Message::request(command_code, app::COMMON);
    m.header.flags = Header::REQUEST; // base messages are not proxiable
    m
}

/// Capabilities-Exchange-Request.
pub fn cer(local: &LocalIdentity) -> Message {
    let mut m = base_request(command::CAPABILITIES_EXCHANGE);
    m.avps = local.capability_avps();
    m
}

/// Capabilities-Exchange-Answer with a Result-Code.
pub fn cea(cer: &Message, local: &LocalIdentity, result_code: u32) -> Message {
    let mut m = cer.answer();
    if result::is_protocol_error(result_code) {
        m.header.flags |= Header::ERROR;
    }
    m.push(Avp::unsigned32(code::RESULT_CODE, result_code).mandatory(true));
    m.avps.extend(local.capability_avps());
    m
}

/// Device-Watchdog-Request.
pub fn dwr(local: &LocalIdentity) -> Message {
    let mut m = base_request(command::DEVICE_WATCHDOG);
    m.avps.extend(local.origin_avps());
    m.push(Avp::unsigned32(code::ORIGIN_STATE_ID, local.origin_state_id).mandatory(true));
    m
}

/// Device-Watchdog-Answer (success).
pub fn dwa(dwr: &Message, local: &LocalIdentity) -> Message {
    let mut m = dwr.answer();
    m.push(Avp::unsigned32(code::RESULT_CODE, result::SUCCESS).mandatory(true));
    m.avps.extend(local.origin_avps());
    m.push(Avp::unsigned32(code::ORIGIN_STATE_ID, local.origin_state_id).mandatory(true));
    m
}

/// Disconnect-Peer-Request with a Disconnect-Cause (see
/// [`super::disconnect_cause`]).
pub fn dpr(local: &LocalIdentity, cause: u32) -> Message {
    let mut m = base_request(command::DISCONNECT_PEER);
    m.avps.extend(local.origin_avps());
    m.push(Avp::enumerated(code::DISCONNECT_CAUSE, cause as i32).mandatory(true));
    m
}

/// Disconnect-Peer-Answer (success).
pub fn dpa(dpr: &Message, local: &LocalIdentity) -> Message {
    let mut m = dpr.answer();
    m.push(Avp::unsigned32(code::RESULT_CODE, result::SUCCESS).mandatory(true));
    m.avps.extend(local.origin_avps());
    m
}

/// An answer carrying an error: E bit for protocol errors (3xxx),
/// Session-Id (if any), Result-Code, Origin-Host/Realm, Error-Message and
/// Failed-AVP (wrapping `failed_avp`), in the order of RFC 6733 7.2.
pub fn error_answer(
    request: &Message,
    local: &LocalIdentity,
    result_code: u32,
    failed_avp: Option<Avp>,
    message: Option<&str>,
) -> Message {
    let mut m = request.answer();
    if result::is_protocol_error(result_code) {
        m.header.flags |= Header::ERROR;
    }
    m.avps.extend(local.origin_avps());
    m.push(Avp::unsigned32(code::RESULT_CODE, result_code).mandatory(true));
    if let Some(text) = message {
        m.push(Avp::utf8(code::ERROR_MESSAGE, text));
    }
    if let Some(f) = failed_avp {
        m.push(Avp::grouped(code::FAILED_AVP, vec![f]).mandatory(true));
    }
    m
}
