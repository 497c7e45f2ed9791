//! Baselines: the per-scenario verdicts of a run, kept in a file, and a later
//! run compared against them, so that a CI gate fails on *change* rather than
//! on every failure a SUT is already known to have.
//!
//! A baseline is JSON, or YAML when its name ends in `.yaml` or `.yml`:
//!
//! ```json
//! { "cpmcc_baseline": 1, "profile": "…",
//!   "scenarios": [ { "test_purpose": "OFF-INIT-01",
//!                    "scenario": "The recipient's 200 OK starts offline charging",
//!                    "verdict": "pass" } ] }
//! ```
//!
//! Scenarios are written sorted by test purpose, then scenario name, so a
//! baseline diffs cleanly under version control.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sanitize::escape;
use crate::harness::verdict::{ScenarioResult, Verdict};

/// The format version written, and the only one read.
pub const VERSION: u32 = 1;

/// A scenario's verdict as a baseline records it: a failure the profile
/// excuses is a `known-deviation`, not a `fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineVerdict {
    Pass,
    Fail,
    Inconclusive,
    #[serde(rename = "n-a")]
    NotApplicable,
    Error,
    KnownDeviation,
}

impl BaselineVerdict {
    pub fn of(result: &ScenarioResult) -> Self {
        match result.verdict {
            Verdict::Pass => Self::Pass,
            Verdict::Fail if result.known_deviation.is_some() => Self::KnownDeviation,
            Verdict::Fail => Self::Fail,
            Verdict::Inconclusive => Self::Inconclusive,
            Verdict::NotApplicable => Self::NotApplicable,
            Verdict::Error => Self::Error,
        }
    }

    /// A failure the baseline knows of: one that must not silently go away.
    fn is_known_failure(self) -> bool {
        matches!(self, Self::Fail | Self::KnownDeviation)
    }
}

impl fmt::Display for BaselineVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
            Self::NotApplicable => "n-a",
            Self::Error => "error",
            Self::KnownDeviation => "known-deviation",
        })
    }
}

/// One scenario of a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub test_purpose: String,
    pub scenario: String,
    pub verdict: BaselineVerdict,
}

/// The verdicts of a run, as a file holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Format version: [`VERSION`].
    pub cpmcc_baseline: u32,
    /// The profile's name in the run that wrote it (informative).
    #[serde(default)]
    pub profile: String,
    pub scenarios: Vec<Entry>,
}

/// A baseline file that cannot be used, naming the file and why.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("baseline {path} does not parse: at `{key}`: {reason}")]
    Parse {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("baseline {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write baseline {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml"))
}

/// The key of a scenario: its test purpose and its name.
type Key = (String, String);

impl Baseline {
    /// The verdicts of `results`, sorted by test purpose and scenario name.
    /// Two scenarios with the same key (a test purpose whose outline does not
    /// put its example in the name) get `#2`, `#3`, … after the name.
    pub fn of(profile: &str, results: &[ScenarioResult]) -> Self {
        let mut seen: BTreeMap<Key, usize> = BTreeMap::new();
        let mut scenarios: Vec<Entry> = results
            .iter()
            .map(|r| {
                let n = seen
                    .entry((r.test_purpose.clone(), r.scenario.clone()))
                    .or_default();
                *n += 1;
                Entry {
                    test_purpose: r.test_purpose.clone(),
                    scenario: if *n == 1 {
                        r.scenario.clone()
                    } else {
                        format!("{} #{n}", r.scenario)
                    },
                    verdict: BaselineVerdict::of(r),
                }
            })
            .collect();
        scenarios
            .sort_by(|a, b| (&a.test_purpose, &a.scenario).cmp(&(&b.test_purpose, &b.scenario)));
        Baseline {
            cpmcc_baseline: VERSION,
            profile: profile.to_owned(),
            scenarios,
        }
    }

