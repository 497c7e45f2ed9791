//! Correlation and the every-flow judge for online charging (CH-2): the same
//! rule of correlation as offline (`expect::belonging_to`: a request naming
//! the stream's served user, and any later one continuing a Session-Id such
//! a request opened), read from CCRs.

use std::collections::BTreeMap;

use super::expect::{Stream, role_matches};
use super::rules;
use super::verdict::Violation;
use crate::charging::ch2::{Ch2Request, RequestType};
use crate::charging::enabler::{ChargingRecord, Enabler};
use crate::sip::message;

/// A CCR the Enabler recorded, read as CH-2.
#[derive(Debug, Clone)]
pub struct OnlineRecord {
    pub record: ChargingRecord,
    pub request: Ch2Request,
}

/// Every CCR that maps, in arrival order.
pub fn online_records(all: Vec<ChargingRecord>) -> Vec<OnlineRecord> {
    let mut v: Vec<OnlineRecord> = all
        .into_iter()
        .filter_map(|record| {
            let request = record.ch2()?.ok()?;
            Some(OnlineRecord { record, request })
        })
        .collect();
    v.sort_by_key(|r| r.record.stamp);
    v
}

/// Whether a CH-2 request names the stream's served user (and, when it
/// reports a role, the stream's function).
pub fn names_stream(request: &Ch2Request, stream: &Stream) -> bool {
    let served = request.served_user.as_deref().and_then(message::uri_user);
    served == Some(stream.served.as_str())
        && request
            .role
            .is_none_or(|r| role_matches(r, stream.function))
}

/// A stream's CH-2 requests, in arrival order.
pub fn stream_records(all: Vec<ChargingRecord>, stream: &Stream) -> Vec<OnlineRecord> {
    let records = online_records(all);
    let sessions: Vec<String> = records
        .iter()
        .filter(|r| names_stream(&r.request, stream))
        .map(|r| r.request.session_id.clone())
        .collect();
    records
        .into_iter()
        .filter(|r| names_stream(&r.request, stream) || sessions.contains(&r.request.session_id))
        .collect()
}

/// One line for a failure: kind, number, Session-Id and the answer.
pub fn line(r: &OnlineRecord) -> String {
    format!(
        "{} #{} Session-Id={}",
        kind_name(r.request.kind),
        r.request.request_number,
        r.request.session_id
    )
}

/// The flows' name of a CH-2 request kind.
pub fn kind_name(kind: RequestType) -> &'static str {
    match kind {
        RequestType::Initial => "InitialRequest",
        RequestType::Update => "UpdateRequest",
        RequestType::Termination => "TerminationRequest",
        RequestType::Event => "EventRequest",
    }
}

/// A CH-2 request kind by the name a step uses.
pub fn kind_named(name: &str) -> Option<RequestType> {
    match name {
        "InitialRequest" => Some(RequestType::Initial),
        "UpdateRequest" => Some(RequestType::Update),
        "TerminationRequest" => Some(RequestType::Termination),
        "EventRequest" => Some(RequestType::Event),
        _ => None,
    }
}

/// The CC-Time a CH-2 session reports used cannot exceed how long it lasted
/// on the harness's own clock (its first request to its last, plus a second
/// for rounding): used units copied from the requested ones are caught.
fn used_time_as_used(
    stream: &Stream,
    session_id: &str,
    all: &[ChargingRecord],
) -> Option<Violation> {
    let records: Vec<OnlineRecord> = online_records(all.to_vec())
        .into_iter()
        .filter(|r| r.request.session_id == session_id)
        .collect();
    let (first, last) = (records.first()?, records.last()?);
    let lasted = last.record.stamp.at.duration_since(first.record.stamp.at);
    let used: u64 = records
        .iter()
        .flat_map(|r| r.request.credits.iter())
        .filter_map(|c| c.used.as_ref().and_then(|u| u.time))
        .map(u64::from)
        .sum();
    let bound = lasted.as_secs() + 1;
    (used > bound).then(|| {
        Violation::new(
            &rules::ON_USED_UNITS_AS_USED,
            format!("{} (CH-2 session {session_id})", stream.subject()),
            format!("at most {bound} s of CC-Time used (the session lasted {lasted:?})"),
            format!(
                "{used} s reported used:\n{}",
                records.iter().map(line).collect::<Vec<_>>().join("\n")
            ),
        )
    })
}

/// The every-flow online rules on each of the streams' CH-2 sessions, as the
/// Enabler's OCS kept them (requests with the answers they got).
pub fn judge(streams: &[Stream], all: &[ChargingRecord], enabler: &Enabler) -> Vec<Violation> {
    let mut out = Vec::new();
    for stream in streams {
        // Session-Ids in order of first appearance.
        let mut sessions = BTreeMap::new();
        for (i, r) in stream_records(all.to_vec(), stream).iter().enumerate() {
            sessions.entry(r.request.session_id.clone()).or_insert(i);
        }
        let mut sessions: Vec<(String, usize)> = sessions.into_iter().collect();
        sessions.sort_by_key(|(_, first)| *first);
        for (id, _) in sessions {
            out.extend(used_time_as_used(stream, &id, all));
            let Some(session) = enabler.ocs_session(&id) else {
                continue;
            };
            for v in session.check() {
                out.push(Violation::new(
                    rules::online(v.rule),
                    format!("{} (CH-2 session {id})", stream.subject()),
                    v.expected,
                    v.observed,
                ));
            }
        }
    }
    out
}
