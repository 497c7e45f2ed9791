//! Two endpoints on loopback, over UDP and over TCP: a whole call, a BYE
//! whose 200 is withheld (retransmissions absorbed), garbage on the wire.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: clippy.toml allows unwrap in tests

use std::net::SocketAddr;
use std::time::Duration;

use cpmcc::sip::transaction::cseq_of;
use cpmcc::sip::{
    Dialog, Endpoint, EndpointConfig, Target, Timers, TransportKind, TxEvent, new_branch,
    new_call_id, new_tag, response_to,
};
use rsip::headers::UntypedHeader;
use tokio::sync::mpsc::UnboundedReceiver;

type Events = UnboundedReceiver<TxEvent>;

async fn endpoint(timers: Timers) -> (Endpoint, Events) {
    Endpoint::bind(EndpointConfig {
        timers,
        ..EndpointConfig::loopback()
    })
    .await
    .unwrap()
}

async fn next(rx: &mut Events) -> TxEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no SIP event within 5 s")
        .expect("endpoint closed")
}

async fn nothing_within(rx: &mut Events, d: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn invite(from: SocketAddr, to: SocketAddr, kind: TransportKind) -> rsip::Request {
    let mut headers = rsip::Headers::default();
    headers.push(rsip::Header::Via(rsip::headers::Via::new(format!(
        "SIP/2.0/{} {from};branch={};rport",
        kind.via_token(),
        new_branch()
    ))));
    headers.push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
        "70",
    )));
    headers.push(rsip::Header::From(rsip::headers::From::new(format!(
        "<sip:alice@example.invalid>;tag={}",
        new_tag()
    ))));
    headers.push(rsip::Header::To(rsip::headers::To::new(
        "<sip:bob@example.invalid>",
    )));
    headers.push(rsip::Header::CallId(rsip::headers::CallId::new(
        new_call_id("127.0.0.1"),
    )));
    headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
    headers.push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
        "<sip:alice@{from}>"
    ))));
    headers.push(rsip::Header::ContentType(rsip::headers::ContentType::new(
        "application/sdp",
    )));
    rsip::Request {
        method: rsip::Method::Invite,
        uri: rsip::Uri::try_from(format!("sip:bob@{to}").as_str()).unwrap(),
        version: rsip::Version::V2,
        headers,
        body: b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n".to_vec(),
    }
}

struct Call {
    a_dialog: Dialog,
    b_dialog: Dialog,
}

/// INVITE → 180 → 200 → ACK between A (UAC) and B (UAS).
async fn establish(
    kind: TransportKind,
    a: &Endpoint,
    a_rx: &mut Events,
    b: &Endpoint,
    b_rx: &mut Events,
) -> Call {
    let a_addr = a.local_addr(kind).unwrap();
    let b_addr = b.local_addr(kind).unwrap();
    let inv = invite(a_addr, b_addr, kind);
    let a_key = a
        .send_request(
            inv.clone(),
            Target {
                transport: kind,
                addr: b_addr,
            },
        )
        .await
        .unwrap();

    let TxEvent::Request {
        key: Some(b_key),
        request,
        source,
    } = next(b_rx).await
    else {
        panic!("B: expected the INVITE")
    };
    assert_eq!(request.method, rsip::Method::Invite);
    assert_eq!(request.body, inv.body, "body intact");
    assert_eq!(source.transport, kind);
    let b_tag = new_tag();
    let b_contact = rsip::Uri::try_from(format!("sip:bob@{b_addr}").as_str()).unwrap();
    let b_dialog = Dialog::uas(&request, &b_tag, b_contact.clone()).unwrap();
    b.send_response(&b_key, response_to(&request, 180.into(), Some(&b_tag)))
        .await
        .unwrap();
    let mut ok = response_to(&request, 200.into(), Some(&b_tag));
    ok.headers
        .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
            "<{b_contact}>"
        ))));
    b.send_response(&b_key, ok).await.unwrap();

    let TxEvent::Response {
        key,
        response,
        retransmission: false,
        source,
    } = next(a_rx).await
    else {
        panic!("A: expected the 180")
    };
    assert_eq!((key, response.status_code.code()), (a_key.clone(), 180));
    // The source is reported: the harness warns about answers from elsewhere.
    assert_eq!(source.transport, kind);
    assert_eq!(source.addr.ip(), b_addr.ip());
    if kind == TransportKind::Udp {
        assert_eq!(source.addr, b_addr);
    }
    let TxEvent::Response {
        key,
        response,
        retransmission: false,
        ..
    } = next(a_rx).await
    else {
        panic!("A: expected the 200")
    };
    assert_eq!((key, response.status_code.code()), (a_key, 200));
    let a_dialog = Dialog::uac(&inv, &response).unwrap();
    assert_eq!(a_dialog.id().call_id, b_dialog.id().call_id);
    assert_eq!(a_dialog.id().local_tag, b_dialog.id().remote_tag);
    assert_eq!(a_dialog.id().remote_tag, b_dialog.id().local_tag);

    let ack = a_dialog.ack(1, a_addr, kind);
    let hop = a_dialog.next_hop().unwrap();
    assert_eq!(hop, b_addr);
    a.send_stateless(
        ack.into(),
        Target {
            transport: kind,
            addr: hop,
        },
    )
    .await
    .unwrap();
    let TxEvent::Request {
        key: None, request, ..
    } = next(b_rx).await
    else {
        panic!("B: expected the ACK")
    };
    assert_eq!(request.method, rsip::Method::Ack);
    Call { a_dialog, b_dialog }
}

