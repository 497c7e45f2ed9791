//! The embedded reference CPM server: the default SUT.
//!
//! A Participating Function for 1-1 sessions (originating and terminating)
//! in two shapes, a B2BUA (`b2bua`) or a record-routing stateful proxy
//! (`proxy`), each a sans-IO [`core::SessionCore`] that `server` drives,
//! that reports offline charging exactly as `spec/flows.md` says, with named
//! [`deviation::Deviation`]s that each break one rule so the suite can prove
//! it catches them. The harness reaches it only through its sockets.

mod admin;
pub mod b2bua;
pub mod charging;
pub mod config;
pub mod core;
pub mod deviation;
pub mod focus;
pub mod proxy;
pub mod server;

pub use config::SutConfig;
pub use deviation::Deviation;
pub use server::{RunningSut, SutError, start};
