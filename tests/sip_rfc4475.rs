//! RFC 4475 torture messages (fixtures/wire/rfc4475): every valid message of
//! §3.1.1 is read with its Call-ID, CSeq, tags, top Via and body intact;
//! every invalid one of §3.1.2 is refused with a typed error, or read and
//! its fault reported, as the RFC allows; requests the layer cannot serve are
//! answered (501 / 400) and reported. Sans-IO, except the last tests, which
//! put junk on real sockets.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: clippy.toml allows unwrap in tests

use std::time::{Duration, Instant};

use cpmcc::sip::framing::{
    FramingError, Leniency, ParseError, Reading, StreamDecoder, read_datagram, read_message,
};
use cpmcc::sip::transaction::{ViaInfo, call_id_of, cseq_of, tag_param, top_via};
use cpmcc::sip::{
    Endpoint, EndpointConfig, Target, Timers, TransactionLayer, TransportKind, TxEvent,
};
use rsip::headers::UntypedHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/fixtures/wire/rfc4475/{kind}/{name}.sip",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The SDP body most RFC 4475 messages carry, CRLF line ends.
fn sdp(origin: &str, conn: &str, timing: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=mhandley 29739 7272939 IN IP4 {origin}\r\ns=-\r\nc=IN IP4 {conn}\r\nt={timing}\r\n\
         m=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
    )
    .into_bytes()
}

/// What a test asserts of one message, whatever rsip made of it.
#[derive(Debug)]
struct Seen {
    /// Request method exactly as sent, or None for a response.
    method: Option<String>,
    status: Option<u16>,
    uri: Option<rsip::Uri>,
    headers: rsip::Headers,
    body: Vec<u8>,
    leniencies: Vec<Leniency>,
}

fn seen(reading: Reading, leniencies: Vec<Leniency>) -> Seen {
    match reading {
        Reading::Message(rsip::SipMessage::Request(r)) => Seen {
            method: Some(r.method.to_string()),
            status: None,
            uri: Some(r.uri),
            headers: r.headers,
            body: r.body,
            leniencies,
        },
        Reading::Message(rsip::SipMessage::Response(r)) => Seen {
            method: None,
            status: Some(r.status_code.code()),
            uri: None,
            headers: r.headers,
            body: r.body,
            leniencies,
        },
        Reading::Extension(e) => Seen {
            method: Some(e.method().to_string()),
            status: None,
            uri: Some(e.uri().clone()),
            headers: e.headers().clone(),
            body: e.body().to_vec(),
            leniencies,
        },
    }
}

fn read_udp(kind: &str, name: &str) -> Seen {
    let p = read_datagram(&fixture(kind, name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    seen(p.reading, p.leniencies)
}

/// The same bytes framed on a stream, then read: must agree with UDP.
fn read_tcp(kind: &str, name: &str) -> Seen {
    let mut d = StreamDecoder::new();
    d.push(&fixture(kind, name));
    let framed = d.next_message().unwrap().unwrap();
    let p = read_message(&framed).unwrap_or_else(|e| panic!("{name}: {e}"));
    seen(p.reading, p.leniencies)
}

fn value(headers: &rsip::Headers, pick: fn(&rsip::Header) -> Option<&str>) -> &str {
    headers.iter().find_map(pick).unwrap_or_default()
}

fn from_tag(s: &Seen) -> Option<String> {
    tag_param(value(&s.headers, |h| match h {
        rsip::Header::From(f) => Some(f.value()),
        _ => None,
    }))
}

fn to_tag(s: &Seen) -> Option<String> {
    tag_param(value(&s.headers, |h| match h {
        rsip::Header::To(t) => Some(t.value()),
        _ => None,
    }))
}

fn vias(s: &Seen) -> Vec<String> {
    s.headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Via(v) => Some(v.value().to_string()),
            _ => None,
        })
        .collect()
}

