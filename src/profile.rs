//! SUT profile: everything the harness knows of the SUT, from YAML.
//!
//! The harness never reaches into a SUT; it learns its addresses (PIXIT
//! values), what it supports (PICS capabilities) and how its charging is to be
//! read from this file. `fixtures/sut/reference.yaml` describes the embedded
//! reference server. Unknown keys and bad values are refused with the key
//! path, so a typo in a lab's profile is an error, not a silently ignored
//! setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A parsed, validated SUT profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SutProfile {
    /// Human name of the SUT, shown in reports.
    pub name: String,
    pub sut: SutSection,
    pub harness: HarnessSection,
    pub charging: ChargingSection,
    #[serde(default)]
    pub timers: Timers,
    #[serde(default)]
    pub stimuli: Stimuli,
    /// What the SUT's Controlling Function offers for group sessions; absent:
    /// the SUT has none, and every group scenario is n/a.
    #[serde(default)]
    pub groups: Option<Groups>,
    /// Deviations the SUT is known to have: scenarios expected to fail, each
    /// with its reason (BoGo's disabled-tests file works so). A listed
    /// scenario that fails is reported as a known deviation, not a pass.
    #[serde(default)]
    pub known_deviations: Vec<KnownDeviation>,
}

/// Where the SUT is and what it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SutSection {
    /// Present when cpmcc starts its own reference server as the SUT.
    #[serde(default)]
    pub embedded: Option<EmbeddedSut>,
    /// The SUT's SIP address: test users send their requests here.
    pub sip: SipAddress,
    /// The test domain of the test users' SIP URIs.
    pub domain: String,
}

/// How to start the embedded reference server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSut {
    /// The operator (admin) HTTP interface of the reference server.
    pub admin: SocketAddr,
    /// Named deviations to switch on (see `cpmcc deviations`).
    #[serde(default)]
    pub deviations: Vec<crate::sut::Deviation>,
    /// `b2bua` (default) or `proxy`: the reference server's shape.
    #[serde(default)]
    pub shape: crate::sut::config::Shape,
}

/// A SIP address and the transport to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAddress {
    pub address: SocketAddr,
    #[serde(default)]
    pub transport: Transport,
}

/// SIP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// Where the harness listens; the SUT must be configured to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessSection {
    /// The SIP endpoint the SUT routes every test user to.
    pub sip: Listen,
    /// The Charging Enabler's Diameter listener (3868 is the port charging
    /// clients are configured for).
    pub diameter: Listen,
    /// Diameter identity of the Charging Enabler.
    #[serde(default = "default_origin_host")]
    pub origin_host: String,
    #[serde(default = "default_origin_realm")]
    pub origin_realm: String,
}

fn default_origin_host() -> String {
    "ce.cpmcc.test".to_owned()
}
fn default_origin_realm() -> String {
    "cpmcc.test".to_owned()
}

/// A harness listener, and the address the SUT reaches it at when the
/// listener is a wildcard (`0.0.0.0`) or behind NAT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub listen: SocketAddr,
    /// Written into Via, Contact and SDP (SIP) or Host-IP-Address (Diameter).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
}

impl Listen {
    /// The address the SUT is told: `advertise`, else `listen`.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}

/// Which charging the SUT does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargingSection {
    /// Offline (CH-1, Diameter Rf); absent when the SUT does no offline charging.
    #[serde(default)]
    pub offline: Option<OfflineCharging>,
    /// Online (CH-2, Diameter Ro); absent when the SUT does no online charging.
    #[serde(default)]
    pub online: Option<OnlineCharging>,
}

