//! Named deviations of the reference server.
//!
//! Each breaks exactly one rule of `spec/flows.md`, so that the test suite can
//! prove it catches that rule being broken (`tests/deviations.rs`). They are
//! switched on by name in the server's config, never in code.

use serde::Deserialize;

/// One deliberate way of getting the charging wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deviation {
    /// StartRequest when the INVITE is forwarded, before the recipient's 200 OK.
    StartBeforeAnswer,
    /// StartRequest (and StopRequest) although the INVITE failed.
    StartOnFailedInvite,
    /// An EventRequest for a failed INVITE, which a profile with
    /// `failed_invite_event: false` says this SUT does not send.
    EventOnFailedInvite,
    /// A second StartRequest right after the first.
    DuplicateStart,
    /// No InterimRequest on a re-INVITE.
    NoInterimOnReinvite,
    /// InterimRequest on receipt of the re-INVITE, before the recipient's 200 OK.
    InterimBeforeReinviteAnswer,
    /// No StopRequest on the client's BYE.
    NoStopOnBye,
    /// StopRequest when the server sends its BYE, before the client's 200 OK.
    StopBeforeByeOk,
    /// On server termination, every function's StopRequest on the first
    /// client's 200 OK, before the other client has answered its BYE.
    StopAllOnFirstByeOk,
    /// Accounting-Record-Number rises by two instead of one.
    RecordNumberSkips,
    /// The StopRequest carries a new Session-Id.
    NewSessionIdOnStop,
    /// An InterimRequest after the StopRequest.
    InterimAfterStop,
    /// Accounting-Record-Number starts at 1 instead of 0.
    RecordNumberFromOne,
    /// A second StopRequest right after the first.
    DuplicateStop,
    /// A session that saw an InterimRequest is never stopped (shows only
    /// where the harness's teardown ends the session).
    NoStopAfterInterim,
    /// Two InterimRequests for one re-INVITE.
    InterimTwicePerReinvite,
    /// The StopRequest right after the StartRequest, long before any BYE.
    StopWithStart,
    /// ACRs name application 4 (Ro) in Acct-Application-Id instead of 3 (Rf).
    WrongApplicationId,
    /// An InterimRequest right after the StartRequest, before any re-INVITE.
    InterimWithStart,
    /// StartRequest on the recipient's 180 Ringing, before its 200 OK.
    StartOnRinging,
    /// InterimRequest although the recipient rejected the re-INVITE.
    InterimOnRejectedReinvite,
    /// A second StartRequest when the 200 OK to the INVITE is retransmitted
    /// (proxy: the recipient's retransmission passes through; B2BUA: the
    /// originator's ACK comes only after the server retransmitted its 200 OK).
    SecondStartOnRetransmittedOk,
    /// A StartRequest about a second after a failed INVITE, when a quick
    /// look finds nothing.
    LateStartAfterFailedInvite,
    /// No StartRequest when the recipient's 200 OK establishes the session.
    NoStartOnAnswer,
    /// No StopRequest when the server ends the session, whatever the
    /// clients answer to its BYE.
    NoStopOnServerBye,
    /// An InterimRequest just before the StartRequest.
    InterimBeforeStart,
    /// The Controlling Function's StartRequest counts only the originator, not the invited parties.
    GroupStartCountsOriginatorOnly,
    /// The Controlling Function charges a join when it sends the INVITE, before the participant's 200 OK (and not on it).
    InterimBeforeJoinAnswer,
    /// No InterimRequest when a participant dials in to the running session.
    NoInterimOnDialIn,
    /// Every InterimRequest of a group session carries the count before the change.
    StaleParticipantCount,
    /// No InterimRequest when a participant the server removed answers its BYE.
    NoInterimOnServerRemoval,
    /// The Controlling Function sends its StopRequest on the first departure, while participants remain.
    StopWhileParticipantsRemain,
    /// An InterimRequest when an invited participant rejects the INVITE.
    InterimOnFailedJoin,
    /// The Controlling Function starts charging only when the first invited
    /// participant joins, not when the originator's leg is established.
    GroupStartOnFirstJoin,
    /// The INVITE goes to the recipient with the InitialRequest, before its answer.
    ForwardInviteBeforeCreditAnswer,
    /// The INVITE is forwarded although the InitialRequest was refused.
    ForwardInviteAfterRefusal,
    /// A TerminationRequest follows a refused InitialRequest.
    TerminationAfterRefusedInitial,
    /// The re-INVITE is forwarded at once; the UpdateRequest follows the recipient's 200 OK.
    UpdateAfterForwardingReinvite,
    /// The TerminationRequest carries no Used-Service-Unit.
    NoUsedUnitsInTermination,
    /// Used units reported are the units asked for, not the session's elapsed time.
    UsedUnitsFromRequested,
    /// On server termination, each TerminationRequest only after its client's 200 OK to the BYE.
    TerminationAfterServerByeOk,
    /// When final units (Final-Unit-Action TERMINATE) run out, an UpdateRequest and the session goes on.
    SessionKeptAfterFinalUnits,
    /// CC-Request-Number rises by two instead of one.
    CreditRequestNumberSkips,
    /// The InitialRequest asks for no units (no Requested-Service-Unit).
    NoRequestedUnitsInInitial,
    /// A re-INVITE is charged with a second InitialRequest instead of an UpdateRequest.
    SecondInitialOnReinvite,
    /// No online charging at all: the INVITE is forwarded with no
    /// InitialRequest, and nothing is charged on CH-2.
    NoCreditControl,
    /// No TerminationRequest on a client's BYE.
    NoTerminationOnBye,
    /// The Controlling Function answers the chair and invites the members
    /// with its InitialRequest, before the CH-2 Response.
    InvitationsBeforeCreditAnswer,
    /// The Controlling Function invites the members although its
    /// InitialRequest was refused.
    GroupInvitationsAfterRefusal,
    /// No UpdateRequest on a join or a departure although the OCS armed
    /// CHANGE_IN_PARTICIPANTS_NMB (50).
    NoUpdateWhenParticipantsTriggerArmed,
    /// An UpdateRequest on every join and departure although the OCS armed
    /// no Charging Trigger Condition.
    UpdateOnJoinWhenNothingArmed,
    /// With only CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51) armed, an
    /// UpdateRequest on every change of the count, not only at the threshold.
    UpdateOnEveryJoinWhenOnlyThresholdArmed,
    /// Granted units run out (no final-unit indication) and the server asks
    /// for no more: the session goes on uncontrolled.
    NoUpdateOnExhaustedQuota,
    /// The grant's Validity-Time runs out and the server asks for no more.
    NoUpdateOnValidityTime,
}

