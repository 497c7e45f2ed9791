@clause-6.3.3.2 @online @group @needs-ad-hoc
Feature: 6.3.3.2 Online charging for group session initiation [derived]
  The chair's INVITE to the group makes the Controlling Function send a
  CH-2 InitialRequest (reserving units) whose PoC-Information counts the
  invited parties, the chair included, and names the chair as the served
  user. The invitations go out only after a successful CH-2 Response; a
  refused InitialRequest makes the SUT reject the chair's INVITE and invite
  nobody, and no TerminationRequest follows it. The Response may arm a
  Charging Trigger Condition (6.3.3.3).

  @tp-ON-GRP-INIT-01
  Scenario: The Controlling Function's InitialRequest counts the invited parties and comes before the invitations
    Given CPM clients "alice", "carol" and "dave"
    And the OCS holds back its answer to alice's CH-2 InitialRequest
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-2 InitialRequest arrives from the Controlling Function with 3 participants
    And carol receives the group invitation only after the OCS answered alice's InitialRequest
    When carol answers the group invitation with 200 OK
    And dave answers the group invitation with 200 OK
    Then no CH-2 UpdateRequest arrives from the Controlling Function

  @tp-ON-GRP-INIT-02
  Scenario Outline: A refused InitialRequest (<code>) rejects the chair's INVITE and invites nobody
    Given CPM clients "alice", "carol" and "dave"
    And the OCS refuses alice's CH-2 InitialRequest with <code>
    When alice tries to start an ad-hoc group session with carol and dave
    Then a CH-2 InitialRequest arrives from the Controlling Function with 3 participants
    And alice's group INVITE is rejected and carol and dave receive no invitation
    And no CH-2 TerminationRequest arrives

    Examples:
      | code |
      | 4010 |
      | 4012 |
