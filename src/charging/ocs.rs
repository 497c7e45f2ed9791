//! The Online Charging System the harness plays on CH-2, as a sans-IO
//! state machine: a [`Ch2Request`] and the time come in, an
//! [`OcsDecision`] goes out (the [`Ch2Response`] to send now or at a given
//! instant, or nothing). No sockets, no sleeping; the Enabler's task around
//! it maps CCR/CCA ([`super::ro`]) and keeps the timers.
//!
//! Answers are scripted the way commercial OCS emulators do it: an
//! [`OcsSelector`] (served user, Session-Id, request kind, ordinal: "the
//! second UpdateRequest of alice's session") picks an [`OcsAnswer`] (units
//! granted, validity time, Charging Trigger Condition armed or disarmed,
//! final-unit TERMINATE, refusal at command or MSCC level, a delay, no
//! answer). Without a script the OCS grants what was asked (or
//! [`OcsConfig::default_quota`]) with 2001.
//!
//! Per charging session it keeps a ledger ([`OcsSession`]): the exchanges
//! in arrival order (for [`super::online_rules`]), units granted, reserved
//! and debited, whether the Initial was refused, what is armed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ch2::{
    Ch2Request, Ch2Response, CreditGrant, FailureHandling, FinalUnitAction, RequestType,
    ServiceKey, ServiceUnits, TriggerArming, TriggerType,
};
use super::online_rules::{OnlineViolation, check_online_session};
use super::ro::RoMappingError;
use crate::diameter::{LocalIdentity, Message, dictionary, error_answer, result};

/// How the OCS answers when no script says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcsConfig {
    /// Units granted when a request asks without an amount (an empty
    /// Requested-Service-Unit, or none), or always when
    /// [`OcsConfig::grant_requested`] is false.
    pub default_quota: ServiceUnits,
    /// Grant the amount asked for when one is given.
    pub grant_requested: bool,
    /// Validity-Time on every grant, seconds.
    pub validity_time: Option<u32>,
    /// Credit-Control-Failure-Handling on every answer.
    pub failure_handling: Option<FailureHandling>,
}

impl Default for OcsConfig {
    fn default() -> Self {
        OcsConfig {
            default_quota: ServiceUnits::seconds(600),
            grant_requested: true,
            validity_time: None,
            failure_handling: None,
        }
    }
}

/// Which requests a scripted answer is for. Every field that is set must
/// match; an empty selector matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OcsSelector {
    /// The session's served user (from any of its requests so far).
    pub served_user: Option<String>,
    /// The Session-Id.
    pub session_id: Option<String>,
    /// The request kind.
    pub kind: Option<RequestType>,
    /// 1 for the first request of `kind` in the session (of any kind when
    /// `kind` is None), 2 for the second, ...; retransmissions not counted.
    pub ordinal: Option<u32>,
}

impl OcsSelector {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }
    /// Only sessions of this served user.
    pub fn user(mut self, u: impl Into<String>) -> Self {
        self.served_user = Some(u.into());
        self
    }
    /// Only this Session-Id.
    pub fn session(mut self, s: impl Into<String>) -> Self {
        self.session_id = Some(s.into());
        self
    }
    /// Only this kind.
    pub fn kind(mut self, k: RequestType) -> Self {
        self.kind = Some(k);
        self
    }
    /// Only the n-th (1-based) request of the kind in its session.
    pub fn nth(mut self, n: u32) -> Self {
        self.ordinal = Some(n);
        self
    }

    fn matches(
        &self,
        req: &Ch2Request,
        user: Option<&str>,
        ordinal: u32,
        any_ordinal: u32,
    ) -> bool {
        // The full URI, or its user part (what a harness step knows).
        self.served_user.as_deref().is_none_or(|u| {
            user == Some(u) || user.and_then(crate::sip::message::uri_user) == Some(u)
        }) && self
            .session_id
            .as_deref()
            .is_none_or(|s| s == req.session_id)
            && self.kind.is_none_or(|k| k == req.kind)
            && self.ordinal.is_none_or(|n| {
                n == if self.kind.is_some() {
                    ordinal
                } else {
                    any_ordinal
                }
            })
    }
}

/// What a script answers. Build with the constructors and modifiers, e.g.
/// `OcsAnswer::grant(ServiceUnits::seconds(30)).arm([50]).validity(60)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcsAnswer {
    /// Command-level Result-Code.
    pub result_code: u32,
    /// MSCC-level Result-Code (with a 2001 command): refuses the service.
    pub mscc_result_code: Option<u32>,
    /// The service refused at MSCC level (None: every MSCC of the request).
    pub mscc_service: Option<ServiceKey>,
    /// Units granted instead of the default.
    pub grant: Option<ServiceUnits>,
    /// Validity-Time, seconds.
    pub validity_time: Option<u32>,
    /// Charging Trigger Conditions.
    pub triggers: TriggerArming,
    /// Final-Unit-Indication.
    pub final_unit_action: Option<FinalUnitAction>,
    /// Credit-Control-Failure-Handling.
    pub failure_handling: Option<FailureHandling>,
    /// Hold the answer back this long.
    pub delay: Duration,
    /// Send no answer at all.
    pub withhold: bool,
    /// How many requests this script answers (None: every match).
    pub times: Option<u32>,
}

