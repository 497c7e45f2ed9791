//! RFC 3261 §17 / RFC 6026 transactions on a virtual clock: `now` is advanced
//! by hand, nothing sleeps.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: clippy.toml allows unwrap in tests

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cpmcc::sip::framing::parse_message;
use cpmcc::sip::transaction::{Role, cseq_of, tag_param, top_via};
use cpmcc::sip::{Target, Timers, TransactionLayer, TransportKind, TxError, TxEvent, response_to};
use rsip::headers::UntypedHeader;

fn peer() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn target(kind: TransportKind) -> Target {
    Target {
        transport: kind,
        addr: peer(),
    }
}

fn request(method: &str, branch: &str, cseq: u32, kind: TransportKind) -> rsip::Request {
    let text = format!(
        "{method} sip:bob@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/{kind} 127.0.0.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.invalid>;tag=atag\r\n\
To: <sip:bob@example.invalid>\r\n\
Call-ID: call-1@example.invalid\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@127.0.0.1:5060>\r\n\
Content-Length: 0\r\n\r\n",
        kind = kind.via_token()
    );
    match parse_message(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// Runs the clock from `t0` through every deadline up to `until`, returning
/// the times (seconds after t0) of transmissions and of Timeout events.
fn run_clock(
    layer: &mut TransactionLayer,
    t0: Instant,
    until: Duration,
) -> (Vec<f64>, Vec<f64>, Vec<TxEvent>) {
    let mut sent = Vec::new();
    let mut timeouts = Vec::new();
    let mut events = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > t0 + until {
            break;
        }
        layer.handle_timeout(at);
        while layer.poll_transmit().is_some() {
            sent.push(secs(at - t0));
        }
        while let Some(ev) = layer.poll_event() {
            if matches!(ev, TxEvent::Timeout { .. }) {
                timeouts.push(secs(at - t0));
            }
            events.push(ev);
        }
    }
    (sent, timeouts, events)
}

fn drain(layer: &mut TransactionLayer) -> Vec<(Target, rsip::SipMessage)> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

fn events(layer: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

fn as_response(m: &rsip::SipMessage) -> &rsip::Response {
    match m {
        rsip::SipMessage::Response(r) => r,
        _ => panic!("expected a response, got {m}"),
    }
}

fn as_request(m: &rsip::SipMessage) -> &rsip::Request {
    match m {
        rsip::SipMessage::Request(r) => r,
        _ => panic!("expected a request, got {m}"),
    }
}

// ---------------------------------------------------------------- client ---

#[test]
fn invite_client_udp_timer_a_doubles_and_timer_b_times_out() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let key = l
        .send_request(
            request("INVITE", "z9hG4bKa", 1, TransportKind::Udp),
            target(TransportKind::Udp),
            t0,
        )
        .unwrap();
    assert_eq!(key.role, Role::Client);
    assert_eq!(drain(&mut l).len(), 1, "initial send");
    let (sent, timeouts, evs) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert_eq!(sent, vec![0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!(timeouts, vec![32.0]);
    assert!(matches!(&evs[..], [TxEvent::Timeout { key: k }] if *k == key));
    assert!(l.is_empty(), "terminated after Timer B");
}

#[test]
fn non_invite_client_udp_timer_e_caps_at_t2_and_timer_f_times_out() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    l.send_request(
        request("BYE", "z9hG4bKb", 2, TransportKind::Udp),
        target(TransportKind::Udp),
        t0,
    )
    .unwrap();
    drain(&mut l);
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert_eq!(
        sent,
        vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(timeouts, vec![32.0]);
    assert!(l.is_empty());
}

#[test]
fn tcp_clients_never_retransmit_but_still_time_out() {
    for method in ["INVITE", "MESSAGE"] {
        let mut l = TransactionLayer::new(Timers::default());
        let t0 = Instant::now();
        l.send_request(
            request(method, "z9hG4bKc", 1, TransportKind::Tcp),
            target(TransportKind::Tcp),
            t0,
        )
        .unwrap();
        assert_eq!(drain(&mut l).len(), 1);
        let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
        assert!(sent.is_empty(), "{method} retransmitted over TCP: {sent:?}");
        assert_eq!(timeouts, vec![32.0], "{method}");
    }
}

#[test]
fn timers_scale_with_t1() {
    let timers = Timers {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    };
    let mut l = TransactionLayer::new(timers);
    let t0 = Instant::now();
    l.send_request(
        request("OPTIONS", "z9hG4bKd", 1, TransportKind::Udp),
        target(TransportKind::Udp),
        t0,
    )
    .unwrap();
    drain(&mut l);
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert_eq!(sent[..5], [0.1, 0.3, 0.7, 1.1, 1.5]);
    assert_eq!(timeouts, vec![6.4]);
}

#[test]
fn provisional_stops_timer_a_and_non_invite_falls_back_to_t2() {
    // INVITE: 180 stops A and B.
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKe", 1, TransportKind::Udp);
    let key = l
        .send_request(inv.clone(), target(TransportKind::Udp), t0)
        .unwrap();
    drain(&mut l);
    l.handle_incoming(
        response_to(&inv, 180.into(), Some("btag")).into(),
        target(TransportKind::Udp),
        t0 + Duration::from_millis(100),
    );
    assert!(
        matches!(&events(&mut l)[..], [TxEvent::Response { key: k, retransmission: false, .. }] if *k == key)
    );
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(100));
    assert!(
        sent.is_empty() && timeouts.is_empty(),
        "{sent:?} {timeouts:?}"
    );

    // non-INVITE: after a 1xx, E fires every T2.
    let mut l = TransactionLayer::new(Timers::default());
    let req = request("MESSAGE", "z9hG4bKf", 1, TransportKind::Udp);
    l.send_request(req.clone(), target(TransportKind::Udp), t0)
        .unwrap();
    drain(&mut l);
    l.handle_incoming(
        response_to(&req, 100.into(), None).into(),
        target(TransportKind::Udp),
        t0 + Duration::from_millis(100),
    );
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert_eq!(sent, vec![0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]);
    assert_eq!(timeouts, vec![32.0]);
}

#[test]
fn invite_client_acks_a_non_2xx_final_and_absorbs_its_retransmissions() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKg", 7, TransportKind::Udp);
    let key = l
        .send_request(inv.clone(), target(TransportKind::Udp), t0)
        .unwrap();
    drain(&mut l);
    let busy = response_to(&inv, 486.into(), Some("btag"));
    l.handle_incoming(
        busy.clone().into(),
        target(TransportKind::Udp),
        t0 + Duration::from_millis(200),
    );
    let out = drain(&mut l);
    assert_eq!(out.len(), 1);
    let ack = as_request(&out[0].1);
    assert_eq!(ack.method, rsip::Method::Ack);
    assert_eq!(ack.uri, inv.uri);
    assert_eq!(
        top_via(&ack.headers).unwrap().branch.as_deref(),
        Some("z9hG4bKg")
    );
    assert_eq!(cseq_of(&ack.headers), Some((7, "ACK".into())));
    let to = ack
        .headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::To(t) => Some(t.value().to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(tag_param(&to).as_deref(), Some("btag"));
    assert!(matches!(&events(&mut l)[..], [TxEvent::Response { key: k, .. }] if *k == key));

    // Retransmitted 486: ACK again, not passed up.
    l.handle_incoming(
        busy.into(),
        target(TransportKind::Udp),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(drain(&mut l).len(), 1);
    assert!(events(&mut l).is_empty());

    // Timer D (32 s) ends it, no Timeout.
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(40));
    assert!(sent.is_empty() && timeouts.is_empty());
    assert!(l.is_empty());
}

#[test]
fn invite_client_passes_up_2xx_retransmissions_flagged() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKh", 1, TransportKind::Udp);
    l.send_request(inv.clone(), target(TransportKind::Udp), t0)
        .unwrap();
    drain(&mut l);
    let ok = response_to(&inv, 200.into(), Some("btag"));
    l.handle_incoming(ok.clone().into(), target(TransportKind::Udp), t0);
    l.handle_incoming(
        ok.into(),
        target(TransportKind::Udp),
        t0 + Duration::from_millis(500),
    );
    let evs = events(&mut l);
    let flags: Vec<bool> = evs
        .iter()
        .map(|e| match e {
            TxEvent::Response { retransmission, .. } => *retransmission,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(flags, vec![false, true]);
    assert!(
        drain(&mut l).is_empty(),
        "the TU, not the layer, ACKs a 2xx"
    );
}

#[test]
fn send_request_rejects_ack_and_missing_branch_and_duplicates() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let ack = request("ACK", "z9hG4bKi", 1, TransportKind::Udp);
    assert_eq!(
        l.send_request(ack, target(TransportKind::Udp), t0),
        Err(TxError::AckNeedsNoTransaction)
    );
    let mut no_branch = request("OPTIONS", "x", 1, TransportKind::Udp);
    no_branch
        .headers
        .retain(|h| !matches!(h, rsip::Header::Via(_)));
    no_branch
        .headers
        .push(rsip::Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP 127.0.0.1:5060",
        )));
    assert!(matches!(
        l.send_request(no_branch, target(TransportKind::Udp), t0),
        Err(TxError::MissingHeader { header: "Via", .. })
    ));
    let req = request("OPTIONS", "z9hG4bKj", 1, TransportKind::Udp);
    l.send_request(req.clone(), target(TransportKind::Udp), t0)
        .unwrap();
    assert!(matches!(
        l.send_request(req, target(TransportKind::Udp), t0),
        Err(TxError::Duplicate { .. })
    ));
}

