//! RFC 3261 §12 dialogs: creation on both sides, CSeq, route sets.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: clippy.toml allows unwrap in tests

use cpmcc::sip::dialog::{DialogId, cancel_for, uri_socket_addr};
use cpmcc::sip::framing::parse_message;
use cpmcc::sip::transaction::{cseq_of, tag_param, top_via};
use cpmcc::sip::{
    Dialog, DialogError, TransportKind, new_branch, new_call_id, new_tag, response_to,
};
use rsip::headers::UntypedHeader;

fn invite(extra: &str) -> rsip::Request {
    let text = format!(
        "INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.invalid>;tag=atag\r\n\
To: <sip:bob@example.invalid>\r\n\
Call-ID: dlg-1@example.invalid\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5060>\r\n\
{extra}Content-Length: 0\r\n\r\n"
    );
    match parse_message(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn ok_from_bob(inv: &rsip::Request, extra: &[rsip::Header]) -> rsip::Response {
    let mut r = response_to(inv, 200.into(), Some("btag"));
    r.headers
        .push(rsip::Header::Contact(rsip::headers::Contact::new(
            "<sip:bob@127.0.0.1:5070;transport=udp>",
        )));
    for h in extra {
        r.headers.push(h.clone());
    }
    r
}

fn values(req: &rsip::Request, pick: fn(&rsip::Header) -> Option<String>) -> Vec<String> {
    req.headers.iter().filter_map(pick).collect()
}

fn routes(req: &rsip::Request) -> Vec<String> {
    values(req, |h| match h {
        rsip::Header::Route(r) => Some(r.value().to_string()),
        _ => None,
    })
}

#[test]
fn uac_dialog_from_invite_and_2xx() {
    let inv = invite("");
    let ok = ok_from_bob(
        &inv,
        &[rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(
            "<sip:10.0.0.2:5060;lr>, <sip:10.0.0.1:5062;lr>",
        ))],
    );
    let mut d = Dialog::uac(&inv, &ok).unwrap();
    assert_eq!(
        d.id(),
        &DialogId {
            call_id: "dlg-1@example.invalid".into(),
            local_tag: "atag".into(),
            remote_tag: "btag".into(),
        }
    );
    assert_eq!(DialogId::from_incoming_response(&ok).as_ref(), Some(d.id()));
    // Route set is the Record-Route reversed; the next hop is its first entry.
    assert_eq!(
        d.route_set,
        vec!["<sip:10.0.0.1:5062;lr>", "<sip:10.0.0.2:5060;lr>"]
    );
    assert_eq!(d.next_hop(), Some("10.0.0.1:5062".parse().unwrap()));

    let via: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let bye = d.new_request(rsip::Method::Bye, via, TransportKind::Tcp);
    assert_eq!(bye.method, rsip::Method::Bye);
    // rsip re-renders URI parameters (transport=UDP): equal by RFC 3261 §19.1.4.
    assert!(
        bye.uri
            .to_string()
            .eq_ignore_ascii_case("sip:bob@127.0.0.1:5070;transport=udp")
    );
    assert_eq!(cseq_of(&bye.headers), Some((11, "BYE".into())));
    assert_eq!(
        routes(&bye),
        vec!["<sip:10.0.0.1:5062;lr>", "<sip:10.0.0.2:5060;lr>"]
    );
    let v = top_via(&bye.headers).unwrap();
    assert_eq!(v.transport, "TCP");
    assert!(v.branch.unwrap().starts_with("z9hG4bK"));
    let from = values(&bye, |h| match h {
        rsip::Header::From(f) => Some(f.value().to_string()),
        _ => None,
    });
    let to = values(&bye, |h| match h {
        rsip::Header::To(t) => Some(t.value().to_string()),
        _ => None,
    });
    assert_eq!(tag_param(&from[0]).as_deref(), Some("atag"));
    assert_eq!(tag_param(&to[0]).as_deref(), Some("btag"));
    assert!(
        !bye.headers
            .iter()
            .any(|h| matches!(h, rsip::Header::Contact(_)))
    );

    let reinvite = d.new_request(rsip::Method::Invite, via, TransportKind::Udp);
    assert_eq!(cseq_of(&reinvite.headers), Some((12, "INVITE".into())));
    assert!(
        reinvite
            .headers
            .iter()
            .any(|h| matches!(h, rsip::Header::Contact(_)))
    );

    let ack = d.ack(10, via, TransportKind::Udp);
    assert_eq!(ack.method, rsip::Method::Ack);
    assert_eq!(cseq_of(&ack.headers), Some((10, "ACK".into())));
    assert_eq!(d.local_seq, 12, "ACK does not consume a CSeq");

    // A 2xx to the re-INVITE moves the remote target.
    let mut ok2 = response_to(&reinvite, 200.into(), None);
    ok2.headers
        .push(rsip::Header::Contact(rsip::headers::Contact::new(
            "<sip:bob@127.0.0.9:6000>",
        )));
    d.handle_response(&ok2);
    assert_eq!(d.remote_target.to_string(), "sip:bob@127.0.0.9:6000");
}

#[test]
fn uas_dialog_keeps_record_route_order_and_checks_cseq() {
    let inv =
        invite("Record-Route: <sip:10.0.0.1:5062;lr>\r\nRecord-Route: <sip:10.0.0.2:5060;lr>\r\n");
    let contact = rsip::Uri::try_from("sip:bob@127.0.0.1:5070").unwrap();
    let mut d = Dialog::uas(&inv, "btag", contact).unwrap();
    assert_eq!(d.id().local_tag, "btag");
    assert_eq!(d.id().remote_tag, "atag");
    assert_eq!(d.remote_seq, Some(10));
    assert_eq!(
        d.route_set,
        vec!["<sip:10.0.0.1:5062;lr>", "<sip:10.0.0.2:5060;lr>"]
    );
    assert_eq!(d.next_hop(), Some("10.0.0.1:5062".parse().unwrap()));

    // Our BYE: our own CSeq space, from a random start (never the peer's
    // numbers, which a proxy's shared Call-ID would confuse), From = our To
    // with tag.
    let first = d.local_seq;
    let bye = d.new_request(
        rsip::Method::Bye,
        "127.0.0.1:5070".parse().unwrap(),
        TransportKind::Udp,
    );
    assert_eq!(cseq_of(&bye.headers), Some((first + 1, "BYE".into())));
    assert!((1000..(1 << 31) - 1000).contains(&first), "{first}");
    assert_eq!(bye.uri.to_string(), "sip:alice@127.0.0.1:5060");

    // The peer's in-dialog requests.
    let mut peer_bye = invite("");
    peer_bye.method = rsip::Method::Bye;
    peer_bye
        .headers
        .retain(|h| !matches!(h, rsip::Header::To(_) | rsip::Header::CSeq(_)));
    peer_bye
        .headers
        .push(rsip::Header::To(rsip::headers::To::new(
            "<sip:bob@example.invalid>;tag=btag",
        )));
    peer_bye
        .headers
        .push(rsip::Header::CSeq(rsip::headers::CSeq::new("11 BYE")));
    assert_eq!(
        DialogId::from_incoming_request(&peer_bye).as_ref(),
        Some(d.id())
    );
    d.handle_request(&peer_bye).unwrap();
    assert_eq!(d.remote_seq, Some(11));
    assert!(matches!(
        d.handle_request(&peer_bye),
        Err(DialogError::CSeqNotIncreasing {
            got: 11,
            last: 11,
            ..
        })
    ));
    // ACK shares the INVITE's number.
    let mut ack = peer_bye.clone();
    ack.method = rsip::Method::Ack;
    ack.headers.retain(|h| !matches!(h, rsip::Header::CSeq(_)));
    ack.headers
        .push(rsip::Header::CSeq(rsip::headers::CSeq::new("10 ACK")));
    d.handle_request(&ack).unwrap();
    // Another dialog's request is refused.
    let mut other = peer_bye.clone();
    other
        .headers
        .retain(|h| !matches!(h, rsip::Header::CallId(_)));
    other
        .headers
        .push(rsip::Header::CallId(rsip::headers::CallId::new("zzz")));
    assert!(matches!(
        d.handle_request(&other),
        Err(DialogError::WrongDialog { .. })
    ));
}

#[test]
fn dialog_creation_errors_name_what_is_missing() {
    let inv = invite("");
    let mut no_tag = response_to(&inv, 200.into(), None);
    no_tag
        .headers
        .push(rsip::Header::Contact(rsip::headers::Contact::new(
            "<sip:b@127.0.0.1>",
        )));
    assert!(matches!(
        Dialog::uac(&inv, &no_tag),
        Err(DialogError::MissingTag { header: "To", .. })
    ));
    let no_contact = response_to(&inv, 200.into(), Some("t"));
    assert!(matches!(
        Dialog::uac(&inv, &no_contact),
        Err(DialogError::MissingHeader {
            header: "Contact",
            ..
        })
    ));
}

#[test]
fn strict_route_becomes_the_request_uri() {
    let inv = invite("");
    let ok = ok_from_bob(
        &inv,
        &[rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(
            "<sip:10.0.0.1:5062>",
        ))],
    );
    let mut d = Dialog::uac(&inv, &ok).unwrap();
    let bye = d.new_request(
        rsip::Method::Bye,
        "127.0.0.1:5060".parse().unwrap(),
        TransportKind::Udp,
    );
    assert_eq!(bye.uri.to_string(), "sip:10.0.0.1:5062");
    let r = routes(&bye);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].eq_ignore_ascii_case("<sip:bob@127.0.0.1:5070;transport=udp>"),
        "{r:?}"
    );
}

