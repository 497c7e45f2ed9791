//! Steps, one module per domain concept (cucumber-rs book): SIP actions,
//! group sessions, what reaches the Charging Enabler, and ordering between the two; and the
//! judge, the last step of every scenario.

pub mod charging;
pub mod group;
pub mod judge;
pub mod online;
pub mod ordering;
pub mod sip;
