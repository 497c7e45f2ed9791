@clause-6.3.3 @online
Feature: 6.3.3 Credit control beyond the flows: spent and expired grants
  The flows of 6.3.3 reserve units with every Initial and Update; RFC 4006,
  which CH-2 runs on, says what a server does with a grant: when granted
  units without a final-unit indication are spent it asks for more
  (Reporting-Reason QUOTA_EXHAUSTED), when a grant's Validity-Time runs out
  it asks again (VALIDITY_TIME), and the session goes on.

  Background:
    Given CPM clients "alice" and "bob"

  @tp-ON-CC-01
  Scenario: Spent units are re-authorised with an UpdateRequest
    Given the OCS grants alice 1 second
    And alice has a 1-1 CPM session with bob
    Then a CH-2 UpdateRequest reporting QUOTA_EXHAUSTED arrives for every online function

  @tp-ON-CC-02
  Scenario: An expired Validity-Time is answered with an UpdateRequest
    Given the OCS grants alice 60 seconds valid for 1 second
    And alice has a 1-1 CPM session with bob
    Then a CH-2 UpdateRequest reporting VALIDITY_TIME arrives for every online function
