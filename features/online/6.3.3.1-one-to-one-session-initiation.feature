@clause-6.3.3.1 @online
Feature: 6.3.3.1 Online charging for 1-1 CPM session initiation [derived]
  The change requests are silent on 1-1 initiation online; the rule is
  derived from 3GPP IMS practice (TS 32.260) and the group figures: each
  online function sends a CH-2 InitialRequest (reserving units) on the
  originator's INVITE, and the SUT forwards the INVITE only once every
  InitialRequest got a successful CH-2 Response. A refusal (credit limit
  reached 4012, user unknown 5030, service denied 4010) makes the SUT reject
  the INVITE and forward nothing, and no TerminationRequest follows a
  refused InitialRequest.

  Background:
    Given CPM clients "alice" and "bob"

  @tp-ON-INIT-01
  Scenario: The INVITE is charged with an InitialRequest and forwarded only once it is answered
    Given the OCS holds back its answer to alice's CH-2 InitialRequest
    When alice invites bob to a 1-1 CPM session
    Then a CH-2 InitialRequest arrives for every online function
    And bob receives the INVITE only after the OCS answered alice's InitialRequest
    When bob answers the INVITE with 200 OK
    Then alice receives a 200 final response

  @tp-ON-INIT-02
  Scenario Outline: A refused InitialRequest (<code>) rejects the INVITE, forwards nothing and ends the CH-2 session
    Given the OCS refuses alice's CH-2 InitialRequest with <code>
    When alice tries to invite bob to a 1-1 CPM session
    Then a CH-2 InitialRequest arrives for every online function
    And alice's INVITE is rejected and bob receives no INVITE
    And no CH-2 TerminationRequest arrives

    Examples:
      | code |
      | 4010 |
      | 4012 |
      | 5030 |

  # A 2001 command with a failed Multiple-Services-Credit-Control refuses
  # the service all the same (RFC 4006 5.1.2): the INVITE must not go on.
  # Whether the credit-control session then owes a TerminationRequest is
  # not judged here (RFC 4006 keeps the session up at command level).
  @tp-ON-INIT-03
  Scenario: An InitialRequest refused at service level (4012 in the MSCC) rejects the INVITE
    Given the OCS refuses alice's CH-2 InitialRequest at service level with 4012
    When alice tries to invite bob to a 1-1 CPM session
    Then a CH-2 InitialRequest arrives for every online function
    And alice's INVITE is rejected and bob receives no INVITE
