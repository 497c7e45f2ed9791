//! Framing and parsing: SIP over streams (RFC 3261 §18.3), the liberal forms
//! of RFC 4475 that rsip alone rejects, and the encoder.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: clippy.toml allows unwrap in tests

use cpmcc::sip::framing::{
    FramingError, MAX_BODY_BYTES, ParseError, StreamDecoder, encode, parse_datagram, parse_message,
};
use cpmcc::sip::transaction::{call_id_of, cseq_of, top_via};
use rsip::headers::UntypedHeader;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/wire/sip/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const OPTIONS: &[u8] = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
From: <sip:x@127.0.0.1>;tag=a\r\n\
To: <sip:a@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 4\r\n\
\r\n\
body";

#[test]
fn whole_message_in_one_push() {
    let mut d = StreamDecoder::new();
    d.push(OPTIONS);
    assert_eq!(d.next_message().unwrap().as_deref(), Some(OPTIONS));
    assert_eq!(d.next_message().unwrap(), None);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn one_message_split_over_many_reads_byte_by_byte() {
    let mut d = StreamDecoder::new();
    for (i, b) in OPTIONS.iter().enumerate() {
        assert_eq!(d.next_message().unwrap(), None, "complete too early at {i}");
        d.push(&[*b]);
    }
    assert_eq!(d.next_message().unwrap().as_deref(), Some(OPTIONS));
}

#[test]
fn several_messages_and_keepalives_in_one_read() {
    let mut d = StreamDecoder::new();
    let mut bytes = b"\r\n\r\n".to_vec();
    bytes.extend_from_slice(OPTIONS);
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(OPTIONS);
    bytes.extend_from_slice(&OPTIONS[..10]);
    d.push(&bytes);
    assert_eq!(d.next_message().unwrap().as_deref(), Some(OPTIONS));
    assert_eq!(d.next_message().unwrap().as_deref(), Some(OPTIONS));
    assert_eq!(d.next_message().unwrap(), None);
    d.push(&OPTIONS[10..]);
    assert_eq!(d.next_message().unwrap().as_deref(), Some(OPTIONS));
}

#[test]
fn compact_and_lowercase_content_length_frame_the_body() {
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
    for header in ["l: 4", "content-LENGTH:4", "L :   4"] {
        let msg = text.replace("Content-Length: 4", header);
        let mut d = StreamDecoder::new();
        d.push(msg.as_bytes());
        d.push(b"OPTIONS");
        assert_eq!(
            d.next_message().unwrap().as_deref(),
            Some(msg.as_bytes()),
            "{header}"
        );
    }
}

#[test]
fn missing_content_length_on_a_stream_means_empty_body() {
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
    let msg = text.replace("Content-Length: 4\r\n", "");
    let mut d = StreamDecoder::new();
    d.push(msg.as_bytes());
    let first = d.next_message().unwrap().unwrap();
    assert!(first.ends_with(b"\r\n\r\n"));
    // "body" is left over, and is not a message yet.
    assert_eq!(d.next_message().unwrap(), None);
}

#[test]
fn oversized_headers_and_body_are_fatal() {
    let mut d = StreamDecoder::with_limits(100, 10);
    d.push(&[b'A'; 101]);
    assert_eq!(
        d.next_message(),
        Err(FramingError::HeadersTooLarge { limit: 100 })
    );

    let mut d = StreamDecoder::new();
    let big = format!("OPTIONS sip:a SIP/2.0\r\nl: {}\r\n\r\n", MAX_BODY_BYTES + 1);
    d.push(big.as_bytes());
    assert!(matches!(
        d.next_message(),
        Err(FramingError::BodyTooLarge { .. })
    ));

    let mut d = StreamDecoder::new();
    d.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: ten\r\n\r\n");
    assert_eq!(
        d.next_message(),
        Err(FramingError::BadContentLength {
            value: "ten".into()
        })
    );
}

#[test]
fn liberal_invite_parses_with_compact_names_folding_and_lists() {
    let raw = fixture("invite-liberal.sip");
    let mut d = StreamDecoder::new();
    d.push(&raw);
    let framed = d.next_message().unwrap().unwrap();
    let msg = parse_message(&framed).unwrap();
    let rsip::SipMessage::Request(req) = msg else {
        panic!("not a request")
    };
    assert_eq!(req.method, rsip::Method::Invite);
    let via = top_via(&req.headers).unwrap();
    assert_eq!(via.branch.as_deref(), Some("z9hG4bKnashds7"));
    let vias = req
        .headers
        .iter()
        .filter(|h| matches!(h, rsip::Header::Via(_)))
        .count();
    assert_eq!(vias, 2, "a comma-separated Via becomes two headers");
    assert_eq!(cseq_of(&req.headers), Some((314159, "INVITE".into())));
    assert_eq!(
        call_id_of(&req.headers).as_deref(),
        Some("a84b4c76e66710@pc33.example.invalid")
    );
    let from = req
        .headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::From(f) => Some(f.value().to_string()),
            _ => None,
        })
        .unwrap();
    assert!(from.contains("\"Alice, A.\""), "{from}");
    let subject = req
        .headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::Subject(s) => Some(s.value().to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(subject, "folded subject line");
    assert_eq!(req.body, b"v=0\r\no=x y z\r\n");
}

