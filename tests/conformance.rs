//! The whole suite against the embedded reference SUT: every scenario must
//! pass. Runs in-process on free ports, through the same `harness::run` as
//! `cargo run`.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use cpmcc::harness::{self, RunOptions, verdict::Verdict};
use cpmcc::profile::SutProfile;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile =
        SutProfile::load(&root.join("fixtures/sut/reference.yaml")).expect("reference profile");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let summary = runtime
        .block_on(harness::run(RunOptions {
            profile,
            features: root.join("features"),
            tags: None,
            concurrency: 16,
            free_ports: true,
            deviations: Vec::new(),
            cucumber_log: Some(std::env::temp_dir().join("cpmcc-conformance-cucumber.log")),
            junit: None,
            cucumber_json: None,
        }))
        .expect("the suite runs");
    print!("{}", summary.render());
    let passed = summary.count(Verdict::Pass);
    let failed = summary.results.len() - passed - summary.count(Verdict::NotApplicable);
    println!("conformance: {passed} passed, {failed} failed");
    assert!(
        summary.results.len() >= 12,
        "the suite lost scenarios: {}",
        summary.results.len()
    );
    assert_eq!(
        summary.count(Verdict::NotApplicable),
        0,
        "the reference SUT supports every feature"
    );
    assert!(
        summary.passed(),
        "the reference SUT must pass the whole suite"
    );
}
