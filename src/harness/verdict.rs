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
use crate::report::sanitize::{escape, escape_lines};
use crate::report::strays::StrayLog;

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
        // Expected and observed quote the wire (Session-Ids, URIs): each
        // line escaped, so a SUT cannot forge one.
        let lines = |text: &str| {
            escape_lines(text)
                .collect::<Vec<_>>()
                .join("\n            ")
        };
        write!(
            f,
            "\n  expected: {}\n  observed: {}",
            lines(&self.expected),
            lines(&self.observed)
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
    #[serde(serialize_with = "escaped_detail")]
    pub detail: Option<String>,
    /// The ids of the rules broken, the first one first (`off.start.after-answer`).
    pub rules: Vec<&'static str>,
    /// The profile lists this failure as a known deviation, with this reason.
    pub known_deviation: Option<String>,
    /// Warnings: odd but legal things the SUT sent.
    #[serde(serialize_with = "escaped_lines")]
    pub warnings: Vec<String>,
    /// Where each charged function's requests named its served user
    /// (`the originating PF serving alice: sip:alice.…@… from Subscription-Id`).
    pub served_users: Vec<String>,
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// What happened, as a ladder diagram: SIP and charging in time order,
    /// and the rules broken to mark on it.
    pub ladder: Ladder,
}

/// A scenario's messages in time order, one arrow each, between lifelines:
/// a test user by role name, [`Ladder::SUT`], [`Ladder::ENABLER`]. Every
/// text is escaped (control characters) as it is built; the HTML report
/// escapes it again for HTML.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ladder {
    /// Left to right: the test users, then the SUT, then the Charging Enabler.
    pub lifelines: Vec<String>,
    /// At most [`Ladder::MAX_EVENTS`], in time order.
    pub events: Vec<LadderEvent>,
    /// Events past [`Ladder::MAX_EVENTS`], counted, not kept.
    pub more: usize,
    /// The rules broken, with expected against observed, the first one
    /// first, to mark on the diagram.
    pub broken: Vec<BrokenRule>,
}

impl Ladder {
    pub const SUT: &'static str = "SUT";
    pub const ENABLER: &'static str = "Charging Enabler";
    /// A scenario's ladder keeps this many events.
    pub const MAX_EVENTS: usize = 500;

    /// Builds a ladder from events in any order: sorted by `key` (the
    /// harness timeline), cut at [`Ladder::MAX_EVENTS`].
    pub fn of<K: Ord>(lifelines: Vec<String>, mut events: Vec<(K, LadderEvent)>) -> Self {
        events.sort_by(|a, b| a.0.cmp(&b.0));
        let more = events.len().saturating_sub(Self::MAX_EVENTS);
        events.truncate(Self::MAX_EVENTS);
        Ladder {
            lifelines,
            events: events.into_iter().map(|(_, e)| e).collect(),
            more,
            broken: Vec::new(),
        }
    }
}

/// One arrow of a ladder.
#[derive(Debug, Clone, Serialize)]
pub struct LadderEvent {
    /// Milliseconds since the scenario started.
    pub at_ms: u64,
    pub from: String,
    pub to: String,
    /// `INVITE`, `200 (INVITE)`, `ACR Start #0`, `ACA 2001`.
    pub label: String,
    /// What else is known of it (a charging record's whole line).
    pub detail: String,
}

/// A broken rule as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct BrokenRule {
    pub rule: &'static str,
    pub clause: &'static str,
    pub text: &'static str,
    #[serde(serialize_with = "escaped_str")]
    pub subject: String,
    #[serde(serialize_with = "escaped_str")]
    pub expected: String,
    #[serde(serialize_with = "escaped_str")]
    pub observed: String,
}

impl From<&Violation> for BrokenRule {
    fn from(v: &Violation) -> Self {
        BrokenRule {
            rule: v.rule.id,
            clause: v.rule.clause,
            text: v.rule.text,
            subject: v.subject.clone(),
            expected: v.expected.clone(),
            observed: v.observed.clone(),
        }
    }
}

