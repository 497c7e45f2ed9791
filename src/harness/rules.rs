//! The rules catalogue: every rule a step or an every-flow check can fail,
//! once, with a stable id, its clause and its text.
//!
//! Steps and checks cite these entries; they never restate a rule. A failure
//! carries its entry, so the summary, the tests and the reports name the rule
//! that was broken by id (`tests/deviations.rs` asserts ids, not only that
//! something failed). Ids are stable: a report or a baseline may keep them.
//! Text is `spec/flows.md`'s, shortened; `[derived]` marks rules taken from
//! IMS practice where the change requests are silent.

use std::fmt;

/// One rule of the catalogue.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Stable id, e.g. `off.start.after-answer`.
    pub id: &'static str,
    /// The clause of the CPM Charging TS (or `RFC 6733`, `profile`, `harness`).
    pub clause: &'static str,
    /// What must hold.
    pub text: &'static str,
    /// Whose fault a broken rule is: a rule of the harness itself makes the
    /// verdict *error*, never *fail*.
    pub owner: Owner,
}

/// Who a rule binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The SUT: a broken rule is a failure.
    Sut,
    /// The harness: a broken rule means no verdict on the SUT holds.
    Harness,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.id, self.clause, self.text)
    }
}

const fn sut(id: &'static str, clause: &'static str, text: &'static str) -> Rule {
    Rule {
        id,
        clause,
        text,
        owner: Owner::Sut,
    }
}

// 6.2.3.1: 1-1 session initiation [derived].
pub const START_ON_ANSWER: Rule = sut(
    "off.start.on-answer",
    "6.2.3.1",
    "each charged function sends a CH-1 StartRequest once the recipient's 200 OK establishes the session [derived]",
);
pub const START_AFTER_ANSWER: Rule = sut(
    "off.start.after-answer",
    "6.2.3.1",
    "the StartRequest comes only after the recipient's 200 OK to the INVITE [derived]",
);
pub const NO_START_ON_FAILURE: Rule = sut(
    "off.start.none-on-failure",
    "6.2.3.1",
    "a failed INVITE (rejected or cancelled) starts no charging, however late [derived]",
);
pub const EVENT_ON_FAILURE_AS_PROFILED: Rule = sut(
    "off.event.failed-invite",
    "6.2.3.1",
    "an EventRequest records a failed INVITE exactly when the SUT profile says so (charging.offline.failed_invite_event) [derived]",
);

// 6.2.3.4: session modification.
pub const INTERIM_ON_MODIFICATION: Rule = sut(
    "off.interim.on-modification",
    "6.2.3.4",
    "a completed re-INVITE makes each charged function send a CH-1 InterimRequest",
);
pub const INTERIM_AFTER_ANSWER: Rule = sut(
    "off.interim.after-answer",
    "6.2.3.4 (strict)",
    "the InterimRequest comes only after the recipients' 200 OK to the re-INVITE (the figure)",
);
pub const INTERIM_AFTER_REINVITE: Rule = sut(
    "off.interim.after-reinvite",
    "6.2.3.4 (lenient)",
    "the InterimRequest comes after the re-INVITE arrived (the text)",
);
pub const INTERIM_PER_MODIFICATION: Rule = sut(
    "off.interim.one-per-modification",
    "6.2.3.4",
    "exactly one InterimRequest per charged function per completed modification; none for a rejected re-INVITE (strict) or at most one per re-INVITE (lenient)",
);