// ---------------------------------------------------------------- server ---

fn receive(
    l: &mut TransactionLayer,
    req: &rsip::Request,
    kind: TransportKind,
    now: Instant,
) -> Vec<TxEvent> {
    l.handle_incoming(req.clone().into(), target(kind), now);
    events(l)
}

fn new_key(evs: &[TxEvent]) -> cpmcc::sip::TxKey {
    match evs {
        [TxEvent::Request { key: Some(k), .. }] => k.clone(),
        other => panic!("expected one new request, got {other:?}"),
    }
}

#[test]
fn invite_server_retransmits_2xx_until_the_ack() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs1", 1, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &inv, TransportKind::Udp, t0));
    assert_eq!(key.role, Role::Server);
    l.send_response(&key, response_to(&inv, 180.into(), Some("btag")), t0)
        .unwrap();
    // A retransmitted INVITE re-sends the 180 and is not passed up.
    assert!(receive(&mut l, &inv, TransportKind::Udp, t0).is_empty());
    let out = drain(&mut l);
    assert_eq!(out.len(), 2);
    assert_eq!(as_response(&out[1].1).status_code.code(), 180);

    l.send_response(&key, response_to(&inv, 200.into(), Some("btag")), t0)
        .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_millis(8000));
    assert_eq!(sent, vec![0.5, 1.5, 3.5, 7.5]);
    assert!(timeouts.is_empty());

    // The ACK for the 2xx has its own branch: matched by Call-ID + CSeq.
    let mut ack = request("ACK", "z9hG4bKack", 1, TransportKind::Udp);
    ack.headers.retain(|h| !matches!(h, rsip::Header::To(_)));
    ack.headers.push(rsip::Header::To(rsip::headers::To::new(
        "<sip:bob@example.invalid>;tag=btag",
    )));
    let evs = receive(
        &mut l,
        &ack,
        TransportKind::Udp,
        t0 + Duration::from_secs(8),
    );
    assert!(
        matches!(&evs[..], [TxEvent::Request { key: None, request, .. }] if request.method == rsip::Method::Ack)
    );
    // A retransmitted ACK is absorbed; no more 2xx; no Timeout.
    assert!(
        receive(
            &mut l,
            &ack,
            TransportKind::Udp,
            t0 + Duration::from_secs(9)
        )
        .is_empty()
    );
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert!(
        sent.is_empty() && timeouts.is_empty(),
        "{sent:?} {timeouts:?}"
    );
    assert!(l.is_empty());
}

