//! The Diameter link between a SUT and the Charging Enabler over loopback:
//! the SUT's client connecting before the Enabler is up, reconnecting after
//! a drop or an Enabler restart, retransmissions with the T flag, ACRs for
//! the wrong application, and junk connections. Tests wait on events (the
//! Enabler's notifications, the client's link status), never on sleeps; the
//! one sleep below is the scenario itself (an Enabler that starts late).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cpmcc::charging::{
    AnswerOutcome, AnswerSelector, Ch1Request, ChargingClient, ClientConfig, Enabler,
    EnablerConfig, LinkEventKind, ScriptedAnswer,
};
use cpmcc::diameter::{
    Avp, CloseReason, Header, LocalIdentity, Message, VENDOR_3GPP, app, code, result,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

async fn enabler_on(listen: SocketAddr) -> Enabler {
    Enabler::bind(EnablerConfig {
        listen,
        identity: LocalIdentity::charging_server("cdf.test.invalid", "test.invalid", IP),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .expect("loopback setup")
}

async fn enabler() -> Enabler {
    enabler_on("127.0.0.1:0".parse().expect("literal")).await
}

fn sut_identity() -> LocalIdentity {
    LocalIdentity::rf_client("sut.test.invalid", "test.invalid", IP)
}

fn config() -> ClientConfig {
    ClientConfig {
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..ClientConfig::default()
    }
}

async fn client(e: &Enabler) -> ChargingClient {
    ChargingClient::connect_with(
        e.local_addr(),
        sut_identity(),
        "test.invalid".into(),
        config(),
    )
    .await
    .expect("loopback setup")
}

/// A loopback port nobody listens on (yet).
async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    l.local_addr().expect("loopback")
}

#[tokio::test]
async fn a_client_made_before_the_enabler_delivers_its_cer_and_queued_requests_in_order() {
    let addr = free_port().await;
    let c = ChargingClient::spawn(addr, sut_identity(), "test.invalid".into(), config());
    let user = "sip:hank.l1@test.invalid";
    let reqs = [
        Ch1Request::start("l1").served_user(user),
        Ch1Request::interim("l1", 1).served_user(user),
        Ch1Request::stop("l1", 2).served_user(user),
    ];
    // Made while nothing listens: join! submits them in this order.
    let sending = async {
        let (a, b, s) = tokio::join!(c.send(&reqs[0]), c.send(&reqs[1]), c.send(&reqs[2]));
        [a, b, s].map(|r| r.expect("answered").result_code)
    };
    let late_enabler = async {
        // The scenario: the Enabler comes up a second after the client.
        tokio::time::sleep(Duration::from_secs(1)).await;
        enabler_on(addr).await
    };
    let (codes, e) = tokio::join!(sending, late_enabler);
    assert_eq!(codes, [2001; 3]);
    assert!(
        c.status().last_error.is_some(),
        "attempts failed before the Enabler listened"
    );

    let peer = e.wait_for_peer(WAIT).await.expect("the SUT's CER");
    let remote = peer.remote.expect("CER read");
    assert_eq!(remote.origin_host, "sut.test.invalid");
    assert_eq!(remote.origin_realm, "test.invalid");
    assert_eq!(remote.product_name.as_deref(), Some("cpmcc-reference-sut"));
    assert_eq!(remote.vendor_id, Some(0));
    assert_eq!(remote.application_ids(), [app::ACCOUNTING_RF]);
    assert!(peer.opened.is_some());

    let recs = e.records_for(user);
    let numbers: Vec<_> = recs
        .iter()
        .map(|r| r.ch1.as_ref().expect("CH-1").record_number)
        .collect();
    assert_eq!(numbers, [0, 1, 2], "in the order they were made");
    assert!(recs.iter().all(|r| !r.message.header.is_retransmit()));
    assert!(recs.iter().all(|r| r.retransmissions == 0));
    let events = e.link_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, LinkEventKind::Opened);
    assert!(events[0].stamp < recs[0].stamp);
}

#[tokio::test]
async fn a_dropped_link_is_reopened_and_the_unanswered_request_resent_with_t_counted_once() {
    let e = enabler().await;
    let c = client(&e).await;
    let user = "sip:ivan.l2@test.invalid";
    e.script(
        AnswerSelector::served_user("ivan"),
        ScriptedAnswer::withhold().times(1),
    );
    let sender = {
        let c = c.clone();
        tokio::spawn(async move { c.send(&Ch1Request::start("l2").served_user(user)).await })
    };
    e.wait_for(|r| r.answer == AnswerOutcome::Withheld, WAIT)
        .await
        .expect("the request arrives and is withheld");

    // The link breaks with the request unanswered.
    e.drop_connections();
    let answer = sender
        .await
        .expect("task")
        .expect("answered after the resend");
    assert_eq!(answer.result_code, 2001);

    let recs = e.records_for(user);
    assert_eq!(recs.len(), 1, "recorded once: {recs:#?}");
    assert_eq!(recs[0].retransmissions, 1);
    assert!(
        recs[0].warnings.iter().any(|w| w.contains("T flag")),
        "{:?}",
        recs[0].warnings
    );
    assert!(matches!(
        recs[0].answer,
        AnswerOutcome::Answered {
            result_code: 2001,
            ..
        }
    ));
    assert!(c.wait_opened_times(2, WAIT).await);
    let closed = e
        .wait_for_link_event(|ev| matches!(ev.kind, LinkEventKind::Closed { .. }), WAIT)
        .await
        .expect("the drop is a link event");
    assert!(matches!(
        closed.kind,
        LinkEventKind::Closed {
            reason: CloseReason::Aborted,
            ..
        }
    ));
    assert_eq!(closed.remote.origin_host, "sut.test.invalid");
    let second = e
        .wait_for_link_event(
            |ev| ev.kind == LinkEventKind::Opened && ev.peer != closed.peer,
            WAIT,
        )
        .await
        .expect("second connection");
    assert_eq!(e.link_events().len(), 3);
    assert!(second.stamp > recs[0].stamp);
    assert_eq!(e.unanswered_count(), 0);
}

#[tokio::test]
async fn a_retransmission_of_an_answered_request_gets_the_same_answer_again() {
    let e = enabler().await;
    let c = client(&e).await;
    let user = "sip:judy.l3@test.invalid";
    e.script(
        AnswerSelector::served_user("judy"),
        ScriptedAnswer::result(result::USER_UNKNOWN).times(1),
    );
    let first = c
        .send(&Ch1Request::start("l3").served_user(user))
        .await
        .expect("answered");
    assert_eq!(first.result_code, 5030);
    // The same request again with T and its end-to-end id, as a client whose
    // link dropped before the answer arrived would send it.
    let mut again = e.records_for(user)[0].message.clone();
    again.header.flags |= Header::RETRANSMIT;
    again.header.hop_by_hop = 0;
    let e2e = again.header.end_to_end;
    let ans = c.request(again).await.expect("answered");
    assert_eq!(
        ans.result_code(),
        Some(5030),
        "the same answer, script expired or not"
    );
    assert_eq!(ans.header.end_to_end, e2e);
    let recs = e.records_for(user);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].retransmissions, 1);
    // Reusing the id without T is a new request, with a warning.
    let mut reuse = recs[0].message.clone();
    reuse.header.hop_by_hop = 0;
    let ans = c.request(reuse).await.expect("answered");
    assert_eq!(ans.result_code(), Some(2001));
    let recs = e.records_for(user);
    assert_eq!(recs.len(), 2);
    assert!(
        recs[1]
            .warnings
            .iter()
            .any(|w| w.contains("without the T flag")),
        "{:?}",
        recs[1].warnings
    );
}