// 6.2.3.7: termination.
pub const STOP_ON_CLIENT_BYE: Rule = sut(
    "off.stop.on-client-bye",
    "6.2.3.7",
    "a client's BYE (session leaving request) makes each charged function send a CH-1 StopRequest",
);
pub const STOP_AFTER_BYE: Rule = sut(
    "off.stop.after-bye",
    "6.2.3.7",
    "the StopRequest comes after the client's BYE",
);
pub const STOP_ON_SERVER_BYE: Rule = sut(
    "off.stop.on-server-bye",
    "6.2.3.7",
    "a session the server ends (session removal request) is stopped with a CH-1 StopRequest for each charged function",
);
pub const STOP_AFTER_CLIENT_OK: Rule = sut(
    "off.stop.after-client-ok",
    "6.2.3.7",
    "on server termination, each function's StopRequest comes only after its own client's 200 OK to the server's BYE",
);
pub const STOP_ENDS_EVERY_SESSION: Rule = sut(
    "off.stop.every-ended-session",
    "6.2.3.7",
    "every session that was established and then ended by a BYE (the scenario's or the harness's teardown) shows its StopRequest after that BYE",
);

// Every offline flow (spec/flows.md, "Rules that hold for every flow").
pub const ONE_START: Rule = sut(
    "off.session.one-start",
    "every flow",
    "exactly one StartRequest per charging session",
);
pub const START_FIRST: Rule = sut(
    "off.session.start-first",
    "every flow",
    "no InterimRequest or StopRequest before the StartRequest",
);
pub const AT_MOST_ONE_STOP: Rule = sut(
    "off.session.one-stop",
    "every flow",
    "at most one StopRequest per charging session",
);
pub const STOP_LAST: Rule = sut(
    "off.session.stop-last",
    "every flow",
    "the StopRequest is last: no request of the session after it",
);
pub const NUMBER_STARTS_AT_ZERO: Rule = sut(
    "off.session.number-from-0",
    "every flow",
    "Accounting-Record-Number is 0 on the StartRequest",
);
pub const NUMBER_RISES_BY_ONE: Rule = sut(
    "off.session.number-rises-by-1",
    "every flow",
    "Accounting-Record-Number rises by one on every later request of the session",
);
pub const ONE_SESSION_ID: Rule = sut(
    "off.session.one-session-id",
    "every flow",
    "one Session-Id from StartRequest to StopRequest",
);

// 6.2.3.2, 6.2.3.3: group sessions, charged by the Controlling Function.
pub const GROUP_START_ON_ORIGINATOR_LEG: Rule = sut(
    "off.group.start-on-originator-leg",
    "6.2.3.2",
    "the Controlling Function sends a CH-1 StartRequest once the originator's leg of the group session is established [derived]",
);
pub const GROUP_PARTICIPANT_COUNT: Rule = sut(
    "off.group.participant-count",
    "6.2.3.3",
    "Number-Of-Participants is the invited parties in the StartRequest, and the parties attached after the change in every later request",
);
pub const GROUP_INTERIM_ON_CHANGE: Rule = sut(
    "off.group.interim-on-change",
    "6.2.3.3",
    "a CH-1 InterimRequest on every join or departure: a client's 200 OK to the SUT's INVITE or BYE, a participant's BYE, an answered dial-in",
);
pub const GROUP_INTERIM_AFTER_EVENT: Rule = sut(
    "off.group.interim-after-event",
    "6.2.3.3",
    "the InterimRequest follows the SIP event that completes the join or departure, never precedes it",
);
pub const GROUP_NO_INTERIM_ON_FAILED_JOIN: Rule = sut(
    "off.group.no-interim-on-failed-join",
    "6.2.3.3",
    "a join that fails (the invitee rejects the SUT's INVITE) changes no count and gives no InterimRequest",
);
pub const GROUP_STOP_AT_END: Rule = sut(
    "off.group.stop-at-end",
    "6.2.3.7",
    "the Controlling Function's StopRequest comes when the group session ends (its last participant gone, or ended by the chair or the operator), never while participants remain",
);