/// How the SUT charges online: which functions ask the Charging Enabler
/// for credit before they let the session go on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineCharging {
    /// The charged functions that ask for credit; each is its own CH-2
    /// session and the harness asserts every one of them.
    pub functions: Vec<ChargedFunction>,
    /// The final response the SUT gives an INVITE whose InitialRequest was
    /// refused; absent: any 4xx-6xx.
    #[serde(default)]
    pub refusal_status: Option<u16>,
    /// The Charging Trigger Conditions of group sessions (6.3.3.3) the SUT
    /// supports: a scenario that arms another one is n/a
    /// (`@needs-trigger-50`, `@needs-trigger-51`).
    #[serde(default)]
    pub triggers: Vec<SupportedTrigger>,
    /// The operator's participant threshold of the Controlling Function
    /// (trigger 51): an UpdateRequest when the attached count meets it from
    /// below or drops under it. No AVP carries it, so the profile declares
    /// it; a scenario needing it is n/a without it.
    #[serde(default)]
    pub participant_threshold: Option<u32>,
}

/// A Charging Trigger Condition of 6.3.3.3 a SUT may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportedTrigger {
    /// CHANGE_IN_PARTICIPANTS_NMB (Trigger-Type 50).
    ParticipantsNumber,
    /// CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (Trigger-Type 51).
    ParticipantsThreshold,
}

/// How the SUT charges offline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineCharging {
    /// The charged functions; each is its own charging session and the
    /// harness asserts every one of them.
    pub functions: Vec<ChargedFunction>,
    /// Reading of 6.2.3.4, where figure and text disagree.
    #[serde(default)]
    pub ordering: OrderingReading,
    /// Whether the SUT records a failed INVITE with a CH-1 EventRequest
    /// (IMS practice allows it; 6.2.3.1 is derived).
    #[serde(default)]
    pub failed_invite_event: bool,
    /// A pinned Service-Context-Id to assert; none pins no value.
    #[serde(default)]
    pub service_context_id: Option<String>,
}

/// A charged function of the SUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargedFunction {
    /// The Participating Function serving the originator.
    OriginatingPf,
    /// The Participating Function serving the recipient.
    TerminatingPf,
    /// The Controlling Function of a group session.
    ControllingFunction,
}

impl std::fmt::Display for ChargedFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OriginatingPf => "originating PF",
            Self::TerminatingPf => "terminating PF",
            Self::ControllingFunction => "controlling function",
        })
    }
}

/// `strict` follows the figures, `lenient` the text (`spec/flows.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingReading {
    #[default]
    Strict,
    Lenient,
}

/// How long the harness waits for things. Values like `300ms` or `3s`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// For the SUT's SIP reaction to a test user's request.
    #[serde(with = "humantime_serde_compat")]
    pub sip_answer: Duration,
    /// For a charging request the rules require.
    #[serde(with = "humantime_serde_compat")]
    pub charging: Duration,
    /// For "no charging request arrives": how long to watch.
    #[serde(with = "humantime_serde_compat")]
    pub quiet: Duration,
    /// How long a test user holds back its 200 OK to prove the SUT waits.
    #[serde(with = "humantime_serde_compat")]
    pub hold_back: Duration,
    /// After a scenario, how long to wait for late requests before the
    /// rules that hold for every flow are checked.
    #[serde(with = "humantime_serde_compat")]
    pub settle: Duration,
    /// After the last scenario, how long the run keeps listening for
    /// charging that comes late: a request that arrives after its scenario
    /// was judged reopens that verdict.
    #[serde(with = "humantime_serde_compat")]
    pub drain: Duration,
    /// Before the first scenario, how long to wait for the SUT's Diameter
    /// client to connect (its CER): a lab starts its server first, and the
    /// server connects on its own retry schedule.
    #[serde(with = "humantime_serde_compat")]
    pub sut_link: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            sip_answer: Duration::from_secs(3),
            charging: Duration::from_secs(3),
            quiet: Duration::from_millis(400),
            hold_back: Duration::from_millis(300),
            settle: Duration::from_millis(150),
            drain: Duration::from_millis(500),
            sut_link: Duration::from_secs(10),
        }
    }
}

