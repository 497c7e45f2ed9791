//! The reference server's own configuration (`cpmcc sut --config FILE`).
//!
//! This is the server's side of the story; the harness learns about a SUT only
//! from its SUT profile (`crate::profile`). When cpmcc embeds the server it
//! derives this config from the profile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::deviation::Deviation;
use crate::profile::{ChargedFunction, Transport};

/// Configuration of the reference CPM server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SutConfig {
    pub sip: SipConfig,
    /// How the server stands between the parties: a back-to-back user agent
    /// (a new Call-ID per leg) or a record-routing stateful proxy (one
    /// Call-ID). Charging is the same in both.
    #[serde(default)]
    pub shape: Shape,
    /// The served domain.
    pub domain: String,
    /// The next hop for every user of the domain: the harness's SIP endpoint.
    pub route_users_to: SocketAddr,
    #[serde(default)]
    pub charging: Option<ChargingConfig>,
    /// Ends a session after this long without a SIP request in it.
    #[serde(default, deserialize_with = "duration_opt")]
    pub inactivity_timer: Option<Duration>,
    /// The operator HTTP interface (`POST /sessions/{call-id}/terminate`).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    #[serde(default)]
    pub deviations: Vec<Deviation>,
    /// The Controlling Function for group sessions; absent: none hosted.
    #[serde(default)]
    pub conference: Option<ConferenceConfig>,
    /// Online charging (CH-2 over Ro) beside any offline charging: the
    /// Participating Functions of 1-1 sessions, and the Controlling
    /// Function of group sessions when `functions` lists it; needs `charging` (the same Charging Enabler,
    /// origin host and realm, service context). Absent: offline only.
    #[serde(default)]
    pub online: Option<OnlineConfig>,
}

/// The server as an online charging client (flows.md, 6.3.3): which
/// functions ask for credit before the session goes on, and what it does
/// when the Charging Enabler refuses or does not answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// Which functions ask for credit, each its own CH-2 session.
    pub functions: Vec<ChargedFunction>,
    /// The final response to an INVITE whose InitialRequest was refused.
    #[serde(default = "default_refusal_status")]
    pub refusal_status: u16,
    /// CC-Time asked for in each InitialRequest and UpdateRequest, seconds.
    #[serde(default = "default_requested_time")]
    pub requested_time: u32,
    /// How long to wait for a CH-2 Response (RFC 4006 Tx).
    #[serde(default = "default_tx", deserialize_with = "duration")]
    pub tx: Duration,
    /// What to do when no answer comes within `tx`.
    #[serde(default)]
    pub failure_handling: FailureHandlingMode,
    /// The operator's participant threshold of a group session (6.3.3.3):
    /// with CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51) armed, the
    /// Controlling Function asks again only when the attached count meets
    /// it from below or drops under it. No AVP carries it. Absent: trigger
    /// 51 never fires.
    #[serde(default)]
    pub participant_threshold: Option<u32>,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            functions: vec![ChargedFunction::OriginatingPf],
            refusal_status: default_refusal_status(),
            requested_time: default_requested_time(),
            tx: default_tx(),
            failure_handling: FailureHandlingMode::default(),
            participant_threshold: None,
        }
    }
}

/// RFC 4006 Credit-Control-Failure-Handling, as the server applies it when
/// a CH-2 Response does not come within Tx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureHandlingMode {
    /// Refuse the INVITE (504) or end the established session (BYE on both
    /// legs), with no more requests on that charging session.
    #[default]
    Terminate,
    /// Go on without credit control for that charging session.
    Continue,
    /// RFC 4006 would first retry on an alternate server; the reference
    /// server has only one Charging Enabler, so this is `terminate`.
    RetryAndTerminate,
}

fn default_refusal_status() -> u16 {
    402
}
fn default_requested_time() -> u32 {
    60
}
fn default_tx() -> Duration {
    Duration::from_secs(2)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = String::deserialize(d)?;
    humantime::parse_duration(&t)
        .map_err(|e| serde::de::Error::custom(format!("`{t}` is not a duration like 1500ms ({e})")))
}

/// The server's Controlling Function (a conference focus, RFC 4579).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceConfig {
    /// The user part of the conference-factory URI: an INVITE to it with a
    /// recipient list (RFC 5366) starts an ad-hoc group session.
    #[serde(default = "default_factory_user")]
    pub factory_user: String,
    /// Pre-defined groups: the group's user part → its members' SIP URIs.
    #[serde(default)]
    pub groups: std::collections::HashMap<String, Vec<String>>,
    /// Whether the Controlling Function reports offline charging (its own
    /// CH-1 session per group session, with PoC-Information).
    #[serde(default = "yes")]
    pub charging: bool,
}

fn default_factory_user() -> String {
    "conf-factory".into()
}

fn yes() -> bool {
    true
}

/// The two shapes real CPM servers come in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    #[default]
    B2bua,
    Proxy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub transport: Transport,
    /// RFC 3261 T1 of the server's transactions (default 500ms). Its own BYE
    /// times out after 64*T1, so a short T1 lets a suite see a server give up
    /// on an unanswered BYE within a scenario's time.
    #[serde(default, deserialize_with = "duration_opt")]
    pub t1: Option<Duration>,
}

impl SipConfig {
    /// The transaction timers the server runs with.
    pub fn timers(&self) -> crate::sip::transaction::Timers {
        let default = crate::sip::transaction::Timers::default();
        crate::sip::transaction::Timers {
            t1: self.t1.unwrap_or(default.t1),
            ..default
        }
    }
}

