@clause-6.2.3.4 @offline
Feature: 6.2.3.4 Offline charging for session modification
  The CPM Server forwards a client's re-INVITE to the recipients, receives
  their 200 OK, and its Charging Enabler User sends a CH-1 InterimRequest.
  The figure puts the Interim after the recipients' 200 OK (the `strict`
  reading); the text only says that receiving the re-INVITE triggers it
  (the `lenient` reading). The SUT profile chooses; the report says which.
  A re-INVITE the recipient rejects (488 Not Acceptable Here) modifies
  nothing: in the strict reading no Interim follows it. The lenient reading
  lets a SUT charge on receipt, before it can know the answer, so that
  scenario checks the strict reading only.

  Background:
    Given CPM clients "alice" and "bob"
    And alice has a 1-1 CPM session with bob

  @tp-OFF-MOD-01
  Scenario: A re-INVITE from the originator is charged with an InterimRequest
    When alice modifies the session with a re-INVITE
    And bob answers the re-INVITE with 200 OK
    Then a CH-1 InterimRequest arrives for every charged function
    And every InterimRequest follows alice's re-INVITE as the ordering reading requires

  @tp-OFF-MOD-02
  Scenario: A re-INVITE from the recipient is charged with an InterimRequest
    When bob modifies the session with a re-INVITE
    And alice answers the re-INVITE with 200 OK
    Then a CH-1 InterimRequest arrives for every charged function
    And every InterimRequest follows bob's re-INVITE as the ordering reading requires

  @tp-OFF-MOD-03 @ordering-strict
  Scenario: The Interim waits for the recipient's 200 OK to the re-INVITE
    When alice modifies the session with a re-INVITE
    And bob holds back his answer to the re-INVITE
    Then no CH-1 request arrives while bob holds back his answer
    When bob answers the re-INVITE with 200 OK
    Then a CH-1 InterimRequest arrives for every charged function
    And every InterimRequest arrives after bob's 200 OK to the re-INVITE

  @tp-OFF-MOD-04 @ordering-strict
  Scenario: A re-INVITE the recipient rejects is not charged
    When alice modifies the session with a re-INVITE
    And bob rejects the re-INVITE with 488
    Then no CH-1 InterimRequest arrives
