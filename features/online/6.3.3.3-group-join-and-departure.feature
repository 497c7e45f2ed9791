@clause-6.3.3.3 @online @group @needs-ad-hoc
Feature: 6.3.3.3 Online charging for joining and departure of a group session
  A CH-2 Response may arm Charging Trigger Conditions (Trigger, TS 32.299
  Trigger-Type). With CHANGE_IN_PARTICIPANTS_NMB (50) armed, the
  Controlling Function sends a CH-2 UpdateRequest (debiting the units used,
  reserving new ones, Reporting-Reason RATING_CONDITION_CHANGE, a Trigger
  naming 50) with the new participant count on every join and departure
  (the events (a)-(d) of 6.2.3.3). With
  CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB (51) armed, only when the count
  meets or crosses the operator's threshold (a SUT profile value,
  charging.online.participant_threshold; no AVP carries it). With neither
  armed, joins and departures send no UpdateRequest. The two trigger types
  are not combined.

  @tp-ON-GRP-JOIN-01 @needs-trigger-50
  Scenario: Participants-number trigger armed: an UpdateRequest on every join and departure
    Given CPM clients "alice", "carol" and "dave"
    And the OCS arms the participants-number trigger for alice's CH-2 session
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-2 InitialRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    Then a CH-2 UpdateRequest arrives from the Controlling Function with 2 participants
    When dave answers the group invitation with 200 OK
    Then a CH-2 UpdateRequest arrives from the Controlling Function with 3 participants
    When carol leaves the group session with BYE
    Then a CH-2 UpdateRequest arrives from the Controlling Function with 2 participants

  @tp-ON-GRP-JOIN-02 @needs-trigger-51 @needs-participant-threshold
  Scenario: Participants-threshold trigger armed: an UpdateRequest only when the count meets the threshold (3 in the reference profile)
    Given CPM clients "alice", "carol" and "dave"
    And the OCS arms the participants-threshold trigger for alice's CH-2 session
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-2 InitialRequest arrives from the Controlling Function with 3 participants
    # dave rings at once, so that the SUT's INVITE outlives the quiet wait below
    When dave answers the group invitation with 180 Ringing
    And carol answers the group invitation with 200 OK
    Then no CH-2 UpdateRequest arrives from the Controlling Function
    When dave answers the group invitation with 200 OK
    Then a CH-2 UpdateRequest arrives from the Controlling Function with 3 participants

  @tp-ON-GRP-JOIN-03
  Scenario: Nothing armed: joins and departures send no UpdateRequest
    Given CPM clients "alice", "carol" and "dave"
    And the OCS arms no trigger for alice's CH-2 session
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-2 InitialRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    And dave answers the group invitation with 200 OK
    Then no CH-2 UpdateRequest arrives from the Controlling Function
    When carol leaves the group session with BYE
    Then no CH-2 UpdateRequest arrives from the Controlling Function
