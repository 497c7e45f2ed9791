//! The online (CH-2) rules that hold for every flow (`spec/flows.md`,
//! "Rules that hold for every flow"), as a pure function over one charging
//! session's requests in arrival order with the answers they got.
//!
//! Each broken rule is named by a stable short key ([`OnlineRule::key`]);
//! the harness's rules catalogue maps the keys onto its entries. The rules
//! are written so that breaking one thing names one rule:
//! - a second TerminationRequest is [`OnlineRule::AtMostOneTermination`],
//!   any other request after a Termination is
//!   [`OnlineRule::NothingAfterTermination`];
//! - a command-level refusal of the Initial is
//!   [`OnlineRule::RefusedInitialEndsSession`] for whatever follows; an
//!   MSCC-level refusal (command 2001) refuses that service only, and the
//!   session goes on (RFC 4006: it still owes its Termination), so using
//!   the refused service is [`OnlineRule::NoUsageUnderRefusedService`].
//!
//! Pass first transmissions only: a retransmission (T flag, same request
//! number) is the same request, not a second one.

use std::collections::HashSet;
use std::fmt;

use super::ch2::{Ch2Request, Ch2Response, RequestType, ServiceKey};

/// One online every-flow rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OnlineRule {
    /// Exactly one InitialRequest per charging session.
    ExactlyOneInitial,
    /// At most one TerminationRequest per charging session.
    AtMostOneTermination,
    /// CC-Request-Number 0 on the first request, +1 on each after.
    RequestNumbers,
    /// One Session-Id from Initial to Termination.
    OneSessionId,
    /// InitialRequest and UpdateRequest ask for units
    /// (Requested-Service-Unit).
    UnitsRequested,
    /// UpdateRequest and TerminationRequest report used units
    /// (Used-Service-Unit).
    UsedUnitsReported,
    /// No request after the TerminationRequest: the Termination is last.
    NothingAfterTermination,
    /// A refused InitialRequest (command-level failure) ends the charging
    /// session: no request follows, no TerminationRequest either.
    RefusedInitialEndsSession,
    /// No units reported used for a service the server refused at MSCC
    /// level (command 2001, MSCC failure) and never granted.
    NoUsageUnderRefusedService,
    /// Every request carries Service-Information.
    ServiceInformationPresent,
}

impl OnlineRule {
    /// Every rule.
    pub const ALL: [OnlineRule; 10] = [
        OnlineRule::ExactlyOneInitial,
        OnlineRule::AtMostOneTermination,
        OnlineRule::RequestNumbers,
        OnlineRule::OneSessionId,
        OnlineRule::UnitsRequested,
        OnlineRule::UsedUnitsReported,
        OnlineRule::NothingAfterTermination,
        OnlineRule::RefusedInitialEndsSession,
        OnlineRule::NoUsageUnderRefusedService,
        OnlineRule::ServiceInformationPresent,
    ];

    /// Stable short key, e.g. `online.one-initial`.
    pub fn key(self) -> &'static str {
        match self {
            Self::ExactlyOneInitial => "online.one-initial",
            Self::AtMostOneTermination => "online.at-most-one-termination",
            Self::RequestNumbers => "online.request-numbers",
            Self::OneSessionId => "online.one-session-id",
            Self::UnitsRequested => "online.units-requested",
            Self::UsedUnitsReported => "online.used-units-reported",
            Self::NothingAfterTermination => "online.nothing-after-termination",
            Self::RefusedInitialEndsSession => "online.refused-initial-ends-session",
            Self::NoUsageUnderRefusedService => "online.no-usage-under-refused-service",
            Self::ServiceInformationPresent => "online.service-information",
        }
    }

    /// The rule as a sentence.
    pub fn text(self) -> &'static str {
        match self {
            Self::ExactlyOneInitial => "exactly one InitialRequest per charging session",
            Self::AtMostOneTermination => "at most one TerminationRequest per charging session",
            Self::RequestNumbers => "CC-Request-Number starts at 0 and rises by one",
            Self::OneSessionId => "one Session-Id from Initial to Termination",
            Self::UnitsRequested => "InitialRequest and UpdateRequest ask for units",
            Self::UsedUnitsReported => "UpdateRequest and TerminationRequest report used units",
            Self::NothingAfterTermination => "no request after the TerminationRequest",
            Self::RefusedInitialEndsSession => {
                "a refused InitialRequest ends the charging session (no TerminationRequest)"
            }
            Self::NoUsageUnderRefusedService => "no units used for a service refused at MSCC level",
            Self::ServiceInformationPresent => "every request carries Service-Information",
        }
    }
}