#[tokio::test]
async fn an_enabler_restarted_on_the_same_port_gets_the_unanswered_request_with_t() {
    let e1 = enabler().await;
    let addr = e1.local_addr();
    let c = client(&e1).await;
    e1.script(AnswerSelector::any(), ScriptedAnswer::withhold());
    let user = "sip:kim.l4@test.invalid";
    let sender = {
        let c = c.clone();
        tokio::spawn(async move { c.send(&Ch1Request::start("l4").served_user(user)).await })
    };
    e1.wait_for(|r| r.answer == AnswerOutcome::Withheld, WAIT)
        .await
        .expect("withheld by the first Enabler");

    // The harness run ends; the next one binds the same port.
    e1.shutdown().await;
    let e2 = enabler_on(addr).await;
    let peer = e2.wait_for_peer(WAIT).await.expect("the SUT reconnects");
    assert_eq!(peer.remote.expect("CER").origin_host, "sut.test.invalid");
    assert_eq!(
        sender.await.expect("task").expect("answered").result_code,
        2001
    );
    let recs = e2.records_for(user);
    assert_eq!(recs.len(), 1);
    assert!(recs[0].message.header.is_retransmit(), "sent again with T");
    assert_eq!(
        recs[0].message.header.end_to_end,
        e1.records()[0].message.header.end_to_end,
        "with the same end-to-end id"
    );
    assert!(
        recs[0]
            .warnings
            .iter()
            .any(|w| w.contains("no earlier copy")),
        "{:?}",
        recs[0].warnings
    );
    // The first Enabler saw its link close; new requests carry no T.
    e1.wait_for_link_event(|ev| matches!(ev.kind, LinkEventKind::Closed { .. }), WAIT)
        .await
        .expect("the first Enabler saw its link close");
    c.send(&Ch1Request::stop("l4", 1).served_user(user))
        .await
        .expect("answered");
    assert!(!e2.records_for("l4")[1].message.header.is_retransmit());
}

