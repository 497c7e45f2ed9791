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

/// An OPTIONS whose From, To, Via and CSeq lines a case replaces.
fn with_lines(from: &str, to: &str, via: &str, cseq: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n{via}\r\n{from}\r\n{to}\r\nCall-ID: c1\r\n{cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

const VIA: &str = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1";
const FROM: &str = "From: <sip:x@127.0.0.1>;tag=a";
const TO: &str = "To: <sip:a@127.0.0.1>";
const CSEQ: &str = "CSeq: 1 OPTIONS";

fn request(bytes: &[u8]) -> rsip::Request {
    match parse_message(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
    {
        rsip::SipMessage::Request(r) => r,
        other => panic!("{other:?}"),
    }
}

/// RFC 3261 §7.3.1 / §25.1: LWS (folding included) around ';', '=', ':' and
/// ',', any case of header and parameter names, compact names, quoted
/// strings holding ';', ',', '<' and escaped quotes: the tag is read.
#[test]
fn tags_are_read_in_every_form_rfc_3261_allows() {
    use cpmcc::sip::message::{from_tag, to_tag};
    for (from, tag) in [
        ("From: <sip:x@h> ; tag = 1928", "1928"),
        ("From: <sip:x@h>\r\n ;tag=folded", "folded"),
        ("From: <sip:x@h>;\r\n\ttag=\r\n  deep", "deep"),
        ("FROM:<sip:x@h>;TAG=Upper", "Upper"),
        ("from  :  <sip:x@h>;Tag=t", "t"),
        ("f: \"Bob \\\"the, builder\\\"\" <sip:x@h>;tag=q", "q"),
        ("From: \"semi;tag=no\" <sip:x@h;tag=uri>;tag=yes", "yes"),
        ("From: sip:x@h;tag=addrspec", "addrspec"),
        ("From: sip:x@h ; tag = spaced", "spaced"),
        ("From: Bob <sip:x@h>;x-y=\"a;tag=no\";tag=after", "after"),
        ("F: <sip:x@h>;tag=compact", "compact"),
    ] {
        let r = request(&with_lines(from, TO, VIA, CSEQ));
        assert_eq!(from_tag(&r).as_deref(), Some(tag), "{from}");
        assert_eq!(to_tag(&r), None, "{from}");
    }
    for (to, tag) in [
        ("To: <sip:a@h> ;tag= 77", "77"),
        ("t:sip:a@h;TAG=c", "c"),
        ("To :\r\n <sip:a@h>\r\n ;\r\n tag\r\n =\r\n z", "z"),
    ] {
        let r = request(&with_lines(FROM, to, VIA, CSEQ));
        assert_eq!(to_tag(&r).as_deref(), Some(tag), "{to}");
        assert_eq!(from_tag(&r).as_deref(), Some("a"), "{to}");
    }
}

#[test]
fn via_parameters_survive_whitespace_case_folding_and_lists() {
    /// Via line, top sent-by, branch, received, rport, number of Vias.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Option<u16>>,
        usize,
    );
    let cases: [Case; 5] = [
        (
            "Via: SIP / 2.0 / UDP 10.0.0.1 : 5060 ; branch = z9hG4bKa ; received = 192.0.2.1 ; rport = 5061",
            "10.0.0.1:5060",
            "z9hG4bKa",
            Some("192.0.2.1"),
            Some(Some(5061)),
            1,
        ),
        (
            "v: SIP/2.0/UDP h1;BRANCH=z9hG4bKb;RPort, SIP/2.0/TCP h2;branch=z9hG4bKc",
            "h1",
            "z9hG4bKb",
            None,
            Some(None),
            2,
        ),
        (
            "VIA: SIP/2.0/UDP h1\r\n ;branch=z9hG4bKd ,\r\n\tSIP/2.0/TCP h2;branch=z9hG4bKe",
            "h1",
            "z9hG4bKd",
            None,
            None,
            2,
        ),
        (
            "Via: SIP/2.0/UDP h1;branch=z9hG4bKf\r\nv: SIP/2.0/UDP h2;branch=z9hG4bKg",
            "h1",
            "z9hG4bKf",
            None,
            None,
            2,
        ),
        (
            "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKh;received=2001:db8::2",
            "[2001:db8::1]:5060",
            "z9hG4bKh",
            Some("2001:db8::2"),
            None,
            1,
        ),
    ];
    for (via, sent_by, branch, received, rport, count) in cases {
        let r = request(&with_lines(FROM, TO, via, CSEQ));
        let top = top_via(&r.headers).unwrap_or_else(|| panic!("{via}"));
        assert_eq!(top.sent_by, sent_by, "{via}");
        assert_eq!(top.branch.as_deref(), Some(branch), "{via}");
        assert_eq!(top.received.as_deref(), received, "{via}");
        assert_eq!(top.rport, rport, "{via}");
        let n = r
            .headers
            .iter()
            .filter(|h| matches!(h, rsip::Header::Via(_)))
            .count();
        assert_eq!(n, count, "{via}");
    }
}

#[test]
fn cseq_call_id_and_content_length_in_liberal_forms() {
    for cseq in [
        "CSeq: 0001 OPTIONS",
        "cseq:1\r\n OPTIONS",
        "CSEQ :  1   OPTIONS",
    ] {
        let r = request(&with_lines(FROM, TO, VIA, cseq));
        assert_eq!(cseq_of(&r.headers), Some((1, "OPTIONS".into())), "{cseq}");
    }
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
    for (a, b) in [
        ("Call-ID: c1", "i:c1"),
        ("Call-ID: c1", "call-id :\r\n c1"),
        ("Content-Length: 4", "l:4"),
        ("Content-Length: 4", "CONTENT-LENGTH :\r\n 4"),
    ] {
        let msg = text.replace(a, b);
        let r = request(msg.as_bytes());
        assert_eq!(call_id_of(&r.headers).as_deref(), Some("c1"), "{b}");
        assert_eq!(r.body, b"body", "{b}");
    }
}

#[test]
fn contact_lists_split_outside_quotes_and_brackets() {
    let text = String::from_utf8(OPTIONS.to_vec()).unwrap().replace(
        "Call-ID: c1\r\n",
        "Call-ID: c1\r\nm: \"a \\\"b, c\\\"\" <sip:x@h;p=1,2> ; q = 0.5 , <sip:y@h>,sip:z@h;expires=60\r\n",
    );
    let r = request(text.as_bytes());
    let contacts: Vec<String> = r
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Contact(c) => Some(c.value().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        contacts,
        [
            "\"a \\\"b, c\\\"\" <sip:x@h;p=1,2>;q=0.5",
            "<sip:y@h>",
            "sip:z@h;expires=60"
        ]
    );
}

#[test]
fn a_stream_without_a_sip_start_line_is_refused() {
    for junk in [
        &b"hello world\r\n"[..],
        b"\x16\x03\x01\x00\xa5",
        b"GET / HTTP/1.1\r\n",
        b"INVITE sip:a HTTP/1.1\r\n",
        &[b'a'; 300][..],
    ] {
        let mut d = StreamDecoder::new();
        d.push(junk);
        assert!(
            matches!(d.next_message(), Err(FramingError::BadStartLine { .. })),
            "{junk:?}"
        );
    }
    // What can still become a start line waits for more bytes.
    for partial in [
        &b"INV"[..],
        b"SIP/2.0 200",
        b"OPTIONS sip:a SIP/2.0\r\nVia: x",
    ] {
        let mut d = StreamDecoder::new();
        d.push(partial);
        assert_eq!(d.next_message(), Ok(None), "{partial:?}");
    }
    // A response, an extension method and CRLF keep-alives are fine.
    for ok in [
        &b"\r\n\r\nSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"NEWMETHOD sip:a SIP/2.0\r\nl: 0\r\n\r\n",
    ] {
        let mut d = StreamDecoder::new();
        d.push(ok);
        assert!(d.next_message().unwrap().is_some(), "{ok:?}");
    }
}
