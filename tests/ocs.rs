//! The OCS on the wire: CCR bytes in, CCA bytes out, on a virtual clock
//! (an `Instant` taken once and advanced by hand; nothing sleeps).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::{Duration, Instant};

use cpmcc::charging::ro::{ro_client_identity, sample_ccr_initial};
use cpmcc::charging::{
    Ch2Request, Ch2Response, ChargedRole, Ocs, OcsAnswer, OcsConfig, OcsDecision, OcsSelector,
    ReportingReason, RequestType, ServiceUnits, TriggerArming, TriggerType,
};
use cpmcc::diameter::{Avp, Header, LocalIdentity, Message, code, result};

fn ocs_identity() -> LocalIdentity {
    LocalIdentity::charging_server("ocs.test.invalid", "test.invalid", [127, 0, 0, 1].into())
}

fn client() -> LocalIdentity {
    ro_client_identity(
        "cpm.sut.test.invalid",
        "sut.test.invalid",
        [192, 0, 2, 10].into(),
    )
}

/// Encodes as the SUT would put it on the wire, with ids.
fn wire(req: &Ch2Request, hbh: u32) -> Message {
    let mut m = req.to_ccr(&client(), "test.invalid");
    m.header.hop_by_hop = hbh;
    m.header.end_to_end = 0x100 + hbh;
    Message::decode(&m.encode()).unwrap()
}

/// Runs one CCR through the OCS and reads the CCA back from its bytes.
fn exchange(ocs: &mut Ocs, ccr: &Message, now: Instant) -> (Ch2Response, Instant, Message) {
    let out = ocs.handle_ccr(ccr, &ocs_identity(), now);
    assert!(out.error.is_none(), "{:?}", out.error);
    let (cca, at) = out.answer.expect("an answer");
    let cca = Message::decode(&cca.encode()).unwrap();
    assert_eq!(cca.header.hop_by_hop, ccr.header.hop_by_hop);
    assert_eq!(cca.header.end_to_end, ccr.header.end_to_end);
    assert_eq!(cca.session_id(), ccr.session_id());
    let (resp, warnings) = Ch2Response::from_cca_with_warnings(&cca).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    (resp, at, cca)
}

#[test]
fn a_group_session_with_an_armed_trigger_runs_end_to_end() {
    let t0 = Instant::now();
    let (initial, _) = sample_ccr_initial();
    let sid = initial.session_id.clone();
    let user = initial.served_user.clone().unwrap();
    let mut ocs = Ocs::new(OcsConfig::default());
    ocs.script(
        OcsSelector::any().user(&user).kind(RequestType::Initial),
        OcsAnswer::grant(ServiceUnits::seconds(30))
            .validity(120)
            .arm([TriggerType::ChangeInParticipantsNmb]),
    );
    let (r, at, cca) = exchange(&mut ocs, &wire(&initial, 1), t0);
    assert_eq!(at, t0);
    assert_eq!(r.result_code, 2001);
    assert_eq!(r.granted_units(), Some(ServiceUnits::seconds(30)));
    assert_eq!(r.credits[0].validity_time, Some(120));
    assert_eq!(
        r.credits[0].service, initial.credits[0].service,
        "service echoed"
    );
    assert_eq!(
        r.triggers,
        TriggerArming::Arm(vec![TriggerType::ChangeInParticipantsNmb])
    );
    assert!(
        cca.pretty()
            .contains("Trigger-Type [VM] = CHANGE_IN_PARTICIPANTS_NMB (50)")
    );

    // A participant joins: the CF reports it because 50 is armed.
    let mut upd = Ch2Request::update(&sid, 1)
        .role(ChargedRole::ControllingFunction)
        .participants(4)
        .request_units(ServiceUnits::seconds(30))
        .report_used(
            ServiceUnits::seconds(12),
            ReportingReason::RatingConditionChange,
        )
        .triggered_by(TriggerType::ChangeInParticipantsNmb);
    upd.credits[0].service = initial.credits[0].service;
    let (r, _, _) = exchange(&mut ocs, &wire(&upd, 2), t0 + Duration::from_secs(12));
    assert_eq!(r.granted_units(), Some(ServiceUnits::seconds(30)));
    assert_eq!(r.triggers, TriggerArming::Unchanged);

    let mut term = Ch2Request::termination(&sid, 2)
        .role(ChargedRole::ControllingFunction)
        .report_used(ServiceUnits::seconds(8), ReportingReason::Final);
    term.credits[0].service = initial.credits[0].service;
    let (r, _, _) = exchange(&mut ocs, &wire(&term, 3), t0 + Duration::from_secs(20));
    assert_eq!(r.result_code, 2001);
    assert_eq!(r.granted_units(), None);

    let s = ocs.session(&sid).unwrap();
    assert_eq!(s.served_user.as_deref(), Some(user.as_str()));
    assert_eq!(s.request_numbers(), vec![0, 1, 2]);
    assert_eq!(s.granted, ServiceUnits::seconds(60));
    assert_eq!(s.debited, ServiceUnits::seconds(20));
    assert!(s.reserved.is_empty());
    assert_eq!(s.armed, vec![TriggerType::ChangeInParticipantsNmb]);
    assert!(s.terminated);
    assert_eq!(s.exchanges[1].request.participants, Some(4));
    assert_eq!(
        s.exchanges[1].request.triggers(),
        vec![TriggerType::ChangeInParticipantsNmb]
    );
    assert_eq!(s.check(), vec![]);
}