fn acr(sid: &str, c: &ChargingClient) -> Message {
    Ch1Request::start(sid)
        .served_user(format!("sip:{sid}@test.invalid"))
        .to_acr(c.identity(), "test.invalid")
}

fn without_acct_app(mut m: Message) -> Message {
    m.avps.retain(|a| a.code != code::ACCT_APPLICATION_ID);
    m
}

fn vsai(acct: u32) -> Avp {
    Avp::grouped(
        code::VENDOR_SPECIFIC_APPLICATION_ID,
        vec![
            Avp::unsigned32(code::VENDOR_ID, VENDOR_3GPP).mandatory(true),
            Avp::unsigned32(code::ACCT_APPLICATION_ID, acct).mandatory(true),
        ],
    )
    .mandatory(true)
}

#[tokio::test]
async fn acrs_for_another_application_get_3007_or_5004_and_are_recorded() {
    let e = enabler().await;
    let c = client(&e).await;

    // Header application the Enabler does not serve: 3007 with E.
    let mut m = acr("w1", &c);
    m.header.application_id = 16_777_216;
    let ans = c.request(m).await.expect("answered");
    assert_eq!(ans.result_code(), Some(result::APPLICATION_UNSUPPORTED));
    assert!(ans.header.is_error());
    assert_eq!(ans.header.application_id, 16_777_216);

    // Header application 4 (Ro), which the Enabler serves, has no ACR: 3001.
    let mut m = acr("w2", &c);
    m.header.application_id = app::CREDIT_CONTROL_RO;
    let ans = c.request(m).await.expect("answered");
    assert_eq!(ans.result_code(), Some(result::COMMAND_UNSUPPORTED));
    assert!(ans.header.is_error());

    // Acct-Application-Id 4: 5004 with it in Failed-AVP.
    let bad = Avp::unsigned32(code::ACCT_APPLICATION_ID, 4).mandatory(true);
    let m = without_acct_app(acr("w3", &c)).with(bad.clone());
    let ans = c.request(m).await.expect("answered");
    assert_eq!(ans.result_code(), Some(result::INVALID_AVP_VALUE));
    assert!(!ans.header.is_error());
    assert_eq!(
        ans.find_path(&[(code::FAILED_AVP, None), (code::ACCT_APPLICATION_ID, None)]),
        Some(bad)
    );

    // Only inside Vendor-Specific-Application-Id: 4 is refused, 3 accepted.
    let m = without_acct_app(acr("w4", &c)).with(vsai(4));
    let ans = c.request(m).await.expect("answered");
    assert_eq!(ans.result_code(), Some(result::INVALID_AVP_VALUE));
    assert_eq!(
        ans.find_path(&[
            (code::FAILED_AVP, None),
            (code::VENDOR_SPECIFIC_APPLICATION_ID, None)
        ]),
        Some(vsai(4))
    );
    let m = without_acct_app(acr("w5", &c)).with(vsai(3));
    let ans = c.request(m).await.expect("answered");
    assert_eq!(ans.result_code(), Some(2001));

    let recs = e.records();
    assert_eq!(recs.len(), 5, "recorded, not dropped");
    let judged: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r.session_id().unwrap_or("").to_owned(),
                r.protocol_error.is_some(),
                match r.answer {
                    AnswerOutcome::Answered { result_code, .. } => result_code,
                    _ => 0,
                },
            )
        })
        .collect();
    assert_eq!(
        judged,
        [
            ("w1".into(), true, 3007),
            ("w2".into(), true, 3001),
            ("w3".into(), true, 5004),
            ("w4".into(), true, 5004),
            ("w5".into(), false, 2001)
        ]
    );
    let why = recs[2].protocol_error.as_deref().unwrap_or("");
    assert!(why.contains("Acct-Application-Id is 4"), "{why}");
}

/// One junk connection: writes `bytes`, then reads until the Enabler closes.
async fn junk(addr: SocketAddr, bytes: Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("loopback");
    let _ = s.write_all(&bytes).await;
    let mut buf = [0u8; 256];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test]