    /// Reads a baseline: YAML for `.yaml`/`.yml`, JSON otherwise.
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|e| BaselineError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses baseline text; `path` chooses the format and names the file in
    /// messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BaselineError> {
        let parse_err = |key: String, reason: String| BaselineError::Parse {
            path: path.to_owned(),
            key: if key.is_empty() || key == "." {
                "(top level)".into()
            } else {
                key
            },
            reason,
        };
        let baseline: Baseline = if is_yaml(path) {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| parse_err(e.path().to_string(), e.into_inner().to_string()))?
        } else {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| parse_err(e.path().to_string(), e.into_inner().to_string()))?
        };
        let invalid = |reason: String| BaselineError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if baseline.cpmcc_baseline != VERSION {
            return Err(invalid(format!(
                "format version {} is not {VERSION}",
                baseline.cpmcc_baseline
            )));
        }
        let mut keys = std::collections::BTreeSet::new();
        for e in &baseline.scenarios {
            if !keys.insert((&e.test_purpose, &e.scenario)) {
                return Err(invalid(format!(
                    "{} \"{}\" is listed twice",
                    escape(&e.test_purpose),
                    escape(&e.scenario)
                )));
            }
        }
        Ok(baseline)
    }

    /// The text of the file: YAML for `.yaml`/`.yml`, pretty JSON otherwise.
    pub fn to_text(&self, path: &Path) -> String {
        if is_yaml(path) {
            serde_yaml::to_string(self).unwrap_or_default()
        } else {
            let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
            json.push('\n');
            json
        }
    }

    /// Compares `results` (a run) against this baseline.
    pub fn compare(&self, results: &[ScenarioResult]) -> Comparison {
        let now = Baseline::of("", results);
        let before: BTreeMap<Key, BaselineVerdict> = self
            .scenarios
            .iter()
            .map(|e| ((e.test_purpose.clone(), e.scenario.clone()), e.verdict))
            .collect();
        let after: BTreeMap<Key, BaselineVerdict> = now
            .scenarios
            .iter()
            .map(|e| ((e.test_purpose.clone(), e.scenario.clone()), e.verdict))
            .collect();
        let mut c = Comparison::default();
        for ((tp, scenario), &now) in &after {
            let Some(&was) = before.get(&(tp.clone(), scenario.clone())) else {
                c.new.push(Change::new(tp, scenario, None, Some(now)));
                continue;
            };
            if was == now {
                c.unchanged += 1;
                continue;
            }
            let change = Change::new(tp, scenario, Some(was), Some(now));
            if was == BaselineVerdict::Pass {
                c.regressions.push(change);
            } else if was.is_known_failure() && now == BaselineVerdict::Pass {
                c.now_passing.push(change);
            } else {
                c.changed.push(change);
            }
        }
        for ((tp, scenario), &was) in &before {
            if !after.contains_key(&(tp.clone(), scenario.clone())) {
                c.removed.push(Change::new(tp, scenario, Some(was), None));
            }
        }
        c
    }
}

/// A scenario whose verdict differs from the baseline's, or that only one
/// side has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub test_purpose: String,
    pub scenario: String,
    /// In the baseline; none for a new scenario.
    pub baseline: Option<BaselineVerdict>,
    /// In this run; none for a removed scenario.
    pub now: Option<BaselineVerdict>,
}

impl Change {
    fn new(
        tp: &str,
        scenario: &str,
        baseline: Option<BaselineVerdict>,
        now: Option<BaselineVerdict>,
    ) -> Self {
        Change {
            test_purpose: tp.to_owned(),
            scenario: scenario.to_owned(),
            baseline,
            now,
        }
    }

    fn line(&self) -> String {
        let v = |v: Option<BaselineVerdict>| v.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "{} \"{}\": {} -> {}",
            escape(&self.test_purpose),
            escape(&self.scenario),
            v(self.baseline),
            v(self.now)
        )
    }
}

/// A run against a baseline. Only `regressions` and `now_passing` fail the
/// gate; the rest is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// The baseline file, as given.
    pub file: String,
    /// Passed in the baseline, and now does not.
    pub regressions: Vec<Change>,
    /// Failed in the baseline (`fail` or `known-deviation`), and now passes:
    /// update the baseline, so that its list of failures stays honest.
    pub now_passing: Vec<Change>,
    /// Any other verdict change (`inconclusive` -> `fail`, say).
    pub changed: Vec<Change>,
    /// In this run, not in the baseline.
    pub new: Vec<Change>,
    /// In the baseline, not in this run (a `--tags` selection, a removed
    /// scenario).
    pub removed: Vec<Change>,
    /// Same verdict in both.
    pub unchanged: usize,
}

impl Comparison {
    /// Whether nothing changed that fails the gate.
    pub fn passed(&self) -> bool {
        self.regressions.is_empty() && self.now_passing.is_empty()
    }