#[test]
fn two_messages_on_a_stream_fixture() {
    let raw = fixture("two-on-a-stream.sip");
    let mut d = StreamDecoder::new();
    d.push(&raw);
    let a = parse_message(&d.next_message().unwrap().unwrap()).unwrap();
    let b = parse_message(&d.next_message().unwrap().unwrap()).unwrap();
    assert!(a.is_request());
    let rsip::SipMessage::Response(b) = b else {
        panic!("second is not a response")
    };
    assert_eq!(b.status_code.code(), 200);
    assert_eq!(b.body, b"hello");
    assert_eq!(d.next_message().unwrap(), None);
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let msg = parse_datagram(&fixture("bye-bare-lf.sip")).unwrap();
    let rsip::SipMessage::Request(req) = msg else {
        panic!("not a request")
    };
    assert_eq!(req.method, rsip::Method::Bye);
    assert_eq!(cseq_of(&req.headers), Some((2, "BYE".into())));
}

#[test]
fn datagram_content_length_truncates_or_rejects() {
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
    let shorter = text.replace("Content-Length: 4", "Content-Length: 2");
    assert_eq!(parse_datagram(shorter.as_bytes()).unwrap().body(), b"bo");
    let longer = text.replace("Content-Length: 4", "Content-Length: 9");
    assert_eq!(
        parse_datagram(longer.as_bytes()),
        Err(ParseError::TruncatedBody {
            declared: 9,
            available: 4
        })
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"hello",
        b"\x00\xff\xfe\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"SIP/2.0 abc\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nno colon here\r\n\r\n",
    ] {
        assert!(parse_datagram(junk).is_err(), "{junk:?}");
        assert!(parse_message(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn encode_fixes_content_length_and_round_trips() {
    let mut msg = parse_message(OPTIONS).unwrap();
    *msg.body_mut() = b"\xff\x00binary".to_vec();
    let bytes = encode(&msg);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Content-Length: 8\r\n"), "{text}");
    assert_eq!(text.matches("Content-Length").count(), 1);
    assert!(bytes.ends_with(b"\xff\x00binary"));
    let back = parse_message(&bytes).unwrap();
    assert_eq!(back.body(), b"\xff\x00binary");
}

#[test]
fn encode_writes_standard_reason_phrases() {
    let req = match parse_message(OPTIONS).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    };
    let resp = cpmcc::sip::response_to(&req, 486.into(), Some("t"));
    let text = String::from_utf8(encode(&resp.into())).unwrap();
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
    assert!(text.contains("To: <sip:a@127.0.0.1>;tag=t\r\n"), "{text}");
}

/// Cheap mutation fuzzing: no input may panic the parser or the decoder.
#[test]
fn mutated_messages_never_panic() {
    use rand::{Rng, SeedableRng};
    let seeds = [
        fixture("invite-liberal.sip"),
        fixture("two-on-a-stream.sip"),
        OPTIONS.to_vec(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(4475);
    let mut layer = cpmcc::sip::TransactionLayer::new(cpmcc::sip::Timers::default());
    let now = std::time::Instant::now();
    let src = cpmcc::sip::Target::udp("127.0.0.1:5060".parse().unwrap());
    let alphabet = b"\r\n :;,<>\"@=/\\[]0123456789zZ\x00\xff";
    for i in 0..20_000 {
        let mut m = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..m.len().max(1));
            match rng.random_range(0..3) {
                0 if !m.is_empty() => {
                    m.remove(at.min(m.len() - 1));
                }
                1 => m.insert(
                    at.min(m.len()),
                    alphabet[rng.random_range(0..alphabet.len())],
                ),
                _ => m.truncate(at),
            }
        }
        if let Ok(msg) = parse_datagram(&m) {
            layer.handle_incoming(msg, src, now);
        }
        let _ = parse_message(&m);
        while layer.poll_event().is_some() {}
        let mut d = StreamDecoder::new();
        d.push(&m);
        while let Ok(Some(msg)) = d.next_message() {
            let _ = parse_message(&msg);
        }
    }
}