#[test]
fn the_second_update_of_alices_session_gets_4012() {
    let t0 = Instant::now();
    let alice = "sip:alice.r7s3@test.invalid";
    let mut ocs = Ocs::new(OcsConfig::default());
    ocs.script(
        OcsSelector::any()
            .user(alice)
            .kind(RequestType::Update)
            .nth(2),
        OcsAnswer::refuse(result::CREDIT_LIMIT_REACHED),
    );
    let i = Ch2Request::initial("al;1")
        .served_user(alice)
        .request_units(ServiceUnits::seconds(60));
    let u = |n| {
        Ch2Request::update("al;1", n)
            .request_units(ServiceUnits::seconds(60))
            .report_used(ServiceUnits::seconds(60), ReportingReason::QuotaExhausted)
    };
    let codes: Vec<u32> = [i, u(1), u(2)]
        .iter()
        .enumerate()
        .map(|(k, r)| exchange(&mut ocs, &wire(r, k as u32), t0).0.result_code)
        .collect();
    assert_eq!(codes, vec![2001, 2001, 4012]);
    // The refusal is a plain CCA (no E bit), echoing type and number.
    let (_, _, cca) = {
        let mut again = Ocs::new(OcsConfig::default());
        again.script(OcsSelector::any(), OcsAnswer::refuse(4012));
        exchange(&mut again, &wire(&u(2), 9), t0)
    };
    assert!(!cca.header.is_error());
    assert_eq!(cca.avp(code::CC_REQUEST_NUMBER).unwrap().as_u32(), Ok(2));
    // The SUT ends the session with a Termination: legal after a refused Update.
    let t = Ch2Request::termination("al;1", 3)
        .report_used(ServiceUnits::seconds(0), ReportingReason::Final);
    exchange(&mut ocs, &wire(&t, 4), t0);
    assert_eq!(ocs.session("al;1").unwrap().check(), vec![]);
}