#[test]
fn invite_server_2xx_without_ack_times_out_after_64_t1() {
    for kind in [TransportKind::Udp, TransportKind::Tcp] {
        let mut l = TransactionLayer::new(Timers::default());
        let t0 = Instant::now();
        let inv = request("INVITE", "z9hG4bKs2", 1, kind);
        let key = new_key(&receive(&mut l, &inv, kind, t0));
        l.send_response(&key, response_to(&inv, 200.into(), Some("btag")), t0)
            .unwrap();
        drain(&mut l);
        let (sent, timeouts, evs) = run_clock(&mut l, t0, Duration::from_secs(60));
        match kind {
            TransportKind::Udp => assert_eq!(
                sent,
                vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
            ),
            TransportKind::Tcp => assert!(sent.is_empty(), "{sent:?}"),
        }
        assert_eq!(timeouts, vec![32.0], "{kind}");
        assert!(matches!(&evs[..], [TxEvent::Timeout { key: k }] if *k == key));
    }
}

#[test]
fn invite_server_non_2xx_timer_g_then_ack_absorbed() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs3", 1, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &inv, TransportKind::Udp, t0));
    l.send_response(&key, response_to(&inv, 486.into(), Some("btag")), t0)
        .unwrap();
    drain(&mut l);
    let (sent, _, _) = run_clock(&mut l, t0, Duration::from_secs(2));
    assert_eq!(sent, vec![0.5, 1.5]);
    // ACK with the INVITE's branch: absorbed by the transaction.
    let ack = request("ACK", "z9hG4bKs3", 1, TransportKind::Udp);
    assert!(
        receive(
            &mut l,
            &ack,
            TransportKind::Udp,
            t0 + Duration::from_secs(2)
        )
        .is_empty()
    );
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert!(sent.is_empty() && timeouts.is_empty());
    assert!(l.is_empty(), "Timer I ended it");
}

