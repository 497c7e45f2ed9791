//! The certificate of a run: what was tested (the SUT as it named itself in
//! its CER, the profile and what it declares), with what (cpmcc's version
//! and commit, SHA-256 of the feature files and of the profile), when, and
//! the verdicts per clause, as `certificate.json` and a short
//! `certificate.md` for people.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::baseline::BaselineVerdict;
use super::sanitize::escape;
use crate::charging::enabler::ConnectionInfo;
use crate::harness::verdict::Summary;
use crate::profile::{ChargedFunction, SutProfile};

/// cpmcc itself.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// `CARGO_PKG_VERSION`.
    pub version: String,
    /// `git rev-parse HEAD` of the checkout cpmcc was built from, or
    /// `unknown`.
    pub git_commit: String,
}

impl Tool {
    pub fn current() -> Self {
        Tool {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: git_commit(),
        }
    }
}

/// The commit of the checkout beside Cargo.toml, read when the run starts;
/// `unknown` without git or outside a checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| s.len() >= 40 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into())
}

/// A Diameter peer of the SUT, as its CER named it. Text is escaped: it
/// comes from the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Peer {
    pub origin_host: String,
    pub origin_realm: String,
    pub product_name: Option<String>,
    pub vendor_id: Option<u32>,
}

/// Every distinct identity the SUT's connections announced in their CER.
pub fn peers(connections: &[ConnectionInfo]) -> Vec<Peer> {
    let mut all: Vec<Peer> = connections
        .iter()
        .filter_map(|c| c.remote.as_ref())
        .map(|r| Peer {
            origin_host: escape(&r.origin_host),
            origin_realm: escape(&r.origin_realm),
            product_name: r.product_name.as_deref().map(escape),
            vendor_id: r.vendor_id,
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

/// What was tested and with what.
#[derive(Debug, Clone, Serialize)]
pub struct Hashes {
    /// SHA-256 over the `.feature` files under the features folder: for each,
    /// in order of its path relative to the folder (`/`-separated), the
    /// path, a NUL byte, the length in decimal, a NUL byte, the contents.
    pub features_sha256: String,
    pub feature_files: usize,
    /// SHA-256 of the profile file's bytes.
    pub profile_sha256: String,
}

impl Hashes {
    /// Hashes of the features folder and the profile file; what cannot be
    /// read is `unavailable: <why>` (the run says why it cannot start).
    pub fn of(features: &Path, profile: &Path) -> Self {
        let (features_sha256, feature_files) = match features_digest(features) {
            Ok((digest, n)) => (digest, n),
            Err(e) => (format!("unavailable: {e}"), 0),
        };
        let profile_sha256 = match std::fs::read(profile) {
            Ok(bytes) => hex(&Sha256::digest(&bytes)),
            Err(e) => format!("unavailable: {e}"),
        };
        Hashes {
            features_sha256,
            feature_files,
            profile_sha256,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn features_digest(root: &Path) -> std::io::Result<(String, usize)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|x| x == "feature") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut named: Vec<(String, std::path::PathBuf)> = files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (rel, p)
        })
        .collect();
    named.sort();
    let mut hasher = Sha256::new();
    for (rel, path) in &named {
        let contents = std::fs::read(path)?;
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update(contents.len().to_string().as_bytes());
        hasher.update([0]);
        hasher.update(&contents);
    }
    Ok((hex(&hasher.finalize()), named.len()))
}

/// The block summary.json and certificate.json share: who was tested, with
/// what, when.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub cpmcc: Tool,
    /// The profile's name.
    pub profile: String,
    /// The profile file, as given.
    pub profile_file: String,
    /// The SUT as its CER named it (one entry per distinct identity; empty
    /// if no CER came).
    pub sut: Vec<Peer>,
    pub hashes: Hashes,
    /// UTC, RFC 3339.
    pub started: String,
    pub ended: String,
}

/// What the profile declares the SUT can do.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// Charged functions of offline charging (CH-1/Rf); none: no offline.
    pub offline: Option<Vec<ChargedFunction>>,
    /// The 6.2.3.4 ordering reading, with offline charging.
    pub ordering: Option<String>,
    /// Charged functions of online charging (CH-2/Ro); none: no online.
    pub online: Option<Vec<ChargedFunction>>,
    /// Group capabilities of the Controlling Function; none: no groups.
    pub groups: Option<GroupCapabilities>,
    /// Stimuli declared: `inactivity_timer`, `bye_timeout`, `operator_terminate`.
    pub stimuli: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupCapabilities {
    pub ad_hoc: bool,
    pub pre_defined: Vec<String>,
    pub dial_in: bool,
    pub refer_add: bool,
    pub refer_remove: bool,
}

impl Capabilities {
    pub fn of(profile: &SutProfile) -> Self {
        let s = &profile.stimuli;
        let stimuli = [
            ("inactivity_timer", s.inactivity_timer.is_some()),
            ("bye_timeout", s.bye_timeout.is_some()),
            ("operator_terminate", s.operator_terminate.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        Capabilities {
            offline: profile.offline().map(|o| o.functions.clone()),
            ordering: profile
                .offline()
                .map(|o| format!("{:?}", o.ordering).to_lowercase()),
            online: profile.online().map(|o| o.functions.clone()),
            groups: profile.groups.as_ref().map(|g| GroupCapabilities {
                ad_hoc: g.conference_factory.is_some(),
                pre_defined: g.pre_defined.keys().cloned().collect(),
                dial_in: g.dial_in,
                refer_add: g.refer_add,
                refer_remove: g.refer_remove,
            }),
            stimuli,
        }
    }
}

/// One scenario's line in a clause.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub test_purpose: String,
    pub scenario: String,
    pub verdict: BaselineVerdict,
}

/// A failure the profile excuses, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KnownDeviation {
    pub test_purpose: String,
    pub scenario: String,
    pub verdict: BaselineVerdict,
    pub reason: String,
}

/// The gate's result.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// `pass`, `fail` or `interrupted`.
    pub result: &'static str,
    /// The process's exit code.
    pub exit_code: u8,
    /// Judged against a baseline (`--baseline`): only change fails.
    pub against_baseline: bool,
}

