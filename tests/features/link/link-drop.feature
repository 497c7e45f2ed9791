@clause-6.2.3.7 @offline
Feature: The SUT's Diameter link drops in the middle of a session
  Not a flow of the spec: proves that a link that drops and reopens during
  a scenario is reported on that scenario, and that a SUT that resends what
  the drop lost (T flag) is still judged on its charging.

  @tp-LINK-01
  Scenario: The link drops between Start and Stop
    Given CPM clients "alice" and "bob"
    And alice has a 1-1 CPM session with bob
    When the Charging Enabler drops the SUT's Diameter link
    And alice ends the session with BYE
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after alice's BYE