#[test]
fn cancel_reuses_the_invite_branch_and_cseq_number() {
    let inv = invite("");
    let c = cancel_for(&inv);
    assert_eq!(c.method, rsip::Method::Cancel);
    assert_eq!(c.uri, inv.uri);
    assert_eq!(
        top_via(&c.headers).unwrap().branch.as_deref(),
        Some("z9hG4bKinv")
    );
    assert_eq!(cseq_of(&c.headers), Some((10, "CANCEL".into())));
}

#[test]
fn identifiers_are_fresh_and_well_formed() {
    assert_ne!(new_tag(), new_tag());
    let b = new_branch();
    assert!(b.starts_with("z9hG4bK") && b.len() > 7 + 8);
    assert!(new_call_id("127.0.0.1").ends_with("@127.0.0.1"));
    assert_eq!(
        uri_socket_addr("sip:a@[::1]:5062;lr"),
        Some("[::1]:5062".parse().unwrap())
    );
    assert_eq!(
        uri_socket_addr("sip:127.0.0.1"),
        Some("127.0.0.1:5060".parse().unwrap())
    );
    assert_eq!(uri_socket_addr("sip:a@example.invalid"), None);
}

/// Through a record-routing proxy both parties share one Call-ID: the
/// callee's 2xx carries the Record-Route back, each side's requests follow
/// the route set to the proxy with the other's Contact as Request-URI, and
/// the two CSeq spaces never meet (an ACK is told apart by its numbers).
#[test]
fn both_ends_of_a_proxied_dialog_route_through_the_proxy() {
    let proxy = "<sip:cpm@127.0.0.1:5060;transport=udp;lr>";
    let inv = invite(&format!("Record-Route: {proxy}\r\n"));
    let bob_contact = rsip::Uri::try_from("sip:bob@127.0.0.1:5070;transport=udp").unwrap();
    let mut bob = Dialog::uas(&inv, "btag", bob_contact).unwrap();
    let mut ok = ok_from_bob(&inv, &[]);
    cpmcc::sip::dialog::copy_record_route(&inv, &mut ok);
    let rr: Vec<String> = ok
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::RecordRoute(r) => Some(r.value().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rr,
        vec![proxy.to_string()],
        "Record-Route copied into the 2xx"
    );
    let mut alice = Dialog::uac(&inv, &ok).unwrap();
    assert_eq!(alice.id().call_id, bob.id().call_id);
    assert_eq!(alice.route_set, vec![proxy.to_string()]);
    assert_eq!(bob.route_set, vec![proxy.to_string()]);
    let sut = Some("127.0.0.1:5060".parse().unwrap());
    assert_eq!(alice.next_hop(), sut, "alice's requests go to the proxy");
    assert_eq!(bob.next_hop(), sut, "bob's requests go to the proxy");

    let here = "127.0.0.1:5070".parse().unwrap();
    let reinvite = alice.new_request(rsip::Method::Invite, here, TransportKind::Udp);
    assert_eq!(
        reinvite.uri.to_string().to_ascii_lowercase(),
        "sip:bob@127.0.0.1:5070;transport=udp",
        "the Request-URI is the remote target"
    );
    assert_eq!(routes(&reinvite), vec![proxy.to_string()]);
    bob.handle_request(&reinvite).unwrap();
    let bye = bob.new_request(rsip::Method::Bye, here, TransportKind::Udp);
    assert_eq!(bye.uri.to_string(), "sip:alice@127.0.0.1:5060");
    assert_eq!(routes(&bye), vec![proxy.to_string()]);
    alice.handle_request(&bye).unwrap();
    let (a_seq, _) = cseq_of(&reinvite.headers).unwrap();
    let (b_seq, _) = cseq_of(&bye.headers).unwrap();
    assert_ne!(a_seq, b_seq, "the two CSeq spaces do not meet");
}

