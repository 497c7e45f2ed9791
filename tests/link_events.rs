//! A Diameter link that drops and reopens during a scenario is reported on
//! that scenario, and a SUT that resends what the drop lost is still judged
//! on its charging (the reference SUT resends with the T flag).
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use cpmcc::harness::{self, RunOptions, verdict::Verdict};
use cpmcc::profile::SutProfile;

#[test]
fn a_link_that_drops_mid_scenario_is_reported_on_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = SutProfile::load(&root.join("fixtures/sut/reference.yaml")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let summary = runtime
        .block_on(harness::run(RunOptions {
            profile,
            features: root.join("tests/features/link"),
            tags: None,
            concurrency: 1,
            free_ports: true,
            deviations: Vec::new(),
            cucumber_log: None,
        }))
        .unwrap();
    print!("{}", summary.render());
    let [result] = summary.results.as_slice() else {
        panic!("one scenario: {:?}", summary.results);
    };
    assert_eq!(result.verdict, Verdict::Pass, "{:?}", result.detail);
    let changes: Vec<&String> = result
        .warnings
        .iter()
        .filter(|w| w.contains("Diameter link changed during this scenario"))
        .collect();
    // It closed, and it opened again.
    assert!(
        changes.iter().any(|w| w.contains("closed"))
            && changes.iter().any(|w| w.contains("opened")),
        "{:?}",
        result.warnings
    );
    assert!(summary.passed(), "{}", summary.render());
}
