//! The Charging Enabler and the Rf client over loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cpmcc::charging::client::ClientConfig;
use cpmcc::charging::{
    AnswerOutcome, AnswerSelector, Ch1Request, ChargedRole, ChargingClient, ChargingClientError,
    Enabler, EnablerConfig, EnablerError, RecordType, ScriptedAnswer,
};
use cpmcc::diameter::{Avp, LocalIdentity, Message, VENDOR_3GPP, code, result};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn enabler() -> Enabler {
    Enabler::bind(EnablerConfig {
        listen: "127.0.0.1:0".parse().expect("loopback setup"),
        identity: LocalIdentity::charging_server("cdf.test.invalid", "test.invalid", IP),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .expect("loopback setup")
}

async fn client(e: &Enabler) -> ChargingClient {
    ChargingClient::connect(
        e.local_addr(),
        LocalIdentity::rf_client("sut.test.invalid", "test.invalid", IP),
        "test.invalid".to_owned(),
    )
    .await
    .expect("loopback setup")
}

#[tokio::test]
async fn start_interim_stop_are_recorded_in_order_and_answered() {
    let e = enabler().await;
    let c = client(&e).await;
    assert_eq!(c.remote().unwrap().origin_host, "cdf.test.invalid");
    let user = "sip:alice.k1@test.invalid";
    let sid = "sut;1;k1";
    let reqs = [
        Ch1Request::start(sid)
            .served_user(user)
            .role(ChargedRole::OriginatingPf),
        Ch1Request::interim(sid, 1)
            .served_user(user)
            .participants(2),
        Ch1Request::stop(sid, 2).served_user(user),
    ];
    for r in &reqs {
        let resp = c.send(r).await.unwrap();
        assert_eq!(resp.result_code, result::SUCCESS);
        assert_eq!(resp.session_id, sid);
        assert_eq!(resp.record_type, Some(r.kind));
        assert_eq!(resp.record_number, Some(r.record_number));
    }
    let recs = e.records_for(user);
    assert_eq!(recs.len(), 3);
    let kinds: Vec<_> = recs.iter().map(|r| r.record_type().unwrap()).collect();
    assert_eq!(
        kinds,
        [RecordType::Start, RecordType::Interim, RecordType::Stop]
    );
    assert!(recs.windows(2).all(|w| w[0].stamp < w[1].stamp));
    for r in &recs {
        match &r.answer {
            AnswerOutcome::Answered { result_code, stamp } => {
                assert_eq!(*result_code, 2001);
                assert!(*stamp > r.stamp);
            }
            a => panic!("{a:?}"),
        }
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
    assert_eq!(
        recs[0].ch1.as_ref().unwrap().role,
        Some(ChargedRole::OriginatingPf)
    );
    assert_eq!(e.records_for(sid).len(), 3);
    assert_eq!(e.unanswered_count(), 0);
    let conns = e.connections();
    assert_eq!(conns.len(), 1);
    assert!(conns[0].open);
    assert_eq!(
        conns[0].remote.as_ref().unwrap().origin_host,
        "sut.test.invalid"
    );
    c.close().await;
    let closed = e.wait_for(|_| true, Duration::from_millis(10)).await;
    assert!(closed.is_some());
}

#[tokio::test]
async fn scripted_error_applies_to_the_selected_user_only_and_expires() {
    let e = enabler().await;
    let c = client(&e).await;
    e.script(
        AnswerSelector::served_user("bob").record_type(RecordType::Start),
        ScriptedAnswer::result(result::USER_UNKNOWN).times(1),
    );
    let bob = Ch1Request::start("b1").served_user("sip:bob@test.invalid");
    assert_eq!(c.send(&bob).await.unwrap().result_code, 5030);
    assert_eq!(
        c.send(&bob).await.unwrap().result_code,
        2001,
        "times(1) expired"
    );
    let carol = Ch1Request::start("c1").served_user("sip:carol@test.invalid");
    assert_eq!(c.send(&carol).await.unwrap().result_code, 2001);
    // A protocol error (3xxx) is an error answer with the E bit.
    e.script(
        AnswerSelector::served_user("carol"),
        ScriptedAnswer::result(result::TOO_BUSY),
    );
    let ans = c
        .request(carol.to_acr(c.identity(), "test.invalid"))
        .await
        .unwrap();
    assert!(ans.header.is_error());
    assert_eq!(ans.result_code(), Some(3004));
    e.remove_scripts_for("carol");
    assert_eq!(c.send(&carol).await.unwrap().result_code, 2001);
}

#[tokio::test]
async fn withheld_answer_makes_the_client_time_out() {
    let e = enabler().await;
    let c = client(&e)
        .await
        .with_request_timeout(Duration::from_millis(300));
    e.script(
        AnswerSelector::served_user("dave"),
        ScriptedAnswer::withhold(),
    );
    let err = c
        .send(&Ch1Request::start("d1").served_user("sip:dave@test.invalid"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChargingClientError::Timeout {
                kind: RecordType::Start,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(e.unanswered_count(), 1);
    assert_eq!(e.records()[0].answer, AnswerOutcome::Withheld);
}

#[tokio::test]
async fn delayed_answer_and_wait_for() {
    let e = enabler().await;
    let c = client(&e).await;
    e.script(
        AnswerSelector::served_user("erin"),
        ScriptedAnswer::result(2001).delay(Duration::from_millis(200)),
    );
    let sender = {
        let c = c.clone();
        tokio::spawn(async move {
            c.send(&Ch1Request::start("e1").served_user("sip:erin@test.invalid"))
                .await
        })
    };
    let rec = e
        .wait_for(
            |r| r.served_user() == Some("sip:erin@test.invalid"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(rec.answer, AnswerOutcome::Pending);
    let answered = e
        .wait_for(
            |r| matches!(r.answer, AnswerOutcome::Answered { .. }),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(answered.session_id(), Some("e1"));
    assert_eq!(sender.await.unwrap().unwrap().result_code, 2001);
    assert!(
        e.wait_for(
            |r| r.session_id() == Some("nope"),
            Duration::from_millis(50)
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn unknown_mandatory_avp_gets_5001_with_failed_avp() {
    let e = enabler().await;
    let c = client(&e).await;
    let odd = Avp::unsigned32(3_333, 1)
        .vendor(VENDOR_3GPP)
        .mandatory(true);
    let acr = Ch1Request::start("m1")
        .served_user("sip:frank@test.invalid")
        .to_acr(c.identity(), "test.invalid")
        .with(odd.clone());
    let ans = c.request(acr).await.unwrap();
    assert_eq!(ans.result_code(), Some(result::AVP_UNSUPPORTED));
    assert_eq!(
        ans.find_path(&[(code::FAILED_AVP, None), (3_333, Some(VENDOR_3GPP))]),
        Some(odd)
    );
    let rec = e.records_for("frank");
    assert_eq!(rec.len(), 1, "the rejected request is still recorded");
    assert!(matches!(
        rec[0].answer,
        AnswerOutcome::Answered {
            result_code: 5001,
            ..
        }
    ));
}

#[tokio::test]
async fn unknown_optional_avp_is_kept_byte_for_byte() {
    let e = enabler().await;
    let c = client(&e).await;
    let odd = Avp::octets(4_444, vec![0xde, 0xad, 0xbe])
        .vendor(99)
        .with_flags(Avp::VENDOR);
    let acr = Ch1Request::start("k1")
        .served_user("sip:grace@test.invalid")
        .to_acr(c.identity(), "test.invalid")
        .with(odd.clone());
    let sent = acr.clone();
    let ans = c.request(acr).await.unwrap();
    assert_eq!(ans.result_code(), Some(2001));
    let rec = &e.records_for("grace")[0];
    assert_eq!(rec.message.avp_vendor(4_444, Some(99)), Some(&odd));
    assert_eq!(rec.message.avps, sent.avps);
    assert!(
        rec.warnings.iter().any(|w| w.contains("4444")),
        "{:?}",
        rec.warnings
    );
}

#[tokio::test]
async fn missing_required_avp_gets_5005_and_ccr_gets_3001() {
    let e = enabler().await;
    let c = client(&e).await;
    let bad = Message::request(271, 3).with(Avp::utf8(code::SESSION_ID, "x1"));
    let ans = c.request(bad).await.unwrap();
    assert_eq!(ans.result_code(), Some(result::MISSING_AVP));
    assert!(ans.avp(code::FAILED_AVP).is_some());
    let ccr = Message::request(272, 4).with(Avp::utf8(code::SESSION_ID, "x2"));
    let ans = c.request(ccr).await.unwrap();
    assert_eq!(ans.result_code(), Some(result::COMMAND_UNSUPPORTED));
    assert!(ans.header.is_error());
    assert_eq!(e.records().len(), 2);
    assert!(e.records().iter().all(|r| r.ch1.is_err()));
}

#[tokio::test]
async fn several_connections_and_bind_errors() {
    let e = enabler().await;
    let a = client(&e).await;
    let b = client(&e).await;
    a.send(&Ch1Request::event("a")).await.unwrap();
    b.send(&Ch1Request::event("b")).await.unwrap();
    assert_eq!(e.connections().len(), 2);
    let peers: std::collections::HashSet<SocketAddr> = e.records().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 2);

    let err = Enabler::bind(EnablerConfig {
        listen: e.local_addr(),
        identity: e.identity().clone(),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .unwrap_err();
    let EnablerError::Bind { addr, .. } = &err;
    assert_eq!(*addr, e.local_addr());
    assert!(err.to_string().contains(&e.local_addr().to_string()));

    // Connecting to nothing fails with the address.
    let dead: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let err = ChargingClient::connect_with(
        dead,
        LocalIdentity::rf_client("s", "r", IP),
        "r".into(),
        ClientConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