struct Expect<'a> {
    method: Option<&'a str>,
    status: Option<u16>,
    call_id: &'a str,
    cseq: (u32, &'a str),
    from_tag: Option<&'a str>,
    to_tag: Option<&'a str>,
    /// transport, sent-by, branch of the top Via.
    via: (&'a str, &'a str, Option<&'a str>),
    body: Vec<u8>,
}

fn check(name: &str, s: &Seen, e: &Expect) {
    assert_eq!(s.method.as_deref(), e.method, "{name}: method");
    assert_eq!(s.status, e.status, "{name}: status");
    assert_eq!(
        call_id_of(&s.headers).as_deref(),
        Some(e.call_id),
        "{name}: Call-ID"
    );
    assert_eq!(
        cseq_of(&s.headers),
        Some((e.cseq.0, e.cseq.1.to_string())),
        "{name}: CSeq"
    );
    assert_eq!(from_tag(s).as_deref(), e.from_tag, "{name}: From tag");
    assert_eq!(to_tag(s).as_deref(), e.to_tag, "{name}: To tag");
    let via: ViaInfo = top_via(&s.headers).unwrap_or_else(|| panic!("{name}: no top Via"));
    assert_eq!(
        (
            via.transport.as_str(),
            via.sent_by.as_str(),
            via.branch.as_deref()
        ),
        e.via,
        "{name}: top Via"
    );
    assert_eq!(s.body, e.body, "{name}: body");
    assert_eq!(
        s.leniencies,
        vec![],
        "{name}: a valid message needs no leniency"
    );
}

/// Every valid message, read from a datagram and from a stream alike.
fn valid(name: &str, e: Expect) -> Seen {
    let udp = read_udp("valid", name);
    check(name, &udp, &e);
    if name != "dblreq" {
        check(name, &read_tcp("valid", name), &e);
    }
    udp
}

// ------------------------------------------------------------ §3.1.1 valid

#[test]
fn wsinv_short_tortuous_invite() {
    let s = valid(
        "wsinv",
        Expect {
            method: Some("INVITE"),
            status: None,
            call_id: "wsinv.ndaksdj@192.0.2.1",
            cseq: (9, "INVITE"),
            from_tag: Some("98asjd8"),
            to_tag: Some("1918181833n"),
            via: ("UDP", "192.0.2.2", Some("390skdjuw")),
            body: sdp("192.0.2.3", "192.0.2.4", "0 0"),
        },
    );
    // v: with two comma-separated values after a long-form Via: three Vias.
    let v = vias(&s);
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[1], "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8");
    assert_eq!(v[2], "SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239");
    let contact = value(&s.headers, |h| match h {
        rsip::Header::Contact(c) => Some(c.value()),
        _ => None,
    });
    assert_eq!(
        contact,
        r#""Quoted string \"\"" <sip:jdrosen@example.com>;newparam=newvalue;secondparam;q=0.33"#
    );
    let from = value(&s.headers, |h| match h {
        rsip::Header::From(f) => Some(f.value()),
        _ => None,
    });
    assert!(
        from.starts_with(r#""J Rosenberg \\\"" <sip:jdrosen@example.com>"#),
        "{from}"
    );
    assert_eq!(
        cpmcc::sip::message::other_header(&s.headers, "UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(
        s.uri.unwrap().to_string(),
        "sip:vivekg@chair-dnrc.example.com;unknownparam"
    );
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let s = valid(
        "intmeth",
        Expect {
            method: Some("!interesting-Method0123456789_*+`.%indeed'~"),
            status: None,
            call_id: "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            cseq: (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
            from_tag: Some("_token~1'+`*%!-."),
            to_tag: None,
            via: ("TCP", "host1.example.com", Some("z9hG4bK-.!%66*_+`'~")),
            body: Vec::new(),
        },
    );
    let uri = s.uri.unwrap();
    assert_eq!(
        uri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.auth.unwrap().password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(uri.host_with_port.to_string(), "example.com");
    let to = value(&s.headers, |h| match h {
        rsip::Header::To(t) => Some(t.value()),
        _ => None,
    });
    assert!(
        to.starts_with("\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:"),
        "{to:?}"
    );
    assert_eq!(
        cpmcc::sip::framing::header_param(
            value(&s.headers, |h| match h {
                rsip::Header::From(f) => Some(f.value()),
                _ => None,
            }),
            "fromParam''~+*_!.-%"
        )
        .as_deref(),
        Some("\"работающий\"")
    );
    assert_eq!(
        cpmcc::sip::message::other_header(&s.headers, "extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn esc01_percent_escapes() {
    let s = valid(
        "esc01",
        Expect {
            method: Some("INVITE"),
            status: None,
            call_id: "esc01.239409asdfakjkn23onasd0-3234",
            cseq: (234234, "INVITE"),
            from_tag: Some("938"),
            to_tag: None,
            via: ("UDP", "host5.example.net", Some("z9hG4bKkdjuw")),
            body: sdp("192.0.2.1", "192.0.2.1", "0 0"),
        },
    );
    assert_eq!(s.uri.unwrap().user(), Some("sips%3Auser%40example.com"));
}

#[test]
fn escnull_escaped_nulls() {
    let s = valid(
        "escnull",
        Expect {
            method: Some("REGISTER"),
            status: None,
            call_id: "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
            cseq: (14398234, "REGISTER"),
            from_tag: Some("839923423"),
            to_tag: None,
            via: ("UDP", "host5.example.com", Some("z9hG4bKkdjuw")),
            body: Vec::new(),
        },
    );
    let contacts: Vec<_> = s
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
            "<sip:%00@host5.example.com>",
            "<sip:%00%00@host5.example.com>"
        ]
    );
}

#[test]
fn esc02_percent_is_not_an_escape_in_methods_and_header_names() {
    let s = valid(
        "esc02",
        Expect {
            method: Some("RE%47IST%45R"),
            status: None,
            call_id: "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
            cseq: (29344, "RE%47IST%45R"),
            from_tag: Some("f232jadfj23"),
            to_tag: None,
            via: ("TCP", "host.example.com", Some("z9hG4bK209%fzsnel234")),
            body: Vec::new(),
        },
    );
    let contacts = s
        .headers
        .iter()
        .filter(|h| matches!(h, rsip::Header::Contact(_)))
        .count();
    assert_eq!(contacts, 2, "C%6Fntact is not a Contact");
    assert_eq!(
        cpmcc::sip::message::other_header(&s.headers, "C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_lws_before_angle_bracket() {
    valid(
        "lwsdisp",
        Expect {
            method: Some("OPTIONS"),
            status: None,
            call_id: "lwsdisp.1234abcd@funky.example.com",
            cseq: (60, "OPTIONS"),
            from_tag: Some("323"),
            to_tag: None,
            via: ("UDP", "funky.example.com", Some("z9hG4bKkdjuw")),
            body: Vec::new(),
        },
    );
}

#[test]
fn longreq_long_values_and_34_vias() {
    let tag = "12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424";
    let s = valid(
        "longreq",
        Expect {
            method: Some("INVITE"),
            status: None,
            call_id: &format!("longreq.one{}longcallid", "really".repeat(20)),
            cseq: (3882340, "INVITE"),
            from_tag: Some(tag),
            to_tag: None,
            // The topmost of 34 Vias (written as Via, v, V, ViA, ... with
            // and without spaces before the colon) has no branch.
            via: ("TCP", "sip33.example.com", None),
            body: sdp("192.0.2.1", "192.0.2.1", "0 0"),
        },
    );
    let v = vias(&s);
    assert_eq!(v.len(), 34);
    for (i, via) in v.iter().take(33).enumerate() {
        assert_eq!(via, &format!("SIP/2.0/TCP sip{}.example.com", 33 - i));
    }
    let last = cpmcc::sip::transaction::parse_via(&v[33]).unwrap();
    assert_eq!(last.received.as_deref(), Some("192.0.2.5"));
    assert_eq!(
        last.branch,
        Some(format!("very{}branchvalue", "long".repeat(50)))
    );
}

#[test]
fn dblreq_extra_octets_in_a_datagram_are_ignored_but_a_stream_frames_them() {
    valid(
        "dblreq",
        Expect {
            method: Some("REGISTER"),
            status: None,
            call_id: "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
            cseq: (8, "REGISTER"),
            from_tag: Some("43251j3j324"),
            to_tag: None,
            via: ("UDP", "192.0.2.125", Some("z9hG4bKkdjuw23492")),
            body: Vec::new(),
        },
    );
    // On a stream the same octets are two messages: the INVITE is real there.
    let mut d = StreamDecoder::new();
    d.push(&fixture("valid", "dblreq"));
    let first = read_message(&d.next_message().unwrap().unwrap()).unwrap();
    let second = read_message(&d.next_message().unwrap().unwrap()).unwrap();
    let (a, b) = (seen(first.reading, vec![]), seen(second.reading, vec![]));
    assert_eq!(a.method.as_deref(), Some("REGISTER"));
    assert_eq!(b.method.as_deref(), Some("INVITE"));
    assert_eq!(
        call_id_of(&b.headers).as_deref(),
        Some("dblreq.0ha0isnda977644900765@192.0.2.15")
    );
    assert_eq!(b.body.len(), 150);
}

#[test]
fn semiuri_semicolon_in_the_user_part() {
    let s = valid(
        "semiuri",
        Expect {
            method: Some("OPTIONS"),
            status: None,
            call_id: "semiuri.0ha0isndaksdj",
            cseq: (8, "OPTIONS"),
            from_tag: Some("33242"),
            to_tag: None,
            via: ("UDP", "192.0.2.1", Some("z9hG4bKkdjuw")),
            body: Vec::new(),
        },
    );
    let uri = s.uri.unwrap();
    assert_eq!(uri.user(), Some("user;par=u%40example.net"));
    assert_eq!(uri.host_with_port.to_string(), "example.com");
    let accept = value(&s.headers, |h| match h {
        rsip::Header::Accept(a) => Some(a.value()),
        _ => None,
    });
    assert_eq!(
        accept,
        "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag"
    );
}

#[test]
fn transports_unknown_transport_types() {
    let s = valid(
        "transports",
        Expect {
            method: Some("OPTIONS"),
            status: None,
            call_id: "transports.kijh4akdnaqjkwendsasfdj",
            cseq: (60, "OPTIONS"),
            from_tag: Some("323"),
            to_tag: None,
            via: ("UDP", "t1.example.com", Some("z9hG4bKkdjuw")),
            body: Vec::new(),
        },
    );
    let transports: Vec<String> = vias(&s)
        .iter()
        .map(|v| cpmcc::sip::transaction::parse_via(v).unwrap().transport)
        .collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn mpart01_binary_multipart_body() {
    let raw = fixture("valid", "mpart01");
    let body = raw[raw.len() - 553..].to_vec();
    assert!(body.contains(&0), "the binary part holds NULs");
    assert!(body.starts_with(b"--7a9cbec02ceef655\r\nContent-Type: text/plain"));
    assert!(body.ends_with(b"\r\n--7a9cbec02ceef655--\r\n"));
    valid(
        "mpart01",
        Expect {
            method: Some("MESSAGE"),
            status: None,
            call_id: "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
            cseq: (1, "MESSAGE"),
            from_tag: Some("2fb0dcc9"),
            to_tag: None,
            via: (
                "UDP",
                "127.0.0.1:5070",
                Some("z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"),
            ),
            body,
        },
    );
}

#[test]
fn unreason_utf8_reason_phrase() {
    valid(
        "unreason",
        Expect {
            method: None,
            status: Some(200),
            call_id: "unreason.1234ksdfak3j2erwedfsASdf",
            cseq: (35, "INVITE"),
            from_tag: Some("11141343"),
            to_tag: Some("2229"),
            via: ("UDP", "192.0.2.198", Some("z9hG4bK1324923")),
            body: sdp("192.0.2.198", "192.0.2.198", "0 0"),
        },
    );
}

#[test]
fn noreason_empty_reason_phrase() {
    valid(
        "noreason",
        Expect {
            method: None,
            status: Some(100),
            call_id: "noreason.asndj203insdf99223ndf",
            cseq: (35, "INVITE"),
            from_tag: Some("39ansfi3"),
            to_tag: Some("902jndnke3"),
            via: ("UDP", "192.0.2.105", Some("z9hG4bK2398ndaoe")),
            body: Vec::new(),
        },
    );
}

// ---------------------------------------------------------- §3.1.2 invalid

fn refused(name: &str) -> ParseError {
    match read_datagram(&fixture("invalid", name)) {
        Ok(p) => panic!("{name} was read: {:?}", seen(p.reading, p.leniencies)),
        Err(e) => e,
    }
}

fn bad_header(name: &str, header: &str, value: &str) -> ParseError {
    let e = refused(name);
    match &e {
        ParseError::BadHeader {
            name: n, value: v, ..
        } => {
            assert_eq!((n.as_str(), v.as_str()), (header, value), "{name}: {e}");
        }
        other => panic!("{name}: expected BadHeader, got {other:?}"),
    }
    e
}

fn bad_start_line(name: &str, line: &str) -> &'static str {
    match refused(name) {
        ParseError::BadStartLine { line: l, reason } => {
            assert_eq!(l, line, "{name}");
            reason
        }
        other => panic!("{name}: expected BadStartLine, got {other:?}"),
    }
}

#[test]
fn badinv01_empty_via_and_contact_parameters_are_refused() {
    let e = bad_header("badinv01", "Via", "SIP/2.0/UDP 192.0.2.15;;");
    assert!(e.to_string().contains("empty parameter"), "{e}");
}

#[test]
fn clerr_content_length_past_the_datagram_is_refused_and_a_stream_waits() {
    assert_eq!(
        refused("clerr"),
        ParseError::TruncatedBody {
            declared: 9999,
            available: 154
        }
    );
    // On a stream the rest may still come (RFC 4475: wait, then close).
    let raw = fixture("invalid", "clerr");
    let mut d = StreamDecoder::new();
    d.push(&raw);
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.buffered(), raw.len());
}

#[test]
fn ncl_negative_content_length_is_refused_and_fatal_on_a_stream() {
    assert_eq!(
        refused("ncl"),
        ParseError::BadContentLength {
            value: "-999".into()
        }
    );
    let mut d = StreamDecoder::new();
    d.push(&fixture("invalid", "ncl"));
    assert_eq!(
        d.next_message(),
        Err(FramingError::BadContentLength {
            value: "-999".into()
        })
    );
}

#[test]
fn scalar02_and_scalarlg_overlarge_cseq_are_refused() {
    bad_header("scalar02", "CSeq", "36893488147419103232 REGISTER");
    bad_header("scalarlg", "CSeq", "9292394834772304023312 OPTIONS");
}

#[test]
fn quotbal_unterminated_quote_is_refused() {
    let e = bad_header("quotbal", "To", "\"Mr. J. User <sip:j.user@example.com>");
    assert!(e.to_string().contains("unterminated quoted string"), "{e}");
}

#[test]
fn ltgtruri_lwsruri_escruri_bad_request_uris_are_refused() {
    let r = bad_start_line("ltgtruri", "INVITE <sip:user@example.com> SIP/2.0");
    assert!(r.contains("<>"), "{r}");
    let r = bad_start_line("lwsruri", "INVITE sip:user@example.com; lr SIP/2.0");
    assert!(r.contains("Method SP Request-URI SP SIP-Version"), "{r}");
    let r = bad_start_line(
        "escruri",
        "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
    );
    assert!(r.contains("headers"), "{r}");
}

#[test]
fn lwsstart_and_trws_extra_start_line_spaces_are_read_and_reported() {
    for (name, line, call_id, cseq) in [
        (
            "lwsstart",
            "INVITE  sip:user@example.com  SIP/2.0",
            "lwsstart.dfknq234oi243099adsdfnawe3@example.com",
            (1893884, "INVITE"),
        ),
        (
            "trws",
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            "trws.oicu34958239neffasdhr2345r",
            (238923, "OPTIONS"),
        ),
    ] {
        let s = read_udp("invalid", name);
        assert_eq!(
            s.leniencies,
            vec![Leniency::StartLineWhitespace { line: line.into() }],
            "{name}"
        );
        assert_eq!(call_id_of(&s.headers).as_deref(), Some(call_id));
        assert_eq!(cseq_of(&s.headers), Some((cseq.0, cseq.1.to_string())));
        assert_eq!(s.method.as_deref(), Some(cseq.1));
        // Forwarded or answered, the extra spaces are gone.
        assert!(!s.uri.unwrap().to_string().contains(' '));
    }
}

#[test]
fn baddate_non_gmt_date_is_read_as_the_harness_never_judges_it() {
    let s = read_udp("invalid", "baddate");
    assert_eq!(s.leniencies, vec![]);
    assert_eq!(from_tag(&s).as_deref(), Some("2234923"));
    assert_eq!(
        value(&s.headers, |h| match h {
            rsip::Header::Date(d) => Some(d.value()),
            _ => None,
        }),
        "Fri, 01 Jan 2010 16:00:00 EST"
    );
}

#[test]
fn regbadct_contact_with_headers_outside_angle_brackets_is_refused() {
    bad_header(
        "regbadct",
        "Contact",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
    );
}

#[test]
fn badaspec_spaces_inside_angle_brackets_are_read_and_reported() {
    let s = read_udp("invalid", "badaspec");
    assert_eq!(
        s.leniencies,
        vec![Leniency::SpaceInAngleBrackets {
            header: "To".into(),
            value: "\"Watson, Thomas\" < sip:t.watson@example.org >".into()
        }]
    );
    let to = value(&s.headers, |h| match h {
        rsip::Header::To(t) => Some(t.value()),
        _ => None,
    });
    assert_eq!(to, "\"Watson, Thomas\" <sip:t.watson@example.org>");
    assert_eq!(from_tag(&s).as_deref(), Some("433423"));
}

#[test]
fn baddn_unquoted_display_names_are_read_and_reported() {
    let s = read_udp("invalid", "baddn");
    assert_eq!(
        s.leniencies,
        vec![
            Leniency::UnquotedDisplayName {
                header: "From".into(),
                value: "Bell, Alexander <sip:a.g.bell@example.com>;tag=43".into()
            },
            Leniency::UnquotedDisplayName {
                header: "To".into(),
                value: "Watson, Thomas <sip:t.watson@example.org>".into()
            },
        ]
    );
    assert_eq!(from_tag(&s).as_deref(), Some("43"));
    assert_eq!(to_tag(&s), None);
}

#[test]
fn badvers_unknown_protocol_version_is_refused() {
    assert_eq!(
        refused("badvers"),
        ParseError::UnsupportedVersion {
            version: "SIP/7.0".into()
        }
    );
}

#[test]
fn bigcode_overlarge_status_code_is_refused() {
    assert_eq!(
        refused("bigcode"),
        ParseError::BadStatusCode {
            code: "4294967301".into()
        }
    );
}

// ----------------------------------------- what the transaction layer does

fn source() -> Target {
    Target::udp("192.0.2.9:5060".parse().unwrap())
}

/// Feeds one fixture to a fresh layer; returns the response it sent and the
/// events it reported.
fn layer_answers(kind: &str, name: &str) -> (TransactionLayer, rsip::Response, Vec<TxEvent>) {
    let mut layer = TransactionLayer::new(Timers::default());
    let now = Instant::now();
    let parsed = read_datagram(&fixture(kind, name)).unwrap();
    match parsed.reading {
        Reading::Message(m) => layer.handle_incoming(m, source(), now),
        Reading::Extension(e) => layer.handle_extension(e, source(), now),
    }
    let (to, msg) = layer.poll_transmit().expect("an answer");
    assert_eq!(to, source());
    let rsip::SipMessage::Response(response) = msg else {
        panic!("{name}: sent a request")
    };
    assert!(layer.poll_transmit().is_none());
    let events = std::iter::from_fn(|| layer.poll_event()).collect();
    (layer, response, events)
}

#[test]
fn intmeth_is_answered_501_with_allow_and_reported_not_as_unreadable() {
    let (mut layer, response, events) = layer_answers("valid", "intmeth");
    assert_eq!(response.status_code.code(), 501);
    let seen = seen(Reading::Message(response.clone().into()), vec![]);
    assert_eq!(
        cseq_of(&seen.headers),
        Some((
            139122385,
            "!interesting-Method0123456789_*+`.%indeed'~".into()
        ))
    );
    assert_eq!(from_tag(&seen).as_deref(), Some("_token~1'+`*%!-."));
    assert!(to_tag(&seen).is_some(), "a UAS adds a To tag");
    assert_eq!(
        top_via(&seen.headers).unwrap().branch.as_deref(),
        Some("z9hG4bK-.!%66*_+`'~")
    );
    assert_eq!(
        value(&seen.headers, |h| match h {
            rsip::Header::Allow(a) => Some(a.value()),
            _ => None,
        }),
        cpmcc::sip::message::ALLOWED_METHODS
    );
    let [
        TxEvent::Rejected {
            status,
            reason,
            source: from,
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!((*status, *from), (501, source()));
    assert!(reason.contains("!interesting-Method0123456789"), "{reason}");

    // A retransmission gets the same 501 again and is not reported twice.
    let again = read_datagram(&fixture("valid", "intmeth")).unwrap();
    let Reading::Extension(e) = again.reading else {
        panic!("not an extension request")
    };
    layer.handle_extension(e, source(), Instant::now());
    let (_, resent) = layer.poll_transmit().expect("the 501 again");
    assert_eq!(resent, response.into());
    assert!(layer.poll_event().is_none());
}

#[test]
fn esc02_and_mismatch02_unknown_methods_are_answered_501() {
    for (kind, name, cseq) in [
        ("valid", "esc02", (29344, "RE%47IST%45R")),
        ("invalid", "mismatch02", (8, "INVITE")),
    ] {
        let (_, response, events) = layer_answers(kind, name);
        assert_eq!(response.status_code.code(), 501, "{name}");
        assert_eq!(
            cseq_of(&response.headers),
            Some((cseq.0, cseq.1.to_string())),
            "{name}"
        );
        assert!(
            matches!(&events[..], [TxEvent::Rejected { status: 501, .. }]),
            "{name}: {events:?}"
        );
    }
}

#[test]
fn mismatch01_cseq_method_mismatch_is_answered_400() {
    let (_, response, events) = layer_answers("invalid", "mismatch01");
    assert_eq!(response.status_code.code(), 400);
    assert_eq!(cseq_of(&response.headers), Some((8, "INVITE".into())));
    let [TxEvent::Rejected { status, reason, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(*status, 400);
    assert!(
        reason.contains("OPTIONS request with CSeq method INVITE"),
        "{reason}"
    );
}

// ------------------------------------------------------- on real sockets

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<TxEvent>) -> TxEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no SIP event within 5 s")
        .expect("endpoint closed")
}

/// Junk on TCP that cannot be framed is a Stray naming its source, and the
/// endpoint closes the connection (the peer reads end of stream).
#[tokio::test]
async fn junk_over_tcp_is_a_stray_with_its_source_and_the_connection_closes() {
    let (endpoint, mut events) = Endpoint::bind(EndpointConfig::loopback()).await.unwrap();
    let addr = endpoint.local_addr(TransportKind::Tcp).unwrap();
    let junk: [(&str, Vec<u8>, &str); 4] = [
        ("ncl", fixture("invalid", "ncl"), "Content-Length"),
        (
            "no start line",
            b"hello there\r\n\r\n".to_vec(),
            "start line",
        ),
        (
            "TLS on a SIP port",
            vec![0x16, 0x03, 0x01, 0x00, 0xa5],
            "start line",
        ),
        (
            "oversized headers",
            [&b"OPTIONS sip:a SIP/2.0\r\n"[..], &vec![b'X'; 70 * 1024]].concat(),
            "exceeds",
        ),
    ];
    for (what, bytes, says) in junk {
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = peer.local_addr().unwrap();
        // The endpoint may close before reading all of it: a failed write is fine.
        let _ = peer.write_all(&bytes).await;
        let TxEvent::Stray { reason, source } = next_event(&mut events).await else {
            panic!("{what}: expected a Stray")
        };
        assert_eq!(source, Target::tcp(me), "{what}");
        assert!(reason.contains(says), "{what}: {reason}");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut rest))
            .await
            .expect("the endpoint did not close the connection");
        // End of stream, or a reset for the bytes it never read.
        if let Ok(n) = read {
            assert_eq!(n, 0, "{what}: the endpoint answered junk");
        }
    }
    endpoint.shutdown().await;
}

/// intmeth over UDP, end to end: the peer gets a 501, the TU a Rejected.
#[tokio::test]
async fn intmeth_over_udp_gets_a_501_on_the_wire() {
    let (endpoint, mut events) = Endpoint::bind(EndpointConfig::loopback()).await.unwrap();
    let addr = endpoint.local_addr(TransportKind::Udp).unwrap();
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    peer.send_to(&fixture("valid", "intmeth"), addr)
        .await
        .unwrap();
    let TxEvent::Rejected { status, source, .. } = next_event(&mut events).await else {
        panic!("expected Rejected")
    };
    assert_eq!(
        (status, source),
        (501, Target::udp(peer.local_addr().unwrap()))
    );
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("no 501 on the wire")
        .unwrap();
    let answer = cpmcc::sip::framing::parse_datagram(&buf[..n]).unwrap();
    let rsip::SipMessage::Response(r) = answer else {
        panic!("not a response")
    };
    assert_eq!(r.status_code.code(), 501);
    assert!(buf[..n].starts_with(b"SIP/2.0 501 Not Implemented\r\n"));
    endpoint.shutdown().await;
}

/// Cheap mutation fuzzing seeded with every RFC 4475 message: no input may
/// panic the reader, the stream decoder or the transaction layer.
#[test]
fn mutated_torture_messages_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut seeds = Vec::new();
    for kind in ["valid", "invalid"] {
        let dir = format!(
            "{}/fixtures/wire/rfc4475/{kind}",
            env!("CARGO_MANIFEST_DIR")
        );
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sip") {
                seeds.push(std::fs::read(path).unwrap());
            }
        }
    }
    assert_eq!(seeds.len(), 32, "13 valid and 19 invalid messages");
    let mut rng = rand::rngs::StdRng::seed_from_u64(4475);
    let mut layer = TransactionLayer::new(Timers::default());
    let now = Instant::now();
    let alphabet = b"\r\n \t:;,<>\"@=/\\[]?%0123456789zZ\x00\x7f\xd0\xff";
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
        for parsed in [read_datagram(&m), read_message(&m)].into_iter().flatten() {
            match parsed.reading {
                Reading::Message(msg) => layer.handle_incoming(msg, source(), now),
                Reading::Extension(e) => layer.handle_extension(e, source(), now),
            }
        }
        while layer.poll_event().is_some() {}
        while layer.poll_transmit().is_some() {}
        let mut d = StreamDecoder::new();
        d.push(&m);
        while let Ok(Some(msg)) = d.next_message() {
            let _ = read_message(&msg);
        }
    }
}

