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
