//! The rules that hold for every flow, as pure functions over what was
//! observed, and the expected-against-observed rendering of failures.
//!
//! These run after every scenario (`spec/flows.md`, "Rules that hold for
//! every flow"), so no scenario repeats them.

use crate::charging::ch1::RecordType;
use crate::timeline::Stamp;

/// One CH-1 request as the rules see it.
#[derive(Debug, Clone)]
pub struct ObservedRequest {
    pub stamp: Stamp,
    pub kind: RecordType,
    pub record_number: u32,
    pub session_id: String,
}

impl ObservedRequest {
    /// `StartRequest #0 Session-Id=…`: one line of a sequence.
    pub fn line(&self) -> String {
        format!(
            "{} #{} Session-Id={}",
            self.kind.ch1_name(),
            self.record_number,
            self.session_id
        )
    }
}

/// A CH-1 request type named in a step (`StartRequest`, …).
pub fn record_type_named(text: &str) -> Option<RecordType> {
    [
        RecordType::Start,
        RecordType::Interim,
        RecordType::Stop,
        RecordType::Event,
    ]
    .into_iter()
    .find(|k| k.ch1_name() == text)
}

/// A broken rule, with the sequence that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    pub rule: &'static str,
    pub expected: String,
    pub observed: String,
}

/// Checks one charging session of one charged function (offline, CH-1).
/// EventRequests stand alone and are not part of the session.
pub fn offline_session_rules(requests: &[ObservedRequest]) -> Vec<RuleViolation> {
    let session: Vec<&ObservedRequest> = requests
        .iter()
        .filter(|r| r.kind != RecordType::Event)
        .collect();
    let mut out = Vec::new();
    if session.is_empty() {
        return out;
    }
    let observed = session
        .iter()
        .map(|r| r.line())
        .collect::<Vec<_>>()
        .join("\n");
    let starts = session
        .iter()
        .filter(|r| r.kind == RecordType::Start)
        .count();
    if starts != 1 {
        out.push(RuleViolation {
            rule: "exactly one StartRequest per charging session",
            expected: "1 StartRequest".into(),
            observed: format!("{starts} StartRequests:\n{observed}"),
        });
    }
    if session[0].kind != RecordType::Start {
        out.push(RuleViolation {
            rule: "no InterimRequest or StopRequest before the StartRequest",
            expected: "StartRequest first".into(),
            observed: observed.clone(),
        });
    }
    let stops = session
        .iter()
        .filter(|r| r.kind == RecordType::Stop)
        .count();
    if stops > 1 {
        out.push(RuleViolation {
            rule: "at most one StopRequest per charging session",
            expected: "0 or 1 StopRequest".into(),
            observed: format!("{stops} StopRequests:\n{observed}"),
        });
    }
    if let Some(i) = session.iter().position(|r| r.kind == RecordType::Stop)
        && i + 1 != session.len()
    {
        out.push(RuleViolation {
            rule: "the StopRequest is last: nothing after it",
            expected: "StopRequest last".into(),
            observed: observed.clone(),
        });
    }
    let numbers: Vec<u32> = session.iter().map(|r| r.record_number).collect();
    let wanted: Vec<u32> = (0..).take(numbers.len()).collect();
    if numbers != wanted {
        out.push(RuleViolation {
            rule: "Accounting-Record-Number starts at 0 and rises by one",
            expected: format!("{wanted:?}"),
            observed: format!("{numbers:?}"),
        });
    }
    let first_id = &session[0].session_id;
    if session.iter().any(|r| &r.session_id != first_id) {
        out.push(RuleViolation {
            rule: "one Session-Id from Start to Stop",
            expected: format!("every request with Session-Id={first_id}"),
            observed: observed.clone(),
        });
    }
    out
}

/// Expected against observed, one message a line, as a diff: `  ` both,
/// `- ` expected only, `+ ` observed only. Plain text (no colour codes), so
/// it reads the same in a terminal, a JSON report and a JUnit file.
pub fn sequence_diff(expected: &[String], observed: &[String]) -> String {
    // Longest common subsequence; sequences here are a handful of messages.
    let (n, m) = (expected.len(), observed.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == observed[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == observed[j] {
            out.push(format!("  {}", expected[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", observed[j]));
            j += 1;
        } else {
            out.push(format!("- {}", expected[i]));
            i += 1;
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::stamp;

    fn req(kind: RecordType, n: u32, sid: &str) -> ObservedRequest {
        ObservedRequest {
            stamp: stamp(),
            kind,
            record_number: n,
            session_id: sid.into(),
        }
    }

    fn rules(v: &[ObservedRequest]) -> Vec<&'static str> {
        offline_session_rules(v)
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    #[test]
    fn a_correct_session_breaks_no_rule() {
        let v = [
            req(RecordType::Start, 0, "s"),
            req(RecordType::Interim, 1, "s"),
            req(RecordType::Stop, 2, "s"),
        ];
        assert!(rules(&v).is_empty());
        assert!(rules(&[]).is_empty());
    }

    #[test]
    fn each_broken_rule_is_named() {
        let two_starts = [
            req(RecordType::Start, 0, "s"),
            req(RecordType::Start, 1, "s"),
        ];
        assert_eq!(
            rules(&two_starts),
            ["exactly one StartRequest per charging session"]
        );

        let interim_first = [
            req(RecordType::Interim, 0, "s"),
            req(RecordType::Start, 1, "s"),
        ];
        assert!(
            rules(&interim_first)
                .contains(&"no InterimRequest or StopRequest before the StartRequest")
        );

        let after_stop = [
            req(RecordType::Start, 0, "s"),
            req(RecordType::Stop, 1, "s"),
            req(RecordType::Interim, 2, "s"),
        ];
        assert_eq!(
            rules(&after_stop),
            ["the StopRequest is last: nothing after it"]
        );

        let skip = [
            req(RecordType::Start, 0, "s"),
            req(RecordType::Stop, 2, "s"),
        ];
        assert_eq!(
            rules(&skip),
            ["Accounting-Record-Number starts at 0 and rises by one"]
        );

        let new_id = [
            req(RecordType::Start, 0, "s"),
            req(RecordType::Stop, 1, "t"),
        ];
        assert_eq!(rules(&new_id), ["one Session-Id from Start to Stop"]);
    }

    #[test]
    fn event_requests_stand_alone() {
        let v = [req(RecordType::Event, 0, "e")];
        assert!(rules(&v).is_empty());
    }

    #[test]
    fn diff_marks_missing_and_unexpected_lines() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let d = sequence_diff(
            &s(&["StartRequest #0", "StopRequest #1"]),
            &s(&["StartRequest #0", "StartRequest #1", "StopRequest #2"]),
        );
        pretty_assertions::assert_eq!(
            d,
            "  StartRequest #0\n+ StartRequest #1\n+ StopRequest #2\n- StopRequest #1"
        );
    }
}