async fn whole_call(kind: TransportKind) {
    let (a, mut a_rx) = endpoint(Timers::default()).await;
    let (b, mut b_rx) = endpoint(Timers::default()).await;
    let Call {
        mut a_dialog,
        mut b_dialog,
    } = establish(kind, &a, &mut a_rx, &b, &mut b_rx).await;

    let a_addr = a.local_addr(kind).unwrap();
    let bye = a_dialog.new_request(rsip::Method::Bye, a_addr, kind);
    let hop = a_dialog.next_hop().unwrap();
    let a_key = a
        .send_request(
            bye,
            Target {
                transport: kind,
                addr: hop,
            },
        )
        .await
        .unwrap();
    let TxEvent::Request {
        key: Some(b_key),
        request,
        ..
    } = next(&mut b_rx).await
    else {
        panic!("B: expected the BYE")
    };
    assert_eq!(request.method, rsip::Method::Bye);
    b_dialog.handle_request(&request).unwrap();
    b.send_response(&b_key, response_to(&request, 200.into(), None))
        .await
        .unwrap();
    let TxEvent::Response { key, response, .. } = next(&mut a_rx).await else {
        panic!("A: expected the 200 to BYE")
    };
    assert_eq!(key, a_key);
    assert_eq!(response.status_code.code(), 200);
    assert_eq!(cseq_of(&response.headers), Some((2, "BYE".into())));

    // Nothing else: the 2xx to INVITE was ACKed, so B's layer stops
    // retransmitting it and A sees no retransmission.
    nothing_within(&mut a_rx, Duration::from_millis(700)).await;
    nothing_within(&mut b_rx, Duration::from_millis(10)).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn whole_call_over_udp() {
    whole_call(TransportKind::Udp).await;
}

#[tokio::test]
async fn whole_call_over_tcp() {
    whole_call(TransportKind::Tcp).await;
}

/// A UDP relay between A and B that counts the requests A sends through it.
async fn relay(a: SocketAddr, b: SocketAddr) -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut requests = 0;
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let to = if from == a { b } else { a };
            if from == a && !buf[..n].starts_with(b"SIP/2.0") {
                requests += 1;
                let _ = tx.send(requests);
            }
            let _ = sock.send_to(&buf[..n], to).await;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn withheld_bye_response_retransmissions_are_absorbed() {
    let kind = TransportKind::Udp;
    let fast = Timers {
        t1: Duration::from_millis(200),
        ..Timers::default()
    };
    let (a, mut a_rx) = endpoint(fast).await;
    let (b, mut b_rx) = endpoint(Timers::default()).await;
    let Call { mut a_dialog, .. } = establish(kind, &a, &mut a_rx, &b, &mut b_rx).await;

    let a_addr = a.local_addr(kind).unwrap();
    let (relay_addr, counter) = relay(a_addr, b.local_addr(kind).unwrap()).await;
    let bye = a_dialog.new_request(rsip::Method::Bye, a_addr, kind);
    a.send_request(bye, Target::udp(relay_addr)).await.unwrap();

    let TxEvent::Request {
        key: Some(b_key),
        request,
        ..
    } = next(&mut b_rx).await
    else {
        panic!("B: expected the BYE")
    };
    assert_eq!(request.method, rsip::Method::Bye);
    // Withhold the 200 for 1.2 s: A retransmits at 0.2, 0.6 and 1.0 s; B's
    // server transaction absorbs them, so its TU sees the BYE once.
    nothing_within(&mut b_rx, Duration::from_millis(1200)).await;
    let sent = *counter.borrow();
    assert!(sent >= 3, "A sent the BYE {sent} times within 1.2 s");
    b.send_response(&b_key, response_to(&request, 200.into(), None))
        .await
        .unwrap();
    let TxEvent::Response { response, .. } = next(&mut a_rx).await else {
        panic!("A: expected the 200 to BYE")
    };
    assert_eq!(response.status_code.code(), 200);
    // No more retransmissions after the final; B stays quiet.
    let after = *counter.borrow();
    nothing_within(&mut b_rx, Duration::from_millis(600)).await;
    assert_eq!(*counter.borrow(), after);
    nothing_within(&mut a_rx, Duration::from_millis(10)).await;
}

#[tokio::test]
async fn garbage_becomes_stray_events_and_the_endpoint_survives() {
    let (b, mut b_rx) = endpoint(Timers::default()).await;
    let udp = Target::udp(b.local_addr(TransportKind::Udp).unwrap());
    let tcp = Target::tcp(b.local_addr(TransportKind::Tcp).unwrap());
    let (a, _a_rx) = endpoint(Timers::default()).await;

    a.send_raw(b"\x00\x01 not SIP at all\r\n\r\n".to_vec(), udp)
        .await
        .unwrap();
    let TxEvent::Stray { reason, source } = next(&mut b_rx).await else {
        panic!("expected Stray")
    };
    assert_eq!(source.transport, TransportKind::Udp);
    assert!(reason.contains("UDP"), "{reason}");

    // A keep-alive datagram is not a Stray.
    a.send_raw(b"\r\n\r\n".to_vec(), udp).await.unwrap();
    // A framed but unparseable message on TCP: Stray, the connection lives.
    a.send_raw(b"OPTIONS sip:b SIP/2.0\r\nno colon\r\n\r\n".to_vec(), tcp)
        .await
        .unwrap();
    let TxEvent::Stray { source, .. } = next(&mut b_rx).await else {
        panic!("expected Stray")
    };
    assert_eq!(source.transport, TransportKind::Tcp);

    // A framing error (headers never end): Stray, connection closed.
    a.send_raw(vec![b'x'; 70 * 1024], tcp).await.unwrap();
    let TxEvent::Stray { reason, .. } = next(&mut b_rx).await else {
        panic!("expected Stray")
    };
    assert!(reason.contains("framing"), "{reason}");

    // Still serving: a real request gets through.
    let req = invite(
        a.local_addr(TransportKind::Udp).unwrap(),
        udp.addr,
        TransportKind::Udp,
    );
    a.send_request(req, udp).await.unwrap();
    loop {
        match next(&mut b_rx).await {
            TxEvent::Request { request, .. } => {
                assert_eq!(request.method, rsip::Method::Invite);
                break;
            }
            // The closed connection may be reported too.
            TxEvent::Stray { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_tcp_target_times_the_transaction_out() {
    let (a, mut a_rx) = endpoint(Timers::default()).await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let req = invite(
        a.local_addr(TransportKind::Tcp).unwrap(),
        closed,
        TransportKind::Tcp,
    );
    let key = a.send_request(req, Target::tcp(closed)).await.unwrap();
    let mut saw_timeout = false;
    for _ in 0..2 {
        match next(&mut a_rx).await {
            TxEvent::Timeout { key: k } => {
                assert_eq!(k, key);
                saw_timeout = true;
                break;
            }
            TxEvent::Stray { reason, .. } => assert!(reason.contains("connect"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_timeout);
}

/// A well-formed request for nobody, unique per `i`.
fn message_for_nobody(i: u64, from: SocketAddr) -> Vec<u8> {
    format!(
        "MESSAGE sip:nobody-{i}@test.invalid SIP/2.0\r\n\
Via: SIP/2.0/UDP {from};branch=z9hG4bKshed{i}\r\n\
From: <sip:mallory@evil.invalid>;tag=j{i}\r\n\
To: <sip:nobody@test.invalid>\r\n\
Call-ID: shed-{i}\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Counts what a flood turns into: requests passed up, datagrams shed (and
/// in how many reports, from which source).
#[derive(Debug, Default)]
struct Shed {
    requests: u64,
    shed: u64,
    reports: u64,
    sources: std::collections::BTreeSet<SocketAddr>,
}

impl Shed {
    fn count(&mut self, ev: TxEvent) {
        match ev {
            TxEvent::Request { .. } => self.requests += 1,
            TxEvent::Stray { reason, source } => {
                let n: u64 = reason
                    .strip_suffix(" datagrams dropped: receive queue full")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("stray {reason}"));
                assert!(n > 0, "{reason}");
                self.shed += n;
                self.reports += 1;
                self.sources.insert(source.addr);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaced_flood_is_shed_at_the_edge_counted_and_reported_once_a_second() {
    let (ep, mut rx) = endpoint(Timers::default()).await;
    let to = ep.local_addr(TransportKind::Udp).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    // Unpaced, from a plain thread: far faster than the endpoint reads.
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let from = sock.local_addr().unwrap();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000_000 {
                if sock.send_to(&message_for_nobody(sent, from), to).is_ok() {
                    sent += 1;
                }
            }
            (sent, from)
        })
    };
    let mut seen = Shed::default();
    // Until the first shed report.
    while seen.reports == 0 {
        seen.count(next(&mut rx).await);
    }
    // While the flood goes on, a request from a light sender (the SUT, say)
    // reaches its TU: places in the queue are kept for it. Resent every
    // 200 ms as UDP would be: the kernel may drop it before it is read.
    let probe_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let probe_from = probe_sock.local_addr().unwrap();
    let probe = rsip::SipMessage::from(invite(probe_from, to, TransportKind::Udp));
    let probe_bytes = probe.to_string().into_bytes();
    let mut probe_sends = 0;
    'probe: loop {
        assert!(probe_sends < 25, "the probe never got through the flood");
        probe_sock.send_to(&probe_bytes, to).await.unwrap();
        probe_sends += 1;
        let resend = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(ev) = tokio::time::timeout_at(resend, rx.recv()).await {
            match ev.expect("endpoint closed") {
                TxEvent::Request { source, .. } if source.addr == probe_from => break 'probe,
                ev => seen.count(ev),
            }
        }
    }
    assert!(!flooder.is_finished(), "the flood went on meanwhile");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, flood_from) = flooder.join().unwrap();
    // The backlog drains and the last count comes, then all is quiet.
    let quiet = Duration::from_millis(1_500);
    while let Ok(ev) = tokio::time::timeout(quiet, rx.recv()).await {
        seen.count(ev.expect("endpoint closed"));
    }
    let elapsed = (started.elapsed() - quiet).as_secs_f64();
    println!("sent {sent} in {elapsed:.1} s, probe sent {probe_sends} times: {seen:?}");
    assert_eq!(
        seen.sources,
        [flood_from].into(),
        "the counts name the flood's source, never the light sender"
    );
    // Shed at the edge and counted; the kernel may have dropped some more.
    assert!(seen.requests + seen.shed <= sent, "{seen:?}, {sent} sent");
    // One report a second at most, not one per drop.
    assert!(
        (seen.reports as f64) <= elapsed + 2.0,
        "{} reports in {elapsed:.1} s",
        seen.reports
    );
    assert!(seen.reports < seen.shed, "{seen:?}");
    ep.shutdown().await;
}