async fn junk_connections_are_kept_as_capped_strays_and_leave_the_sut_alone() {
    let e = enabler().await;
    let addr = e.local_addr();
    let c = client(&e).await;
    let user = "sip:lena.l5@test.invalid";

    let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\x1b[31m".to_vec();
    garbage.extend(std::iter::repeat_n(b'A', 2000));
    let absurd_length = {
        let mut h = vec![1u8, 0xff, 0xff, 0xff, 0x80, 0, 1, 15];
        h.resize(20, 0);
        h
    };
    let acr_without_cer = acr("junk", &c).encode();
    let junks = (0..200).map(|i| {
        let bytes = match i % 4 {
            0 | 1 => garbage.clone(),
            2 => absurd_length.clone(),
            _ => acr_without_cer.clone(),
        };
        tokio::spawn(junk(addr, bytes))
    });
    let junks: Vec<_> = junks.collect();
    // Meanwhile the real SUT charges.
    let mut codes = Vec::new();
    for n in 0..20 {
        let r = if n == 0 {
            Ch1Request::start("l5")
        } else {
            Ch1Request::interim("l5", n)
        };
        codes.push(
            c.send(&r.served_user(user))
                .await
                .expect("answered")
                .result_code,
        );
    }
    for j in junks {
        j.await.expect("junk task");
    }
    assert!(e.wait_for_strays(200, WAIT).await, "{:?}", e.strays().1);

    assert_eq!(codes, vec![2001; 20]);
    assert_eq!(e.records_for(user).len(), 20);
    assert_eq!(e.records().len(), 20, "no junk ACR counted");
    let (kept, total) = e.strays();
    assert_eq!(total, 200);
    assert_eq!(kept.len(), 100, "capped");
    for s in &kept {
        assert!(s.reason.len() <= 200, "{} bytes: {s}", s.reason.len());
        assert!(!s.reason.chars().any(char::is_control), "{s}");
    }
    let http = kept
        .iter()
        .find(|s| s.reason.contains("GET"))
        .expect("the HTTP junk");
    assert!(http.reason.contains("version 71"), "{http}");
    assert!(http.reason.contains("\\r\\n"), "escaped: {http}");
    assert!(kept.iter().any(|s| s.reason.contains("before any CER")));
    assert!(kept.iter().any(|s| s.reason.contains("16777215")));

    // The SUT's link never noticed.
    assert_eq!(e.link_events().len(), 1);
    let conns = e.connections();
    assert_eq!(conns.len(), 1, "junk leaves no connection behind");
    assert!(conns[0].open);
    assert_eq!(c.status().times_opened, 1);
}

#[tokio::test]
async fn a_peer_with_no_common_application_is_refused_and_kept_as_a_stray() {
    let e = enabler().await;
    let mut id = LocalIdentity::rf_client("odd.test.invalid", "test.invalid", IP);
    id.acct_application_ids = vec![16_777_216];
    id.vendor_specific_applications.clear();
    let err = ChargingClient::connect_with(e.local_addr(), id, "test.invalid".into(), config())
        .await
        .expect_err("5010");
    assert!(err.to_string().contains("5010"), "{err}");
    assert!(e.wait_for_strays(1, WAIT).await);
    let (kept, _) = e.strays();
    assert!(
        kept[0].reason.contains("5010") && kept[0].reason.contains("odd.test.invalid"),
        "{}",
        kept[0]
    );
    assert!(e.link_events().is_empty());
    assert!(e.wait_for_peer(Duration::from_millis(50)).await.is_none());
}

#[tokio::test]
async fn the_reference_sut_starts_without_the_enabler_and_connects_when_it_comes() {
    use cpmcc::profile::{ChargedFunction, Transport};
    use cpmcc::sut::config::{ChargingConfig, SipConfig};

    let addr = free_port().await;
    let sut = cpmcc::sut::start(cpmcc::sut::SutConfig {
        sip: SipConfig {
            listen: "127.0.0.1:0".parse().expect("literal"),
            transport: Transport::Udp,
            t1: None,
        },
        shape: Default::default(),
        domain: "test.invalid".into(),
        route_users_to: "127.0.0.1:9".parse().expect("literal"),
        charging: Some(ChargingConfig {
            server: addr,
            origin_host: "cpm.sut.test".into(),
            origin_realm: "sut.test".into(),
            destination_realm: "test.invalid".into(),
            functions: vec![ChargedFunction::OriginatingPf],
            service_context_id: "32260@3gpp.org".into(),
            served_user_in_start_only: false,
            reconnect_max: None,
            connect_after: None,
        }),
        inactivity_timer: None,
        admin: None,
        deviations: vec![],
        conference: None,
        online: None,
    })
    .await
    .expect("starts although no Enabler listens");

    // Two harness runs, one after the other, on the same port.
    for _run in 0..2 {
        let e = enabler_on(addr).await;
        let peer = e.wait_for_peer(WAIT).await.expect("the SUT's CER");
        assert_eq!(peer.remote.expect("CER").origin_host, "cpm.sut.test");
        e.shutdown().await;
    }
    sut.shutdown();
}