/// Lines kept, each escaped (see [`escape_lines`]).
fn escaped_str<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape_lines(text).collect::<Vec<_>>().join("\n"))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Wire text in the JSON too: a consumer that prints a field (`jq -r`) must
/// not print a control character the SUT chose. The harness's own newlines
/// in a detail stay newlines.
fn escaped_detail<S: serde::Serializer>(d: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&escape_lines(d).collect::<Vec<_>>().join("\n")),
        None => s.serialize_none(),
    }
}

fn escaped_lines<S: serde::Serializer>(lines: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(lines.iter().map(|l| escape(l)))
}

/// All results of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub sut: String,
    pub ordering: String,
    pub results: Vec<ScenarioResult>,
    /// Messages that belonged to no scenario: the first
    /// [`StrayLog::KEEP`], one short escaped line each.
    #[serde(serialize_with = "escaped_lines")]
    pub strays: Vec<String>,
    /// Every message that belonged to no scenario, kept in `strays` or not.
    pub strays_total: u64,
    /// `strays_total` by kind (`request for no test user`, …).
    pub strays_by_kind: std::collections::BTreeMap<String, u64>,
    /// The run was stopped (SIGINT, SIGTERM) before every scenario ran:
    /// `results` holds those that finished; such a run never passes.
    pub interrupted: bool,
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
        !self.interrupted
            && !self.results.is_empty()
            && self.gate_failures() == 0
            && self.strays.is_empty()
            && self.strays_total == 0
    }

    /// Takes the strays from a bounded log: its kept lines and its counts.
    pub fn set_strays(&mut self, log: &StrayLog) {
        self.strays = log.kept().to_vec();
        self.strays_total = log.total();
        self.strays_by_kind = log.by_kind().clone();
    }

    /// One line per clause and a total; failures in full below.
    ///
    /// Everything that may come from the wire (details, strays) or from a
    /// file (names, reasons) is escaped, so that every line starts as the
    /// harness wrote it: a SUT cannot forge a `total: … PASS` line or clear
    /// the screen. Lines of a detail are indented.
    pub fn render(&self) -> String {
        use std::collections::BTreeMap;
        let mut out = String::new();
        out.push_str(&format!(
            "cpmcc: {} (ordering reading: {})\n",
            escape(&self.sut),
            escape(&self.ordering)
        ));
        let mut by_clause: BTreeMap<&str, Vec<&ScenarioResult>> = BTreeMap::new();
        for r in &self.results {
            by_clause.entry(r.clause.as_str()).or_default().push(r);
        }
        for (clause, results) in &by_clause {
            let n = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
            out.push_str(&format!(
                "  {:<10} {:>3} scenarios: {} pass, {} fail, {} inconclusive, {} n/a, {} error\n",
                escape(clause),
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
                escape(&r.test_purpose)
            ));
        }
        for r in self.results.iter().filter(|r| r.verdict != Verdict::Pass) {
            out.push_str(&format!(
                "\n{} {} [{}] {}\n",
                r.verdict,
                escape(&r.test_purpose),
                escape(&r.feature),
                escape(&r.scenario)
            ));
            if let Some(reason) = &r.known_deviation {
                out.push_str(&format!("  known deviation: {}\n", escape(reason)));
            }
            if let Some(detail) = &r.detail {
                for line in escape_lines(detail) {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        let total = self.strays_total.max(self.strays.len() as u64);
        if total > 0 {
            out.push_str(&format!("\n{total} message(s) belonged to no scenario:\n"));
            if self.strays_by_kind.len() > 1 || self.strays_total > self.strays.len() as u64 {
                for (kind, n) in &self.strays_by_kind {
                    out.push_str(&format!("  {n:>7} {}\n", escape(kind)));
                }
            }
            const SHOWN: usize = 20;
            for s in self.strays.iter().take(SHOWN) {
                out.push_str(&format!("  {}\n", escape(s)));
            }
            let shown = self.strays.len().min(SHOWN) as u64;
            if total > shown {
                out.push_str(&format!(
                    "  … and {} more ({} listed in the JSON summary)\n",
                    total - shown,
                    self.strays.len()
                ));
            }
        }
        if self.interrupted {
            out.push_str(&format!(
                "\ninterrupted: {} scenario(s) finished before the run was stopped; the others did not run\n",
                self.results.len()
            ));
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
            if self.interrupted {
                "INTERRUPTED"
            } else if self.passed() {
                "PASS"
            } else {
                "FAIL"
            }
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
            ladder: Ladder::default(),
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

    /// Every line of a rendered summary starts as the harness wrote it.
    fn harness_line(line: &str) -> bool {
        line.is_empty()
            || line.starts_with("  ")
            || [
                "cpmcc: ",
                "total: ",
                "note: ",
                "interrupted: ",
                "FAIL ",
                "INCONCLUSIVE ",
                "ERROR ",
                "n/a ",
            ]
            .iter()
            .any(|p| line.starts_with(p))
            || line.contains(" message(s) belonged to no scenario:")
    }

    #[test]
    fn wire_text_cannot_forge_a_line_or_move_the_cursor() {
        let forged = "x\r\ntotal: 14 scenarios, 14 pass, 0 fail in 1.00 s: PASS\x1b[2J\x1b[H";
        let mut failed = result(Verdict::Fail, false);
        failed.detail = Some(format!(
            "[6.2.3.1] rule\n  expected: Start\n  observed: {forged}"
        ));
        let mut log = StrayLog::default();
        log.push(
            "request for no test user",
            &format!("from 1.2.3.4:5060: OPTIONS {forged}"),
        );
        let mut s = Summary {
            results: vec![result(Verdict::Pass, false), failed],
            ..Default::default()
        };
        s.set_strays(&log);
        let out = s.render();
        assert!(!out.contains(['\r', '\x1b']), "{out}");
        for line in out.lines() {
            assert!(
                harness_line(line),
                "a line the harness did not begin: {line:?}"
            );
        }
        assert_eq!(out.lines().filter(|l| l.starts_with("total: ")).count(), 1);
        assert!(
            out.contains("\\r\\ntotal: 14"),
            "the forgery is shown, escaped: {out}"
        );
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert!(
            !json.contains("\\u001b") && json.contains("\\\\x1b"),
            "{json}"
        );
    }

    #[test]
    fn strays_beyond_those_kept_are_counted_and_still_fail_the_gate() {
        let mut log = StrayLog::default();
        for i in 0..1_500 {
            log.push("unreadable message", &format!("from 1.2.3.4:{i}: junk"));
        }
        let mut s = Summary {
            results: vec![result(Verdict::Pass, false)],
            ..Default::default()
        };
        assert!(s.passed());
        s.set_strays(&log);
        assert!(!s.passed());
        assert_eq!(s.strays.len(), StrayLog::KEEP);
        let out = s.render();
        assert!(
            out.contains("1500 message(s) belonged to no scenario"),
            "{out}"
        );
        assert!(
            out.contains("… and 1480 more (100 listed in the JSON summary)"),
            "{out}"
        );
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["strays_total"], 1_500);
        assert_eq!(json["strays_by_kind"]["unreadable message"], 1_500);
        // Counted but none kept (a log merged from elsewhere) fails too.
        let counted_only = Summary {
            strays: vec![],
            ..s
        };
        assert!(!counted_only.passed());
    }

    #[test]
    fn an_interrupted_run_never_passes() {
        let s = Summary {
            results: vec![result(Verdict::Pass, false)],
            interrupted: true,
            ..Default::default()
        };
        assert!(!s.passed());
        let out = s.render();
        assert!(out.contains("interrupted: 1 scenario(s) finished"), "{out}");
        assert!(out.trim_end().ends_with("INTERRUPTED"), "{out}");
    }
}
