//! The Agent routes every message to its test user, and what belongs to no
//! test user is answered and kept for the report, never dropped silently.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use cpmcc::sip::agent::Agent;
use cpmcc::sip::message::parse_request;
use cpmcc::sip::{Endpoint, EndpointConfig, Target, TransportKind, TxEvent};

fn request(
    method: &str,
    user: &str,
    to_tag: Option<&str>,
    from: std::net::SocketAddr,
) -> rsip::Request {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    parse_request(format!(
        "{method} sip:{user}@test.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK{method}{user}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:sut@test.invalid>;tag=s1\r\n\
         To: <sip:{user}@test.invalid>{to_tag}\r\n\
         Call-ID: {method}-{user}@test\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
    .unwrap()
}

async fn final_status(events: &mut tokio::sync::mpsc::UnboundedReceiver<TxEvent>) -> u16 {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let TxEvent::Response { response, .. } = event
            && response.status_code.code() >= 200
        {
            return response.status_code.code();
        }
    }
}

#[tokio::test]
async fn requests_reach_their_user_and_strays_are_answered_and_kept() {
    let agent = Agent::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        TransportKind::Udp,
        "test.invalid",
    )
    .await
    .unwrap();
    let mut alice = agent.user("alice.r7s3");
    let (sut, mut events) = Endpoint::bind(EndpointConfig::loopback()).await.unwrap();
    let from = sut.local_addr(TransportKind::Udp).unwrap();
    let to = Target {
        transport: TransportKind::Udp,
        addr: agent.local_addr(),
    };

    // A user part with a dot, which rsip alone does not split, still routes.
    sut.send_request(request("OPTIONS", "alice.r7s3", None, from), to)
        .await
        .unwrap();
    let got = alice
        .next_event(
            |e| matches!(&e.event, TxEvent::Request { .. }),
            Duration::from_secs(5),
        )
        .await;
    assert!(got.is_some(), "alice received her OPTIONS");

    // An unknown user: 404, and a stray for the report.
    sut.send_request(request("OPTIONS", "nobody", None, from), to)
        .await
        .unwrap();
    assert_eq!(final_status(&mut events).await, 404);

    // An in-dialog request with a tag no user made: 481.
    sut.send_request(request("BYE", "alice.r7s3", Some("not-ours"), from), to)
        .await
        .unwrap();
    assert_eq!(final_status(&mut events).await, 481);

    let strays = agent.strays();
    assert_eq!(strays.len(), 2, "{strays:?}");
    assert!(strays[0].contains("nobody"), "{strays:?}");

    // A user that is gone is a stray too.
    drop(alice);
    sut.send_request(request("INFO", "alice.r7s3", None, from), to)
        .await
        .unwrap();
    assert_eq!(final_status(&mut events).await, 404);
    assert_eq!(agent.strays().len(), 3);
}

fn in_dialog(
    method: &str,
    user: &str,
    from_tag: &str,
    to_tag: &str,
    cseq: u32,
    via: std::net::SocketAddr,
) -> rsip::Request {
    parse_request(format!(
        "{method} sip:{user}@test.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:peer@test.invalid>;tag={from_tag}\r\n\
         To: <sip:{user}@test.invalid>;tag={to_tag}\r\n\
         Call-ID: one-call-id-for-both@proxy\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        cpmcc::sip::new_branch()
    ))
    .unwrap()
}

/// Through a proxy both test users of a scenario share one Call-ID (and may
/// share CSeq numbers): requests are routed by To-tag, responses by From-tag,
/// ACKs too, in both directions, and nothing is a stray.
#[tokio::test]
async fn one_call_id_for_both_users_routes_by_tags_both_ways() {
    let agent = Agent::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        TransportKind::Udp,
        "test.invalid",
    )
    .await
    .unwrap();
    let mut alice = agent.user("alice.p1");
    let mut bob = agent.user("bob.p1");
    let (ta, tb) = (alice.new_tag(), bob.new_tag());
    let (sut, mut events) = Endpoint::bind(EndpointConfig::loopback()).await.unwrap();
    let from = sut.local_addr(TransportKind::Udp).unwrap();
    let to = Target {
        transport: TransportKind::Udp,
        addr: agent.local_addr(),
    };
    let wait = Duration::from_secs(5);
    let request_from = |e: &cpmcc::sip::agent::UserEvent, method: rsip::Method, tag: &str| {
        matches!(&e.event, TxEvent::Request { request, .. }
            if request.method == method && cpmcc::sip::message::from_tag(request).as_deref() == Some(tag))
    };

    // SUT → users: the same Call-ID and CSeq, told apart by To-tag.
    for (method, user, from_tag, to_tag) in [
        ("INFO", "bob.p1", ta.as_str(), tb.as_str()),
        ("INFO", "alice.p1", tb.as_str(), ta.as_str()),
        ("ACK", "bob.p1", ta.as_str(), tb.as_str()),
        ("ACK", "alice.p1", tb.as_str(), ta.as_str()),
    ] {
        let r = in_dialog(method, user, from_tag, to_tag, 7, from);
        if method == "ACK" {
            sut.send_stateless(r.into(), to).await.unwrap();
        } else {
            sut.send_request(r, to).await.unwrap();
        }
    }
    for method in [rsip::Method::Info, rsip::Method::Ack] {
        for (user, tag, who) in [(&mut bob, &ta, "bob"), (&mut alice, &tb, "alice")] {
            let got = user
                .next_event(|e| request_from(e, method, tag), wait)
                .await;
            let Some(cpmcc::sip::agent::UserEvent {
                event: TxEvent::Request { key, request, .. },
                ..
            }) = got
            else {
                panic!("{who} did not get the other's {method}");
            };
            if let Some(key) = key {
                let ok = cpmcc::sip::response_to(&request, rsip::StatusCode::OK, None);
                user.send_response(&key, ok).await.unwrap();
            }
        }
    }
    for _ in 0..2 {
        assert_eq!(final_status(&mut events).await, 200);
    }

    // Users → SUT with the same Call-ID and CSeq: the answers come back by
    // From-tag (and transaction) to the user that asked.
    let sut_target = Target {
        transport: TransportKind::Udp,
        addr: from,
    };
    let (ka, _) = alice
        .send_request(
            in_dialog("INFO", "bob.p1", &ta, &tb, 9, agent.local_addr()),
            sut_target,
        )
        .await
        .unwrap();
    let (kb, _) = bob
        .send_request(
            in_dialog("INFO", "alice.p1", &tb, &ta, 9, agent.local_addr()),
            sut_target,
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let event = tokio::time::timeout(wait, events.recv())
            .await
            .unwrap()
            .unwrap();
        let TxEvent::Request {
            key: Some(key),
            request,
            ..
        } = event
        else {
            panic!("the SUT expected a request, got {event:?}");
        };
        let ok = cpmcc::sip::response_to(&request, rsip::StatusCode::OK, None);
        sut.send_response(&key, ok).await.unwrap();
    }
    let is_answer = |key: &cpmcc::sip::TxKey| {
        let key = key.clone();
        move |e: &cpmcc::sip::agent::UserEvent| matches!(&e.event, TxEvent::Response { key: k, .. } if *k == key)
    };
    assert!(
        alice.next_event(is_answer(&ka), wait).await.is_some(),
        "alice's answer"
    );
    assert!(
        bob.next_event(is_answer(&kb), wait).await.is_some(),
        "bob's answer"
    );
    assert!(agent.strays().is_empty(), "{:?}", agent.strays());
}
