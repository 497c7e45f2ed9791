//! The TCP driver over real loopback sockets, and the frame splitter.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cpmcc::diameter::commands;
use cpmcc::diameter::transport::{FrameDecoder, FramingError, MAX_MESSAGE_LEN};
use cpmcc::diameter::{
    Avp, CloseReason, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, Role, code, spawn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn cfg(tw_ms: u64) -> PeerConfig {
    PeerConfig {
        watchdog_interval: Duration::from_millis(tw_ms),
        capabilities_timeout: Duration::from_secs(2),
    }
}

#[test]
fn frame_decoder_splits_and_joins() {
    let a = commands::dwr(&LocalIdentity::rf_client("a", "r", IP)).encode();
    let b = commands::cer(&LocalIdentity::rf_client("b", "r", IP)).encode();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    // Two in one read.
    let mut d = FrameDecoder::new();
    d.push(&all);
    assert_eq!(d.next_frame().unwrap(), Some(a.clone()));
    assert_eq!(d.next_frame().unwrap(), Some(b.clone()));
    assert_eq!(d.next_frame().unwrap(), None);
    // One byte at a time.
    let mut d = FrameDecoder::new();
    let mut got = vec![];
    for byte in &all {
        d.push(std::slice::from_ref(byte));
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, vec![a, b]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn frame_decoder_fatal_errors() {
    let mut d = FrameDecoder::new();
    d.push(&[2, 0, 0, 20]);
    assert!(matches!(
        d.next_frame(),
        Err(FramingError::BadVersion { version: 2, .. })
    ));
    let mut d = FrameDecoder::new();
    d.push(&[1, 0, 0, 19]);
    assert!(matches!(
        d.next_frame(),
        Err(FramingError::TooShort { length: 19, .. })
    ));
    let mut d = FrameDecoder::new();
    let big = (MAX_MESSAGE_LEN as u32 + 4).to_be_bytes();
    d.push(&[1, big[1], big[2], big[3]]);
    assert!(matches!(d.next_frame(), Err(FramingError::TooLong { .. })));
}

async fn pair(
    tw_ms: u64,
) -> (
    (
        cpmcc::diameter::PeerHandle,
        tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    ),
    (
        cpmcc::diameter::PeerHandle,
        tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    ),
) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback setup");
    let addr = l.local_addr().expect("loopback setup");
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let now = Instant::now();
    let server = spawn(
        s.expect("loopback setup").0,
        Peer::new(
            Role::Responder,
            LocalIdentity::charging_server("cdf", "r", IP),
            cfg(tw_ms),
            now,
        ),
    );
    let client = spawn(
        c.expect("loopback setup"),
        Peer::new(
            Role::Initiator,
            LocalIdentity::rf_client("sut", "r", IP),
            cfg(tw_ms),
            now,
        ),
    );
    (client, server)
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event in time")
        .expect("channel open")
}

#[tokio::test]
async fn open_request_answer_close() {
    let ((ch, mut cev), (sh, mut sev)) = pair(30_000).await;
    assert!(matches!(
        next_event(&mut cev).await,
        PeerEvent::Opened { .. }
    ));
    assert!(matches!(
        next_event(&mut sev).await,
        PeerEvent::Opened { .. }
    ));
    let server = tokio::spawn(async move {
        loop {
            match next_event(&mut sev).await {
                PeerEvent::Request(m) => {
                    sh.answer(m.answer().with(Avp::unsigned32(code::RESULT_CODE, 2001)));
                }
                PeerEvent::Closed { reason } => return reason,
                _ => {}
            }
        }
    });
    for i in 0..5u32 {
        let req = Message::request(271, 3).with(Avp::utf8(code::SESSION_ID, &format!("s{i}")));
        let ans = ch.request(req).await.unwrap();
        assert_eq!(ans.session_id(), Some(format!("s{i}").as_str()));
        assert_eq!(ans.result_code(), Some(2001));
    }
    ch.close().await;
    assert!(ch.is_closed());
    let reason = server.await.unwrap();
    assert!(
        matches!(reason, CloseReason::DisconnectedByPeer { .. }),
        "{reason:?}"
    );
    // Answers went to the oneshots, not to the event stream.
    while let Ok(ev) = cev.try_recv() {
        assert!(!matches!(ev, PeerEvent::Answer(_)), "{ev:?}");
    }
    // After close, requests fail cleanly.
    assert!(ch.request(Message::request(271, 3)).await.is_err());
}

#[tokio::test]
async fn watchdog_keeps_connection_then_detects_silence() {
    let ((ch, mut cev), (_sh, mut sev)) = pair(200).await;
    assert!(matches!(
        next_event(&mut cev).await,
        PeerEvent::Opened { .. }
    ));
    assert!(matches!(
        next_event(&mut sev).await,
        PeerEvent::Opened { .. }
    ));
    // Several Tw of silence: DWR/DWA keep it up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!ch.is_closed());
    assert!(
        cev.try_recv().is_err(),
        "no event expected on a healthy idle link"
    );

    // A raw peer that does CER/CEA and then never answers DWR.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut d = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            d.push(&buf[..n]);
            while let Ok(Some(f)) = d.next_frame() {
                let m = Message::decode(&f).unwrap();
                if m.header.command_code == 257 {
                    let cea =
                        commands::cea(&m, &LocalIdentity::charging_server("x", "r", IP), 2001);
                    s.write_all(&cea.encode()).await.unwrap();
                }
            }
        }
    });
    let started = Instant::now();
    let (_h, mut ev) = spawn(
        TcpStream::connect(addr).await.unwrap(),
        Peer::new(
            Role::Initiator,
            LocalIdentity::rf_client("sut", "r", IP),
            cfg(100),
            Instant::now(),
        ),
    );
    assert!(matches!(
        next_event(&mut ev).await,
        PeerEvent::Opened { .. }
    ));
    let closed = next_event(&mut ev).await;
    assert_eq!(
        closed,
        PeerEvent::Closed {
            reason: CloseReason::WatchdogTimeout
        }
    );
    assert!(started.elapsed() >= Duration::from_millis(190));
    silent.await.unwrap();
}

