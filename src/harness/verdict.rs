//! Verdicts, step failures, and the run summary.
//!
//! A scenario ends in one of five verdicts (`design.md`): pass, fail (the SUT
//! broke a rule), inconclusive (a precondition could not be set up), not
//! applicable (the profile says the SUT lacks the feature) and error (the
//! harness itself failed). Only pass counts as a pass.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::rules::Rule;

/// The outcome of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    NotApplicable,
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::NotApplicable => "n/a",
            Verdict::Error => "ERROR",
        })
    }
}

/// A broken rule of the catalogue, with what was expected against what was
/// observed. `subject` says where it broke (`originating PF serving alice`).
#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: &'static Rule,
    pub subject: String,
    pub expected: String,
    pub observed: String,
}

impl Violation {
    pub fn new(
        rule: &'static Rule,
        subject: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
    ) -> Self {
        Violation {
            rule,
            subject: subject.into(),
            expected: expected.into(),
            observed: observed.into(),
        }
    }
}

impl fmt::Display for Violation {
    /// The first line names the rule broken (id, clause, text); then where,
    /// and expected against observed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            self.rule.clause, self.rule.id, self.rule.text
        )?;
        if !self.subject.is_empty() {
            write!(f, "\n  where:    {}", self.subject)?;
        }
        write!(
            f,
            "\n  expected: {}\n  observed: {}",
            self.expected.replace('\n', "\n            "),
            self.observed.replace('\n', "\n            ")
        )
    }
}

/// Why a step did not pass. Every failure names its rule and shows what
/// was expected against what was observed.
#[derive(Debug, Clone)]
pub enum StepFailure {
    /// The SUT broke a rule.
    Fail(Violation),
    /// A precondition could not be established (the SUT never forwarded the
    /// INVITE, say); says nothing about charging.
    Inconclusive(String),
    /// The harness itself failed (a socket, a bad step argument).
    Harness(String),
}

impl StepFailure {
    pub fn verdict(&self) -> Verdict {
        match self {
            StepFailure::Fail(_) => Verdict::Fail,
            StepFailure::Inconclusive(_) => Verdict::Inconclusive,
            StepFailure::Harness(_) => Verdict::Error,
        }
    }

    /// The rule broken, for a failure.
    pub fn rule(&self) -> Option<&'static Rule> {
        match self {
            StepFailure::Fail(v) => Some(v.rule),
            _ => None,
        }
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepFailure::Fail(v) => v.fmt(f),
            StepFailure::Inconclusive(why) => write!(f, "inconclusive: {why}"),
            StepFailure::Harness(why) => write!(f, "harness error: {why}"),
        }
    }
}

impl std::error::Error for StepFailure {}

/// One scenario's result, as reports and tests read it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The feature file, relative to the features folder.
    pub feature: String,
    /// `6.2.3.1`, from the `@clause-…` tag.
    pub clause: String,
    /// `OFF-INIT-01`, from the `@tp-…` tag.
    pub test_purpose: String,
    pub scenario: String,
    pub verdict: Verdict,
    /// What failed, with expected against observed.
    pub detail: Option<String>,
    /// The ids of the rules broken, the first one first (`off.start.after-answer`).
    pub rules: Vec<&'static str>,
    /// The profile lists this failure as a known deviation, with this reason.
    pub known_deviation: Option<String>,
    /// Warnings: odd but legal things the SUT sent.
    pub warnings: Vec<String>,
    /// Where each charged function's requests named its served user
    /// (`the originating PF serving alice: sip:alice.…@… from Subscription-Id`).
    pub served_users: Vec<String>,
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// All results of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub sut: String,
    pub ordering: String,
    pub results: Vec<ScenarioResult>,
    /// Messages that belonged to no scenario.
    pub strays: Vec<String>,
    #[serde(serialize_with = "millis")]
    pub wall_time: Duration,
}