/// How server-side actions are provoked from outside.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stimuli {
    /// The SUT's session inactivity timer, when it has one.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub inactivity_timer: Option<Duration>,
    /// How long the SUT waits for the answer to a BYE it sent before it
    /// gives up (its Timer F, 64×T1: 32 s with RFC 3261's T1). A scenario in
    /// which a client never answers the SUT's BYE needs it, to know how
    /// long the Stop may take.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub bye_timeout: Option<Duration>,
    /// An operator command that ends a session.
    #[serde(default)]
    pub operator_terminate: Option<OperatorCommand>,
}

/// The group capabilities of the SUT's Controlling Function (6.2.3.2,
/// 6.2.3.3). A scenario needing one that is not declared is n/a.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    /// The user part of the conference-factory URI for ad-hoc groups
    /// (an INVITE with a recipient list, RFC 5366); absent: no ad-hoc groups.
    #[serde(default)]
    pub conference_factory: Option<String>,
    /// Pre-defined groups as provisioned on the SUT: the group's user part →
    /// the role names of its members. Member `carol` of group `team-a` is the
    /// user `carol.team-a` of the test domain: provision it so.
    #[serde(default)]
    pub pre_defined: std::collections::BTreeMap<String, Vec<String>>,
    /// A participant may join a running session with an INVITE to its URI.
    #[serde(default)]
    pub dial_in: bool,
    /// The chair may add a participant with a REFER to the session (RFC 4579).
    #[serde(default)]
    pub refer_add: bool,
    /// The chair may remove a participant with a REFER whose Refer-To has
    /// `method=BYE`.
    #[serde(default)]
    pub refer_remove: bool,
}

impl Groups {
    /// The user part of a pre-defined group member, as provisioned.
    pub fn member_user(group: &str, role: &str) -> String {
        format!("{role}.{group}")
    }
}

/// An operator action that ends a session: exactly one of `http` or `argv`.
/// `{call_id}` and `{user}` are filled in per session, `{sut_admin}` with the
/// embedded server's admin address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorCommand {
    #[serde(default)]
    pub http: Option<HttpRequest>,
    /// A program and its arguments, never a shell string.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
}

/// An HTTP request the SUT's operator interface understands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub url: String,
    #[serde(default = "default_http_method")]
    pub method: String,
}

fn default_http_method() -> String {
    "POST".to_owned()
}

/// A scenario the SUT is known to fail, and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownDeviation {
    /// The test-purpose id of the scenario (its `@tp-…` tag without `@tp-`).
    pub scenario: String,
    pub reason: String,
}

