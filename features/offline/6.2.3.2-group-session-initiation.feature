@clause-6.2.3.2 @offline @group
Feature: 6.2.3.2 Offline charging for group session initiation [derived]
  The originator (the chair) sends its INVITE to the group: to the
  conference factory with a recipient list (an ad-hoc group, RFC 5366) or
  to the URI of a group provisioned on the server (pre-defined). The
  Controlling Function answers it 200 OK with the session's own URI and
  invites the members. Once the originator's leg is established, its
  Charging Enabler User sends a CH-1 StartRequest with PoC-Information:
  Number-Of-Participants is the invited parties, the originator included.
  Whether the participants' Participating Functions charge too is the
  SUT's choice; this suite judges the Controlling Function's stream.
  The order of the Start against the SUT's own 200 OK is not judged: both
  leave the SUT at once on different sockets, and no hold-back by a test
  user can separate them (a check would blame the SUT for a race).

  @tp-OFF-GRP-INIT-01 @needs-ad-hoc
  Scenario: An ad-hoc group session starts charging with the invited count
    Given CPM clients "alice", "carol" and "dave"
    When alice starts an ad-hoc group session with carol and dave
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants

  @tp-OFF-GRP-INIT-02 @pre-defined-group-team-a
  Scenario: A pre-defined group session starts charging with the group's count
    Given a CPM client "alice"
    When alice starts a session with the pre-defined group "team-a"
    Then a CH-1 StartRequest arrives from the Controlling Function with 3 participants