impl Default for OcsAnswer {
    fn default() -> Self {
        OcsAnswer {
            result_code: 2001,
            mscc_result_code: None,
            mscc_service: None,
            grant: None,
            validity_time: None,
            triggers: TriggerArming::Unchanged,
            final_unit_action: None,
            failure_handling: None,
            delay: Duration::ZERO,
            withhold: false,
            times: None,
        }
    }
}

impl OcsAnswer {
    /// 2001, default grant: a script that only modifies (arm, delay...).
    pub fn success() -> Self {
        Self::default()
    }
    /// 2001 granting these units.
    pub fn grant(units: ServiceUnits) -> Self {
        OcsAnswer {
            grant: Some(units),
            ..Self::default()
        }
    }
    /// A command-level refusal (4010, 4012, 5030, ...): no units.
    pub fn refuse(result_code: u32) -> Self {
        OcsAnswer {
            result_code,
            ..Self::default()
        }
    }
    /// Command 2001 with every MSCC refused with this code.
    pub fn refuse_service(result_code: u32) -> Self {
        OcsAnswer {
            mscc_result_code: Some(result_code),
            ..Self::default()
        }
    }
    /// No answer at all.
    pub fn no_answer() -> Self {
        OcsAnswer {
            withhold: true,
            ..Self::default()
        }
    }
    /// Refuse at MSCC level only this service (with `refuse_service`).
    pub fn only_service(mut self, s: ServiceKey) -> Self {
        self.mscc_service = Some(s);
        self
    }
    /// Sets Validity-Time.
    pub fn validity(mut self, seconds: u32) -> Self {
        self.validity_time = Some(seconds);
        self
    }
    /// Arms these Charging Trigger Conditions (an empty list disarms all).
    pub fn arm(mut self, types: impl IntoIterator<Item = TriggerType>) -> Self {
        self.triggers = TriggerArming::arm(types);
        self
    }
    /// Sends an empty Trigger: disarm all.
    pub fn disarm(mut self) -> Self {
        self.triggers = TriggerArming::DisarmAll;
        self
    }
    /// Final-Unit-Indication with this action (TERMINATE makes the SUT end
    /// the session when the units are used).
    pub fn final_unit(mut self, a: FinalUnitAction) -> Self {
        self.final_unit_action = Some(a);
        self
    }
    /// Sets Credit-Control-Failure-Handling.
    pub fn failure_handling(mut self, f: FailureHandling) -> Self {
        self.failure_handling = Some(f);
        self
    }
    /// Holds the answer back.
    pub fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// Answers this many matching requests, then stands aside.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// What the OCS does about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OcsDecision {
    /// Send this response at `at` (`at` is the `now` passed in when no
    /// delay was scripted).
    Answer {
        /// The CH-2 Response ([`Ch2Response::to_cca`] makes the CCA).
        response: Ch2Response,
        /// When to send it.
        at: Instant,
        /// True for a retransmission answered again.
        retransmission: bool,
    },
    /// Send nothing.
    Withhold {
        /// True for a retransmission of a withheld request.
        retransmission: bool,
    },
}

impl OcsDecision {
    /// The response, if one is to be sent.
    pub fn response(&self) -> Option<&Ch2Response> {
        match self {
            OcsDecision::Answer { response, .. } => Some(response),
            OcsDecision::Withhold { .. } => None,
        }
    }
    /// When to send, if anything is to be sent.
    pub fn at(&self) -> Option<Instant> {
        match self {
            OcsDecision::Answer { at, .. } => Some(*at),
            OcsDecision::Withhold { .. } => None,
        }
    }
    /// True when this answered a retransmission.
    pub fn is_retransmission(&self) -> bool {
        match self {
            OcsDecision::Answer { retransmission, .. }
            | OcsDecision::Withhold { retransmission } => *retransmission,
        }
    }
}

/// What [`Ocs::handle_ccr`] made of one CCR.
#[derive(Clone, Debug, PartialEq)]
pub struct CcrOutcome {
    /// The request as read and the OCS's decision (None when the CCR could
    /// not be read as CH-2).
    pub request: Option<(Ch2Request, OcsDecision)>,
    /// Everything odd about the CCR (for the report).
    pub warnings: Vec<String>,
    /// Why the CCR was refused before the OCS saw it (5001, 5005, 5004).
    pub error: Option<String>,
    /// The CCA and when to send it (None: withheld).
    pub answer: Option<(Message, Instant)>,
}

impl CcrOutcome {
    fn refused(ccr: &Message, local: &LocalIdentity, e: &RoMappingError, now: Instant) -> Self {
        CcrOutcome {
            request: None,
            warnings: Vec::new(),
            error: Some(format!("{e}; answered {}", e.result_code())),
            answer: Some((
                error_answer(
                    ccr,
                    local,
                    e.result_code(),
                    e.failed_avp(),
                    Some(&e.to_string()),
                ),
                now,
            )),
        }
    }
}