#[test]
fn invite_server_non_2xx_without_ack_timer_h() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs4", 1, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &inv, TransportKind::Udp, t0));
    l.send_response(&key, response_to(&inv, 603.into(), Some("btag")), t0)
        .unwrap();
    drain(&mut l);
    let (sent, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(60));
    assert_eq!(sent.len(), 10);
    assert_eq!(timeouts, vec![32.0]);
    // Timer H ended the transaction: a late response has nowhere to go.
    assert!(matches!(
        l.send_response(&key, response_to(&inv, 200.into(), None), t0),
        Err(TxError::UnknownTransaction { .. })
    ));
}

#[test]
fn non_invite_server_absorbs_retransmissions_and_resends_the_last_response() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let bye = request("BYE", "z9hG4bKs5", 2, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &bye, TransportKind::Udp, t0));
    // Retransmission before any response: absorbed silently.
    assert!(
        receive(
            &mut l,
            &bye,
            TransportKind::Udp,
            t0 + Duration::from_millis(500)
        )
        .is_empty()
    );
    assert!(drain(&mut l).is_empty());
    l.send_response(
        &key,
        response_to(&bye, 200.into(), None),
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(drain(&mut l).len(), 1);
    assert!(matches!(
        l.send_response(&key, response_to(&bye, 200.into(), None), t0),
        Err(TxError::AlreadyFinal { status: 200, .. })
    ));
    // Retransmission after the final: the 200 again.
    assert!(
        receive(
            &mut l,
            &bye,
            TransportKind::Udp,
            t0 + Duration::from_millis(1500)
        )
        .is_empty()
    );
    let out = drain(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, target(TransportKind::Udp));
    assert_eq!(as_response(&out[0].1).status_code.code(), 200);
    // Timer J = 64*T1 over UDP, then the transaction is gone.
    let (_, timeouts, _) = run_clock(&mut l, t0, Duration::from_secs(40));
    assert!(timeouts.is_empty());
    assert!(l.is_empty());
}

#[test]
fn non_invite_server_over_tcp_ends_at_once() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let msg = request("MESSAGE", "z9hG4bKs6", 1, TransportKind::Tcp);
    let key = new_key(&receive(&mut l, &msg, TransportKind::Tcp, t0));
    l.send_response(&key, response_to(&msg, 200.into(), None), t0)
        .unwrap();
    assert_eq!(drain(&mut l)[0].0, target(TransportKind::Tcp));
    assert!(l.is_empty(), "Timer J is 0 on TCP");
}

#[test]
fn cancel_is_its_own_server_transaction() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs7", 1, TransportKind::Udp);
    let inv_key = new_key(&receive(&mut l, &inv, TransportKind::Udp, t0));
    let cancel = request("CANCEL", "z9hG4bKs7", 1, TransportKind::Udp);
    let cancel_key = new_key(&receive(&mut l, &cancel, TransportKind::Udp, t0));
    assert_ne!(cancel_key, inv_key);
    assert_eq!(l.cancel_target(&cancel_key), Some(inv_key.clone()));
    l.send_response(&cancel_key, response_to(&cancel, 200.into(), None), t0)
        .unwrap();
    l.send_response(&inv_key, response_to(&inv, 487.into(), Some("btag")), t0)
        .unwrap();
    let codes: Vec<u16> = drain(&mut l)
        .iter()
        .map(|(_, m)| as_response(m).status_code.code())
        .collect();
    assert_eq!(codes, vec![200, 487]);
}

