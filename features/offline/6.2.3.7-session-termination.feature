@clause-6.2.3.7 @offline
Feature: 6.2.3.7 Offline charging for CPM session termination
  Alias: the change request heads this change "Change to section 6.2.3.6";
  its clause text is 6.2.3.7, which is used here.

  A session is closed by a CPM Client (its BYE, the "session leaving
  request", triggers a CH-1 StopRequest; the server's 200 OK to the BYE may
  come at any time after it) or by the CPM Server (its BYE, the "session
  removal request"; the StopRequest only after the client's 200 OK).

  A client may answer the server's BYE with 481 (Call/Transaction Does Not
  Exist: the dialog is already gone at the client) or not at all. The change
  request names only the 200 OK; this suite reads the session as over
  either way: the SUT sends the function's StopRequest after the 481, or
  after its BYE transaction times out (64 T1, which the SUT profile declares
  as stimuli.bye_timeout), but never before the client's answer or the
  timeout.

  Background:
    Given CPM clients "alice" and "bob"
    And alice has a 1-1 CPM session with bob

  @tp-OFF-TERM-01
  Scenario: The originator's BYE stops offline charging
    When alice ends the session with BYE
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after alice's BYE

  @tp-OFF-TERM-02
  Scenario: The recipient's BYE stops offline charging
    When bob ends the session with BYE
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after bob's BYE

  @tp-OFF-TERM-03 @needs-inactivity-timer
  Scenario: Server termination on the inactivity timer: Stop only after the client's 200 OK
    When the SUT ends the session on its inactivity timer
    And alice and bob hold back their answers to the SUT's BYE
    Then no CH-1 request arrives while alice and bob hold back their answers
    When alice answers the SUT's BYE with 200 OK
    Then no CH-1 request arrives for the function serving bob while he holds back his answer
    When bob answers the SUT's BYE with 200 OK
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after its served user's 200 OK to the SUT's BYE

  @tp-OFF-TERM-04 @needs-operator-terminate
  Scenario: Server termination by the operator: Stop only after the client's 200 OK
    When the operator ends the session
    And alice and bob hold back their answers to the SUT's BYE
    Then no CH-1 request arrives while alice and bob hold back their answers
    When alice answers the SUT's BYE with 200 OK
    Then no CH-1 request arrives for the function serving bob while he holds back his answer
    When bob answers the SUT's BYE with 200 OK
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after its served user's 200 OK to the SUT's BYE

  @tp-OFF-TERM-05
  Scenario: The client's BYE stops offline charging while the Charging Enabler answers slowly
    Given the Charging Enabler delays its answers to alice's CH-1 requests by 500 ms
    When alice ends the session with BYE
    Then a CH-1 StopRequest arrives for every charged function
    And every StopRequest arrives after alice's BYE

  @tp-OFF-TERM-06 @needs-operator-terminate
  Scenario: Server termination answered 481: the Stop follows the answer, never precedes it
    When the operator ends the session
    And alice and bob hold back their answers to the SUT's BYE
    Then no CH-1 request arrives while alice and bob hold back their answers
    When alice answers the SUT's BYE with 481
    Then no CH-1 request arrives for the function serving bob while he holds back his answer
    When bob answers the SUT's BYE with 200 OK
    Then a CH-1 StopRequest arrives for every charged function

  # A client that never answers the SUT's BYE has sent no 200 OK. The
  # decision, in spec/flows.md's terms: the SUT has still ended the session
  # and must send the StopRequest, but not while the client may yet answer;
  # so it follows the SUT's transaction timeout (stimuli.bye_timeout), and a
  # Stop on sending the BYE is the deviation this scenario catches.
  @tp-OFF-TERM-07 @needs-operator-terminate @needs-bye-timeout
  Scenario: Server termination never answered: the Stop follows the SUT's timeout, never the BYE
    When the operator ends the session
    And alice and bob hold back their answers to the SUT's BYE
    Then no CH-1 request arrives while alice and bob hold back their answers
    When alice answers the SUT's BYE with 200 OK
    And bob never answers the SUT's BYE
    Then no CH-1 request arrives for the function serving bob while he holds back his answer
    And a CH-1 StopRequest arrives for every charged function once the SUT gives up on bob's answer
