//! The rules that hold for every flow, as pure functions over what was
//! observed, and the expected-against-observed rendering of failures.
//!
//! These run after every scenario (`spec/flows.md`, "Rules that hold for
//! every flow"), so no scenario repeats them.

use super::rules::{self, Rule};
use super::verdict::Violation;
use crate::charging::ch1::{ChargedRole, RecordType};
use crate::charging::enabler::ChargingRecord;
use crate::profile::{ChargedFunction, OrderingReading};
use crate::sip::message;
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

/// Checks one charging session of one charged function (offline, CH-1),
/// requests in arrival order. EventRequests stand alone and are not part of
/// the session. `subject` names the function, for the violations.
pub fn offline_session_rules(requests: &[ObservedRequest], subject: &str) -> Vec<Violation> {
    let session: Vec<&ObservedRequest> = requests
        .iter()
        .filter(|r| r.kind != RecordType::Event)
        .collect();
    let mut out = Vec::new();
    let Some(first) = session.first() else {
        return out;
    };
    let observed = session
        .iter()
        .map(|r| r.line())
        .collect::<Vec<_>>()
        .join("\n");
    let v = |rule, expected: String, observed: String| {
        Violation::new(rule, subject, expected, observed)
    };
    let count = |kind| session.iter().filter(|r| r.kind == kind).count();
    let starts = count(RecordType::Start);
    if starts != 1 {
        out.push(v(
            &rules::ONE_START,
            "1 StartRequest".into(),
            format!("{starts} StartRequests:\n{observed}"),
        ));
    }
    if first.kind != RecordType::Start {
        out.push(v(
            &rules::START_FIRST,
            "StartRequest first".into(),
            observed.clone(),
        ));
    }
    let stops = count(RecordType::Stop);
    if stops > 1 {
        out.push(v(
            &rules::AT_MOST_ONE_STOP,
            "0 or 1 StopRequest".into(),
            format!("{stops} StopRequests:\n{observed}"),
        ));
    }
    // A second Stop is the one-stop rule's; this one is about anything else.
    if let Some(i) = session.iter().position(|r| r.kind == RecordType::Stop)
        && session[i + 1..].iter().any(|r| r.kind != RecordType::Stop)
    {
        out.push(v(
            &rules::STOP_LAST,
            "StopRequest last".into(),
            observed.clone(),
        ));
    }
    if first.record_number != 0 {
        out.push(v(
            &rules::NUMBER_STARTS_AT_ZERO,
            "the first request numbered 0".into(),
            observed.clone(),
        ));
    }
    let numbers: Vec<u32> = session.iter().map(|r| r.record_number).collect();
    if numbers
        .windows(2)
        .any(|w| w[0].checked_add(1) != Some(w[1]))
    {
        let wanted: Vec<u32> = (first.record_number..).take(numbers.len()).collect();
        out.push(v(
            &rules::NUMBER_RISES_BY_ONE,
            format!("{wanted:?}"),
            format!("{numbers:?}"),
        ));
    }
    let first_id = &first.session_id;
    if session.iter().any(|r| &r.session_id != first_id) {
        out.push(v(
            &rules::ONE_SESSION_ID,
            format!("every request with Session-Id={first_id}"),
            observed.clone(),
        ));
    }
    out
}

/// "No request of this kind after this point", and the rule it would break.
#[derive(Debug, Clone, Copy)]
pub struct Forbidden {
    pub kind: RecordType,
    pub after: Stamp,
    pub rule: &'static Rule,
}

/// One charged function's stream of a scenario: the function and the test
/// user it serves (the unique user part, `alice.12x…`).
#[derive(Debug, Clone)]
pub struct Stream {
    pub function: ChargedFunction,
    /// The user's role name in the scenario (`alice`).
    pub role_name: String,
    /// The user part the SUT names in its requests.
    pub served: String,
}

impl Stream {
    pub fn subject(&self) -> String {
        format!("the {} serving {}", self.function, self.role_name)
    }
}