/// One request of a session (first transmission) and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct OcsExchange {
    /// The request.
    pub request: Ch2Request,
    /// The response decided (None: withheld).
    pub response: Option<Ch2Response>,
    /// When it arrived.
    pub received: Instant,
    /// When the response is due (None: withheld).
    pub answer_at: Option<Instant>,
    /// Charging Trigger Conditions armed when it arrived (what the SUT was
    /// told to report on; the flows' 6.3.3.3 checks need it).
    pub armed_before: Vec<TriggerType>,
    /// Index of the script that answered it (None: the default).
    pub script: Option<usize>,
    /// How many times it was retransmitted (T flag).
    pub retransmissions: u32,
}

/// The ledger of one charging session (one Session-Id).
#[derive(Clone, Debug, PartialEq)]
pub struct OcsSession {
    /// Session-Id.
    pub session_id: String,
    /// Served user, from the first request that named one.
    pub served_user: Option<String>,
    /// Every request (first transmissions) in arrival order.
    pub exchanges: Vec<OcsExchange>,
    /// Units granted, summed over every successful grant.
    pub granted: ServiceUnits,
    /// Units reserved now: the last grant (zero after a refusal or the
    /// Termination).
    pub reserved: ServiceUnits,
    /// Units debited: reported used in requests answered without refusing
    /// the service.
    pub debited: ServiceUnits,
    /// Units reported used, whatever the answer.
    pub reported_used: ServiceUnits,
    /// Charging Trigger Conditions armed now.
    pub armed: Vec<TriggerType>,
    /// The Initial got a command-level refusal: no Termination may follow.
    pub initial_refused: bool,
    /// A Final-Unit-Indication was sent.
    pub final_unit_sent: Option<FinalUnitAction>,
    /// A TerminationRequest arrived.
    pub terminated: bool,
}

impl OcsSession {
    fn new(session_id: &str) -> Self {
        OcsSession {
            session_id: session_id.to_owned(),
            served_user: None,
            exchanges: Vec::new(),
            granted: ServiceUnits::default(),
            reserved: ServiceUnits::default(),
            debited: ServiceUnits::default(),
            reported_used: ServiceUnits::default(),
            armed: Vec::new(),
            initial_refused: false,
            final_unit_sent: None,
            terminated: false,
        }
    }

    /// Retransmissions seen, all requests together.
    pub fn retransmissions(&self) -> u32 {
        self.exchanges.iter().map(|e| e.retransmissions).sum()
    }

    /// Request numbers seen, in arrival order.
    pub fn request_numbers(&self) -> Vec<u32> {
        self.exchanges
            .iter()
            .map(|e| e.request.request_number)
            .collect()
    }

    /// True when more units were reported used than were ever granted (in
    /// any unit kind the grants named).
    pub fn used_beyond_granted(&self) -> bool {
        fn over32(used: Option<u32>, granted: Option<u32>) -> bool {
            used.unwrap_or(0) > granted.unwrap_or(0)
        }
        fn over64(used: Option<u64>, granted: Option<u64>) -> bool {
            used.unwrap_or(0) > granted.unwrap_or(0)
        }
        let (u, g) = (&self.reported_used, &self.granted);
        over32(u.time, g.time)
            || over64(u.service_specific, g.service_specific)
            || over64(u.total_octets, g.total_octets)
            || over64(u.input_octets, g.input_octets)
            || over64(u.output_octets, g.output_octets)
    }

    /// The online every-flow rules over this session's exchanges.
    pub fn check(&self) -> Vec<OnlineViolation> {
        check_online_session(
            self.exchanges
                .iter()
                .map(|e| (&e.request, e.response.as_ref())),
        )
    }
}

#[derive(Clone, Debug)]
struct Script {
    selector: OcsSelector,
    answer: OcsAnswer,
    used: u32,
}

/// The OCS core. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Ocs {
    config: OcsConfig,
    scripts: Vec<Script>,
    sessions: HashMap<String, OcsSession>,
    order: Vec<String>,
}

impl Ocs {
    /// An OCS with this default behaviour and no scripts.
    pub fn new(config: OcsConfig) -> Self {
        Ocs {
            config,
            ..Self::default()
        }
    }

    /// Changes how unscripted requests are answered from now on; scripts
    /// and ledgers stay.
    pub fn set_config(&mut self, config: OcsConfig) {
        self.config = config;
    }

    /// How unscripted requests are answered.
    pub fn config(&self) -> &OcsConfig {
        &self.config
    }

    /// Adds a scripted answer; returns its index. The first script (in the
    /// order added) that matches and is not used up answers.
    pub fn script(&mut self, selector: OcsSelector, answer: OcsAnswer) -> usize {
        self.scripts.push(Script {
            selector,
            answer,
            used: 0,
        });
        self.scripts.len() - 1
    }

    /// Drops the scripts `keep` says no to (e.g. those of a scenario that
    /// ended); indices of the others shift down.
    pub fn retain_scripts(&mut self, mut keep: impl FnMut(&OcsSelector, &OcsAnswer) -> bool) {
        self.scripts.retain(|s| keep(&s.selector, &s.answer));
    }

