//! The Charging Enabler in its online (OCS) role over loopback: a Ro client
//! (the crate's Diameter client standing in for the SUT) sends CCRs, the
//! Enabler answers them as the OCS core decides, records them beside the
//! ACRs, and gives both the common view.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cpmcc::charging::ro::ro_client_identity;
use cpmcc::charging::{
    AnswerOutcome, Ch1Request, Ch2Request, Ch2Response, ChargedRole, ChargingClient,
    ChargingClientError, ChargingRecord, Enabler, EnablerConfig, Interface, OcsAnswer, OcsSelector,
    OnlineRule, ReportingReason, RequestKind, RequestType, ServiceUnits,
};
use cpmcc::diameter::{Avp, Header, LocalIdentity, Message, VENDOR_3GPP, app, code, result};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REALM: &str = "test.invalid";
const WAIT: Duration = Duration::from_secs(5);

async fn enabler() -> Enabler {
    Enabler::bind(EnablerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity: LocalIdentity::charging_server("ocs.test.invalid", REALM, IP),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

async fn connect(e: &Enabler, identity: LocalIdentity) -> ChargingClient {
    ChargingClient::connect(e.local_addr(), identity, REALM.to_owned())
        .await
        .unwrap()
}

/// A SUT that speaks Ro only.
async fn ro_client(e: &Enabler) -> ChargingClient {
    connect(e, ro_client_identity("sut.test.invalid", REALM, IP)).await
}

fn s(n: u32) -> ServiceUnits {
    ServiceUnits::seconds(n)
}

fn ccr(c: &ChargingClient, r: &Ch2Request) -> Message {
    r.to_ccr(c.identity(), REALM)
}

/// Sends a CH-2 request and reads the CCA.
async fn send(c: &ChargingClient, r: &Ch2Request) -> Ch2Response {
    let ans = c.request(ccr(c, r)).await.unwrap();
    assert!(!ans.header.is_request());
    assert_eq!(ans.header.application_id, app::CREDIT_CONTROL_RO);
    Ch2Response::from_cca(&ans).unwrap()
}

fn initial(sid: &str, user: &str) -> Ch2Request {
    Ch2Request::initial(sid)
        .served_user(user)
        .role(ChargedRole::ControllingFunction)
        .participants(3)
        .request_units(s(60))
}

fn update(sid: &str, n: u32, used: u32) -> Ch2Request {
    Ch2Request::update(sid, n)
        .request_units(s(60))
        .report_used(s(used), ReportingReason::QuotaExhausted)
}

fn termination(sid: &str, n: u32, used: u32) -> Ch2Request {
    Ch2Request::termination(sid, n).report_used(s(used), ReportingReason::Final)
}

fn answered(r: &ChargingRecord) -> Option<u32> {
    match r.answer {
        AnswerOutcome::Answered { result_code, .. } => Some(result_code),
        _ => None,
    }
}

#[tokio::test]
async fn initial_update_termination_are_granted_recorded_and_kept_in_the_ledger() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    let user = "sip:alice.o1@test.invalid";
    let sid = "sut;1;o1";

    let i = send(&c, &initial(sid, user)).await;
    assert_eq!(i.result_code, result::SUCCESS);
    assert_eq!(i.session_id, sid);
    assert_eq!(
        (i.request_type, i.request_number),
        (Some(RequestType::Initial), Some(0))
    );
    assert_eq!(i.granted_units(), Some(s(60)), "what was asked");
    let u = send(&c, &update(sid, 1, 60).served_user(user)).await;
    assert_eq!((u.result_code, u.granted_units()), (2001, Some(s(60))));
    let t = send(&c, &termination(sid, 2, 25)).await;
    assert_eq!(t.result_code, 2001);
    assert_eq!(t.granted_units(), None, "no units on the Termination");

    let recs = e.records_for(sid);
    assert_eq!(recs.len(), 3);
    assert!(recs.windows(2).all(|w| w[0].stamp < w[1].stamp));
    for (r, (kind, n)) in recs.iter().zip([
        (RequestKind::Start, 0),
        (RequestKind::Interim, 1),
        (RequestKind::Stop, 2),
    ]) {
        assert_eq!(answered(r), Some(2001), "{}", r.describe());
        assert!(r.is_online());
        assert_eq!(r.interface(), Some(Interface::Ch2));
        assert_eq!(r.record_type(), None, "not a CH-1 record");
        assert!(r.ch1.is_err());
        assert_eq!(r.ch2().unwrap().unwrap().request_number, n);
        let v = r.charging_request().unwrap();
        assert_eq!(
            (v.interface, v.kind, v.sequence_number),
            (Interface::Ch2, kind, n)
        );
        assert_eq!(v.session_id, sid);
        assert_eq!(r.session_id(), Some(sid));
        assert!(r.protocol_error.is_none());
        assert_eq!(r.retransmissions, 0);
    }
    // The served user as the CH-1 records give it: the harness's filters
    // work for CH-2 too.
    assert_eq!(recs[0].served_user(), Some(user));
    assert_eq!(e.records_for(user).len(), 2, "the Termination names none");

    let l = e.ocs_session(sid).unwrap();
    assert_eq!(l.served_user.as_deref(), Some(user));
    assert_eq!(l.request_numbers(), vec![0, 1, 2]);
    assert_eq!((l.granted, l.debited), (s(120), s(85)));
    assert!(l.reserved.is_empty() && l.terminated && !l.initial_refused);
    assert_eq!(e.ocs_sessions().len(), 1);
    assert_eq!(e.online_violations(), vec![]);
    assert_eq!(e.unanswered_count(), 0);
    let views: Vec<_> = e.charging_requests().into_iter().map(|(_, v)| v).collect();
    assert_eq!(views.len(), 3);
    assert_eq!(views[1].name(), "CH-2 UpdateRequest");
}

#[tokio::test]
async fn a_scripted_4012_refuses_the_initial_and_a_termination_after_it_breaks_a_rule() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    let k = e.script_ocs(
        OcsSelector::any()
            .user("sip:bob.o2@test.invalid")
            .kind(RequestType::Initial),
        OcsAnswer::refuse(result::CREDIT_LIMIT_REACHED),
    );
    let i = send(&c, &initial("b2", "sip:bob.o2@test.invalid")).await;
    assert_eq!(i.result_code, 4012);
    assert!(i.credits.is_empty(), "no units on a refusal");
    assert!(!i.is_success());
    // Another user's Initial is not scripted.
    let other = send(&c, &initial("c2", "sip:carol.o2@test.invalid")).await;
    assert_eq!(other.result_code, 2001);
    assert_eq!(e.ocs_script_uses(k), Some(1));

    let rec = e.records_for("b2");
    assert_eq!(answered(&rec[0]), Some(4012));
    let l = e.ocs_session("b2").unwrap();
    assert!(l.initial_refused && l.granted.is_empty());
    assert_eq!(e.online_violations(), vec![]);

    // The SUT must not go on with the session it was refused.
    send(&c, &termination("b2", 1, 0)).await;
    let v = e.online_violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, "b2");
    let rules: Vec<_> = v[0].1.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec![OnlineRule::RefusedInitialEndsSession]);
}