/// What the judge needs to know of a scenario, kept after its World is
/// gone so that a request arriving after the verdict can still be judged.
#[derive(Debug, Clone)]
pub struct ScenarioFacts {
    pub streams: Vec<Stream>,
    /// Every test user of the scenario (unique user parts).
    pub user_names: Vec<String>,
    /// The BYE that ended an established session (the scenario's, or the
    /// harness's teardown); None if the session was never established.
    pub session_end: Option<Stamp>,
    /// Re-INVITEs sent, and how many the far end accepted.
    pub reinvites: (usize, usize),
    /// A group session: its Interims also charge joins and departures,
    /// which its steps judge one by one, so the per-modification count
    /// does not apply.
    pub group: bool,
    pub forbidden: Vec<Forbidden>,
    pub ordering: OrderingReading,
    pub pinned_service_context: Option<String>,
}

/// The served user a record names, as a user part (`alice.r7s3`).
pub fn served_user_of(record: &ChargingRecord) -> Option<&str> {
    record
        .ch1
        .as_ref()
        .ok()
        .and_then(|c| c.served_user.as_deref())
        .and_then(message::uri_user)
}

/// The records `names_ours` accepts (they name one of our users), and those
/// continuing a Session-Id that such a record opened (a SUT may name the
/// served user in its first request only). The one rule of correlation, for
/// functions, scenarios and strays alike.
pub fn belonging_to(
    records: Vec<ChargingRecord>,
    names_ours: impl Fn(&ChargingRecord) -> bool,
) -> Vec<ChargingRecord> {
    let sessions: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| names_ours(r))
        .filter_map(|r| r.session_id().map(str::to_owned))
        .collect();
    let mut v: Vec<ChargingRecord> = records
        .into_iter()
        .filter(|r| names_ours(r) || r.session_id().is_some_and(|s| sessions.contains(s)))
        .collect();
    v.sort_by_key(|r| r.stamp);
    v
}

/// Whether a reported role is the one a function plays.
pub fn role_matches(role: ChargedRole, function: ChargedFunction) -> bool {
    matches!(
        (role, function),
        (ChargedRole::OriginatingPf, ChargedFunction::OriginatingPf)
            | (ChargedRole::TerminatingPf, ChargedFunction::TerminatingPf)
            | (
                ChargedRole::ControllingFunction,
                ChargedFunction::ControllingFunction
            )
    )
}

/// Whether a record names the stream's served user (and, when it reports a
/// role, the stream's function).
pub fn names_stream(record: &ChargingRecord, stream: &Stream) -> bool {
    let Ok(req) = &record.ch1 else {
        return false;
    };
    if served_user_of(record) != Some(stream.served.as_str()) {
        return false;
    }
    req.role.is_none_or(|r| role_matches(r, stream.function))
}

/// A stream's records, in arrival order.
pub fn stream_records(all: Vec<ChargingRecord>, stream: &Stream) -> Vec<ChargingRecord> {
    belonging_to(all, |r| names_stream(r, stream))
}

/// Every record of a scenario, whatever the function.
pub fn scenario_records(all: Vec<ChargingRecord>, facts: &ScenarioFacts) -> Vec<ChargingRecord> {
    belonging_to(all, |r| {
        served_user_of(r).is_some_and(|u| facts.user_names.iter().any(|n| n == u))
    })
}

fn observed_of(records: &[ChargingRecord]) -> Vec<ObservedRequest> {
    records
        .iter()
        .filter_map(|r| {
            let c = r.ch1.as_ref().ok()?;
            Some(ObservedRequest {
                stamp: r.stamp,
                kind: c.kind,
                record_number: c.record_number,
                session_id: c.session_id.clone(),
            })
        })
        .collect()
}

