@clause-6.2.3.4 @offline @group @needs-ad-hoc
Feature: 6.2.3.4 Offline charging for modification of a group session
  A participant's re-INVITE reaches the Controlling Function, which forwards
  it to the other participants; once they have accepted it (their 200 OK),
  the sender gets its 200 OK and the Controlling Function's Charging Enabler
  User sends a CH-1 InterimRequest, the participant count unchanged. A
  modification a recipient refuses is not charged.

  @tp-OFF-GRP-MOD-01 @ordering-strict
  Scenario: A participant's re-INVITE is charged once every other participant accepted it
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When dave answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    When carol modifies the group session with a re-INVITE
    Then no CH-1 request arrives while alice and dave hold back their answers
    When every other participant answers the re-INVITE with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 3 participants
    And that InterimRequest arrives after every 200 OK to the re-INVITE

  @tp-OFF-GRP-MOD-02 @ordering-strict
  Scenario: A re-INVITE the other participants refuse is not charged
    Given CPM clients "alice" and "carol"
    When alice starts an ad-hoc group session with carol
    Then a CH-1 StartRequest arrives from the Controlling Function with 2 participants
    When carol answers the group invitation with 200 OK
    Then a CH-1 InterimRequest arrives from the Controlling Function with 2 participants
    When carol modifies the group session with a re-INVITE
    And every other participant answers the re-INVITE with 488 Not Acceptable Here
    Then no CH-1 InterimRequest arrives