#[tokio::test]
async fn the_second_update_gets_a_scripted_4010_and_the_others_are_granted() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    let user = "sip:dave.o3@test.invalid";
    e.script_ocs(
        OcsSelector::any()
            .user(user)
            .kind(RequestType::Update)
            .nth(2),
        OcsAnswer::refuse(result::END_USER_SERVICE_DENIED),
    );
    send(&c, &initial("d3", user)).await;
    let codes = [
        send(&c, &update("d3", 1, 10)).await.result_code,
        send(&c, &update("d3", 2, 10)).await.result_code,
        send(&c, &update("d3", 3, 10)).await.result_code,
    ];
    assert_eq!(codes, [2001, 4010, 2001]);
    let answers: Vec<_> = e.records_for("d3").iter().map(answered).collect();
    assert_eq!(answers, [Some(2001), Some(2001), Some(4010), Some(2001)]);
    let l = e.ocs_session("d3").unwrap();
    assert_eq!(l.exchanges[2].script, Some(0));
    assert_eq!(l.exchanges[2].response.as_ref().unwrap().result_code, 4010);
}

#[tokio::test]
async fn a_delayed_answer_is_pending_until_its_timer() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    let delay = Duration::from_millis(300);
    e.script_ocs(
        OcsSelector::any().session("e4"),
        OcsAnswer::grant(s(42)).after(delay),
    );
    let sent = Instant::now();
    let sender = {
        let (c, m) = (
            c.clone(),
            ccr(&c, &initial("e4", "sip:erin.o4@test.invalid")),
        );
        tokio::spawn(async move { c.request(m).await })
    };
    let rec = e
        .wait_for(|r| r.session_id() == Some("e4"), WAIT)
        .await
        .unwrap();
    assert_eq!(rec.answer, AnswerOutcome::Pending);
    assert_eq!(e.unanswered_count(), 1);
    let rec = e.wait_for(|r| answered(r).is_some(), WAIT).await.unwrap();
    let AnswerOutcome::Answered { result_code, stamp } = rec.answer else {
        unreachable!()
    };
    assert_eq!(result_code, 2001);
    assert!(stamp > rec.stamp);
    let cca = sender.await.unwrap().unwrap();
    assert!(sent.elapsed() >= delay, "{:?}", sent.elapsed());
    assert_eq!(
        Ch2Response::from_cca(&cca).unwrap().granted_units(),
        Some(s(42))
    );
    let l = e.ocs_session("e4").unwrap();
    assert_eq!(
        l.exchanges[0].answer_at.unwrap() - l.exchanges[0].received,
        delay
    );
}