/// Through a proxy both parties' dialogs share the Call-ID, and a UA that
/// starts its CSeq at 1 sends a re-INVITE with the same CSeq number as the
/// initial INVITE the other party received. The ACK of the 2xx to that
/// re-INVITE must reach the re-INVITE's transaction (its dialog: Call-ID,
/// both tags, CSeq), not the initial INVITE's, already acknowledged one.
///
/// `TransactionLayer::incoming_ack` once fell back to the first INVITE
/// server transaction with the same Call-ID and CSeq, whatever the tags.
#[test]
fn the_ack_of_a_2xx_reaches_its_own_dialog_when_call_id_and_cseq_are_shared() {
    use cpmcc::sip::{Target, Timers, TransactionLayer, TxEvent};
    let now = std::time::Instant::now();
    let proxy = Target::udp("127.0.0.1:5060".parse().unwrap());
    let mut layer = TransactionLayer::new(Timers::default());
    let request = |method: &str, call: usize, from: &str, to: &str| {
        let text = format!(
            "{method} sip:x@127.0.0.1:5070 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch={}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}@test.invalid>;tag={from}\r\n\
             To: <sip:{to}@test.invalid>{}\r\n\
             Call-ID: shared-{call}@proxy\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n",
            new_branch(),
            if method == "INVITE" && from == "a" {
                String::new()
            } else {
                format!(";tag={to}")
            },
        );
        match parse_message(text.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    };
    let mut acked = 0;
    for call in 0..20 {
        // bob receives alice's INVITE, answers 200, gets its ACK.
        // alice receives bob's re-INVITE (CSeq 1 too), answers 200 …
        for (from, to) in [("a", "b"), ("b", "a")] {
            layer.handle_incoming(request("INVITE", call, from, to).into(), proxy, now);
            let Some(TxEvent::Request {
                key: Some(key),
                request: invite,
                ..
            }) = layer.poll_event()
            else {
                panic!("the INVITE reaches the TU")
            };
            layer
                .send_response(&key, response_to(&invite, 200.into(), Some(to)), now)
                .unwrap();
            // … and the ACK of each 2xx reaches the TU.
            layer.handle_incoming(request("ACK", call, from, to).into(), proxy, now);
            while let Some(e) = layer.poll_event() {
                if let TxEvent::Request { request, .. } = e
                    && request.method == rsip::Method::Ack
                {
                    acked += 1;
                }
            }
        }
    }
    assert_eq!(acked, 40, "every ACK reaches its own dialog");
}