    /// How many requests script `index` has answered.
    pub fn script_uses(&self, index: usize) -> Option<u32> {
        self.scripts.get(index).map(|s| s.used)
    }

    /// The ledger of a session.
    pub fn session(&self, session_id: &str) -> Option<&OcsSession> {
        self.sessions.get(session_id)
    }

    /// Every session, in the order their first request arrived.
    pub fn sessions(&self) -> impl Iterator<Item = &OcsSession> {
        self.order.iter().filter_map(|s| self.sessions.get(s))
    }

    /// A request that arrived without the T flag. A repeated request number
    /// without the T flag is a new request (the rules will say so).
    pub fn handle_request(&mut self, req: &Ch2Request, now: Instant) -> OcsDecision {
        self.decide(req, now)
    }

    /// A request that arrived with the T flag. If the session has a request
    /// with this number, it gets the same answer again (due no earlier than
    /// first planned) and is counted once; otherwise it is new.
    pub fn handle_retransmission(&mut self, req: &Ch2Request, now: Instant) -> OcsDecision {
        if let Some(e) = self.sessions.get_mut(&req.session_id).and_then(|s| {
            s.exchanges
                .iter_mut()
                .find(|e| e.request.request_number == req.request_number)
        }) {
            e.retransmissions += 1;
            return match (&e.response, e.answer_at) {
                (Some(r), Some(at)) => OcsDecision::Answer {
                    response: r.clone(),
                    at: at.max(now),
                    retransmission: true,
                },
                _ => OcsDecision::Withhold {
                    retransmission: true,
                },
            };
        }
        self.decide(req, now)
    }

    /// The whole Ro seam for the Enabler's task: a CCR as received in, the
    /// CCA to send (and when) out. Unknown AVPs with the M bit get 5001
    /// with Failed-AVP, an unreadable required AVP 5005/5004, both sent at
    /// once and not recorded in any session; a CCR with the T flag goes to
    /// [`Ocs::handle_retransmission`]. The CCA keeps the CCR's hop-by-hop
    /// and end-to-end ids.
    pub fn handle_ccr(&mut self, ccr: &Message, local: &LocalIdentity, now: Instant) -> CcrOutcome {
        if let Err(avp) = dictionary::check_mandatory(ccr) {
            let name = dictionary::avp_name(avp.code, avp.vendor_id);
            return CcrOutcome {
                request: None,
                warnings: Vec::new(),
                error: Some(format!("unknown AVP {name} with the M bit; answered 5001")),
                answer: Some((
                    error_answer(
                        ccr,
                        local,
                        result::AVP_UNSUPPORTED,
                        Some(avp),
                        Some(&format!("AVP {name} not supported")),
                    ),
                    now,
                )),
            };
        }
        let (req, warnings) = match Ch2Request::from_ccr_with_warnings(ccr) {
            Ok(x) => x,
            Err(e) => return CcrOutcome::refused(ccr, local, &e, now),
        };
        let decision = if ccr.header.is_retransmit() {
            self.handle_retransmission(&req, now)
        } else {
            self.handle_request(&req, now)
        };
        let answer = match &decision {
            OcsDecision::Answer { response, at, .. } => Some((response.to_cca(ccr, local), *at)),
            OcsDecision::Withhold { .. } => None,
        };
        CcrOutcome {
            request: Some((req, decision)),
            warnings,
            error: None,
            answer,
        }
    }

    fn decide(&mut self, req: &Ch2Request, now: Instant) -> OcsDecision {
        if !self.sessions.contains_key(&req.session_id) {
            self.order.push(req.session_id.clone());
        }
        let session = self
            .sessions
            .entry(req.session_id.clone())
            .or_insert_with(|| OcsSession::new(&req.session_id));
        if session.served_user.is_none() {
            session.served_user.clone_from(&req.served_user);
        }
        let ordinal = 1 + session
            .exchanges
            .iter()
            .filter(|e| e.request.kind == req.kind)
            .count() as u32;
        let any_ordinal = 1 + session.exchanges.len() as u32;
        let user = session.served_user.clone();
        let script = self.scripts.iter_mut().enumerate().find(|(_, s)| {
            s.answer.times.is_none_or(|t| s.used < t)
                && s.selector
                    .matches(req, user.as_deref(), ordinal, any_ordinal)
        });
        let (index, answer) = match script {
            Some((i, s)) => {
                s.used += 1;
                (Some(i), s.answer.clone())
            }
            None => (None, OcsAnswer::default()),
        };
        let response = (!answer.withhold).then(|| respond(&self.config, req, &answer));
        let at = now + answer.delay;
        let armed_before = session.armed.clone();
        session.record(req, response.as_ref());
        session.exchanges.push(OcsExchange {
            request: req.clone(),
            response: response.clone(),
            received: now,
            answer_at: response.as_ref().map(|_| at),
            armed_before,
            script: index,
            retransmissions: 0,
        });
        match response {
            Some(response) => OcsDecision::Answer {
                response,
                at,
                retransmission: false,
            },
            None => OcsDecision::Withhold {
                retransmission: false,
            },
        }
    }
}