#[tokio::test]
async fn a_withheld_answer_never_comes() {
    let e = enabler().await;
    let c = ro_client(&e)
        .await
        .with_request_timeout(Duration::from_millis(300));
    e.script_ocs(
        OcsSelector::any().kind(RequestType::Update),
        OcsAnswer::no_answer().times(1),
    );
    send(&c, &initial("f5", "sip:frank.o5@test.invalid")).await;
    let mut m = ccr(&c, &update("f5", 1, 5));
    m.header.end_to_end = 0x0f5f_0001;
    let err = c.request(m.clone()).await.unwrap_err();
    assert!(
        matches!(err, ChargingClientError::RawTimeout { .. }),
        "{err}"
    );
    let recs = e.records_for("f5");
    assert_eq!(recs[1].answer, AnswerOutcome::Withheld);
    assert_eq!(e.unanswered_count(), 1);
    // Resent with T: withheld again (the OCS decided so), counted once.
    m.header.flags |= Header::RETRANSMIT;
    let err = c.request(m).await.unwrap_err();
    assert!(
        matches!(err, ChargingClientError::RawTimeout { .. }),
        "{err}"
    );
    e.wait_for(|r| r.retransmissions == 1, WAIT).await.unwrap();
    let recs = e.records_for("f5");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].retransmissions, 1);
    assert_eq!(recs[1].answer, AnswerOutcome::Withheld);
    let l = e.ocs_session("f5").unwrap();
    assert_eq!(l.exchanges.len(), 2);
    assert_eq!(l.exchanges[1].response, None);
    assert_eq!(l.exchanges[1].retransmissions, 1);
    // The script is used up: the next Update is answered.
    let u = send(&c, &update("f5", 2, 5)).await;
    assert_eq!(u.result_code, 2001);
}