/// Every rule judged on a scenario's whole charging once it is over: the
/// every-flow rules per stream, a Stop for every ended session, one Interim
/// per modification, what steps forbade, and what the profile pins. Pure:
/// run after the scenario, and again at the end of the run on whatever
/// arrived since.
pub fn judge_scenario(facts: &ScenarioFacts, all: &[ChargingRecord]) -> Vec<Violation> {
    let mut out = Vec::new();
    for stream in &facts.streams {
        let records = stream_records(all.to_vec(), stream);
        let observed = observed_of(&records);
        out.extend(offline_session_rules(&observed, &stream.subject()));
        let session: Vec<&ObservedRequest> = observed
            .iter()
            .filter(|r| r.kind != RecordType::Event)
            .collect();
        let started = session.iter().any(|r| r.kind == RecordType::Start);
        let lines = || {
            session
                .iter()
                .map(|r| r.line())
                .collect::<Vec<_>>()
                .join("\n")
        };
        if started
            && let Some(end) = facts.session_end
            && !session
                .iter()
                .any(|r| r.kind == RecordType::Stop && r.stamp > end)
        {
            out.push(Violation::new(
                &rules::STOP_ENDS_EVERY_SESSION,
                stream.subject(),
                "a StopRequest after the BYE that ended the session",
                format!("in arrival order:\n{}", lines()),
            ));
        }
        if started && !facts.group {
            let interims = session
                .iter()
                .filter(|r| r.kind == RecordType::Interim)
                .count();
            let (sent, completed) = facts.reinvites;
            let (ok, expected) = match facts.ordering {
                OrderingReading::Strict => (
                    interims == completed,
                    format!("{completed} InterimRequest(s): one per accepted re-INVITE"),
                ),
                OrderingReading::Lenient => (
                    (completed..=sent).contains(&interims),
                    format!(
                        "{completed} to {sent} InterimRequest(s): one per accepted re-INVITE, at most one per re-INVITE"
                    ),
                ),
            };
            if !ok {
                out.push(Violation::new(
                    &rules::INTERIM_PER_MODIFICATION,
                    stream.subject(),
                    expected,
                    format!("{interims} InterimRequest(s):\n{}", lines()),
                ));
            }
        }
    }
    let records = scenario_records(all.to_vec(), facts);
    for record in &records {
        if let Some(why) = &record.protocol_error {
            out.push(Violation::new(
                &rules::RF_APPLICATION_ID,
                record_line(record),
                "Rf (3) in the header and in Acct-Application-Id",
                why.clone(),
            ));
        }
    }
    for f in &facts.forbidden {
        let seen: Vec<String> = records
            .iter()
            .filter(|r| r.stamp > f.after && r.ch1.as_ref().is_ok_and(|c| c.kind == f.kind))
            .map(record_line)
            .collect();
        if !seen.is_empty() {
            out.push(Violation::new(
                f.rule,
                "this scenario's charging",
                format!("no {}", f.kind.ch1_name()),
                seen.join("\n"),
            ));
        }
    }
    if let Some(pinned) = &facts.pinned_service_context {
        for record in &records {
            let Ok(c) = &record.ch1 else { continue };
            if c.service_context_id.as_deref() != Some(pinned.as_str()) {
                out.push(Violation::new(
                    &rules::PINNED_SERVICE_CONTEXT,
                    record_line(record),
                    pinned.clone(),
                    c.service_context_id
                        .clone()
                        .unwrap_or_else(|| "(absent)".into()),
                ));
            }
        }
    }
    out
}

