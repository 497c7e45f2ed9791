//! The peer state machine, two ends driven against each other on a virtual
//! clock (quinn's `Pair` idea): no sockets, no sleeping.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cpmcc::diameter::commands::{self, AppId};
use cpmcc::diameter::{
    Avp, CloseReason, Header, LocalIdentity, Message, Peer, PeerConfig, PeerEvent, PeerState, Role,
    app, code, command, result,
};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TW: Duration = Duration::from_secs(30);

fn config() -> PeerConfig {
    PeerConfig {
        watchdog_interval: TW,
        capabilities_timeout: Duration::from_secs(5),
    }
}

/// Two peers, a clock, and a wire that delivers instantly (or drops).
struct Pair {
    now: Instant,
    client: Peer,
    server: Peer,
    client_events: Vec<PeerEvent>,
    server_events: Vec<PeerEvent>,
    /// Everything that crossed the wire: (from_client, message).
    wire: Vec<(bool, Message)>,
    /// While true, the server's transmissions are lost.
    server_mute: bool,
}

impl Pair {
    fn new(client_id: LocalIdentity) -> Self {
        let now = Instant::now();
        let server_id = LocalIdentity::charging_server("cdf.test.invalid", "test.invalid", IP);
        Pair {
            now,
            client: Peer::new(Role::Initiator, client_id, config(), now),
            server: Peer::new(Role::Responder, server_id, config(), now),
            client_events: vec![],
            server_events: vec![],
            wire: vec![],
            server_mute: false,
        }
    }

    fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(m) = self.client.poll_transmit() {
                // Through the codec, as on a real wire.
                let m = Message::decode(&m.encode()).expect("own encoding decodes");
                self.wire.push((true, m.clone()));
                self.server.handle_message(m, self.now);
                moved = true;
            }
            while let Some(m) = self.server.poll_transmit() {
                let m = Message::decode(&m.encode()).expect("own encoding decodes");
                self.wire.push((false, m.clone()));
                if !self.server_mute {
                    self.client.handle_message(m, self.now);
                }
                moved = true;
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances the clock to the earliest timeout (at most `until`).
    fn advance(&mut self, until: Instant) -> bool {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
                self.drive();
                true
            }
            _ => {
                self.now = until;
                false
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.advance(until) {}
    }

    fn names(&self) -> Vec<String> {
        self.wire.iter().map(|(_, m)| m.command_name()).collect()
    }
}

fn rf_client() -> LocalIdentity {
    LocalIdentity::rf_client("sut.test.invalid", "test.invalid", IP)
}

#[test]
fn capabilities_exchange_opens_both_ends() {
    let mut p = Pair::new(rf_client());
    p.drive();
    assert_eq!(p.names(), ["CER", "CEA"]);
    assert_eq!(p.client.state(), PeerState::Open);
    assert_eq!(p.server.state(), PeerState::Open);
    let cea = &p.wire[1].1;
    assert_eq!(cea.result_code(), Some(result::SUCCESS));
    // The CEA advertises the 3GPP groups beside the bare ids.
    assert_eq!(
        cea.avps_with(code::VENDOR_SPECIFIC_APPLICATION_ID, None)
            .count(),
        2
    );
    assert!(
        cea.avps_with(code::SUPPORTED_VENDOR_ID, None)
            .any(|a| a.as_u32() == Ok(10415))
    );
    match &p.client_events[0] {
        PeerEvent::Opened { remote } => {
            assert_eq!(remote.origin_host, "cdf.test.invalid");
            assert!(
                remote
                    .vendor_specific_applications
                    .contains(&(10415, AppId::Acct(3)))
            );
        }
        e => panic!("{e:?}"),
    }
    assert!(
        matches!(&p.server_events[0], PeerEvent::Opened { remote } if remote.origin_host == "sut.test.invalid")
    );
}

#[test]
fn application_named_only_in_vendor_specific_group_is_accepted() {
    let mut id = rf_client();
    id.acct_application_ids.clear();
    let mut p = Pair::new(id);
    p.drive();
    assert_eq!(p.server.state(), PeerState::Open);
}

#[test]
fn no_common_application_is_answered_5010_and_closes() {
    let mut id = rf_client();
    id.acct_application_ids = vec![16_777_216];
    id.vendor_specific_applications.clear();
    let mut p = Pair::new(id);
    p.drive();
    assert_eq!(
        p.wire[1].1.result_code(),
        Some(result::NO_COMMON_APPLICATION)
    );
    assert_eq!(p.server.state(), PeerState::Closed);
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::NoCommonApplication
        }
    )));
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::CapabilitiesRejected { result_code: 5010 }
        }
    )));
}