/// The bug this reading fixes: a SUT that writes the tag behind whitespace
/// or a folded line (legal, wsinv) used to make every message to that user
/// a stray. Over real UDP, through the Agent: a response and an in-dialog
/// request so written both reach their user, and nothing is a stray.
#[tokio::test]
async fn tags_behind_whitespace_route_to_their_user_not_to_the_strays() {
    use cpmcc::sip::agent::Agent;
    let agent = Agent::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        TransportKind::Udp,
        "test.invalid",
    )
    .await
    .unwrap();
    let mut alice = agent.user("alice.ws1");
    let tag = alice.new_tag();
    let sut = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sut_addr = sut.local_addr().unwrap();
    let agent_addr = agent.local_addr();

    // Alice asks; the SUT answers with From: <...> ;\r\n tag = <tag>.
    let options = cpmcc::sip::message::parse_request(format!(
        "OPTIONS sip:sut@test.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {agent_addr};branch=z9hG4bKws1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice.ws1@test.invalid>;tag={tag}\r\n\
         To: <sip:sut@test.invalid>\r\n\
         Call-ID: ws1@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    ))
    .unwrap();
    alice
        .send_request(options, Target::udp(sut_addr))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sut.recv_from(&mut buf))
        .await
        .expect("no OPTIONS at the SUT")
        .unwrap();
    assert!(buf[..n].starts_with(b"OPTIONS "));
    let answer = format!(
        "SIP/2.0 200 OK\r\n\
         v: SIP/2.0/UDP {agent_addr} ; branch = z9hG4bKws1\r\n\
         FROM : <sip:alice.ws1@test.invalid> ;\r\n tag = {tag}\r\n\
         t: <sip:sut@test.invalid>;TAG=s1\r\n\
         i: ws1@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         l: 0\r\n\r\n"
    );
    sut.send_to(answer.as_bytes(), agent_addr).await.unwrap();
    let got = alice
        .next_event(
            |e| matches!(&e.event, TxEvent::Response { .. }),
            Duration::from_secs(5),
        )
        .await;
    assert!(got.is_some(), "the 200 reached alice: {:?}", agent.strays());

    // An in-dialog request from the SUT with the To tag behind a fold.
    let bye = format!(
        "BYE sip:alice.ws1@test.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {sut_addr};branch=z9hG4bKws2\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:sut@test.invalid>;tag=s1\r\n\
         To: <sip:alice.ws1@test.invalid>\r\n\t;  tag  =  {tag}\r\n\
         Call-ID: ws1@test\r\n\
         CSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sut.send_to(bye.as_bytes(), agent_addr).await.unwrap();
    let got = alice
        .next_event(
            |e| matches!(&e.event, TxEvent::Request { .. }),
            Duration::from_secs(5),
        )
        .await;
    assert!(got.is_some(), "the BYE reached alice: {:?}", agent.strays());
    assert_eq!(agent.strays(), Vec::<String>::new());
    agent.shutdown().await;
}
