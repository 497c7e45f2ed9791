//! Turning what the harness saw into what it writes: text from the wire made
//! safe to print ([`sanitize`]), the bounded record of messages that
//! belonged to no scenario ([`strays`]), one folder per run
//! ([`run_dir`]), the catalogue of test purposes ([`catalog`]), baselines
//! to compare runs against ([`baseline`]), the run's certificate
//! ([`certificate`]), its packet capture ([`capture`]) and its HTML page
//! ([`html`]).

pub mod baseline;
pub mod capture;
pub mod catalog;
pub mod certificate;
pub mod html;
pub mod run_dir;
pub mod sanitize;
pub mod strays;
