//! CH-1 (offline) charging as typed requests and responses, the Rf mapping,
//! the Charging Enabler the harness plays, and the charging client of the
//! reference SUT.
//!
//! - [`ch1`]: what a flow rule talks about (Start/Interim/Stop/Event, served
//!   user, role, participants), independent of Diameter.
//! - [`rf`]: CH-1 <-> ACR/ACA (3GPP TS 32.299 over RFC 6733 accounting).
//! - [`enabler`]: the Diameter server (CDF role) that records every request
//!   with a timeline stamp and answers by script. The online (OCS, CH-2)
//!   role will plug in at [`enabler::Enabler`]'s CCR seam.
//! - [`link`]: the reference SUT's Diameter link as a sans-IO core
//!   (reconnection with backoff, queue, T-flag resend).
//! - [`client`]: the Rf client the reference SUT uses, a task around
//!   [`link::Link`].

pub mod ch1;
pub mod ch2;
pub mod charging_request;
pub mod client;
pub mod enabler;
pub mod link;
pub mod ocs;
pub mod online_rules;
pub mod rf;
pub mod ro;

pub use ch1::{Ch1Request, Ch1Response, ChargedRole, RecordType};
pub use ch2::{
    Ch2Request, Ch2Response, CreditGrant, CreditRequest, FailureHandling, FinalUnitAction,
    ReportingReason, RequestType, RequestedAction, ServiceKey, ServiceUnits, TriggerArming,
    TriggerType,
};
pub use charging_request::{ChargingRequest, Interface, RequestKind};
pub use client::{ChargingClient, ChargingClientError, ClientConfig, LinkStatus};
pub use enabler::{
    AnswerOutcome, AnswerSelector, ChargingRecord, ConnectionInfo, Enabler, EnablerConfig,
    EnablerError, LinkEvent, LinkEventKind, ScriptedAnswer, Stray,
};
pub use link::{Link, LinkAction, LinkConfig, LinkFailure, LinkState, RequestId};
pub use ocs::{
    CcrOutcome, Ocs, OcsAnswer, OcsConfig, OcsDecision, OcsExchange, OcsSelector, OcsSession,
};
pub use online_rules::{OnlineRule, OnlineViolation, check_online_session};
pub use rf::{MappingError, aca_for, bench_acr_roundtrip};
pub use ro::{RoMappingError, ro_client_identity};