impl fmt::Display for OnlineRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One broken rule: which, at which request, expected against observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineViolation {
    /// The rule.
    pub rule: OnlineRule,
    /// Position of the offending request in arrival order (None when the
    /// session as a whole breaks it, e.g. no Initial at all).
    pub index: Option<usize>,
    /// What was expected.
    pub expected: String,
    /// What was observed.
    pub observed: String,
}

impl fmt::Display for OnlineViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule.key(), self.rule.text())?;
        if let Some(i) = self.index {
            write!(f, " (request {} in arrival order)", i + 1)?;
        }
        write!(
            f,
            ": expected {}, observed {}",
            self.expected, self.observed
        )
    }
}

/// Checks one charging session: its requests in arrival order, each with
/// the answer given (None: not answered). Returns every violation, in
/// request order; an empty list when the session keeps every rule.
///
/// A session of EventRequests only is a one-shot charging event: only
/// [`OnlineRule::OneSessionId`] and [`OnlineRule::ServiceInformationPresent`]
/// apply to it.
pub fn check_online_session<'a>(
    exchanges: impl IntoIterator<Item = (&'a Ch2Request, Option<&'a Ch2Response>)>,
) -> Vec<OnlineViolation> {
    let ex: Vec<(&Ch2Request, Option<&Ch2Response>)> = exchanges.into_iter().collect();
    let mut v = Vec::new();
    let mut push = |rule, index: Option<usize>, expected: String, observed: String| {
        v.push(OnlineViolation {
            rule,
            index,
            expected,
            observed,
        })
    };
    let Some(first) = ex.first() else {
        return v;
    };
    let events_only = ex.iter().all(|(r, _)| r.kind == RequestType::Event);

    for (i, (r, _)) in ex.iter().enumerate() {
        if r.session_id != first.0.session_id {
            push(
                OnlineRule::OneSessionId,
                Some(i),
                format!("Session-Id {:?}", first.0.session_id),
                format!("{} with Session-Id {:?}", r.kind.ch2_name(), r.session_id),
            );
        }
        if !r.service_information {
            push(
                OnlineRule::ServiceInformationPresent,
                Some(i),
                "Service-Information".to_owned(),
                format!("{} #{} without it", r.kind.ch2_name(), r.request_number),
            );
        }
    }
    if events_only {
        return v;
    }

    let initials = ex
        .iter()
        .filter(|(r, _)| r.kind == RequestType::Initial)
        .count();
    if initials != 1 {
        push(
            OnlineRule::ExactlyOneInitial,
            None,
            "one InitialRequest".to_owned(),
            format!("{initials}"),
        );
    }

    let mut terminated_at: Option<usize> = None;
    let mut refused_initial_at: Option<usize> = None;
    let mut granted: HashSet<ServiceKey> = HashSet::new();
    let mut refused: HashSet<ServiceKey> = HashSet::new();
    for (i, (r, resp)) in ex.iter().enumerate() {
        let name = format!("{} #{}", r.kind.ch2_name(), r.request_number);
        if r.request_number as usize != i {
            push(
                OnlineRule::RequestNumbers,
                Some(i),
                format!("CC-Request-Number {i}"),
                name.clone(),
            );
        }
        match (r.kind, terminated_at) {
            (RequestType::Termination, Some(t)) => push(
                OnlineRule::AtMostOneTermination,
                Some(i),
                "no second TerminationRequest".to_owned(),
                format!("{name} after the TerminationRequest at position {}", t + 1),
            ),
            (_, Some(t)) => push(
                OnlineRule::NothingAfterTermination,
                Some(i),
                "nothing after the TerminationRequest".to_owned(),
                format!("{name} after the TerminationRequest at position {}", t + 1),
            ),
            (RequestType::Termination, None) => terminated_at = Some(i),
            _ => {}
        }
        if let Some(at) = refused_initial_at {
            push(
                OnlineRule::RefusedInitialEndsSession,
                Some(i),
                "no request after the refused InitialRequest".to_owned(),
                format!(
                    "{name} after the InitialRequest at position {} was refused",
                    at + 1
                ),
            );
        }
        if matches!(r.kind, RequestType::Initial | RequestType::Update)
            && r.requested_units().is_none()
        {
            push(
                OnlineRule::UnitsRequested,
                Some(i),
                "Requested-Service-Unit".to_owned(),
                format!("{name} without it"),
            );
        }
        if matches!(r.kind, RequestType::Update | RequestType::Termination)
            && r.used_units().is_none()
        {
            push(
                OnlineRule::UsedUnitsReported,
                Some(i),
                "Used-Service-Unit".to_owned(),
                format!("{name} without it"),
            );
        }
        for c in &r.credits {
            let used = c.used.is_some_and(|u| !u.is_zero());
            if used && refused.contains(&c.service) && !granted.contains(&c.service) {
                push(
                    OnlineRule::NoUsageUnderRefusedService,
                    Some(i),
                    format!("no units used for {} (refused, never granted)", c.service),
                    format!("{name} reports {} used", c.used.unwrap_or_default()),
                );
            }
        }
        let Some(resp) = resp else { continue };
        if !resp.is_success() {
            if r.kind == RequestType::Initial && refused_initial_at.is_none() {
                refused_initial_at = Some(i);
            }
            continue;
        }
        for g in &resp.credits {
            if !g.is_success() {
                refused.insert(g.service);
            } else if g.granted.is_some() {
                granted.insert(g.service);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charging::ch2::{CreditGrant, CreditRequest, ReportingReason, ServiceUnits};

    fn s60() -> ServiceUnits {
        ServiceUnits::seconds(60)
    }

    fn ok(r: &Ch2Request) -> Ch2Response {
        let mut resp = Ch2Response::for_request(r, 2001);
        for c in &r.credits {
            resp.credits.push(CreditGrant {
                service: c.service,
                result_code: Some(2001),
                granted: c.requested,
                ..CreditGrant::default()
            });
        }
        resp
    }

    fn initial() -> Ch2Request {
        Ch2Request::initial("s").request_units(s60())
    }
    fn update(n: u32) -> Ch2Request {
        Ch2Request::update("s", n)
            .request_units(s60())
            .report_used(ServiceUnits::seconds(20), ReportingReason::QuotaExhausted)
    }
    fn termination(n: u32) -> Ch2Request {
        Ch2Request::termination("s", n)
            .report_used(ServiceUnits::seconds(5), ReportingReason::Final)
    }

    fn answered(reqs: Vec<Ch2Request>) -> Vec<(Ch2Request, Option<Ch2Response>)> {
        reqs.into_iter()
            .map(|r| {
                let a = ok(&r);
                (r, Some(a))
            })
            .collect()
    }

    fn rules(ex: &[(Ch2Request, Option<Ch2Response>)]) -> Vec<OnlineRule> {
        let mut v: Vec<OnlineRule> = check_online_session(ex.iter().map(|(r, a)| (r, a.as_ref())))
            .into_iter()
            .map(|v| v.rule)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn correct() -> Vec<(Ch2Request, Option<Ch2Response>)> {
        answered(vec![initial(), update(1), update(2), termination(3)])
    }

    #[test]
    fn a_correct_session_breaks_nothing() {
        assert_eq!(rules(&correct()), vec![]);
        // Initial then Termination only; an unanswered last request.
        let mut ex = answered(vec![initial(), termination(1)]);
        ex[1].1 = None;
        assert_eq!(rules(&ex), vec![]);
        // An Initial refused and nothing after it.
        let r = initial();
        let refusal = Ch2Response::for_request(&r, 4012);
        assert_eq!(rules(&[(r, Some(refusal))]), vec![]);
        // One-shot events.
        assert_eq!(rules(&answered(vec![Ch2Request::event("s")])), vec![]);
        assert_eq!(rules(&[]), vec![]);
    }

    fn alone(ex: Vec<(Ch2Request, Option<Ch2Response>)>, rule: OnlineRule) {
        assert_eq!(rules(&ex), vec![rule], "{}", rule.key());
    }

    #[test]
    fn each_rule_broken_alone_is_named_alone() {
        use OnlineRule::*;
        // No Initial.
        let mut u0 = update(0);
        u0.request_number = 0;
        alone(answered(vec![u0, termination(1)]), ExactlyOneInitial);
        // Two Initials.
        let mut i1 = initial();
        i1.request_number = 1;
        alone(
            answered(vec![initial(), i1, termination(2)]),
            ExactlyOneInitial,
        );
        // Two Terminations.
        alone(
            answered(vec![initial(), termination(1), termination(2)]),
            AtMostOneTermination,
        );
        // Numbers: skipping one, repeating one, not starting at 0.
        alone(
            answered(vec![initial(), update(2), termination(3)]),
            RequestNumbers,
        );
        alone(
            answered(vec![initial(), update(1), update(1), termination(3)]),
            RequestNumbers,
        );
        let mut i5 = initial();
        i5.request_number = 5;
        alone(
            answered(vec![i5, update(1), termination(2)]),
            RequestNumbers,
        );
        // Another Session-Id mid-way.
        let mut u = update(1);
        u.session_id = "other".to_owned();
        alone(answered(vec![initial(), u, termination(2)]), OneSessionId);
        // Initial / Update without Requested-Service-Unit.
        let mut bare_i = initial();
        bare_i.credits[0].requested = None;
        alone(answered(vec![bare_i, termination(1)]), UnitsRequested);
        let mut bare_u = update(1);
        bare_u.credits[0].requested = None;
        alone(
            answered(vec![initial(), bare_u, termination(2)]),
            UnitsRequested,
        );
        // Update / Termination without Used-Service-Unit.
        let mut no_used = update(1);
        no_used.credits[0].used = None;
        alone(
            answered(vec![initial(), no_used, termination(2)]),
            UsedUnitsReported,
        );
        alone(
            answered(vec![initial(), Ch2Request::termination("s", 1)]),
            UsedUnitsReported,
        );
        // An Update after the Termination.
        alone(
            answered(vec![initial(), termination(1), update(2)]),
            NothingAfterTermination,
        );
        // A Termination after a refused Initial (command level).
        let i = initial();
        let refusal = Ch2Response::for_request(&i, 4012);
        let t = termination(1);
        let ta = ok(&t);
        alone(
            vec![(i, Some(refusal)), (t, Some(ta))],
            RefusedInitialEndsSession,
        );
        // Units used under a service refused at MSCC level: rating group 2
        // refused in a 2001 answer, then reported used.
        let rg = |n| ServiceKey {
            service_identifier: None,
            rating_group: Some(n),
        };
        let i = initial().credit(CreditRequest {
            service: rg(2),
            requested: Some(s60()),
            ..CreditRequest::default()
        });
        let mut ia = ok(&i);
        ia.credits[1].result_code = Some(4012);
        ia.credits[1].granted = None;
        let t = termination(1).credit(CreditRequest {
            service: rg(2),
            used: Some(ServiceUnits::seconds(7)),
            ..CreditRequest::default()
        });
        let ta = ok(&t);
        alone(
            vec![(i.clone(), Some(ia.clone())), (t, Some(ta))],
            NoUsageUnderRefusedService,
        );
        // ...whereas reporting zero for it, or a Termination after an
        // Initial whose only refusal was at MSCC level, breaks nothing.
        let t0 = termination(1).credit(CreditRequest {
            service: rg(2),
            used: Some(ServiceUnits::seconds(0)),
            ..CreditRequest::default()
        });
        let t0a = ok(&t0);
        assert_eq!(rules(&[(i, Some(ia)), (t0, Some(t0a))]), vec![]);
        // No Service-Information.
        let mut u = update(1);
        u.service_information = false;
        alone(
            answered(vec![initial(), u, termination(2)]),
            ServiceInformationPresent,
        );
    }

    #[test]
    fn violations_say_where_and_what() {
        let ex = answered(vec![initial(), update(2), termination(3)]);
        let v = check_online_session(ex.iter().map(|(r, a)| (r, a.as_ref())));
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].index, Some(1));
        assert_eq!(v[0].expected, "CC-Request-Number 1");
        assert_eq!(v[0].observed, "UpdateRequest #2");
        assert!(
            v[0].to_string().starts_with("[online.request-numbers]"),
            "{}",
            v[0]
        );
        let keys: HashSet<&str> = OnlineRule::ALL.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), OnlineRule::ALL.len(), "keys are distinct");
    }
}
