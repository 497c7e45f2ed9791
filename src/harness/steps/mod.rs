//! Steps, one module per domain concept (cucumber-rs book): SIP actions,
//! what reaches the Charging Enabler, and ordering between the two.

pub mod charging;
pub mod ordering;
pub mod sip;