impl OcsSession {
    /// The ledger arithmetic for one first transmission and its response.
    fn record(&mut self, req: &Ch2Request, resp: Option<&Ch2Response>) {
        for c in &req.credits {
            if let Some(u) = c.used {
                self.reported_used = self.reported_used.plus(&u);
                if resp.is_some_and(|r| !r.refuses(&c.service)) {
                    self.debited = self.debited.plus(&u);
                }
            }
        }
        if req.kind == RequestType::Termination {
            self.terminated = true;
            self.reserved = ServiceUnits::default();
        }
        let Some(resp) = resp else { return };
        if !resp.is_success() {
            if req.kind == RequestType::Initial {
                self.initial_refused = true;
            }
            self.reserved = ServiceUnits::default();
            return;
        }
        if let Some(g) = resp.granted_units() {
            self.granted = self.granted.plus(&g);
            if req.kind != RequestType::Termination {
                self.reserved = g;
            }
        } else if req.kind == RequestType::Update {
            self.reserved = ServiceUnits::default();
        }
        if let Some(a) = resp.final_unit_action() {
            self.final_unit_sent = Some(a);
        }
        self.armed = resp.triggers.apply(&self.armed);
    }
}

/// The response to `req` under `answer` (already chosen).
fn respond(config: &OcsConfig, req: &Ch2Request, answer: &OcsAnswer) -> Ch2Response {
    let mut resp = Ch2Response::for_request(req, answer.result_code);
    resp.failure_handling = answer.failure_handling.or(config.failure_handling);
    if !resp.is_success() {
        return resp;
    }
    resp.triggers = answer.triggers.clone();
    let grants_units = req.kind != RequestType::Termination;
    // A request without MSCC still gets one grant (single-service clients).
    let asked: Vec<(ServiceKey, Option<ServiceUnits>)> = if req.credits.is_empty() {
        if grants_units {
            vec![(ServiceKey::default(), None)]
        } else {
            Vec::new()
        }
    } else {
        req.credits
            .iter()
            .map(|c| (c.service, c.requested))
            .collect()
    };
    for (service, requested) in asked {
        let refused = answer
            .mscc_result_code
            .filter(|_| answer.mscc_service.is_none_or(|s| s == service));
        let mut g = CreditGrant {
            service,
            result_code: Some(refused.unwrap_or(2001)),
            ..CreditGrant::default()
        };
        let wants = requested.is_some() || req.credits.is_empty();
        if refused.is_none() && grants_units && wants {
            g.granted = Some(answer.grant.unwrap_or(match requested {
                Some(r) if config.grant_requested && !r.is_empty() => r,
                _ => config.default_quota,
            }));
            g.validity_time = answer.validity_time.or(config.validity_time);
            g.final_unit_action = answer.final_unit_action;
        }
        resp.credits.push(g);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charging::ch2::{CreditRequest, ReportingReason};
    use crate::charging::online_rules::OnlineRule;

    const ALICE: &str = "sip:alice@test.invalid";

    fn s(n: u32) -> ServiceUnits {
        ServiceUnits::seconds(n)
    }
    fn initial(sid: &str) -> Ch2Request {
        Ch2Request::initial(sid)
            .served_user(ALICE)
            .request_units(s(60))
    }
    fn update(sid: &str, n: u32, used: u32) -> Ch2Request {
        Ch2Request::update(sid, n)
            .request_units(s(60))
            .report_used(s(used), ReportingReason::QuotaExhausted)
    }
    fn termination(sid: &str, n: u32, used: u32) -> Ch2Request {
        Ch2Request::termination(sid, n).report_used(s(used), ReportingReason::Final)
    }
    fn answer(d: &OcsDecision) -> &Ch2Response {
        d.response().expect("an answer")
    }

    #[test]
    fn default_grants_what_was_asked_or_the_quota() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        let d = ocs.handle_request(&initial("a"), t0);
        assert_eq!(d.at(), Some(t0), "no delay by default");
        let r = answer(&d);
        assert_eq!(r.result_code, 2001);
        assert_eq!(r.request_type, Some(RequestType::Initial));
        assert_eq!(r.credits[0].granted, Some(s(60)));
        assert_eq!(r.credits[0].result_code, Some(2001));
        assert_eq!(r.triggers, TriggerArming::Unchanged);
        // An empty Requested-Service-Unit gets the configured quota.
        let d = ocs.handle_request(
            &Ch2Request::initial("b").request_units(ServiceUnits::default()),
            t0,
        );
        assert_eq!(answer(&d).credits[0].granted, Some(s(600)));
        // Termination: no grant.
        let d = ocs.handle_request(&termination("a", 1, 10), t0);
        assert_eq!(answer(&d).granted_units(), None);
        // grant_requested off: always the quota.
        let mut fixed = Ocs::new(OcsConfig {
            default_quota: ServiceUnits::units(3),
            grant_requested: false,
            validity_time: Some(30),
            failure_handling: Some(FailureHandling::Continue),
        });
        let r = fixed.handle_request(&initial("c"), t0);
        assert_eq!(answer(&r).credits[0].granted, Some(ServiceUnits::units(3)));
        assert_eq!(answer(&r).credits[0].validity_time, Some(30));
        assert_eq!(answer(&r).failure_handling, Some(FailureHandling::Continue));
    }

    #[test]
    fn ordinals_pick_the_nth_request_of_a_kind_of_a_user() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        let k = ocs.script(
            OcsSelector::any()
                .user(ALICE)
                .kind(RequestType::Update)
                .nth(2),
            OcsAnswer::refuse(4012),
        );
        // Bob's session is untouched.
        let bob = Ch2Request::initial("bob")
            .served_user("sip:bob@x")
            .request_units(s(60));
        ocs.handle_request(&bob, t0);
        for n in 1..=3 {
            let d = ocs.handle_request(&update("bob", n, 1), t0);
            assert_eq!(answer(&d).result_code, 2001);
        }
        // Alice: the served user is known from her Initial, the Updates do
        // not repeat it.
        ocs.handle_request(&initial("al"), t0);
        let first = ocs.handle_request(&update("al", 1, 10), t0);
        let second = ocs.handle_request(&update("al", 2, 10), t0);
        let third = ocs.handle_request(&update("al", 3, 10), t0);
        assert_eq!(answer(&first).result_code, 2001);
        assert_eq!(answer(&second).result_code, 4012);
        assert!(answer(&second).credits.is_empty(), "no units on a refusal");
        assert_eq!(answer(&third).result_code, 2001);
        assert_eq!(ocs.script_uses(k), Some(1));
        assert_eq!(ocs.session("al").unwrap().exchanges[2].script, Some(k));
        // Without a kind, the ordinal counts every request; by Session-Id.
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any().session("x").nth(2),
            OcsAnswer::refuse(5030),
        );
        ocs.handle_request(&initial("y"), t0);
        assert_eq!(
            answer(&ocs.handle_request(&update("y", 1, 1), t0)).result_code,
            2001
        );
        ocs.handle_request(&initial("x"), t0);
        assert_eq!(
            answer(&ocs.handle_request(&update("x", 1, 1), t0)).result_code,
            5030
        );
    }

    #[test]
    fn scripts_are_tried_in_order_and_used_up() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(OcsSelector::any(), OcsAnswer::grant(s(5)).times(2));
        ocs.script(OcsSelector::any(), OcsAnswer::grant(s(7)));
        let g: Vec<_> = (0..4)
            .map(|i| {
                let d = ocs.handle_request(&update("a", i, 1), t0);
                answer(&d).credits[0].granted
            })
            .collect();
        assert_eq!(g, vec![Some(s(5)), Some(s(5)), Some(s(7)), Some(s(7))]);
    }

    #[test]
    fn every_scripted_kind_shows_on_the_response() {
        let t0 = Instant::now();
        type Check = Box<dyn Fn(&OcsDecision)>;
        let cases: Vec<(OcsAnswer, Check)> = vec![
            (
                OcsAnswer::grant(ServiceUnits::units(4)).validity(90),
                Box::new(|d| {
                    let c = &answer(d).credits[0];
                    assert_eq!(c.granted, Some(ServiceUnits::units(4)));
                    assert_eq!(c.validity_time, Some(90));
                }),
            ),
            (
                OcsAnswer::success().arm([TriggerType::ChangeInParticipantsNmb]),
                Box::new(|d| {
                    assert_eq!(
                        answer(d).triggers,
                        TriggerArming::Arm(vec![TriggerType::ChangeInParticipantsNmb])
                    )
                }),
            ),
            (
                OcsAnswer::success().arm([TriggerType::ChangeInThresholdOfParticipantsNmb]),
                Box::new(|d| {
                    assert_eq!(
                        answer(d).triggers,
                        TriggerArming::Arm(vec![TriggerType::ChangeInThresholdOfParticipantsNmb])
                    )
                }),
            ),
            (
                OcsAnswer::success().disarm(),
                Box::new(|d| assert_eq!(answer(d).triggers, TriggerArming::DisarmAll)),
            ),
            (
                OcsAnswer::grant(s(30)).final_unit(FinalUnitAction::Terminate),
                Box::new(|d| {
                    assert_eq!(
                        answer(d).final_unit_action(),
                        Some(FinalUnitAction::Terminate)
                    );
                    assert_eq!(answer(d).granted_units(), Some(s(30)));
                }),
            ),
            (
                OcsAnswer::refuse(4010),
                Box::new(|d| {
                    assert_eq!(answer(d).result_code, 4010);
                    assert!(answer(d).credits.is_empty());
                }),
            ),
            (
                OcsAnswer::refuse(5030).failure_handling(FailureHandling::Terminate),
                Box::new(|d| {
                    assert_eq!(answer(d).result_code, 5030);
                    assert_eq!(answer(d).failure_handling, Some(FailureHandling::Terminate));
                }),
            ),
            (
                OcsAnswer::refuse_service(4012),
                Box::new(|d| {
                    let r = answer(d);
                    assert_eq!(r.result_code, 2001);
                    assert_eq!(r.credits[0].result_code, Some(4012));
                    assert_eq!(r.credits[0].granted, None);
                    assert!(r.is_success() && !r.is_full_success());
                }),
            ),
            (
                OcsAnswer::grant(s(9)).after(Duration::from_millis(2500)),
                Box::new(move |d| assert_eq!(d.at(), Some(t0 + Duration::from_millis(2500)))),
            ),
            (
                OcsAnswer::no_answer(),
                Box::new(|d| {
                    assert_eq!(
                        *d,
                        OcsDecision::Withhold {
                            retransmission: false
                        }
                    )
                }),
            ),
        ];
        for (i, (script, check)) in cases.into_iter().enumerate() {
            let mut ocs = Ocs::new(OcsConfig::default());
            ocs.script(OcsSelector::any().kind(RequestType::Initial), script);
            let d = ocs.handle_request(&initial(&format!("s{i}")), t0);
            check(&d);
            // Later requests are not scripted.
            let d = ocs.handle_request(&update(&format!("s{i}"), 1, 1), t0);
            assert_eq!(d.at(), Some(t0), "case {i}");
            assert!(answer(&d).is_full_success(), "case {i}");
        }
    }

    #[test]
    fn mscc_refusal_can_target_one_service() {
        let t0 = Instant::now();
        let rg2 = ServiceKey {
            service_identifier: None,
            rating_group: Some(2),
        };
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any(),
            OcsAnswer::refuse_service(4012).only_service(rg2),
        );
        let req = initial("a").credit(CreditRequest {
            service: rg2,
            requested: Some(s(10)),
            ..CreditRequest::default()
        });
        let r = answer(&ocs.handle_request(&req, t0)).clone();
        assert_eq!(r.credits[0].result_code, Some(2001));
        assert_eq!(r.credits[0].granted, Some(s(60)));
        assert_eq!(r.credits[1].result_code, Some(4012));
        assert!(r.refuses(&rg2) && !r.refuses(&ServiceKey::default()));
        // Units used under the refused service are reported, not debited,
        // and the rules name it.
        let t = termination("a", 1, 20).credit(CreditRequest {
            service: rg2,
            used: Some(s(3)),
            ..CreditRequest::default()
        });
        ocs.handle_request(&t, t0);
        let sess = ocs.session("a").unwrap();
        assert_eq!(sess.reported_used, s(23));
        assert_eq!(sess.debited, s(20), "20 s debited for the granted service");
        let rules: Vec<_> = sess.check().into_iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![OnlineRule::NoUsageUnderRefusedService]);
    }

    #[test]
    fn ledger_adds_up_grants_reservations_and_debits() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any().kind(RequestType::Update).nth(2),
            OcsAnswer::grant(s(15)),
        );
        ocs.handle_request(&initial("a"), t0);
        let l = ocs.session("a").unwrap();
        assert_eq!((l.granted, l.reserved), (s(60), s(60)));
        assert!(l.debited.is_empty(), "nothing debited yet");
        ocs.handle_request(&update("a", 1, 60), t0 + Duration::from_secs(60));
        let l = ocs.session("a").unwrap();
        assert_eq!((l.granted, l.reserved, l.debited), (s(120), s(60), s(60)));
        ocs.handle_request(&update("a", 2, 45), t0 + Duration::from_secs(105));
        let l = ocs.session("a").unwrap();
        assert_eq!((l.granted, l.reserved, l.debited), (s(135), s(15), s(105)));
        ocs.handle_request(&termination("a", 3, 10), t0 + Duration::from_secs(115));
        let l = ocs.session("a").unwrap();
        assert_eq!((l.granted, l.debited), (s(135), s(115)));
        assert!(l.reserved.is_empty(), "released by the Termination");
        assert!(l.terminated);
        assert!(!l.initial_refused);
        assert!(!l.used_beyond_granted());
        assert_eq!(l.request_numbers(), vec![0, 1, 2, 3]);
        assert_eq!(
            l.exchanges[2].received,
            t0 + Duration::from_secs(105),
            "arrival time as passed in"
        );
        assert_eq!(l.check(), vec![]);
        // Using more than was granted shows.
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.handle_request(&initial("b"), t0);
        ocs.handle_request(&termination("b", 1, 61), t0);
        assert!(ocs.session("b").unwrap().used_beyond_granted());
    }

    #[test]
    fn a_refused_initial_is_recorded_and_a_termination_after_it_breaks_the_rule() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any().user(ALICE).kind(RequestType::Initial),
            OcsAnswer::refuse(4012),
        );
        ocs.handle_request(&initial("a"), t0);
        let l = ocs.session("a").unwrap();
        assert!(l.initial_refused);
        assert!(l.reserved.is_empty());
        assert!(l.granted.is_empty());
        assert_eq!(l.check(), vec![]);
        ocs.handle_request(&termination("a", 1, 0), t0);
        let rules: Vec<_> = ocs
            .session("a")
            .unwrap()
            .check()
            .into_iter()
            .map(|v| v.rule)
            .collect();
        assert_eq!(rules, vec![OnlineRule::RefusedInitialEndsSession]);
    }

    #[test]
    fn retransmissions_get_the_same_answer_and_count_once() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any().kind(RequestType::Update),
            OcsAnswer::grant(s(11))
                .after(Duration::from_secs(3))
                .times(1),
        );
        ocs.handle_request(&initial("a"), t0);
        let first = ocs.handle_request(&update("a", 1, 30), t0 + Duration::from_secs(1));
        assert_eq!(first.at(), Some(t0 + Duration::from_secs(4)));
        // Resent while the delayed answer is pending: same answer, same due time.
        let again = ocs.handle_retransmission(&update("a", 1, 30), t0 + Duration::from_secs(2));
        assert!(again.is_retransmission());
        assert_eq!(again.response(), first.response());
        assert_eq!(again.at(), Some(t0 + Duration::from_secs(4)));
        // Resent after it: same answer, now.
        let late = ocs.handle_retransmission(&update("a", 1, 30), t0 + Duration::from_secs(9));
        assert_eq!(late.response(), first.response());
        assert_eq!(late.at(), Some(t0 + Duration::from_secs(9)));
        let l = ocs.session("a").unwrap();
        assert_eq!(l.exchanges.len(), 2, "counted once");
        assert_eq!(l.exchanges[1].retransmissions, 2);
        assert_eq!(l.retransmissions(), 2);
        assert_eq!(l.debited, s(30), "debited once");
        assert_eq!(l.granted, s(71));
        // The script was used once, by the first transmission.
        assert_eq!(ocs.script_uses(0), Some(1));
        // A withheld request resent is withheld again.
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(OcsSelector::any(), OcsAnswer::no_answer().times(1));
        assert_eq!(
            ocs.handle_request(&initial("w"), t0),
            OcsDecision::Withhold {
                retransmission: false
            }
        );
        assert_eq!(
            ocs.handle_retransmission(&initial("w"), t0),
            OcsDecision::Withhold {
                retransmission: true
            }
        );
        // A T-flagged request never seen is simply new.
        let d = ocs.handle_retransmission(&update("w", 1, 1), t0);
        assert!(!d.is_retransmission());
        assert_eq!(answer(&d).result_code, 2001);
        // The same number again without T is a second request: the rules see it.
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.handle_request(&initial("d"), t0);
        ocs.handle_request(&update("d", 1, 1), t0);
        ocs.handle_request(&update("d", 1, 1), t0);
        ocs.handle_request(&termination("d", 3, 1), t0);
        let rules: Vec<_> = ocs
            .session("d")
            .unwrap()
            .check()
            .into_iter()
            .map(|v| v.rule)
            .collect();
        assert_eq!(rules, vec![OnlineRule::RequestNumbers]);
    }

    #[test]
    fn armed_triggers_follow_the_answers() {
        let t0 = Instant::now();
        let mut ocs = Ocs::new(OcsConfig::default());
        ocs.script(
            OcsSelector::any().kind(RequestType::Initial),
            OcsAnswer::success().arm([TriggerType::ChangeInParticipantsNmb]),
        );
        ocs.script(
            OcsSelector::any().kind(RequestType::Update).nth(2),
            OcsAnswer::success().disarm(),
        );
        ocs.handle_request(&initial("a"), t0);
        assert_eq!(
            ocs.session("a").unwrap().armed,
            vec![TriggerType::ChangeInParticipantsNmb]
        );
        ocs.handle_request(
            &update("a", 1, 1).triggered_by(TriggerType::ChangeInParticipantsNmb),
            t0,
        );
        assert_eq!(
            ocs.session("a").unwrap().armed,
            vec![TriggerType::ChangeInParticipantsNmb],
            "absent Trigger: unchanged"
        );
        ocs.handle_request(&update("a", 2, 1), t0);
        assert!(ocs.session("a").unwrap().armed.is_empty());
        let before: Vec<_> = ocs
            .session("a")
            .unwrap()
            .exchanges
            .iter()
            .map(|e| e.armed_before.len())
            .collect();
        assert_eq!(before, vec![0, 1, 1], "armed when each request arrived");
        ocs.retain_scripts(|_, a| a.triggers != TriggerArming::DisarmAll);
        ocs.handle_request(&update("a", 3, 1), t0);
        ocs.handle_request(&Ch2Request::initial("b").request_units(s(1)), t0);
        assert_eq!(
            ocs.session("b").unwrap().armed,
            vec![TriggerType::ChangeInParticipantsNmb],
            "the arming script is kept"
        );
        assert_eq!(ocs.script_uses(1), None, "the disarming one is gone");
        let ids: Vec<_> = ocs.sessions().map(|s| s.session_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"], "in order of arrival");
        let l = ocs.session("a").unwrap();
        assert_eq!(l.served_user.as_deref(), Some(ALICE));
        assert_eq!(l.final_unit_sent, None);
    }
}
