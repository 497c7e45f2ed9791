//! The reference server's online charging over real sockets: its B2BUA asks
//! the Charging Enabler (as OCS) for credit on Ro and holds the INVITE until
//! the answer (6.3.3.1).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cpmcc::charging::{AnswerOutcome, Enabler, EnablerConfig, OcsAnswer, OcsSelector, RequestType};
use cpmcc::diameter::LocalIdentity;
use cpmcc::profile::{ChargedFunction, Transport};
use cpmcc::sip::dialog::{new_branch, new_call_id};
use cpmcc::sip::framing::{encode, parse_datagram};
use cpmcc::sip::message;
use cpmcc::sip::transaction::TransportKind;
use cpmcc::sut::config::{ChargingConfig, OnlineConfig, SipConfig};
use cpmcc::sut::{RunningSut, SutConfig};
use tokio::net::UdpSocket;

const REALM: &str = "test.invalid";
const ALICE: &str = "sip:alice@test.invalid";

async fn enabler() -> Enabler {
    Enabler::bind(EnablerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity: LocalIdentity::charging_server(
            "ocs.test.invalid",
            REALM,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
        watchdog_interval: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

async fn sut(enabler: &Enabler, callee: SocketAddr) -> RunningSut {
    cpmcc::sut::start(SutConfig {
        sip: SipConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Udp,
            t1: None,
        },
        shape: Default::default(),
        domain: REALM.into(),
        route_users_to: callee,
        charging: Some(ChargingConfig {
            server: enabler.local_addr(),
            origin_host: "cpm.sut.test".into(),
            origin_realm: "sut.test".into(),
            destination_realm: REALM.into(),
            // Online only: no ACRs to tell apart.
            functions: vec![],
            service_context_id: "32260@3gpp.org".into(),
            served_user_in_start_only: false,
            reconnect_max: None,
            connect_after: None,
        }),
        inactivity_timer: None,
        admin: None,
        deviations: vec![],
        conference: None,
        online: Some(OnlineConfig {
            functions: vec![ChargedFunction::OriginatingPf],
            ..OnlineConfig::default()
        }),
    })
    .await
    .unwrap()
}

/// A bare UDP user agent.
struct Peer(UdpSocket);

impl Peer {
    async fn bind() -> Peer {
        Peer(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    async fn send(&self, m: impl Into<rsip::SipMessage>, to: SocketAddr) {
        self.0.send_to(&encode(&m.into()), to).await.unwrap();
    }

    /// The next message `wanted` accepts within `within`, if any.
    async fn next(
        &self,
        within: Duration,
        wanted: impl Fn(&rsip::SipMessage) -> bool,
    ) -> Option<rsip::SipMessage> {
        let mut buf = vec![0u8; 65536];
        tokio::time::timeout(within, async {
            loop {
                let (n, _) = self.0.recv_from(&mut buf).await.unwrap();
                let m = parse_datagram(&buf[..n]).unwrap();
                if wanted(&m) {
                    return m;
                }
            }
        })
        .await
        .ok()
    }
}

fn is_invite(m: &rsip::SipMessage) -> bool {
    matches!(m, rsip::SipMessage::Request(r) if r.method == rsip::Method::Invite)
}

fn is_final(m: &rsip::SipMessage) -> bool {
    matches!(m, rsip::SipMessage::Response(r) if r.status_code.code() >= 200)
}

fn invite(caller: &Peer) -> rsip::Request {
    message::cpm_invite(&message::CpmInvite {
        from: ALICE.into(),
        from_tag: "a1".into(),
        to: "sip:bob@test.invalid".into(),
        call_id: new_call_id("127.0.0.1"),
        local: caller.addr(),
        transport: TransportKind::Udp,
        branch: new_branch(),
        conversation_id: "c".into(),
        contribution_id: "c".into(),
        msrp_port: 9,
    })
    .unwrap()
}

/// Whether the InitialRequest had its answer recorded by now.
fn initial_answered(e: &Enabler) -> Option<u32> {
    e.records_for(ALICE).iter().find_map(|r| {
        let req = r.ch2()?.ok()?;
        match (req.kind, &r.answer) {
            (RequestType::Initial, AnswerOutcome::Answered { result_code, .. }) => {
                Some(*result_code)
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn the_invite_reaches_the_recipient_only_after_the_initial_requests_answer() {
    let e = enabler().await;
    let hold = Duration::from_millis(800);
    e.script_ocs(
        OcsSelector::any().kind(RequestType::Initial),
        OcsAnswer::success().after(hold),
    );
    let (caller, callee) = (Peer::bind().await, Peer::bind().await);
    let running = sut(&e, callee.addr()).await;
    let sent = Instant::now();
    caller.send(invite(&caller), running.sip).await;
    let got = callee
        .next(Duration::from_secs(5), is_invite)
        .await
        .expect("the INVITE, once credit is granted");
    assert!(
        sent.elapsed() >= hold,
        "held until the CCA: forwarded after {:?}",
        sent.elapsed()
    );
    assert_eq!(initial_answered(&e), Some(2001), "the CCA came first");
    let rsip::SipMessage::Request(got) = got else {
        unreachable!()
    };
    let session = e
        .ocs_sessions()
        .into_iter()
        .find(|s| s.served_user.as_deref() == Some(ALICE))
        .expect("a CH-2 session for the originator");
    assert_eq!(session.request_numbers(), vec![0]);
    assert_ne!(
        message::call_id(&got).unwrap(),
        "",
        "a B2BUA leg of its own"
    );
    running.shutdown();
}

#[tokio::test]
async fn a_refused_initial_request_rejects_the_invite_and_forwards_nothing() {
    let e = enabler().await;
    e.script_ocs(
        OcsSelector::any().kind(RequestType::Initial),
        OcsAnswer::refuse(4012),
    );
    let (caller, callee) = (Peer::bind().await, Peer::bind().await);
    let running = sut(&e, callee.addr()).await;
    caller.send(invite(&caller), running.sip).await;
    let Some(rsip::SipMessage::Response(answer)) =
        caller.next(Duration::from_secs(5), is_final).await
    else {
        panic!("no final answer to the INVITE");
    };
    assert_eq!(answer.status_code.code(), 402);
    assert!(
        callee
            .next(Duration::from_millis(500), is_invite)
            .await
            .is_none(),
        "nothing forwarded"
    );
    let s = e.ocs_sessions();
    assert_eq!(s.len(), 1);
    assert!(
        s[0].initial_refused && !s[0].terminated,
        "no Termination follows"
    );
    running.shutdown();
}
