@clause-6.2.3.7 @offline @group @needs-ad-hoc
Feature: 6.2.3.7 Offline charging for group session termination
  A group session ends when its last participant leaves, or when the server
  ends it (the operator, or the chair); the Controlling Function then sends
  its CH-1 StopRequest, and never while participants remain. On server
  termination the Stop follows the participants' 200 OK to the SUT's BYE.

  @tp-OFF-GRP-TERM-01
  Scenario: The last participant leaving ends the group session's charging
    Given CPM clients "alice" and "carol"
    When alice starts an ad-hoc group session with carol
    Then a CH-1 StartRequest arrives from the Controlling Function with 2 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When carol leaves the group session with BYE
    Then a CH-1 InterimRequest arrives from the Controlling Function with 1 participant
    When alice leaves the group session with BYE
    Then a CH-1 StopRequest arrives from the Controlling Function with 0 participants
    And that StopRequest arrives after alice's BYE

  @tp-OFF-GRP-TERM-02 @needs-operator-terminate
  Scenario: The operator ends the group session: the Stop follows every 200 OK to the SUT's BYE
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When dave answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    When the operator ends the session
    Then no CH-1 request arrives while they hold back their answers
    When every participant answers the SUT's BYE with 200 OK
    Then a CH-1 StopRequest arrives for every charged function