/// The server as a Diameter client of the Charging Enabler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargingConfig {
    /// The Charging Enabler's Diameter address.
    pub server: SocketAddr,
    #[serde(default = "default_origin_host")]
    pub origin_host: String,
    #[serde(default = "default_origin_realm")]
    pub origin_realm: String,
    #[serde(default = "default_destination_realm")]
    pub destination_realm: String,
    /// Which functions report offline charging, each its own session.
    pub functions: Vec<ChargedFunction>,
    #[serde(default = "default_service_context")]
    pub service_context_id: String,
    /// Name the served user (Subscription-Id, User-Name, party addresses) in
    /// the StartRequest only, as some servers do: later requests of the
    /// session carry only its Session-Id. Legal, and the harness must cope.
    #[serde(default)]
    pub served_user_in_start_only: bool,
    /// The longest wait between two attempts to reach the Charging Enabler
    /// (attempts start at 100 ms and double up to this; default 2 s).
    #[serde(default, deserialize_with = "duration_opt")]
    pub reconnect_max: Option<Duration>,
    /// The first attempt to reach the Charging Enabler waits this long after
    /// the server started (default: at once), as a lab's server started
    /// before cpmcc connects later, on its own schedule.
    #[serde(default, deserialize_with = "duration_opt")]
    pub connect_after: Option<Duration>,
}

fn default_origin_host() -> String {
    "cpm.sut.test".into()
}
fn default_origin_realm() -> String {
    "sut.test".into()
}
fn default_destination_realm() -> String {
    "cpmcc.test".into()
}
fn default_service_context() -> String {
    "32260@3gpp.org".into()
}

fn duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!("`{t}` is not a duration like 1500ms ({e})"))
        })
    })
    .transpose()
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read reference server config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reference server config {path}: at `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl SutConfig {
    /// Reads a config file, refusing unknown keys with their path.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                key: e.path().to_string(),
                message: e.into_inner().to_string(),
            })
            .and_then(|c: SutConfig| {
                c.check().map_err(|(key, message)| ConfigError::Invalid {
                    path: path.to_owned(),
                    key: key.into(),
                    message,
                })?;
                Ok(c)
            })
    }

    /// What the types cannot say: online charging needs the Charging
    /// Enabler of `charging`. Err: the key and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.online.is_some() && self.charging.is_none() {
            return Err((
                "online",
                "online charging needs `charging` (the Charging Enabler's address and identity)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether a deviation is switched on.
    pub fn has(&self, deviation: Deviation) -> bool {
        self.deviations.contains(&deviation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_standalone_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sut/reference-server.yaml");
        let c = SutConfig::load(&path).unwrap();
        assert_eq!(c.shape, Shape::B2bua, "the default shape");
        assert_eq!(c.charging.unwrap().functions.len(), 2);
    }

    #[test]
    fn the_shape_is_b2bua_or_proxy_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("cpmcc-shape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        let base = "sip: { listen: 127.0.0.1:0 }\ndomain: d\nroute_users_to: 127.0.0.1:1\n";
        std::fs::write(&path, format!("{base}shape: proxy\n")).unwrap();
        assert_eq!(SutConfig::load(&path).unwrap().shape, Shape::Proxy);
        std::fs::write(&path, format!("{base}shape: sbc\n")).unwrap();
        let err = SutConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("shape") && err.contains("sbc"), "{err}");
    }

    #[test]
    fn an_unknown_deviation_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("cpmcc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "sip: { listen: 127.0.0.1:0 }\ndomain: d\nroute_users_to: 127.0.0.1:1\ndeviations: [start_late]\n",
        )
        .unwrap();
        let err = SutConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("deviations[0]"), "{err}");
        assert!(err.contains("start_late"), "{err}");
    }

    #[test]
    fn online_takes_its_defaults_and_needs_charging() {
        let dir = std::env::temp_dir().join(format!("cpmcc-online-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        let base = "sip: { listen: 127.0.0.1:0 }\ndomain: d\nroute_users_to: 127.0.0.1:1\n";
        let charging = "charging: { server: 127.0.0.1:3868, functions: [originating_pf] }\n";
        std::fs::write(
            &path,
            format!("{base}{charging}online: {{ functions: [originating_pf] }}\n"),
        )
        .unwrap();
        let online = SutConfig::load(&path).unwrap().online.unwrap();
        assert_eq!(online.functions, [ChargedFunction::OriginatingPf]);
        assert_eq!(
            (online.refusal_status, online.requested_time, online.tx),
            (402, 60, Duration::from_secs(2))
        );
        assert_eq!(online.failure_handling, FailureHandlingMode::Terminate);
        std::fs::write(
            &path,
            format!(
                "{base}{charging}online: {{ functions: [terminating_pf], tx: 500ms, \
                 failure_handling: continue, refusal_status: 403, requested_time: 30, \
                 participant_threshold: 3 }}\n"
            ),
        )
        .unwrap();
        let online = SutConfig::load(&path).unwrap().online.unwrap();
        assert_eq!(online.tx, Duration::from_millis(500));
        assert_eq!(online.failure_handling, FailureHandlingMode::Continue);
        assert_eq!((online.refusal_status, online.requested_time), (403, 30));
        assert_eq!(online.participant_threshold, Some(3));
        std::fs::write(
            &path,
            format!("{base}online: {{ functions: [originating_pf] }}\n"),
        )
        .unwrap();
        let err = SutConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("online") && err.contains("charging"), "{err}");
    }
}