#[test]
fn a_t_flagged_resend_gets_the_same_cca_and_counts_once() {
    let t0 = Instant::now();
    let mut ocs = Ocs::new(OcsConfig::default());
    ocs.script(
        OcsSelector::any().kind(RequestType::Initial),
        OcsAnswer::success().after(Duration::from_secs(2)),
    );
    let (req, _) = sample_ccr_initial();
    let first = wire(&req, 7);
    let (r1, at1, cca1) = exchange(&mut ocs, &first, t0);
    assert_eq!(at1, t0 + Duration::from_secs(2), "scripted delay as data");
    let mut resend = first.clone();
    resend.header.flags |= Header::RETRANSMIT;
    resend.header.hop_by_hop = 8; // a new hop, the same end-to-end id
    let out = ocs.handle_ccr(&resend, &ocs_identity(), t0 + Duration::from_secs(1));
    let (_, decision) = out.request.as_ref().unwrap();
    assert!(decision.is_retransmission());
    let (cca2, at2) = out.answer.unwrap();
    assert_eq!(at2, at1);
    assert_eq!(cca2.header.hop_by_hop, 8);
    assert_eq!(cca2.avps, cca1.avps, "the same answer");
    assert_eq!(Ch2Response::from_cca(&cca2).unwrap(), r1);
    let s = ocs.session(&req.session_id).unwrap();
    assert_eq!(s.exchanges.len(), 1);
    assert_eq!(s.retransmissions(), 1);
}

#[test]
fn no_answer_is_no_cca() {
    let t0 = Instant::now();
    let mut ocs = Ocs::new(OcsConfig::default());
    ocs.script(OcsSelector::any(), OcsAnswer::no_answer());
    let (req, _) = sample_ccr_initial();
    let out = ocs.handle_ccr(&wire(&req, 1), &ocs_identity(), t0);
    assert!(out.answer.is_none());
    assert_eq!(
        out.request.unwrap().1,
        OcsDecision::Withhold {
            retransmission: false
        }
    );
    let s = ocs.session(&req.session_id).unwrap();
    assert_eq!(s.exchanges[0].response, None);
}

#[test]
fn unreadable_ccrs_are_refused_before_the_ocs_and_recorded_nowhere() {
    let t0 = Instant::now();
    let mut ocs = Ocs::new(OcsConfig::default());
    // Unknown AVP with the M bit: 5001 with it in Failed-AVP.
    let (req, _) = sample_ccr_initial();
    let mut ccr = wire(&req, 1);
    let bad = Avp::octets(4242, vec![1, 2, 3, 4])
        .vendor(99)
        .mandatory(true);
    ccr.push(bad.clone());
    let out = ocs.handle_ccr(&ccr, &ocs_identity(), t0);
    let (cca, at) = out.answer.unwrap();
    assert_eq!(at, t0);
    assert_eq!(cca.result_code(), Some(result::AVP_UNSUPPORTED));
    let failed = cca.avp(code::FAILED_AVP).unwrap().as_grouped().unwrap();
    assert_eq!(failed, vec![bad]);
    assert!(out.error.unwrap().contains("5001"));
    // The same AVP with the M bit clear is kept and the request answered.
    let mut ccr = wire(&req, 2);
    ccr.push(Avp::octets(4242, vec![1]).vendor(99));
    let out = ocs.handle_ccr(&ccr, &ocs_identity(), t0);
    assert_eq!(out.answer.unwrap().0.result_code(), Some(2001));
    assert!(
        out.warnings.iter().any(|w| w.contains("AVP 4242")),
        "{:?}",
        out.warnings
    );
    assert_eq!(out.request.unwrap().0.unknown_avps.len(), 1);
    // Missing CC-Request-Number: 5005 naming it.
    let mut ccr = wire(&Ch2Request::initial("x;1"), 3);
    ccr.avps.retain(|a| a.code != code::CC_REQUEST_NUMBER);
    let out = ocs.handle_ccr(&ccr, &ocs_identity(), t0);
    let (cca, _) = out.answer.unwrap();
    assert_eq!(cca.result_code(), Some(result::MISSING_AVP));
    assert_eq!(
        cca.find_path(&[(code::FAILED_AVP, None), (code::CC_REQUEST_NUMBER, None)])
            .map(|a| a.code),
        Some(code::CC_REQUEST_NUMBER)
    );
    assert!(ocs.session("x;1").is_none());
    // Only the one readable request made a session.
    assert_eq!(ocs.sessions().count(), 1);
    assert_eq!(
        ocs.session(&req.session_id).unwrap().check(),
        vec![],
        "one Initial, answered"
    );
}