impl Summary {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.results.iter().filter(|r| r.verdict == verdict).count()
    }

    /// Failures the profile does not excuse; inconclusive and error verdicts
    /// never count as a pass.
    pub fn gate_failures(&self) -> usize {
        self.results
            .iter()
            .filter(|r| match r.verdict {
                Verdict::Pass | Verdict::NotApplicable => false,
                Verdict::Fail => r.known_deviation.is_none(),
                Verdict::Inconclusive | Verdict::Error => true,
            })
            .count()
    }

    /// Whether the run passes as a CI gate. A message that belonged to no
    /// scenario fails it too: the harness could not judge it, and a SUT that
    /// sends it is doing something no scenario asked for.
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.gate_failures() == 0 && self.strays.is_empty()
    }

    /// One line per clause and a total; failures in full below.
    pub fn render(&self) -> String {
        use std::collections::BTreeMap;
        let mut out = String::new();
        out.push_str(&format!(
            "cpmcc: {} (ordering reading: {})\n",
            self.sut, self.ordering
        ));
        let mut by_clause: BTreeMap<&str, Vec<&ScenarioResult>> = BTreeMap::new();
        for r in &self.results {
            by_clause.entry(r.clause.as_str()).or_default().push(r);
        }
        for (clause, results) in &by_clause {
            let n = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
            out.push_str(&format!(
                "  {clause:<10} {:>3} scenarios: {} pass, {} fail, {} inconclusive, {} n/a, {} error\n",
                results.len(),
                n(Verdict::Pass),
                n(Verdict::Fail),
                n(Verdict::Inconclusive),
                n(Verdict::NotApplicable),
                n(Verdict::Error),
            ));
        }
        for r in self
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::Pass && r.known_deviation.is_some())
        {
            out.push_str(&format!(
                "\nnote: {} passes but the profile lists it as a known deviation: remove it from known_deviations\n",
                r.test_purpose
            ));
        }
        for r in self.results.iter().filter(|r| r.verdict != Verdict::Pass) {
            out.push_str(&format!(
                "\n{} {} [{}] {}\n",
                r.verdict, r.test_purpose, r.feature, r.scenario
            ));
            if let Some(reason) = &r.known_deviation {
                out.push_str(&format!("  known deviation: {reason}\n"));
            }
            if let Some(detail) = &r.detail {
                for line in detail.lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        if !self.strays.is_empty() {
            out.push_str(&format!(
                "\n{} message(s) belonged to no scenario:\n",
                self.strays.len()
            ));
            for s in self.strays.iter().take(20) {
                out.push_str(&format!("  {s}\n"));
            }
        }
        out.push_str(&format!(
            "\ntotal: {} scenarios, {} pass, {} fail, {} inconclusive, {} n/a, {} error in {:.2} s: {}\n",
            self.results.len(),
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Inconclusive),
            self.count(Verdict::NotApplicable),
            self.count(Verdict::Error),
            self.wall_time.as_secs_f64(),
            if self.passed() { "PASS" } else { "FAIL" }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(verdict: Verdict, known: bool) -> ScenarioResult {
        ScenarioResult {
            feature: "f".into(),
            clause: "6.2.3.1".into(),
            test_purpose: "TP".into(),
            scenario: "s".into(),
            verdict,
            detail: None,
            rules: vec![],
            served_users: vec![],
            known_deviation: known.then(|| "ticket".into()),
            warnings: vec![],
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn inconclusive_and_error_never_pass_the_gate() {
        for v in [Verdict::Inconclusive, Verdict::Error, Verdict::Fail] {
            let s = Summary {
                results: vec![result(Verdict::Pass, false), result(v, false)],
                ..Default::default()
            };
            assert!(!s.passed(), "{v:?}");
        }
    }

    #[test]
    fn known_deviation_and_not_applicable_do_not_fail_the_gate() {
        let s = Summary {
            results: vec![
                result(Verdict::Pass, false),
                result(Verdict::Fail, true),
                result(Verdict::NotApplicable, false),
            ],
            ..Default::default()
        };
        assert!(s.passed());
        assert!(!Summary::default().passed(), "a run of nothing is no pass");
        let with_stray = Summary {
            strays: vec!["request for no test user".into()],
            ..s
        };
        assert!(
            !with_stray.passed(),
            "a message no scenario claimed fails the gate"
        );
    }
}