#[test]
fn unmatched_and_malformed_messages_become_stray() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKnone", 1, TransportKind::Udp);
    l.handle_incoming(
        response_to(&inv, 200.into(), Some("x")).into(),
        target(TransportKind::Udp),
        t0,
    );
    let mut no_cseq = request("OPTIONS", "z9hG4bKs8", 1, TransportKind::Udp);
    no_cseq
        .headers
        .retain(|h| !matches!(h, rsip::Header::CSeq(_)));
    l.handle_incoming(no_cseq.into(), target(TransportKind::Udp), t0);
    let mut no_via = request("OPTIONS", "z9hG4bKs9", 1, TransportKind::Udp);
    no_via
        .headers
        .retain(|h| !matches!(h, rsip::Header::Via(_)));
    l.handle_incoming(no_via.into(), target(TransportKind::Udp), t0);
    let evs = events(&mut l);
    assert_eq!(evs.len(), 3);
    for e in &evs {
        assert!(matches!(e, TxEvent::Stray { .. }), "{e:?}");
    }
    assert!(l.is_empty());
}

#[test]
fn ack_for_an_ended_2xx_transaction_still_reaches_the_tu() {
    let mut l = TransactionLayer::new(Timers::default());
    let ack = request("ACK", "z9hG4bKlate", 1, TransportKind::Udp);
    let evs = receive(&mut l, &ack, TransportKind::Udp, Instant::now());
    assert!(matches!(&evs[..], [TxEvent::Request { key: None, .. }]));
}