#[test]
fn relay_matches_anything() {
    let mut id = rf_client();
    id.acct_application_ids = vec![app::RELAY];
    id.vendor_specific_applications.clear();
    let mut p = Pair::new(id);
    p.drive();
    assert_eq!(p.server.state(), PeerState::Open);
}

#[test]
fn request_and_answer_are_matched_by_hop_by_hop() {
    let mut p = Pair::new(rf_client());
    p.drive();
    let acr = Message::request(command::ACCOUNTING, app::ACCOUNTING_RF)
        .with(Avp::utf8(code::SESSION_ID, "s1").mandatory(true));
    let hbh = p.client.send_request(acr).unwrap();
    p.drive();
    let req = p
        .server_events
        .iter()
        .find_map(|e| match e {
            PeerEvent::Request(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(req.header.hop_by_hop, hbh);
    assert_ne!(req.header.end_to_end, 0);
    let ans = req.answer().with(Avp::unsigned32(code::RESULT_CODE, 2001));
    p.server.send_answer(ans).unwrap();
    p.drive();
    assert!(p.client_events.iter().any(|e| matches!(e, PeerEvent::Answer(m) if m.header.hop_by_hop == hbh && m.session_id() == Some("s1"))));
    // A second answer to the same id matches nothing.
    p.server.send_answer(req.answer()).unwrap();
    p.drive();
    assert!(matches!(
        p.client_events.last(),
        Some(PeerEvent::Warning(_))
    ));
}

#[test]
fn an_end_to_end_id_set_by_the_caller_is_kept() {
    let mut p = Pair::new(rf_client());
    p.drive();
    // A retransmission (T) and a first send both keep a preset id: a
    // client that may resend must know the id before the first send.
    let mut first = Message::request(command::ACCOUNTING, app::ACCOUNTING_RF)
        .with(Avp::utf8(code::SESSION_ID, "e1").mandatory(true));
    first.header.end_to_end = 0x00ab_cdef;
    let mut again = first.clone();
    again.header.flags |= Header::RETRANSMIT;
    p.client.send_request(first).unwrap();
    p.client.send_request(again).unwrap();
    p.drive();
    let ids: Vec<_> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Request(m) => Some((m.header.end_to_end, m.header.is_retransmit())),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [(0x00ab_cdef, false), (0x00ab_cdef, true)]);
}

#[test]
fn requests_before_open_are_refused() {
    let now = Instant::now();
    let mut c = Peer::new(Role::Initiator, rf_client(), config(), now);
    assert!(c.send_request(Message::request(271, 3)).is_err());
    let mut s = Peer::new(
        Role::Responder,
        LocalIdentity::charging_server("cdf", "r", IP),
        config(),
        now,
    );
    s.handle_message(Message::request(271, 3), now);
    assert!(matches!(s.poll_event(), Some(PeerEvent::Warning(_))));
    assert!(matches!(
        s.poll_event(),
        Some(PeerEvent::Closed {
            reason: CloseReason::NoCapabilitiesExchange { .. }
        })
    ));
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.state(), PeerState::Closed);
}

#[test]
fn capabilities_timeout_closes() {
    let now = Instant::now();
    let mut s = Peer::new(
        Role::Responder,
        LocalIdentity::charging_server("cdf", "r", IP),
        config(),
        now,
    );
    let t = s.poll_timeout().unwrap();
    assert_eq!(t, now + Duration::from_secs(5));
    s.handle_timeout(t);
    assert_eq!(s.state(), PeerState::Closed);
    assert!(matches!(
        s.poll_event(),
        Some(PeerEvent::Closed {
            reason: CloseReason::CapabilitiesTimeout
        })
    ));
}

#[test]
fn watchdog_keeps_an_idle_connection_open() {
    let mut p = Pair::new(rf_client());
    p.drive();
    p.run_for(TW * 5 + Duration::from_secs(1));
    assert_eq!(p.client.state(), PeerState::Open);
    assert_eq!(p.server.state(), PeerState::Open);
    let names = p.names();
    assert!(
        names.iter().filter(|n| *n == "DWR").count() >= 4,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "DWR").count(),
        names.iter().filter(|n| *n == "DWA").count()
    );
}