/// A profile that cannot be used, with what a person needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read SUT profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SUT profile {path}: at `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl SutProfile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates profile text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let profile: SutProfile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ProfileError::Invalid {
                path: path.to_owned(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: e.into_inner().to_string(),
            }
        })?;
        profile.validate(path)?;
        Ok(profile)
    }

    fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        let invalid = |key: &str, message: &str| ProfileError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.sut.domain.trim().is_empty() {
            return Err(invalid("sut.domain", "must not be empty"));
        }
        for (key, l) in [
            ("harness.sip", &self.harness.sip),
            ("harness.diameter", &self.harness.diameter),
        ] {
            if l.listen.ip().is_unspecified()
                && l.advertise.is_none()
                && self.sut.embedded.is_none()
            {
                return Err(invalid(
                    &format!("{key}.advertise"),
                    &format!(
                        "{key}.listen is the wildcard {}: give the address the SUT reaches the harness at",
                        l.listen
                    ),
                ));
            }
        }
        if let Some(offline) = &self.charging.offline
            && offline.functions.is_empty()
        {
            return Err(invalid(
                "charging.offline.functions",
                "list at least one charged function (originating_pf, terminating_pf, controlling_function)",
            ));
        }
        for (key, d) in [
            ("timers.sip_answer", self.timers.sip_answer),
            ("timers.charging", self.timers.charging),
            ("timers.quiet", self.timers.quiet),
            ("timers.hold_back", self.timers.hold_back),
            ("timers.sut_link", self.timers.sut_link),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0"));
            }
        }
        if let Some(command) = &self.stimuli.operator_terminate {
            match (&command.http, &command.argv) {
                (Some(_), None) => {}
                (None, Some(argv)) if !argv.is_empty() => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        "stimuli.operator_terminate.argv",
                        "name the program to run",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "stimuli.operator_terminate",
                        "give exactly one of `http` or `argv`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The offline charging section, if the SUT charges offline.
    pub fn offline(&self) -> Option<&OfflineCharging> {
        self.charging.offline.as_ref()
    }

    pub fn online(&self) -> Option<&OnlineCharging> {
        self.charging.online.as_ref()
    }

    /// The reason a known deviation is listed for this test purpose, if any.
    pub fn known_deviation(&self, test_purpose: &str) -> Option<&str> {
        self.known_deviations
            .iter()
            .find(|d| d.scenario.eq_ignore_ascii_case(test_purpose))
            .map(|d| d.reason.as_str())
    }
}

/// Durations written as `300ms`, `3s`, `1m`.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 300ms or 3s ({e})"))
        })
    }

    pub mod option {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|text| {
                humantime::parse_duration(&text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not a duration like 300ms or 3s ({e})"
                    ))
                })
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
name: x
sut:
  sip: { address: 127.0.0.1:5060 }
  domain: test.invalid
harness:
  sip: { listen: 127.0.0.1:5070 }
  diameter: { listen: 127.0.0.1:3868 }
charging:
  offline: { functions: [originating_pf] }
";

    fn parse(text: &str) -> Result<SutProfile, ProfileError> {
        SutProfile::parse(text, Path::new("p.yaml"))
    }

    #[test]
    fn minimal_profile_takes_defaults() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!(p.sut.sip.transport, Transport::Udp);
        assert_eq!(p.offline().unwrap().ordering, OrderingReading::Strict);
        assert_eq!(p.timers.hold_back, Duration::from_millis(300));
        assert!(p.stimuli.operator_terminate.is_none());
    }

    #[test]
    fn the_reference_profile_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sut/reference.yaml");
        let p = SutProfile::load(&path).unwrap();
        assert!(p.sut.embedded.is_some());
    }

    #[test]
    fn the_example_vendor_profile_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sut/example-vendor.yaml");
        let p = SutProfile::load(&path).unwrap();
        assert!(p.sut.embedded.is_none());
        assert_eq!(p.harness.sip.advertised().port(), 5070);
        assert!(p.stimuli.operator_terminate.unwrap().argv.is_some());
    }

    #[test]
    fn a_wildcard_listener_needs_an_advertised_address() {
        let text = MINIMAL.replace(
            "sip: { listen: 127.0.0.1:5070 }",
            "sip: { listen: 0.0.0.0:5070 }",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("harness.sip.advertise"), "{err}");
    }

    #[test]
    fn an_unknown_embedded_deviation_is_refused_with_its_path() {
        let text = MINIMAL.replace(
            "  domain: test.invalid",
            "  domain: test.invalid\n  embedded: { admin: 127.0.0.1:0, deviations: [start_late] }",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("sut.embedded.deviations[0]"), "{err}");
        assert!(err.contains("start_late"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_path() {
        let text = MINIMAL.replace(
            "domain: test.invalid",
            "domain: test.invalid\n  colour: red",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("at `sut.colour`"), "{err}");
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_value_is_refused_with_its_path() {
        let text = MINIMAL.replace("[originating_pf]", "[originating_pf, billing_box]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("charging.offline.functions[1]"), "{err}");
        let text = format!("{MINIMAL}timers: {{ quiet: soon }}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("timers.quiet"), "{err}");
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn empty_function_list_is_refused() {
        let text = MINIMAL.replace("[originating_pf]", "[]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("charging.offline.functions"), "{err}");
    }
}