#[tokio::test]
async fn a_retransmission_gets_the_same_answer_and_counts_once() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    e.script_ocs(
        OcsSelector::any().kind(RequestType::Initial),
        OcsAnswer::grant(s(17)).times(1),
    );
    let mut first = ccr(&c, &initial("g6", "sip:gina.o6@test.invalid"));
    first.header.end_to_end = 0x0abc_0001;
    let mut again = first.clone();
    again.header.flags |= Header::RETRANSMIT;
    let a = c.request(first).await.unwrap();
    let b = c.request(again).await.unwrap();
    assert_eq!(a.header.end_to_end, b.header.end_to_end);
    assert_eq!(a.avps, b.avps, "the same answer again, not a new grant");
    assert_eq!(
        Ch2Response::from_cca(&b).unwrap().granted_units(),
        Some(s(17))
    );
    let recs = e.records_for("g6");
    assert_eq!(recs.len(), 1, "one request");
    assert_eq!(recs[0].retransmissions, 1);
    assert!(recs[0].warnings.iter().any(|w| w.contains("T flag")));
    let l = e.ocs_session("g6").unwrap();
    assert_eq!(l.exchanges.len(), 1);
    assert_eq!(l.retransmissions(), 1);
    assert_eq!(l.granted, s(17), "granted once");

    // Resent while its answer is still delayed: both copies get it when
    // the timer fires.
    e.script_ocs(
        OcsSelector::any().kind(RequestType::Update),
        OcsAnswer::grant(s(9)).after(Duration::from_millis(300)),
    );
    let mut first = ccr(&c, &update("g6", 1, 10));
    first.header.end_to_end = 0x0abc_0002;
    let mut again = first.clone();
    again.header.flags |= Header::RETRANSMIT;
    let one = {
        let c = c.clone();
        tokio::spawn(async move { c.request(first).await })
    };
    e.wait_for(
        |r| r.session_id() == Some("g6") && r.stamp > recs[0].stamp,
        WAIT,
    )
    .await
    .unwrap();
    let two = {
        let c = c.clone();
        tokio::spawn(async move { c.request(again).await })
    };
    e.wait_for(
        |r| {
            r.retransmissions == 1
                && r.ch2()
                    .is_some_and(|q| q.is_ok_and(|q| q.request_number == 1))
        },
        WAIT,
    )
    .await
    .unwrap();
    let (one, two) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
    assert_eq!(one.avps, two.avps);
    assert_eq!(
        Ch2Response::from_cca(&two).unwrap().granted_units(),
        Some(s(9))
    );
    assert_eq!(e.records_for("g6").len(), 2);
    let l = e.ocs_session("g6").unwrap();
    assert_eq!(l.request_numbers(), vec![0, 1]);
    assert_eq!(l.exchanges[1].retransmissions, 1);
    assert_eq!(l.debited, s(10), "debited once");
}

#[tokio::test]
async fn malformed_ccrs_get_the_rfc_6733_error_answer_and_are_recorded() {
    let e = enabler().await;
    let c = ro_client(&e).await;
    let ok = |sid: &str| ccr(&c, &initial(sid, "sip:hank.o7@test.invalid"));
    let without = |m: Message, code: u32| Message {
        avps: m.avps.into_iter().filter(|a| a.code != code).collect(),
        ..m
    };

    // No CC-Request-Type: 5005 naming it.
    let ans = c
        .request(without(ok("h1"), code::CC_REQUEST_TYPE))
        .await
        .unwrap();
    assert_eq!(ans.result_code(), Some(result::MISSING_AVP));
    assert!(
        ans.find_path(&[(code::FAILED_AVP, None), (code::CC_REQUEST_TYPE, None)])
            .is_some()
    );
    // CC-Request-Type 9: 5004 with it.
    let bad = Avp::enumerated(code::CC_REQUEST_TYPE, 9).mandatory(true);
    let ans = c
        .request(without(ok("h2"), code::CC_REQUEST_TYPE).with(bad.clone()))
        .await
        .unwrap();
    assert_eq!(ans.result_code(), Some(result::INVALID_AVP_VALUE));
    assert_eq!(
        ans.find_path(&[(code::FAILED_AVP, None), (code::CC_REQUEST_TYPE, None)]),
        Some(bad)
    );
    // An unknown AVP with the M bit: 5001.
    let odd = Avp::unsigned32(3_333, 1)
        .vendor(VENDOR_3GPP)
        .mandatory(true);
    let ans = c.request(ok("h3").with(odd)).await.unwrap();
    assert_eq!(ans.result_code(), Some(result::AVP_UNSUPPORTED));
    // Auth-Application-Id 3: 5004, a protocol error.
    let wrong = Avp::unsigned32(code::AUTH_APPLICATION_ID, 3).mandatory(true);
    let ans = c
        .request(without(ok("h4"), code::AUTH_APPLICATION_ID).with(wrong))
        .await
        .unwrap();
    assert_eq!(ans.result_code(), Some(result::INVALID_AVP_VALUE));
    // A CCR in a header application without CCR: 3001 with E.
    let mut m = ok("h5");
    m.header.application_id = app::ACCOUNTING_RF;
    let ans = c.request(m).await.unwrap();
    assert_eq!(ans.result_code(), Some(result::COMMAND_UNSUPPORTED));
    assert!(ans.header.is_error());

    let recs = e.records();
    let got: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r.session_id().unwrap().to_owned(),
                answered(r).unwrap(),
                r.protocol_error.is_some(),
                r.charging_request().is_some(),
            )
        })
        .collect();
    let want = [
        ("h1", 5005, false, false),
        ("h2", 5004, false, false),
        ("h3", 5001, false, true),
        ("h4", 5004, true, true),
        ("h5", 3001, true, true),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(s, rc, p, v)| ((*s).to_owned(), *rc, *p, *v))
        .collect();
    assert_eq!(got, want, "recorded, not dropped");
    assert!(recs[0].ch2().unwrap().is_err());
    assert!(e.ocs_sessions().is_empty(), "the OCS saw none of them");
}

