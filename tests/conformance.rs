//! The whole suite against the embedded reference SUT, in both its shapes
//! (B2BUA, record-routing proxy) and over both SIP transports (UDP, TCP):
//! every scenario must pass each time, with no stray message. Runs
//! in-process on free ports, through the same `harness::run` as `cargo run`,
//! one run after the other (one process runs one suite at a time).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use cpmcc::harness::{self, RunOptions, verdict::Verdict};
use cpmcc::profile::{SutProfile, Transport};
use cpmcc::sut::config::Shape;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut failures = Vec::new();
    for shape in [Shape::B2bua, Shape::Proxy] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let label = format!("{shape:?}/{transport:?}").to_lowercase();
            let mut profile = SutProfile::load(&root.join("fixtures/sut/reference.yaml"))
                .expect("reference profile");
            profile.sut.sip.transport = transport;
            profile
                .sut
                .embedded
                .as_mut()
                .expect("the reference profile embeds the SUT")
                .shape = shape;
            // The proxy shape charges offline only: its online scenarios
            // are n/a, and say so.
            if shape == Shape::Proxy {
                profile.charging.online = None;
            }
            let summary = runtime
                .block_on(harness::run(RunOptions {
                    profile,
                    features: root.join("features"),
                    tags: None,
                    concurrency: 16,
                    free_ports: true,
                    deviations: Vec::new(),
                    cucumber_log: Some(
                        std::env::temp_dir()
                            .join(format!("cpmcc-conformance-{}.log", label.replace('/', "-"))),
                    ),
                    junit: None,
                    cucumber_json: None,
                }))
                .expect("the suite runs");
            println!("== {label}");
            print!("{}", summary.render());
            let passed = summary.count(Verdict::Pass);
            let failed = summary.results.len() - passed - summary.count(Verdict::NotApplicable);
            println!("conformance {label}: {passed} passed, {failed} failed");
            if summary.results.len() < 12 {
                failures.push(format!(
                    "{label}: the suite lost scenarios: {}",
                    summary.results.len()
                ));
            }
            let not_applicable: Vec<&str> = summary
                .results
                .iter()
                .filter(|r| r.verdict == Verdict::NotApplicable)
                .map(|r| r.test_purpose.as_str())
                .collect();
            let expected_na = |tp: &&str| shape == Shape::Proxy && tp.starts_with("ON-");
            if !not_applicable.iter().all(expected_na) {
                failures.push(format!(
                    "{label}: the reference SUT supports every feature, but n/a: {not_applicable:?}"
                ));
            }
            if !summary.strays.is_empty() {
                failures.push(format!(
                    "{label}: messages belonged to no scenario: {:?}",
                    summary.strays
                ));
            }
            // The reference SUT sends nothing odd: every message a test user
            // gets comes from it, every Contact is a SIP URI, every 2xx it
            // owes is retransmitted while the ACK is held.
            let warned: Vec<String> = summary
                .results
                .iter()
                .filter(|r| !r.warnings.is_empty())
                .map(|r| format!("{}: {}", r.test_purpose, r.warnings.join("; ")))
                .collect();
            if !warned.is_empty() {
                failures.push(format!("{label}: warnings: {}", warned.join("\n")));
            }
            if !summary.passed() {
                failures.push(format!(
                    "{label}: the reference SUT must pass the whole suite, with no stray"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
