//! cpmcc: conformance test harness for the charging behaviour of OMA CPM servers.
//!
//! Module map (see `../shared/design.md` for the picture):
//! - [`sip`]: SIP on rsip; sans-IO transactions and dialogs, UDP/TCP transport,
//!   the [`sip::agent::Agent`] that hosts the harness's test users.
//! - [`diameter`]: sans-IO Diameter codec, dictionary, peer state machine, TCP transport.
//! - [`charging`]: CH-1 (and later CH-2) requests as types, their Rf/Ro mapping,
//!   the Charging Enabler the harness plays, and the client the reference SUT uses.
//! - [`sut`]: the embedded reference CPM server (the default SUT) and its deviations.
//! - [`harness`]: cucumber World, steps by domain, expectations and verdicts.
//! - [`profile`]: the SUT profile (PIXIT values and PICS capabilities) from YAML.
//! - [`report`]: wire text made safe to print, the bounded record of strays.
//! - [`timeline`]: one global order of everything the harness observes.

pub mod charging;
pub mod diameter;
pub mod harness;
pub mod profile;
pub mod report;
pub mod sip;
pub mod sut;
pub mod timeline;
