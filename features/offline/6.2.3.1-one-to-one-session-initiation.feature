@clause-6.2.3.1 @offline
Feature: 6.2.3.1 Offline charging for 1-1 CPM session initiation [derived]
  The change requests are silent on 1-1 initiation; the rule is derived from
  3GPP IMS practice (TS 32.260): the Charging Enabler User of each charged
  Participating Function sends a CH-1 StartRequest once the recipient's
  200 OK establishes the session, and a failed INVITE starts no charging.
  The recipient rings first (180 Ringing), as real clients do: a Start sent
  on the provisional is seen. SIP may repeat the 200 OK (a UAS retransmits
  it until the ACK comes, RFC 3261 13.3.1.4); the session still starts once.

  Background:
    Given CPM clients "alice" and "bob"

  @tp-OFF-INIT-01
  Scenario: The recipient's 200 OK starts offline charging
    When alice invites bob to a 1-1 CPM session
    And bob answers the INVITE with 180 Ringing
    And bob answers the INVITE with 200 OK
    Then a CH-1 StartRequest arrives for every charged function
    And every StartRequest arrives after bob's 200 OK to the INVITE

  @tp-OFF-INIT-02
  Scenario: The SUT waits for the recipient's 200 OK before it starts charging
    When alice invites bob to a 1-1 CPM session
    And bob answers the INVITE with 180 Ringing
    And bob holds back his answer to the INVITE
    Then no CH-1 request arrives while bob holds back his answer
    When bob answers the INVITE with 200 OK
    Then a CH-1 StartRequest arrives for every charged function
    And every StartRequest arrives after bob's 200 OK to the INVITE

  @tp-OFF-INIT-03
  Scenario Outline: A rejected INVITE starts no offline charging (<status>)
    When alice invites bob to a 1-1 CPM session
    And bob answers the INVITE with 180 Ringing
    And bob rejects the INVITE with <status>
    Then alice receives a <status> final response
    And no CH-1 StartRequest arrives
    And a CH-1 EventRequest arrives only if the SUT profile expects one for a failed INVITE

    Examples:
      | status |
      | 486    |
      | 603    |
      | 500    |

  @tp-OFF-INIT-04
  Scenario: A cancelled INVITE starts no offline charging
    When alice invites bob to a 1-1 CPM session
    And bob answers the INVITE with 180 Ringing
    And alice cancels the INVITE
    Then alice receives a 487 final response
    And no CH-1 StartRequest arrives

  @tp-OFF-INIT-05
  Scenario: A 200 OK sent again while the ACK is held starts no second charging session
    When alice invites bob to a 1-1 CPM session
    And bob answers the INVITE with 180 Ringing
    And bob accepts the INVITE while alice holds back her ACK until the 200 OK comes again
    Then a CH-1 StartRequest arrives for every charged function
    And no CH-1 StartRequest arrives