#[tokio::test]
async fn a_ccr_on_an_rf_only_link_gets_3001_and_never_reaches_the_ocs() {
    let e = enabler().await;
    let c = connect(&e, LocalIdentity::rf_client("sut.test.invalid", REALM, IP)).await;
    let ans = c
        .request(ccr(&c, &initial("i8", "sip:ivy.o8@test.invalid")))
        .await
        .unwrap();
    assert_eq!(ans.result_code(), Some(result::COMMAND_UNSUPPORTED));
    let r = &e.records()[0];
    assert!(r.protocol_error.as_ref().unwrap().contains("Ro"));
    assert!(e.ocs_sessions().is_empty());
}

#[tokio::test]
async fn acr_and_ccr_meet_in_one_view() {
    let e = enabler().await;
    let mut both = ro_client_identity("sut.test.invalid", REALM, IP);
    both.acct_application_ids.push(app::ACCOUNTING_RF);
    let c = connect(&e, both).await;
    let user = "sip:jane.o9@test.invalid";
    let acr = Ch1Request::interim("j-off", 2)
        .served_user(user)
        .role(ChargedRole::ControllingFunction)
        .participants(4);
    assert_eq!(c.send(&acr).await.unwrap().result_code, 2001);
    send(
        &c,
        &update("j-on", 1, 30)
            .served_user(user)
            .role(ChargedRole::ControllingFunction)
            .participants(5),
    )
    .await;

    let recs = e.records_for(user);
    assert_eq!(recs.len(), 2);
    let (off, on) = (
        recs[0].charging_request().unwrap(),
        recs[1].charging_request().unwrap(),
    );
    assert_eq!(recs[0].interface(), Some(Interface::Ch1));
    assert_eq!(recs[0].ch2(), None);
    assert_eq!(
        (
            off.interface,
            off.kind,
            off.sequence_number,
            off.session_id.as_str()
        ),
        (Interface::Ch1, RequestKind::Interim, 2, "j-off")
    );
    assert_eq!(
        (
            on.interface,
            on.kind,
            on.sequence_number,
            on.session_id.as_str()
        ),
        (Interface::Ch2, RequestKind::Interim, 1, "j-on")
    );
    for v in [&off, &on] {
        assert_eq!(v.served_user.as_deref(), Some(user));
        assert_eq!(v.role, Some(ChargedRole::ControllingFunction));
    }
    assert_eq!((off.participants, on.participants), (Some(4), Some(5)));
    assert_eq!((off.units_requested, off.units_used), (None, None));
    assert_eq!(
        (on.units_requested, on.units_used),
        (Some(s(60)), Some(s(30)))
    );
    assert_eq!(on.reporting_reason, Some(ReportingReason::QuotaExhausted));
    assert_eq!(off.name(), "CH-1 InterimRequest");
    assert_eq!(on.name(), "CH-2 UpdateRequest");
    assert_eq!(recs[0].served_user(), recs[1].served_user());
    let all: Vec<_> = e
        .charging_requests()
        .into_iter()
        .map(|(_, v)| v.interface)
        .collect();
    assert_eq!(all, vec![Interface::Ch1, Interface::Ch2]);
}