// 6.3.3: online charging (CH-2, Diameter Ro).
pub const ON_INITIAL_ON_INVITE: Rule = sut(
    "on.initial.on-invite",
    "6.3.3.1",
    "each online function sends a CH-2 InitialRequest on the originator's INVITE [derived]",
);
pub const ON_FORWARD_AFTER_INITIAL: Rule = sut(
    "on.initial.forward-after-answer",
    "6.3.3.1",
    "the INVITE is forwarded to the recipient only after a successful CH-2 Response to every InitialRequest [derived]",
);
pub const ON_REFUSAL_REJECTS_INVITE: Rule = sut(
    "on.initial.refusal-rejects-invite",
    "6.3.3.1",
    "a refused InitialRequest makes the SUT reject the INVITE and forward nothing [derived]",
);
pub const ON_UPDATE_ON_MODIFICATION: Rule = sut(
    "on.update.on-modification",
    "6.3.3.4",
    "a client's re-INVITE is charged with a CH-2 UpdateRequest from each online function",
);
pub const ON_FORWARD_AFTER_UPDATE: Rule = sut(
    "on.update.forward-after-answer",
    "6.3.3.4",
    "the UpdateRequest and its Response come before the SUT forwards the re-INVITE",
);
pub const ON_TERMINATION_ON_CLIENT_BYE: Rule = sut(
    "on.termination.on-client-bye",
    "6.3.3.7",
    "a client's BYE is charged with a CH-2 TerminationRequest, after the BYE",
);
pub const ON_TERMINATION_ON_SERVER_BYE: Rule = sut(
    "on.termination.on-server-bye",
    "6.3.3.7",
    "the SUT sending its BYE triggers the CH-2 TerminationRequest: it comes without waiting for the client's 200 OK",
);
pub const ON_FINAL_UNITS_END_SESSION: Rule = sut(
    "on.final-units.end-session",
    "6.3.3",
    "a final-unit indication with TERMINATE ends the session once the granted units are used: a BYE to every leg and a TerminationRequest",
);
pub const ON_USED_UNITS_AS_USED: Rule = sut(
    "on.termination.used-units-as-used",
    "6.3.3.7",
    "the units reported used are the units used: over a CH-2 session, no more CC-Time than the session lasted (to the second)",
);
pub const ON_REAUTHORISE_WHEN_SPENT: Rule = sut(
    "on.credit.reauthorise-when-spent",
    "6.3.3 (RFC 4006)",
    "granted units without a final-unit indication, once spent, are re-authorised with an UpdateRequest (Reporting-Reason QUOTA_EXHAUSTED)",
);
pub const ON_REAUTHORISE_WHEN_INVALID: Rule = sut(
    "on.credit.reauthorise-when-invalid",
    "6.3.3 (RFC 4006)",
    "when a grant's Validity-Time runs out, the SUT asks again with an UpdateRequest (Reporting-Reason VALIDITY_TIME)",
);
pub const ON_ONE_INITIAL: Rule = sut(
    "online.one-initial",
    "every flow",
    "exactly one InitialRequest per CH-2 session",
);
pub const ON_AT_MOST_ONE_TERMINATION: Rule = sut(
    "online.at-most-one-termination",
    "every flow",
    "at most one TerminationRequest per CH-2 session",
);
pub const ON_REQUEST_NUMBERS: Rule = sut(
    "online.request-numbers",
    "every flow",
    "CC-Request-Number starts at 0 and rises by one",
);
pub const ON_ONE_SESSION_ID: Rule = sut(
    "online.one-session-id",
    "every flow",
    "one Session-Id from InitialRequest to TerminationRequest",
);
pub const ON_UNITS_REQUESTED: Rule = sut(
    "online.units-requested",
    "every flow",
    "InitialRequest and UpdateRequest ask for units",
);
pub const ON_USED_UNITS_REPORTED: Rule = sut(
    "online.used-units-reported",
    "every flow",
    "UpdateRequest and TerminationRequest report used units",
);
pub const ON_NOTHING_AFTER_TERMINATION: Rule = sut(
    "online.nothing-after-termination",
    "every flow",
    "no request after the TerminationRequest",
);
pub const ON_REFUSED_INITIAL_ENDS_SESSION: Rule = sut(
    "online.refused-initial-ends-session",
    "every flow",
    "a refused InitialRequest ends the CH-2 session: no request follows it, no TerminationRequest either",
);
pub const ON_NO_USAGE_UNDER_REFUSED_SERVICE: Rule = sut(
    "online.no-usage-under-refused-service",
    "every flow",
    "no units reported used for a service the OCS refused at MSCC level",
);
pub const ON_SERVICE_INFORMATION: Rule = sut(
    "online.service-information",
    "every flow",
    "every CH-2 request carries Service-Information",
);

