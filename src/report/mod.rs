//! Turning what the harness saw into what it writes: text from the wire made
//! safe to print ([`sanitize`]) and the bounded record of messages that
//! belonged to no scenario ([`strays`]).

pub mod sanitize;
pub mod strays;