/// certificate.json.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    #[serde(flatten)]
    pub identity: Identity,
    pub capabilities: Capabilities,
    pub gate: Gate,
    /// Verdicts per clause, clauses in order.
    pub clauses: BTreeMap<String, Vec<Row>>,
    pub known_deviations: Vec<KnownDeviation>,
}

impl Certificate {
    pub fn new(identity: Identity, profile: &SutProfile, summary: &Summary, gate: Gate) -> Self {
        let mut clauses: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        let mut known_deviations = Vec::new();
        for r in &summary.results {
            let verdict = BaselineVerdict::of(r);
            clauses.entry(escape(&r.clause)).or_default().push(Row {
                test_purpose: escape(&r.test_purpose),
                scenario: escape(&r.scenario),
                verdict,
            });
            if let Some(reason) = &r.known_deviation {
                known_deviations.push(KnownDeviation {
                    test_purpose: escape(&r.test_purpose),
                    scenario: escape(&r.scenario),
                    verdict,
                    reason: escape(reason),
                });
            }
        }
        Certificate {
            identity,
            capabilities: Capabilities::of(profile),
            gate,
            clauses,
            known_deviations,
        }
    }

    /// certificate.md: the identity, then one table per clause.
    pub fn to_markdown(&self) -> String {
        // Every cell is escaped already; a pipe would end it early.
        let cell = |s: &str| s.replace('|', "\\|");
        let id = &self.identity;
        let mut out = String::from("# cpmcc conformance certificate\n\n");
        out.push_str("| | |\n|---|---|\n");
        let sut = if id.sut.is_empty() {
            "(no CER received)".to_owned()
        } else {
            id.sut
                .iter()
                .map(|p| {
                    format!(
                        "Product-Name {}, Vendor-Id {}, Origin-Host {}",
                        p.product_name.as_deref().unwrap_or("(none)"),
                        p.vendor_id
                            .map_or_else(|| "(none)".to_owned(), |v| v.to_string()),
                        p.origin_host
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let functions = |f: &Option<Vec<ChargedFunction>>| match f {
            None => "no".to_owned(),
            Some(f) => f
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let c = &self.capabilities;
        let groups = match &c.groups {
            None => "none".to_owned(),
            Some(g) => {
                let mut parts = Vec::new();
                if g.ad_hoc {
                    parts.push("ad-hoc".to_owned());
                }
                if !g.pre_defined.is_empty() {
                    parts.push(format!("pre-defined {}", g.pre_defined.join(", ")));
                }
                for (name, on) in [
                    ("dial-in", g.dial_in),
                    ("REFER add", g.refer_add),
                    ("REFER remove", g.refer_remove),
                ] {
                    if on {
                        parts.push(name.to_owned());
                    }
                }
                parts.join("; ")
            }
        };
        let rows = [
            ("SUT", sut),
            (
                "profile",
                format!("{} (`{}`)", escape(&id.profile), escape(&id.profile_file)),
            ),
            ("offline charging", functions(&c.offline)),
            ("online charging", functions(&c.online)),
            ("groups", groups),
            (
                "stimuli",
                if c.stimuli.is_empty() {
                    "none".to_owned()
                } else {
                    c.stimuli.join(", ")
                },
            ),
            (
                "cpmcc",
                format!("{} (commit {})", id.cpmcc.version, id.cpmcc.git_commit),
            ),
            (
                "features SHA-256",
                format!(
                    "`{}` ({} files)",
                    id.hashes.features_sha256, id.hashes.feature_files
                ),
            ),
            ("profile SHA-256", format!("`{}`", id.hashes.profile_sha256)),
            ("run (UTC)", format!("{} to {}", id.started, id.ended)),
            (
                "gate",
                format!(
                    "{}{} (exit {})",
                    self.gate.result.to_uppercase(),
                    if self.gate.against_baseline {
                        " against the baseline"
                    } else {
                        ""
                    },
                    self.gate.exit_code
                ),
            ),
        ];
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {} |\n", cell(&value)));
        }
        for (clause, rows) in &self.clauses {
            out.push_str(&format!(
                "\n## {}\n\n| test purpose | scenario | verdict |\n|---|---|---|\n",
                cell(clause)
            ));
            for r in rows {
                out.push_str(&format!(
                    "| {} | {} | {} |\n",
                    cell(&r.test_purpose),
                    cell(&r.scenario),
                    r.verdict
                ));
            }
        }
        if !self.known_deviations.is_empty() {
            out.push_str(
                "\n## Known deviations\n\n| test purpose | scenario | verdict | reason |\n|---|---|---|---|\n",
            );
            for d in &self.known_deviations {
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    cell(&d.test_purpose),
                    cell(&d.scenario),
                    d.verdict,
                    cell(&d.reason)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use crate::harness::verdict::{ScenarioResult, Verdict};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cpmcc-cert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        dir
    }

    #[test]
    fn the_features_hash_covers_paths_and_contents_in_a_stable_order() {
        let dir = scratch("hash");
        std::fs::write(dir.join("a.feature"), "Feature: a\n").unwrap();
        std::fs::write(dir.join("sub/b.feature"), "Feature: b\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a feature").unwrap();
        let profile = dir.join("p.yaml");
        std::fs::write(&profile, "name: x\n").unwrap();
        let first = Hashes::of(&dir, &profile);
        assert_eq!(first.feature_files, 2);
        assert_eq!(first.features_sha256.len(), 64);
        // SHA-256("name: x\n")
        assert_eq!(first.profile_sha256, hex(&Sha256::digest(b"name: x\n")));
        assert_eq!(
            Hashes::of(&dir, &profile).features_sha256,
            first.features_sha256
        );
        std::fs::write(dir.join("notes.txt"), "changed").unwrap();
        assert_eq!(
            Hashes::of(&dir, &profile).features_sha256,
            first.features_sha256
        );
        std::fs::rename(dir.join("sub/b.feature"), dir.join("sub/c.feature")).unwrap();
        let renamed = Hashes::of(&dir, &profile);
        assert_ne!(
            renamed.features_sha256, first.features_sha256,
            "paths count"
        );
        let missing = Hashes::of(&dir.join("nowhere"), &dir.join("none.yaml"));
        assert!(missing.features_sha256.starts_with("unavailable: "));
        assert!(missing.profile_sha256.starts_with("unavailable: "));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_markdown_has_a_table_per_clause_and_keeps_cells_whole() {
        let profile = SutProfile::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/sut/reference.yaml"
        )))
        .unwrap();
        let result = |clause: &str, tp: &str, verdict, known: Option<&str>| ScenarioResult {
            feature: "f".into(),
            clause: clause.into(),
            test_purpose: tp.into(),
            scenario: "a | b\r\n".into(),
            verdict,
            detail: None,
            rules: vec![],
            served_users: vec![],
            known_deviation: known.map(Into::into),
            warnings: vec![],
            duration: std::time::Duration::ZERO,
            ladder: Default::default(),
        };
        let summary = Summary {
            results: vec![
                result("6.2.3.1", "OFF-INIT-01", Verdict::Pass, None),
                result("6.2.3.7", "OFF-TERM-01", Verdict::Fail, Some("ticket 7")),
            ],
            ..Summary::default()
        };
        let identity = Identity {
            cpmcc: Tool::current(),
            profile: profile.name.clone(),
            profile_file: "p.yaml".into(),
            sut: vec![],
            hashes: Hashes {
                features_sha256: "f".repeat(64),
                feature_files: 1,
                profile_sha256: "0".repeat(64),
            },
            started: "2026-12-02T13:15:00Z".into(),
            ended: "2026-12-02T13:15:04Z".into(),
        };
        let gate = Gate {
            result: "pass",
            exit_code: 0,
            against_baseline: false,
        };
        let cert = Certificate::new(identity, &profile, &summary, gate);
        assert_eq!(cert.clauses.len(), 2);
        assert_eq!(
            cert.clauses["6.2.3.7"][0].verdict,
            BaselineVerdict::KnownDeviation
        );
        assert_eq!(cert.known_deviations[0].reason, "ticket 7");
        let md = cert.to_markdown();
        assert!(
            md.contains("## 6.2.3.1") && md.contains("## 6.2.3.7"),
            "{md}"
        );
        assert!(
            md.contains("| OFF-INIT-01 | a \\| b\\r\\n | pass |"),
            "{md}"
        );
        assert!(md.contains("## Known deviations"), "{md}");
        assert!(
            md.contains("| OFF-TERM-01 | a \\| b\\r\\n | known-deviation | ticket 7 |"),
            "{md}"
        );
        assert!(md.contains("(no CER received)"), "{md}");
        let git = &cert.identity.cpmcc.git_commit;
        assert!(git == "unknown" || git.len() == 40, "{git}");
    }
}