    /// The comparison as the terminal shows it: a count line, then one line
    /// per scenario that changed, is new or is gone.
    pub fn render(&self) -> String {
        let mut out = format!(
            "\nbaseline {}: {} unchanged, {} regressed, {} now passing, {} changed, {} new, {} removed\n",
            escape(&self.file),
            self.unchanged,
            self.regressions.len(),
            self.now_passing.len(),
            self.changed.len(),
            self.new.len(),
            self.removed.len()
        );
        let groups = [
            ("REGRESSED  ", &self.regressions),
            ("NOW PASSES ", &self.now_passing),
            ("changed    ", &self.changed),
            ("new        ", &self.new),
            ("removed    ", &self.removed),
        ];
        for (label, changes) in groups {
            for c in changes {
                out.push_str(&format!("  {label}{}\n", c.line()));
            }
        }
        if !self.now_passing.is_empty() {
            out.push_str("  (a failure the baseline lists now passes: write the baseline again)\n");
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(tp: &str, verdict: Verdict, known: bool) -> ScenarioResult {
        ScenarioResult {
            feature: "f".into(),
            clause: "6.2.3.1".into(),
            test_purpose: tp.into(),
            scenario: format!("scenario {tp}"),
            verdict,
            detail: None,
            rules: vec![],
            served_users: vec![],
            known_deviation: known.then(|| "ticket".into()),
            warnings: vec![],
            duration: Duration::ZERO,
            ladder: Default::default(),
        }
    }

    #[test]
    fn both_formats_round_trip_in_a_stable_order() {
        let results = [
            result("B", Verdict::Fail, true),
            result("A", Verdict::NotApplicable, false),
            result("C", Verdict::Pass, false),
        ];
        let b = Baseline::of("p", &results);
        let tps: Vec<_> = b
            .scenarios
            .iter()
            .map(|e| e.test_purpose.as_str())
            .collect();
        assert_eq!(tps, ["A", "B", "C"]);
        for name in ["b.json", "b.yaml"] {
            let text = b.to_text(Path::new(name));
            assert_eq!(
                Baseline::parse(&text, Path::new(name)).unwrap(),
                b,
                "{text}"
            );
        }
        let json = b.to_text(Path::new("b.json"));
        assert!(
            json.contains("\"known-deviation\"") && json.contains("\"n-a\""),
            "{json}"
        );
    }

    #[test]
    fn only_regressions_and_fixed_failures_fail() {
        let base = Baseline::of(
            "p",
            &[
                result("PASSED", Verdict::Pass, false),
                result("FAILED", Verdict::Fail, false),
                result("KNOWN", Verdict::Fail, true),
                result("INCONCL", Verdict::Inconclusive, false),
                result("GONE", Verdict::Pass, false),
            ],
        );
        let same = base.compare(&[
            result("PASSED", Verdict::Pass, false),
            result("FAILED", Verdict::Fail, false),
            result("KNOWN", Verdict::Fail, true),
            result("INCONCL", Verdict::Fail, false),
            result("NEW", Verdict::Fail, false),
        ]);
        assert!(same.passed(), "{same:?}");
        assert_eq!(same.unchanged, 3);
        assert_eq!(same.changed.len(), 1);
        assert_eq!(same.new[0].test_purpose, "NEW");
        assert_eq!(same.removed[0].test_purpose, "GONE");
        let worse = base.compare(&[
            result("PASSED", Verdict::Error, false),
            result("FAILED", Verdict::Pass, false),
            result("KNOWN", Verdict::Pass, true),
        ]);
        assert!(!worse.passed());
        assert_eq!(worse.regressions[0].test_purpose, "PASSED");
        assert_eq!(worse.now_passing.len(), 2);
        assert!(
            worse.render().contains("REGRESSED  PASSED"),
            "{}",
            worse.render()
        );
    }

    #[test]
    fn a_bad_file_is_named_with_where_it_breaks() {
        let e = Baseline::parse(
            r#"{"cpmcc_baseline":1,"scenarios":[{"test_purpose":"A","scenario":"s","verdict":"passed"}]}"#,
            Path::new("x.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.json") && e.contains("scenarios[0].verdict"),
            "{e}"
        );
        let e = Baseline::parse("cpmcc_baseline: 2\nscenarios: []\n", Path::new("x.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.yml") && e.contains("version 2"), "{e}");
    }
}