impl Deviation {
    /// Every deviation, for listings and the deviation matrix.
    pub const ALL: [Deviation; 54] = [
        Self::StartBeforeAnswer,
        Self::StartOnFailedInvite,
        Self::EventOnFailedInvite,
        Self::DuplicateStart,
        Self::NoInterimOnReinvite,
        Self::InterimBeforeReinviteAnswer,
        Self::NoStopOnBye,
        Self::StopBeforeByeOk,
        Self::StopAllOnFirstByeOk,
        Self::RecordNumberSkips,
        Self::NewSessionIdOnStop,
        Self::InterimAfterStop,
        Self::RecordNumberFromOne,
        Self::DuplicateStop,
        Self::NoStopAfterInterim,
        Self::InterimTwicePerReinvite,
        Self::StopWithStart,
        Self::WrongApplicationId,
        Self::InterimWithStart,
        Self::StartOnRinging,
        Self::InterimOnRejectedReinvite,
        Self::SecondStartOnRetransmittedOk,
        Self::LateStartAfterFailedInvite,
        Self::NoStartOnAnswer,
        Self::NoStopOnServerBye,
        Self::InterimBeforeStart,
        Self::GroupStartCountsOriginatorOnly,
        Self::InterimBeforeJoinAnswer,
        Self::NoInterimOnDialIn,
        Self::StaleParticipantCount,
        Self::NoInterimOnServerRemoval,
        Self::StopWhileParticipantsRemain,
        Self::InterimOnFailedJoin,
        Self::GroupStartOnFirstJoin,
        Self::ForwardInviteBeforeCreditAnswer,
        Self::ForwardInviteAfterRefusal,
        Self::TerminationAfterRefusedInitial,
        Self::UpdateAfterForwardingReinvite,
        Self::NoUsedUnitsInTermination,
        Self::UsedUnitsFromRequested,
        Self::TerminationAfterServerByeOk,
        Self::SessionKeptAfterFinalUnits,
        Self::CreditRequestNumberSkips,
        Self::NoRequestedUnitsInInitial,
        Self::SecondInitialOnReinvite,
        Self::NoCreditControl,
        Self::NoTerminationOnBye,
        Self::InvitationsBeforeCreditAnswer,
        Self::GroupInvitationsAfterRefusal,
        Self::NoUpdateWhenParticipantsTriggerArmed,
        Self::UpdateOnJoinWhenNothingArmed,
        Self::UpdateOnEveryJoinWhenOnlyThresholdArmed,
        Self::NoUpdateOnExhaustedQuota,
        Self::NoUpdateOnValidityTime,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::StartBeforeAnswer => "start_before_answer",
            Self::StartOnFailedInvite => "start_on_failed_invite",
            Self::EventOnFailedInvite => "event_on_failed_invite",
            Self::DuplicateStart => "duplicate_start",
            Self::NoInterimOnReinvite => "no_interim_on_reinvite",
            Self::InterimBeforeReinviteAnswer => "interim_before_reinvite_answer",
            Self::NoStopOnBye => "no_stop_on_bye",
            Self::StopBeforeByeOk => "stop_before_bye_ok",
            Self::StopAllOnFirstByeOk => "stop_all_on_first_bye_ok",
            Self::RecordNumberSkips => "record_number_skips",
            Self::NewSessionIdOnStop => "new_session_id_on_stop",
            Self::InterimAfterStop => "interim_after_stop",
            Self::RecordNumberFromOne => "record_number_from_one",
            Self::DuplicateStop => "duplicate_stop",
            Self::NoStopAfterInterim => "no_stop_after_interim",
            Self::InterimTwicePerReinvite => "interim_twice_per_reinvite",
            Self::StopWithStart => "stop_with_start",
            Self::WrongApplicationId => "wrong_application_id",
            Self::InterimWithStart => "interim_with_start",
            Self::StartOnRinging => "start_on_ringing",
            Self::InterimOnRejectedReinvite => "interim_on_rejected_reinvite",
            Self::SecondStartOnRetransmittedOk => "second_start_on_retransmitted_ok",
            Self::LateStartAfterFailedInvite => "late_start_after_failed_invite",
            Self::NoStartOnAnswer => "no_start_on_answer",
            Self::NoStopOnServerBye => "no_stop_on_server_bye",
            Self::InterimBeforeStart => "interim_before_start",
            Self::GroupStartCountsOriginatorOnly => "group_start_counts_originator_only",
            Self::InterimBeforeJoinAnswer => "interim_before_join_answer",
            Self::NoInterimOnDialIn => "no_interim_on_dial_in",
            Self::StaleParticipantCount => "stale_participant_count",
            Self::NoInterimOnServerRemoval => "no_interim_on_server_removal",
            Self::StopWhileParticipantsRemain => "stop_while_participants_remain",
            Self::InterimOnFailedJoin => "interim_on_failed_join",
            Self::GroupStartOnFirstJoin => "group_start_on_first_join",
            Self::ForwardInviteBeforeCreditAnswer => "forward_invite_before_credit_answer",
            Self::ForwardInviteAfterRefusal => "forward_invite_after_refusal",
            Self::TerminationAfterRefusedInitial => "termination_after_refused_initial",
            Self::UpdateAfterForwardingReinvite => "update_after_forwarding_reinvite",
            Self::NoUsedUnitsInTermination => "no_used_units_in_termination",
            Self::UsedUnitsFromRequested => "used_units_from_requested",
            Self::TerminationAfterServerByeOk => "termination_after_server_bye_ok",
            Self::SessionKeptAfterFinalUnits => "session_kept_after_final_units",
            Self::CreditRequestNumberSkips => "credit_request_number_skips",
            Self::NoRequestedUnitsInInitial => "no_requested_units_in_initial",
            Self::SecondInitialOnReinvite => "second_initial_on_reinvite",
            Self::NoCreditControl => "no_credit_control",
            Self::NoTerminationOnBye => "no_termination_on_bye",
            Self::NoUpdateOnExhaustedQuota => "no_update_on_exhausted_quota",
            Self::NoUpdateOnValidityTime => "no_update_on_validity_time",
            Self::InvitationsBeforeCreditAnswer => "invitations_before_credit_answer",
            Self::GroupInvitationsAfterRefusal => "group_invitations_after_refusal",
            Self::NoUpdateWhenParticipantsTriggerArmed => {
                "no_update_when_participants_trigger_armed"
            }
            Self::UpdateOnJoinWhenNothingArmed => "update_on_join_when_nothing_armed",
            Self::UpdateOnEveryJoinWhenOnlyThresholdArmed => {
                "update_on_every_join_when_only_threshold_armed"
            }
        }
    }

    /// The rule it breaks, with its clause.
    pub fn breaks(self) -> &'static str {
        match self {
            Self::StartBeforeAnswer => "6.2.3.1: Start only after the recipient's 200 OK",
            Self::StartOnFailedInvite => "6.2.3.1: no Start if the INVITE fails",
            Self::EventOnFailedInvite => {
                "6.2.3.1: an EventRequest for a failed INVITE only where the profile expects one"
            }
            Self::DuplicateStart => "all flows: exactly one Start per charging session",
            Self::NoInterimOnReinvite => "6.2.3.4: a re-INVITE triggers an InterimRequest",
            Self::InterimBeforeReinviteAnswer => {
                "6.2.3.4 (strict): Interim after the recipients' 200 OK"
            }
            Self::NoStopOnBye => "6.2.3.7: the client's BYE triggers a StopRequest",
            Self::StopBeforeByeOk => "6.2.3.7: Stop only after the client's 200 OK to the BYE",
            Self::StopAllOnFirstByeOk => {
                "6.2.3.7: each function's Stop only after its own client's 200 OK"
            }
            Self::RecordNumberSkips => "all flows: record numbers start at 0 and rise by one",
            Self::NewSessionIdOnStop => "all flows: one Session-Id from Start to Stop",
            Self::InterimAfterStop => "all flows: Stop last, no Interim after Stop",
            Self::RecordNumberFromOne => "all flows: record numbers start at 0",
            Self::DuplicateStop => "all flows: at most one Stop per charging session",
            Self::NoStopAfterInterim => {
                "6.2.3.7: every ended session shows its Stop, the teardown's BYE included"
            }
            Self::InterimTwicePerReinvite => {
                "6.2.3.4: exactly one Interim per charged function per modification"
            }
            Self::StopWithStart => "6.2.3.7: the Stop comes after the client's BYE",
            Self::WrongApplicationId => "RFC 6733: an ACR names the Rf application (3)",
            Self::InterimWithStart => "6.2.3.4: the Interim follows the re-INVITE (either reading)",
            Self::StartOnRinging => {
                "6.2.3.1: Start only after the recipient's 200 OK, not on a provisional"
            }
            Self::InterimOnRejectedReinvite => {
                "6.2.3.4: only a re-INVITE the recipients accept (200 OK) is charged"
            }
            Self::SecondStartOnRetransmittedOk => {
                "all flows: exactly one Start per charging session, whatever SIP retransmits"
            }
            Self::LateStartAfterFailedInvite => {
                "6.2.3.1: no Start if the INVITE fails, not even later"
            }
            Self::NoStartOnAnswer => "6.2.3.1: the recipient's 200 OK starts charging",
            Self::NoStopOnServerBye => {
                "6.2.3.7: a session the server ends is stopped for each charged function"
            }
            Self::InterimBeforeStart => "all flows: no Interim or Stop before the Start",
            Self::GroupStartCountsOriginatorOnly => {
                "6.2.3.2: the Start counts the invited participants"
            }
            Self::InterimBeforeJoinAnswer => {
                "6.2.3.3: the Interim follows the 200 OK that completes the join"
            }
            Self::NoInterimOnDialIn => "6.2.3.3: an answered dial-in is charged with an Interim",
            Self::StaleParticipantCount => "6.2.3.3: the Interim carries the new participant count",
            Self::NoInterimOnServerRemoval => {
                "6.2.3.3: a removal by the server is charged once the BYE is answered"
            }
            Self::StopWhileParticipantsRemain => {
                "6.2.3.7: the group session's Stop comes only when it ends"
            }
            Self::InterimOnFailedJoin => "6.2.3.3: a failed join is not charged",
            Self::GroupStartOnFirstJoin => {
                "6.2.3.2: the Start comes once the originator's leg is established"
            }
            Self::ForwardInviteBeforeCreditAnswer => {
                "6.3.3.1: the INVITE is forwarded only after a successful CH-2 Response"
            }
            Self::ForwardInviteAfterRefusal => {
                "6.3.3.1: a refused InitialRequest makes the SUT reject the INVITE and forward nothing"
            }
            Self::TerminationAfterRefusedInitial => {
                "6.3.3.1: no TerminationRequest follows a failed InitialRequest"
            }
            Self::UpdateAfterForwardingReinvite => {
                "6.3.3.4 (strict): the Update and its Response come before the SUT forwards the re-INVITE"
            }
            Self::NoUsedUnitsInTermination => {
                "all online flows: Update and Termination report used units"
            }
            Self::UsedUnitsFromRequested => "6.3.3.7: the Termination debits the units used",
            Self::TerminationAfterServerByeOk => {
                "6.3.3.7 (server initiated): the Termination is triggered by sending the BYE, before the client's 200 OK"
            }
            Self::SessionKeptAfterFinalUnits => {
                "RFC 4006 final units: the session ends (BYE, Termination) when the final granted units run out"
            }
            Self::CreditRequestNumberSkips => {
                "all online flows: request numbers start at 0 and rise by one"
            }
            Self::NoRequestedUnitsInInitial => "all online flows: Initial and Update ask for units",
            Self::SecondInitialOnReinvite => {
                "all online flows: exactly one Initial per charging session"
            }
            Self::NoCreditControl => {
                "6.3.3.1: each online function sends an InitialRequest on the INVITE"
            }
            Self::NoTerminationOnBye => {
                "6.3.3.7: a client's BYE is charged with a TerminationRequest"
            }
            Self::NoUpdateOnExhaustedQuota => {
                "6.3.3 credit control: spent units are re-authorised with an UpdateRequest (QUOTA_EXHAUSTED)"
            }
            Self::NoUpdateOnValidityTime => {
                "6.3.3 credit control: an expired Validity-Time is answered with an UpdateRequest (VALIDITY_TIME)"
            }
            Self::InvitationsBeforeCreditAnswer => {
                "6.3.3.2: the invitations go out only after a successful CH-2 Response to the Controlling Function's InitialRequest"
            }
            Self::GroupInvitationsAfterRefusal => {
                "6.3.3.2: a refused InitialRequest rejects the chair's INVITE and invites nobody"
            }
            Self::NoUpdateWhenParticipantsTriggerArmed => {
                "6.3.3.3: with CHANGE_IN_PARTICIPANTS_NMB armed, an UpdateRequest on every change of the participant count"
            }
            Self::UpdateOnJoinWhenNothingArmed => {
                "6.3.3.3: with no Charging Trigger Condition armed, no UpdateRequest for joins and departures"
            }
            Self::UpdateOnEveryJoinWhenOnlyThresholdArmed => {
                "6.3.3.3: with CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB armed, an UpdateRequest only when the count meets (crosses) the threshold"
            }
        }
    }

    /// Looks a deviation up by its name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for d in Deviation::ALL {
            assert_eq!(Deviation::from_name(d.name()), Some(d));
            let parsed: Deviation = serde_yaml::from_str(d.name()).unwrap();
            assert_eq!(parsed, d);
        }
        assert_eq!(Deviation::from_name("nonsense"), None);
    }
}