// 6.3.3.2 and 6.3.3.3: the Controlling Function online.
pub const ON_GROUP_INVITE_AFTER_ANSWER: Rule = sut(
    "on.group.invite-after-answer",
    "6.3.3.2",
    "the Controlling Function's invitations go out only after a successful CH-2 Response to its InitialRequest [derived]",
);
pub const ON_GROUP_REFUSAL_INVITES_NOBODY: Rule = sut(
    "on.group.refusal-invites-nobody",
    "6.3.3.2",
    "a refused InitialRequest of the Controlling Function rejects the chair's INVITE and invites nobody [derived]",
);
pub const ON_GROUP_UPDATE_ON_CHANGE_WHEN_ARMED: Rule = sut(
    "on.group.update-on-change-when-armed",
    "6.3.3.3",
    "with CHANGE_IN_PARTICIPANTS_NMB (50) armed, every join and departure is charged with a CH-2 UpdateRequest naming the Trigger-Type and carrying the new count",
);
pub const ON_GROUP_UPDATE_ONLY_AT_THRESHOLD: Rule = sut(
    "on.group.update-only-at-threshold",
    "6.3.3.3",
    "with CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51) armed, an UpdateRequest (naming the Trigger-Type, with the new count) only when the count meets or crosses the operator's threshold",
);
pub const ON_GROUP_NO_UPDATE_UNARMED: Rule = sut(
    "on.group.no-update-unarmed",
    "6.3.3.3",
    "with no Charging Trigger Condition armed, joins and departures are not charged with a CH-2 UpdateRequest",
);

// The wire (RFC 6733, spec/binding.md).
pub const RF_APPLICATION_ID: Rule = sut(
    "dia.rf.application-id",
    "RFC 6733",
    "an ACR names the Rf application (3) in its header and in Acct-Application-Id (or Vendor-Specific-Application-Id)",
);

// What the SUT profile pins.
pub const PINNED_SERVICE_CONTEXT: Rule = sut(
    "profile.service-context-id",
    "profile",
    "every request carries the Service-Context-Id the SUT profile pins (charging.offline.service_context_id)",
);

// The harness's own part.
pub const EVERY_REQUEST_ANSWERED: Rule = Rule {
    id: "harness.every-request-answered",
    clause: "harness",
    text: "the Charging Enabler answers every request (no step withholds an answer)",
    owner: Owner::Harness,
};

