@clause-6.3.3.4 @online
Feature: 6.3.3.4 Online charging for session modification
  A client's re-INVITE is charged with a CH-2 UpdateRequest (debiting the
  units used, reserving new ones); the figure puts the Update and its
  Response before the SUT forwards the re-INVITE to the recipient, then the
  recipient's 200 OK.

  Background:
    Given CPM clients "alice" and "bob"
    And alice has a 1-1 CPM session with bob

  @tp-ON-MOD-01
  Scenario: A re-INVITE is charged with an UpdateRequest before it is forwarded
    Given the OCS holds back its answer to alice's CH-2 UpdateRequest
    When alice modifies the session with a re-INVITE
    And bob answers the re-INVITE with 200 OK
    Then a CH-2 UpdateRequest arrives for every online function
    And bob receives the re-INVITE only after the OCS answered alice's UpdateRequest
