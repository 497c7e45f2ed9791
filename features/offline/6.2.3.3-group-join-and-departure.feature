@clause-6.2.3.3 @offline @group @needs-ad-hoc
Feature: 6.2.3.3 Offline charging for joining and departure of a group session
  Each join or departure is charged by the Controlling Function with a CH-1
  InterimRequest carrying the new participant count, and the Interim follows
  the SIP event that completes the change, never precedes it. The triggers:
  (a) a client's 200 OK to an INVITE the SUT sent (an invited or added
  participant joins), (b) a client's 200 OK to a BYE the SUT sent (a
  participant removed), (c) a participant's BYE (it leaves), (d) an INVITE
  from a client joining the running session (dial-in), once answered. A
  join that fails changes nothing and is not charged. A dial-in's Interim
  is not ordered against the SUT's own 200 OK (no test user can hold that
  answer back, and both leave the SUT at once).

  @tp-OFF-GRP-JOIN-01
  Scenario: (a) An invited participant's 200 OK is charged, never before it
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol holds back her answer to the group invitation
    Then no CH-1 request arrives while carol holds back her answer
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    And that InterimRequest arrives after carol's 200 OK to the INVITE

  @tp-OFF-GRP-JOIN-02 @needs-refer-add
  Scenario: (a) A participant the chair adds by REFER is charged once it answers
    Given CPM clients "alice", "carol" and "erin"
    When alice starts an ad-hoc group session with carol
    Then a CH-1 StartRequest arrives from the Controlling Function with 2 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When alice adds erin to the group session with REFER
    And erin holds back her answer to the group invitation
    Then no CH-1 request arrives while erin holds back her answer
    When erin answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    And that InterimRequest arrives after erin's 200 OK to the INVITE

  @tp-OFF-GRP-JOIN-03 @needs-dial-in
  Scenario: (d) A participant dialling in is charged once its INVITE is answered
    Given CPM clients "alice", "carol" and "erin"
    When alice starts an ad-hoc group session with carol
    Then a CH-1 StartRequest arrives from the Controlling Function with 2 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When erin dials in to the group session
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants

  @tp-OFF-GRP-JOIN-04
  Scenario Outline: A join that fails (<status>) is not charged
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol rejects the group invitation with <status>
    Then no CH-1 InterimRequest arrives
    When dave answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants

    Examples:
      | status |
      | 486    |
      | 603    |

  @tp-OFF-GRP-LEAVE-01
  Scenario: (c) A participant leaving with BYE is charged after its BYE
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When dave answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    When carol leaves the group session with BYE
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    And that InterimRequest arrives after carol's BYE

  @tp-OFF-GRP-LEAVE-02 @needs-refer-remove
  Scenario: (b) A participant the chair removes is charged after its 200 OK to the SUT's BYE
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When dave answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    When alice removes carol from the group session with REFER
    And carol holds back her answer to the SUT's BYE
    Then no CH-1 request arrives while carol holds back her answer
    When carol answers the SUT's BYE with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    And that InterimRequest arrives after carol's 200 OK to the SUT's BYE
