@clause-6.3.3.7 @online
Feature: 6.3.3.7 Online charging for CPM session termination
  A client's BYE is charged with a CH-2 TerminationRequest debiting the used
  units; the SUT's 200 OK to the BYE may come at any time after it. When the
  SUT ends the session, sending its BYE triggers the TerminationRequest: it
  may come before the client's 200 OK (unlike offline). A final-unit
  indication with TERMINATE makes the SUT end the session itself once the
  granted units are used.

  Background:
    Given CPM clients "alice" and "bob"

  @tp-ON-TERM-01
  Scenario: The client's BYE is charged with a TerminationRequest
    Given alice has a 1-1 CPM session with bob
    When alice ends the session with BYE
    Then a CH-2 TerminationRequest arrives for every online function
    And every TerminationRequest arrives after alice's BYE

  @tp-ON-TERM-02 @needs-operator-terminate
  Scenario: The SUT's own BYE triggers the TerminationRequest, without waiting for the client's answer
    Given alice has a 1-1 CPM session with bob
    When the operator ends the session
    And alice and bob hold back their answers to the SUT's BYE
    Then a CH-2 TerminationRequest arrives for every online function while they hold back their answers

  @tp-ON-TERM-03
  Scenario: Final units with TERMINATE: the SUT ends the session when they are used
    Given the OCS grants alice 1 second with final units TERMINATE
    And alice has a 1-1 CPM session with bob
    When the SUT ends the session once the granted units are used
    Then a CH-2 TerminationRequest arrives for every online function