/// One line for a sequence: `StartRequest #0 Session-Id=…`.
pub fn record_line(record: &ChargingRecord) -> String {
    match &record.ch1 {
        Ok(c) => format!(
            "{} #{} Session-Id={}",
            c.kind.ch1_name(),
            c.record_number,
            c.session_id
        ),
        Err(e) => format!("unreadable ACR: {e}"),
    }
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
        offline_session_rules(v, "originating PF")
            .into_iter()
            .map(|v| v.rule.id)
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

    /// Each rule of a session, broken alone, is named alone.
    #[test]
    fn each_broken_rule_is_named() {
        use RecordType::{Interim, Start, Stop};
        type Session = &'static [(RecordType, u32, &'static str)];
        let cases: [(Session, &str); 8] = [
            (&[(Start, 0, "s"), (Start, 1, "s")], "off.session.one-start"),
            (&[(Start, 0, "s"), (Interim, 1, "s"), (Interim, 2, "s")], ""),
            (
                &[(Interim, 0, "s"), (Start, 1, "s")],
                "off.session.start-first",
            ),
            (
                &[(Start, 0, "s"), (Stop, 1, "s"), (Interim, 2, "s")],
                "off.session.stop-last",
            ),
            (
                &[(Start, 0, "s"), (Stop, 1, "s"), (Stop, 2, "s")],
                "off.session.one-stop",
            ),
            (
                &[(Start, 1, "s"), (Stop, 2, "s")],
                "off.session.number-from-0",
            ),
            (
                &[(Start, 0, "s"), (Stop, 2, "s")],
                "off.session.number-rises-by-1",
            ),
            (
                &[(Start, 0, "s"), (Stop, 1, "t")],
                "off.session.one-session-id",
            ),
        ];
        for (session, rule) in cases {
            let v: Vec<ObservedRequest> = session.iter().map(|&(k, n, s)| req(k, n, s)).collect();
            let want: Vec<&str> = if rule.is_empty() { vec![] } else { vec![rule] };
            assert_eq!(rules(&v), want, "{session:?}");
        }
        let none_at_all = [req(Start, 0, "s")];
        assert!(rules(&none_at_all).is_empty());
    }

    #[test]
    fn event_requests_stand_alone() {
        let v = [req(RecordType::Event, 0, "e")];
        assert!(rules(&v).is_empty());
    }

    #[test]
    fn diff_keeps_the_longest_common_run_in_order() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The common run is A C E; B is only expected, D and F only observed.
        let d = sequence_diff(&s(&["A", "B", "C", "E"]), &s(&["A", "C", "D", "E", "F"]));
        pretty_assertions::assert_eq!(d, "  A\n- B\n  C\n+ D\n  E\n+ F");
        // Nothing in common: every line on its side.
        let d = sequence_diff(&s(&["A", "B"]), &s(&["C"]));
        pretty_assertions::assert_eq!(d, "+ C\n- A\n- B");
        assert_eq!(sequence_diff(&s(&["A"]), &s(&["A"])), "  A");
        // Where the table, not the next line, decides what to drop first
        // (cases found by cargo mutants against the table's arithmetic).
        for (expected, observed, diff) in [
            (&["A", "B"][..], &["B"][..], "- A\n  B"),
            (&["A", "B"], &["B", "B"], "+ B\n- A\n  B"),
            (&["A", "B"], &["B", "C", "A"], "+ B\n+ C\n  A\n- B"),
            (&["A", "B", "A"], &["B", "A"], "- A\n  B\n  A"),
        ] {
            pretty_assertions::assert_eq!(sequence_diff(&s(expected), &s(observed)), diff);
        }
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

    /// The judge on whole scenarios: records as the Enabler keeps them.
    mod judge {
        use super::*;
        use crate::charging::ch1::Ch1Request;
        use crate::charging::enabler::AnswerOutcome;

        const ALICE: &str = "alice.1x";
        const BOB: &str = "bob.1x";

        fn record(kind: RecordType, n: u32, sid: &str, user: Option<&str>) -> ChargingRecord {
            let mut req = Ch1Request::new(kind, sid, n).role(ChargedRole::OriginatingPf);
            req.served_user = user.map(|u| format!("sip:{u}@test.invalid"));
            req.service_context_id = Some("32260@3gpp.org".into());
            let (_, local) = crate::charging::rf::sample_acr_start();
            ChargingRecord {
                stamp: stamp(),
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                message: req.to_acr(&local, "cdf.test.invalid"),
                ch1: Ok(req),
                warnings: Vec::new(),
                answer: AnswerOutcome::Withheld,
                retransmissions: 0,
                protocol_error: None,
            }
        }

        fn facts() -> ScenarioFacts {
            ScenarioFacts {
                streams: vec![Stream {
                    function: ChargedFunction::OriginatingPf,
                    role_name: "alice".into(),
                    served: ALICE.into(),
                }],
                user_names: vec![ALICE.into(), BOB.into()],
                session_end: None,
                reinvites: (0, 0),
                group: false,
                forbidden: Vec::new(),
                ordering: OrderingReading::Strict,
                pinned_service_context: None,
            }
        }

        fn ids(v: Vec<Violation>) -> Vec<&'static str> {
            v.into_iter().map(|v| v.rule.id).collect()
        }

        #[test]
        fn an_ended_session_owes_a_stop_after_its_bye() {
            use RecordType::{Start, Stop};
            let start = record(Start, 0, "s", Some(ALICE));
            let early_stop = record(Stop, 1, "s", Some(ALICE));
            let bye = stamp();
            let late_stop = record(Stop, 1, "s", None);
            let mut f = facts();
            // Not ended: nothing owed.
            assert!(ids(judge_scenario(&f, std::slice::from_ref(&start))).is_empty());
            f.session_end = Some(bye);
            assert_eq!(
                ids(judge_scenario(&f, std::slice::from_ref(&start))),
                ["off.stop.every-ended-session"]
            );
            // A Stop before the BYE is not the one owed.
            assert_eq!(
                ids(judge_scenario(&f, &[start.clone(), early_stop])),
                ["off.stop.every-ended-session"]
            );
            // A Stop after it, naming only the Session-Id the Start opened, is.
            assert!(ids(judge_scenario(&f, &[start, late_stop])).is_empty());
            // A function that never started owes nothing.
            assert!(ids(judge_scenario(&f, &[])).is_empty());
        }

        #[test]
        fn one_interim_per_accepted_reinvite_by_the_reading() {
            use RecordType::{Interim, Start};
            let session = [
                record(Start, 0, "s", Some(ALICE)),
                record(Interim, 1, "s", Some(ALICE)),
            ];
            let mut f = facts();
            f.reinvites = (1, 1);
            assert!(ids(judge_scenario(&f, &session)).is_empty());
            // A rejected re-INVITE: none under the figure ...
            f.reinvites = (1, 0);
            assert_eq!(
                ids(judge_scenario(&f, &session)),
                ["off.interim.one-per-modification"]
            );
            // ... at most one under the text.
            f.ordering = OrderingReading::Lenient;
            assert!(ids(judge_scenario(&f, &session)).is_empty());
            f.reinvites = (0, 0);
            assert_eq!(
                ids(judge_scenario(&f, &session)),
                ["off.interim.one-per-modification"]
            );
            // Accepted but not charged.
            f.ordering = OrderingReading::Strict;
            f.reinvites = (2, 2);
            assert_eq!(
                ids(judge_scenario(&f, &session)),
                ["off.interim.one-per-modification"]
            );
        }

        #[test]
        fn what_a_step_forbade_is_judged_however_late() {
            let mut f = facts();
            let before = record(RecordType::Start, 0, "s", Some(ALICE));
            f.forbidden.push(Forbidden {
                kind: RecordType::Start,
                after: stamp(),
                rule: &rules::NO_START_ON_FAILURE,
            });
            assert!(ids(judge_scenario(&f, std::slice::from_ref(&before))).is_empty());
            // The request a step had accounted for (its stamp is the mark) is
            // not after the mark.
            let mut g = facts();
            g.forbidden.push(Forbidden {
                kind: RecordType::Start,
                after: before.stamp,
                rule: &rules::NO_START_ON_FAILURE,
            });
            assert!(ids(judge_scenario(&g, std::slice::from_ref(&before))).is_empty());
            // Another kind, or another scenario's user, is not forbidden here.
            let interim = record(RecordType::Interim, 0, "t", Some(BOB));
            let stranger = record(RecordType::Start, 0, "u", Some("carol.9x"));
            assert!(ids(judge_scenario(&f, &[interim, stranger])).is_empty());
            let late = record(RecordType::Start, 0, "v", Some(BOB));
            assert_eq!(
                ids(judge_scenario(&f, &[late])),
                ["off.start.none-on-failure"]
            );
        }

        #[test]
        fn the_pinned_context_and_the_application_id_are_judged() {
            let mut f = facts();
            let ok = record(RecordType::Event, 0, "e", Some(BOB));
            f.pinned_service_context = Some("32260@3gpp.org".into());
            assert!(ids(judge_scenario(&f, std::slice::from_ref(&ok))).is_empty());
            f.pinned_service_context = Some("cpm@oma.test".into());
            assert_eq!(
                ids(judge_scenario(&f, std::slice::from_ref(&ok))),
                ["profile.service-context-id"]
            );
            f.pinned_service_context = None;
            let mut wrong = ok;
            wrong.protocol_error = Some("Acct-Application-Id is 4".into());
            assert_eq!(ids(judge_scenario(&f, &[wrong])), ["dia.rf.application-id"]);
        }

        #[test]
        fn a_stream_takes_its_users_records_and_their_sessions_only() {
            let s = Stream {
                function: ChargedFunction::OriginatingPf,
                role_name: "alice".into(),
                served: ALICE.into(),
            };
            let mine = record(RecordType::Start, 0, "s", Some(ALICE));
            let continued = record(RecordType::Stop, 1, "s", None);
            let bobs = record(RecordType::Start, 0, "b", Some(BOB));
            let mut terminating = record(RecordType::Start, 0, "t", Some(ALICE));
            if let Ok(c) = terminating.ch1.as_mut() {
                c.role = Some(ChargedRole::TerminatingPf);
            }
            let all = vec![mine, bobs, terminating, continued];
            let got: Vec<String> = stream_records(all, &s).iter().map(record_line).collect();
            assert_eq!(
                got,
                [
                    "StartRequest #0 Session-Id=s",
                    "StopRequest #1 Session-Id=s"
                ]
            );
        }
    }
}