#[test]
fn response_to_copies_the_transaction_headers() {
    let inv = request("INVITE", "z9hG4bKr", 3, TransportKind::Udp);
    let r = response_to(&inv, 180.into(), Some("btag"));
    assert_eq!(cseq_of(&r.headers), Some((3, "INVITE".into())));
    assert_eq!(
        top_via(&r.headers).unwrap().branch.as_deref(),
        Some("z9hG4bKr")
    );
    let to = r
        .headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::To(t) => Some(t.value().to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(to, "<sip:bob@example.invalid>;tag=btag");
    // An existing To tag is kept.
    let again = rsip::Request {
        headers: r.headers.clone(),
        ..inv.clone()
    };
    let r2 = response_to(&again, 200.into(), Some("other"));
    assert!(
        r2.headers
            .iter()
            .any(|h| matches!(h, rsip::Header::To(t) if t.value().ends_with("tag=btag")))
    );
}

// ------------------------------------------------------- many at once ---

/// What one transaction of the crowd is, and how it is started.
#[derive(Clone, Copy, Debug)]
enum Crowd {
    /// INVITE sent over UDP, never answered: Timer A doubling, Timer B.
    InviteClient,
    /// MESSAGE sent over UDP, never answered: Timer E capped at T2, Timer F.
    MessageClient,
    /// MESSAGE received over UDP and answered 200: Timer J, then gone.
    MessageServer,
    /// INVITE received over UDP, answered 486, never ACKed: Timer G, Timer H.
    InviteServer,
}

const CROWD: [Crowd; 4] = [
    Crowd::InviteClient,
    Crowd::MessageClient,
    Crowd::MessageServer,
    Crowd::InviteServer,
];

fn start(l: &mut TransactionLayer, kind: Crowd, i: usize, now: Instant) -> String {
    let branch = format!("z9hG4bKcrowd{i}");
    let cseq = i as u32 + 1;
    match kind {
        Crowd::InviteClient | Crowd::MessageClient => {
            let method = match kind {
                Crowd::InviteClient => "INVITE",
                _ => "MESSAGE",
            };
            let req = request(method, &branch, cseq, TransportKind::Udp);
            l.send_request(req, target(TransportKind::Udp), now)
                .unwrap();
        }
        Crowd::MessageServer | Crowd::InviteServer => {
            let (method, status) = match kind {
                Crowd::MessageServer => ("MESSAGE", 200),
                _ => ("INVITE", 486),
            };
            let req = request(method, &branch, cseq, TransportKind::Udp);
            let key = new_key(&receive(l, &req, TransportKind::Udp, now));
            l.send_response(&key, response_to(&req, status.into(), Some("t")), now)
                .unwrap();
        }
    }
    branch
}

/// What happened to each transaction (by branch), at what time after it was
/// started: "sent" for a transmission, "timeout" for a Timeout event.
type Schedules = std::collections::HashMap<String, Vec<(Duration, &'static str)>>;

fn record(
    l: &mut TransactionLayer,
    now: Instant,
    starts: &std::collections::HashMap<String, Instant>,
    out: &mut Schedules,
) {
    let started = |branch: &str| starts[branch];
    for (_, msg) in drain(l) {
        let headers = match &msg {
            rsip::SipMessage::Request(r) => &r.headers,
            rsip::SipMessage::Response(r) => &r.headers,
        };
        let branch = top_via(headers).unwrap().branch.unwrap();
        let at = now - started(&branch);
        out.entry(branch).or_default().push((at, "sent"));
    }
    for ev in events(l) {
        match ev {
            TxEvent::Timeout { key } => {
                let at = now - started(&key.branch);
                out.entry(key.branch).or_default().push((at, "timeout"));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// One transaction of `kind` alone: its schedule, and when it ended.
fn alone(kind: Crowd) -> (Vec<(Duration, &'static str)>, Duration) {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let branch = start(&mut l, kind, 0, t0);
    let starts = [(branch.clone(), t0)].into_iter().collect();
    let mut out = Schedules::new();
    record(&mut l, t0, &starts, &mut out);
    let mut end = Duration::ZERO;
    while let Some(at) = l.poll_timeout() {
        l.handle_timeout(at);
        record(&mut l, at, &starts, &mut out);
        end = at - t0;
    }
    assert!(l.is_empty(), "{kind:?} ends");
    (out.remove(&branch).unwrap(), end)
}

#[test]
fn ten_thousand_concurrent_transactions_each_fire_at_their_own_deadlines() {
    const N: usize = 10_000;
    // Started 3 ms apart: 30 s of starts, so that every kind's timers
    // overlap thousands of others', interleaved with the firing.
    let spacing = Duration::from_millis(3);
    let reference: Vec<_> = CROWD.iter().map(|&k| alone(k)).collect();
    // The RFC's numbers, for one kind at least: A at 0.5, 1.5, 3.5, 7.5,
    // 15.5, 31.5 s after the send; B at 32 s.
    let invite: Vec<f64> = reference[0].0.iter().map(|(d, _)| secs(*d)).collect();
    assert_eq!(invite, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]);
    assert_eq!(reference[0].0.last().unwrap().1, "timeout");
    assert_eq!(reference[2].1, Duration::from_secs(32), "Timer J");

    let t0 = Instant::now();
    let mut l = TransactionLayer::new(Timers::default());
    let mut starts = Vec::with_capacity(N);
    let mut started = std::collections::HashMap::with_capacity(N);
    let mut out = Schedules::new();
    // When each transaction must end, sorted: the live count at any time
    // is the started ones minus the ended ones.
    let mut ends: Vec<Instant> = (0..N)
        .map(|i| t0 + spacing * i as u32 + reference[i % 4].1)
        .collect();
    ends.sort();
    let mut last = t0;
    let mut peak = 0;
    loop {
        let next_start = (starts.len() < N).then(|| t0 + spacing * starts.len() as u32);
        let now = match (next_start, l.poll_timeout()) {
            (Some(s), Some(d)) if d < s => {
                l.handle_timeout(d);
                d
            }
            (Some(s), _) => {
                let i = starts.len();
                let branch = start(&mut l, CROWD[i % 4], i, s);
                started.insert(branch.clone(), s);
                starts.push(branch);
                s
            }
            (None, Some(d)) => {
                l.handle_timeout(d);
                d
            }
            (None, None) => break,
        };
        assert!(now >= last, "the clock never runs backwards");
        last = now;
        record(&mut l, now, &started, &mut out);
        let ended = ends.partition_point(|&e| e <= now);
        assert_eq!(l.len(), starts.len() - ended, "live at {:?}", now - t0);
        peak = peak.max(l.len());
    }
    assert!(peak > 5_000, "the crowd overlapped: {peak} live at most");
    assert!(l.is_empty());
    assert_eq!(out.len(), N);
    for (i, branch) in starts.iter().enumerate() {
        assert_eq!(
            out[branch],
            reference[i % 4].0,
            "transaction {i} ({:?}) fired as it does alone",
            CROWD[i % 4]
        );
    }
}

#[test]
fn a_late_clock_catches_up_every_due_timer_in_one_call() {
    // The driver may wake late: one handle_timeout then fires everything
    // due, each transaction's retransmissions all, none lost.
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    for i in 0..1_000 {
        start(&mut l, Crowd::InviteClient, i, t0);
    }
    assert_eq!(drain(&mut l).len(), 1_000);
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    // At 4 s: A at 0.5, 1.5 and 3.5 s for each, at once.
    l.handle_timeout(t0 + Duration::from_secs(4));
    assert_eq!(drain(&mut l).len(), 3_000);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(7_500)));
    // Past B: the rest of the retransmissions, then every one times out.
    l.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(drain(&mut l).len(), 3_000);
    let evs = events(&mut l);
    assert_eq!(evs.len(), 1_000);
    assert!(evs.iter().all(|e| matches!(e, TxEvent::Timeout { .. })));
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn a_request_for_nobody_can_be_answered_and_forgotten() {
    // RFC 3261 §8.2.7: a stateless answer holds nothing; a retransmission
    // comes up again as new, to be answered again.
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let msg = request("MESSAGE", "z9hG4bKnobody", 1, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &msg, TransportKind::Udp, t0));
    assert!(matches!(
        l.send_response_and_forget(&key, response_to(&msg, 100.into(), None), t0),
        Err(TxError::NotFinal { status: 100, .. })
    ));
    l.send_response_and_forget(&key, response_to(&msg, 404.into(), Some("t")), t0)
        .unwrap();
    let out = drain(&mut l);
    assert_eq!(out.len(), 1);
    assert_eq!(as_response(&out[0].1).status_code.code(), 404);
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
    let again = new_key(&receive(
        &mut l,
        &msg,
        TransportKind::Udp,
        t0 + Duration::from_millis(500),
    ));
    assert_eq!(again, key);
    // A real user's transaction answered the usual way keeps Timer J.
    let mine = request("MESSAGE", "z9hG4bKmine", 2, TransportKind::Udp);
    let k = new_key(&receive(&mut l, &mine, TransportKind::Udp, t0));
    l.send_response(&k, response_to(&mine, 200.into(), Some("t")), t0)
        .unwrap();
    drain(&mut l);
    assert!(
        receive(
            &mut l,
            &mine,
            TransportKind::Udp,
            t0 + Duration::from_secs(1)
        )
        .is_empty()
    );
    assert_eq!(drain(&mut l).len(), 1, "the 200 again");
}

#[test]
fn an_invite_the_tu_leaves_unanswered_for_200_ms_gets_100_trying_once() {
    for kind in [TransportKind::Udp, TransportKind::Tcp] {
        let mut l = TransactionLayer::new(Timers::default());
        let t0 = Instant::now();
        let inv = request("INVITE", "z9hG4bKtry", 1, kind);
        let key = new_key(&receive(&mut l, &inv, kind, t0));
        drain(&mut l);
        l.handle_timeout(t0 + Duration::from_millis(199));
        assert!(drain(&mut l).is_empty(), "{kind:?}: not before 200 ms");
        l.handle_timeout(t0 + Duration::from_millis(200));
        let out = drain(&mut l);
        assert_eq!(out.len(), 1, "{kind:?}");
        assert_eq!(as_response(&out[0].1).status_code.code(), 100);
        assert!(
            cpmcc::sip::message::to_tag(as_response(&out[0].1)).is_none(),
            "a 100 carries no To tag"
        );
        // Once only; a retransmitted INVITE gets it again.
        l.handle_timeout(t0 + Duration::from_secs(2));
        assert!(drain(&mut l).is_empty());
        assert!(receive(&mut l, &inv, kind, t0 + Duration::from_secs(2)).is_empty());
        let again = drain(&mut l);
        assert_eq!(again.len(), 1);
        assert_eq!(as_response(&again[0].1).status_code.code(), 100);
        // The TU's own answers still go out.
        l.send_response(&key, response_to(&inv, 180.into(), Some("btag")), t0)
            .unwrap();
        assert_eq!(as_response(&drain(&mut l)[0].1).status_code.code(), 180);
    }
}

#[test]
fn an_invite_the_tu_answers_in_time_gets_no_100_trying() {
    let mut l = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKtry2", 1, TransportKind::Udp);
    let key = new_key(&receive(&mut l, &inv, TransportKind::Udp, t0));
    l.send_response(
        &key,
        response_to(&inv, 180.into(), Some("btag")),
        t0 + Duration::from_millis(50),
    )
    .unwrap();
    drain(&mut l);
    l.handle_timeout(t0 + Duration::from_millis(300));
    assert!(drain(&mut l).is_empty());
}