/// Random sessions, scripts and resends: the ledger always agrees with the
/// answers it gave, resends never count, debits never exceed reports.
#[test]
fn ledger_invariants_hold_over_generated_sessions() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let mut rng = StdRng::seed_from_u64(2026);
    let t0 = Instant::now();
    for case in 0..300 {
        let mut ocs = Ocs::new(OcsConfig::default());
        for _ in 0..rng.random_range(0..4) {
            let kind = RequestType::ALL[rng.random_range(0..3)];
            let sel = OcsSelector::any().kind(kind).nth(rng.random_range(1..4));
            let answer = match rng.random_range(0..6) {
                0 => OcsAnswer::refuse([4010, 4012, 5030][rng.random_range(0..3)]),
                1 => OcsAnswer::refuse_service(4012),
                2 => OcsAnswer::no_answer(),
                3 => OcsAnswer::grant(ServiceUnits::seconds(rng.random_range(1..100)))
                    .after(Duration::from_millis(rng.random_range(0..5000))),
                4 => OcsAnswer::success().arm([TriggerType::ChangeInParticipantsNmb]),
                _ => OcsAnswer::success().disarm(),
            };
            ocs.script(sel, answer);
        }
        let sid = format!("case{case}");
        let n = rng.random_range(1..8u32);
        let mut now = t0;
        let mut sent = 0u32;
        let mut resent = 0u32;
        let mut first_answers: Vec<Option<Ch2Response>> = Vec::new();
        for k in 0..n {
            let kind = match k {
                0 => RequestType::Initial,
                _ if k == n - 1 => RequestType::Termination,
                _ => RequestType::Update,
            };
            let mut req = Ch2Request::new(kind, &sid, k);
            if kind != RequestType::Termination {
                req = req.request_units(ServiceUnits::seconds(rng.random_range(0..120)));
            }
            if kind != RequestType::Initial {
                req = req.report_used(
                    ServiceUnits::seconds(rng.random_range(0..120)),
                    ReportingReason::QuotaExhausted,
                );
            }
            now += Duration::from_millis(rng.random_range(0..3000));
            let d = ocs.handle_request(&req, now);
            sent += 1;
            first_answers.push(d.response().cloned());
            while rng.random_bool(0.3) {
                now += Duration::from_millis(rng.random_range(0..3000));
                let again = ocs.handle_retransmission(&req, now);
                resent += 1;
                assert!(again.is_retransmission());
                assert_eq!(again.response(), d.response(), "case {case}: same answer");
                if let (Some(a), Some(b)) = (again.at(), d.at()) {
                    assert_eq!(a, b.max(now), "case {case}: never earlier than planned");
                }
            }
        }
        let s = ocs.session(&sid).unwrap();
        assert_eq!(s.exchanges.len() as u32, sent, "case {case}");
        assert_eq!(s.retransmissions(), resent, "case {case}");
        let answers: Vec<Option<Ch2Response>> =
            s.exchanges.iter().map(|e| e.response.clone()).collect();
        assert_eq!(answers, first_answers, "case {case}");
        let granted = answers
            .iter()
            .flatten()
            .filter(|r| r.is_success())
            .filter_map(Ch2Response::granted_units)
            .fold(ServiceUnits::default(), |a, b| a.plus(&b));
        assert_eq!(s.granted, granted, "case {case}");
        assert!(
            s.debited.time.unwrap_or(0) <= s.reported_used.time.unwrap_or(0),
            "case {case}"
        );
        assert_eq!(
            s.initial_refused,
            answers[0].as_ref().is_some_and(|r| !r.is_success()),
            "case {case}"
        );
        assert!(s.terminated == (n > 1), "case {case}");
        assert!(
            s.reserved.is_empty() || n == 1,
            "case {case}: released at the end"
        );
    }
}