#[tokio::test]
async fn garbage_stream_ends_the_driver_without_panic() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (h, mut ev) = spawn(
        s.unwrap().0,
        Peer::new(
            Role::Responder,
            LocalIdentity::charging_server("cdf", "r", IP),
            cfg(30_000),
            Instant::now(),
        ),
    );
    let mut c = c.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    match next_event(&mut ev).await {
        PeerEvent::Closed {
            reason: CloseReason::Framing(text),
        } => {
            assert!(text.contains("version 71"), "{text}");
            assert!(
                text.contains(r#"GET / HTTP/1.1\r\n"#),
                "quotes the bytes: {text}"
            );
        }
        e => panic!("{e:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.is_closed());
}

#[tokio::test]
async fn undecodable_request_is_answered_over_the_wire() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (_h, _ev) = spawn(
        s.unwrap().0,
        Peer::new(
            Role::Responder,
            LocalIdentity::charging_server("cdf", "r", IP),
            cfg(30_000),
            Instant::now(),
        ),
    );
    let mut c = c.unwrap();
    let mut cer = commands::cer(&LocalIdentity::rf_client("sut", "r", IP));
    cer.header.hop_by_hop = 9;
    let mut bytes = cer.encode();
    // Corrupt the first AVP's length so it runs past the end.
    bytes[25] = 0x7f;
    c.write_all(&bytes).await.unwrap();
    let mut d = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let frame = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without an answer");
        d.push(&buf[..n]);
        if let Some(f) = d.next_frame().unwrap() {
            break f;
        }
    };
    let ans = Message::decode(&frame).unwrap();
    assert_eq!(ans.header.hop_by_hop, 9);
    assert_eq!(ans.result_code(), Some(5014));
    assert!(ans.avp(code::FAILED_AVP).is_some());
}
