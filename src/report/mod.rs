//! Turning what the harness saw into what it writes: text from the wire made
//! safe to print ([`sanitize`]), the bounded record of messages that
//! belonged to no scenario ([`strays`]), one folder per run
//! ([`run_dir`]), the catalogue of test purposes ([`catalog`]) and
//! baselines to compare runs against ([`baseline`]).

pub mod baseline;
pub mod catalog;
pub mod run_dir;
pub mod sanitize;
pub mod strays;