#[test]
fn watchdog_timeout_when_no_dwa() {
    let mut p = Pair::new(rf_client());
    p.drive();
    let opened_at = p.now;
    p.server_mute = true;
    p.run_for(TW * 3);
    assert_eq!(p.client.state(), PeerState::Closed);
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::WatchdogTimeout
        }
    )));
    // DWR at Tw, failure at 2*Tw.
    assert_eq!(p.client.poll_timeout(), None);
    assert!(p.now >= opened_at + TW * 2);
}

#[test]
fn dpr_dpa_closes_both_ends() {
    let mut p = Pair::new(rf_client());
    p.drive();
    p.client.disconnect(0, p.now);
    assert_eq!(p.client.state(), PeerState::Closing);
    assert!(p.client.send_request(Message::request(271, 3)).is_err());
    p.drive();
    assert_eq!(&p.names()[2..], ["DPR", "DPA"]);
    assert_eq!(p.client.state(), PeerState::Closed);
    assert_eq!(p.server.state(), PeerState::Closed);
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::DisconnectedByPeer { cause: Some(0) }
        }
    )));
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::LocalDisconnect
        }
    )));
}

#[test]
fn dpr_without_dpa_times_out() {
    let mut p = Pair::new(rf_client());
    p.drive();
    p.server_mute = true;
    p.client.disconnect(1, p.now);
    p.drive();
    p.run_for(Duration::from_secs(6));
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        PeerEvent::Closed {
            reason: CloseReason::DisconnectTimeout
        }
    )));
}

#[test]
fn unknown_mandatory_avp_is_answered_5001_with_failed_avp() {
    let mut p = Pair::new(rf_client());
    p.drive();
    let odd = Avp::unsigned32(65_000, 7).vendor(99).mandatory(true);
    let acr = Message::request(command::ACCOUNTING, app::ACCOUNTING_RF)
        .with(Avp::utf8(code::SESSION_ID, "s2").mandatory(true))
        .with(odd.clone());
    let hbh = p.client.send_request(acr).unwrap();
    p.drive();
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, PeerEvent::Request(_)))
    );
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, PeerEvent::Warning(w) if w.contains("5001")))
    );
    let ans = p
        .client_events
        .iter()
        .find_map(|e| match e {
            PeerEvent::Answer(m) if m.header.hop_by_hop == hbh => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ans.result_code(), Some(result::AVP_UNSUPPORTED));
    assert!(!ans.header.is_error());
    assert_eq!(ans.session_id(), Some("s2"));
    assert_eq!(
        ans.find_path(&[(code::FAILED_AVP, None), (65_000, Some(99))]),
        Some(odd)
    );
}

#[test]
fn undecodable_request_gets_error_answer() {
    let now = Instant::now();
    let id = LocalIdentity::charging_server("cdf", "r", IP);
    let mut s = Peer::new(Role::Responder, id.clone(), config(), now);
    let mut acr = Message::request(command::ACCOUNTING, 3)
        .with(Avp::utf8(code::SESSION_ID, "s3"))
        .with(Avp::unsigned32(code::ACCOUNTING_RECORD_NUMBER, 1));
    acr.header.hop_by_hop = 77;
    let mut bytes = acr.encode();
    // Break the second AVP's length (past the end).
    let second = 20 + 8 + 4;
    bytes[second + 7] = 0xff;
    let err = Message::decode(&bytes).unwrap_err();
    s.handle_frame_error(&bytes, err, now);
    let ans = s.poll_transmit().unwrap();
    assert_eq!(ans.result_code(), Some(result::INVALID_AVP_LENGTH));
    assert_eq!(ans.header.hop_by_hop, 77);
    assert_eq!(ans.session_id(), Some("s3"));
    let f = ans
        .find_path(&[
            (code::FAILED_AVP, None),
            (code::ACCOUNTING_RECORD_NUMBER, None),
        ])
        .unwrap();
    assert_eq!(f.data, vec![0; 4]);

    // Wrong version: 5011, answered with version 1.
    let mut b = acr.encode();
    b[0] = 3;
    let err = Message::decode(&b).unwrap_err();
    s.handle_frame_error(&b, err, now);
    let ans = s.poll_transmit().unwrap();
    assert_eq!(ans.result_code(), Some(result::UNSUPPORTED_VERSION));
    assert_eq!(ans.header.version, 1);

    // An error answer for a protocol error carries the E bit.
    let e = commands::error_answer(&acr, &id, result::COMMAND_UNSUPPORTED, None, Some("no"));
    assert!(e.header.is_error());
    assert!(Message::decode(&e.encode()).is_ok());
}