/// Every rule, for listings and for the test that proves each one both ways.
pub const ALL: &[&Rule] = &[
    &START_ON_ANSWER,
    &START_AFTER_ANSWER,
    &NO_START_ON_FAILURE,
    &EVENT_ON_FAILURE_AS_PROFILED,
    &INTERIM_ON_MODIFICATION,
    &INTERIM_AFTER_ANSWER,
    &INTERIM_AFTER_REINVITE,
    &INTERIM_PER_MODIFICATION,
    &STOP_ON_CLIENT_BYE,
    &STOP_AFTER_BYE,
    &STOP_ON_SERVER_BYE,
    &STOP_AFTER_CLIENT_OK,
    &STOP_ENDS_EVERY_SESSION,
    &ONE_START,
    &START_FIRST,
    &AT_MOST_ONE_STOP,
    &STOP_LAST,
    &NUMBER_STARTS_AT_ZERO,
    &NUMBER_RISES_BY_ONE,
    &ONE_SESSION_ID,
    &GROUP_START_ON_ORIGINATOR_LEG,
    &GROUP_PARTICIPANT_COUNT,
    &GROUP_INTERIM_ON_CHANGE,
    &GROUP_INTERIM_AFTER_EVENT,
    &GROUP_NO_INTERIM_ON_FAILED_JOIN,
    &GROUP_STOP_AT_END,
    &ON_INITIAL_ON_INVITE,
    &ON_FORWARD_AFTER_INITIAL,
    &ON_REFUSAL_REJECTS_INVITE,
    &ON_UPDATE_ON_MODIFICATION,
    &ON_FORWARD_AFTER_UPDATE,
    &ON_TERMINATION_ON_CLIENT_BYE,
    &ON_TERMINATION_ON_SERVER_BYE,
    &ON_FINAL_UNITS_END_SESSION,
    &ON_USED_UNITS_AS_USED,
    &ON_REAUTHORISE_WHEN_SPENT,
    &ON_REAUTHORISE_WHEN_INVALID,
    &ON_ONE_INITIAL,
    &ON_AT_MOST_ONE_TERMINATION,
    &ON_REQUEST_NUMBERS,
    &ON_ONE_SESSION_ID,
    &ON_UNITS_REQUESTED,
    &ON_USED_UNITS_REPORTED,
    &ON_NOTHING_AFTER_TERMINATION,
    &ON_REFUSED_INITIAL_ENDS_SESSION,
    &ON_NO_USAGE_UNDER_REFUSED_SERVICE,
    &ON_SERVICE_INFORMATION,
    &ON_GROUP_INVITE_AFTER_ANSWER,
    &ON_GROUP_REFUSAL_INVITES_NOBODY,
    &ON_GROUP_UPDATE_ON_CHANGE_WHEN_ARMED,
    &ON_GROUP_UPDATE_ONLY_AT_THRESHOLD,
    &ON_GROUP_NO_UPDATE_UNARMED,
    &RF_APPLICATION_ID,
    &PINNED_SERVICE_CONTEXT,
    &EVERY_REQUEST_ANSWERED,
];

/// The catalogue entry of an online every-flow rule.
pub fn online(rule: crate::charging::online_rules::OnlineRule) -> &'static Rule {
    use crate::charging::online_rules::OnlineRule as R;
    match rule {
        R::ExactlyOneInitial => &ON_ONE_INITIAL,
        R::AtMostOneTermination => &ON_AT_MOST_ONE_TERMINATION,
        R::RequestNumbers => &ON_REQUEST_NUMBERS,
        R::OneSessionId => &ON_ONE_SESSION_ID,
        R::UnitsRequested => &ON_UNITS_REQUESTED,
        R::UsedUnitsReported => &ON_USED_UNITS_REPORTED,
        R::NothingAfterTermination => &ON_NOTHING_AFTER_TERMINATION,
        R::RefusedInitialEndsSession => &ON_REFUSED_INITIAL_ENDS_SESSION,
        R::NoUsageUnderRefusedService => &ON_NO_USAGE_UNDER_REFUSED_SERVICE,
        R::ServiceInformationPresent => &ON_SERVICE_INFORMATION,
    }
}

/// Looks a rule up by id.
pub fn by_id(id: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_found() {
        let mut seen = std::collections::HashSet::new();
        for r in ALL {
            assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
            assert_eq!(by_id(r.id), Some(*r));
            assert!(!r.text.is_empty() && !r.clause.is_empty());
        }
        assert_eq!(by_id("no.such.rule"), None);
    }

    #[test]
    fn every_online_rule_has_its_entry_under_its_own_key() {
        for r in crate::charging::online_rules::OnlineRule::ALL {
            assert_eq!(online(r).id, r.key());
        }
    }
}
