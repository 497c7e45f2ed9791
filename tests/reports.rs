//! Where a run's reports go: a new `reports/<run-id>/` per run with
//! `reports/latest` pointing at it, explicit paths still honoured, and the
//! `cpmcc list` catalogue of test purposes.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPORTS: [&str; 4] = ["summary.json", "cucumber.log", "junit.xml", "cucumber.json"];

/// A fresh folder to run in: its `reports/` is the run's, never the checkout's.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpmcc-reports-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cpmcc` run from `dir`; the profile and features are found beside Cargo.toml.
fn cpmcc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn short_run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--free-ports", "--tags", "@tp-OFF-INIT-01"];
    args.extend_from_slice(extra);
    cpmcc(dir, &args)
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The run folder `reports/latest` names, checked to be a sibling folder.
fn latest(reports: &Path) -> String {
    let target = std::fs::read_link(reports.join("latest")).unwrap();
    assert!(target.is_relative(), "{}", target.display());
    let id = target.to_str().unwrap().to_owned();
    assert!(reports.join(&id).is_dir(), "{id}");
    id
}

/// `20261202T131500Z-4f2a`
fn is_run_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..17] == b"Z-"
        && b[17..].iter().all(u8::is_ascii_hexdigit)
}

#[test]
fn a_run_writes_every_report_into_its_own_folder_and_latest_follows() {
    let dir = scratch("default");
    let reports = dir.join("reports");
    // What an older version left flat in reports/ must not pass for this run's.
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(reports.join("summary.json"), r#"{"old":true}"#).unwrap();

    let o = short_run(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = latest(&reports);
    assert!(is_run_id(&first), "{first}");
    for name in REPORTS {
        let file = reports.join(&first).join(name);
        assert!(file.is_file(), "{} missing: {}", file.display(), text(&o));
    }
    assert!(
        !reports.join("summary.json").exists(),
        "old flat summary left"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("latest/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["results"].as_array().unwrap().len(), 1, "{summary}");
    let junit = std::fs::read_to_string(reports.join("latest/junit.xml")).unwrap();
    assert!(junit.contains("<testsuites"), "{junit}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("latest/cucumber.json")).unwrap())
            .unwrap();
    assert!(json.is_array(), "{json}");
    assert!(
        text(&o).contains(&first),
        "the run says where: {}",
        text(&o)
    );

    // The next run gets a folder of its own; the first one stays as it was.
    let o = short_run(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let second = latest(&reports);
    assert_ne!(first, second);
    assert!(
        first < second || first[..16] == second[..16],
        "{first} {second}"
    );
    for name in REPORTS {
        assert!(reports.join(&first).join(name).is_file(), "{name}");
        assert!(reports.join(&second).join(name).is_file(), "{name}");
    }
    let names: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "two run folders and latest: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_that_cannot_start_moves_latest_away_from_the_last_verdict() {
    let dir = scratch("nostart");
    let reports = dir.join("out");
    let o = short_run(&dir, &["--reports", "out"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let good = latest(&reports);
    let o = short_run(
        &dir,
        &["--reports", "out", "--profile", "no-such-profile.yaml"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let failed = latest(&reports);
    assert_ne!(good, failed);
    assert!(!reports.join("latest/summary.json").exists());
    assert!(reports.join(&good).join("summary.json").is_file());
    assert!(!dir.join("reports").exists(), "--reports moves the folder");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_explicit_path_takes_one_report_out_of_the_run_folder() {
    let dir = scratch("explicit");
    let o = short_run(&dir, &["--json", "elsewhere/summary.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(dir.join("elsewhere/summary.json").is_file());
    let reports = dir.join("reports");
    let id = latest(&reports);
    assert!(!reports.join(&id).join("summary.json").exists());
    for name in ["cucumber.log", "junit.xml", "cucumber.json"] {
        assert!(reports.join(&id).join(name).is_file(), "{name}");
    }

    // Every path explicit: no run folder at all.
    let dir = scratch("all-explicit");
    let o = short_run(
        &dir,
        &[
            "--json",
            "s.json",
            "--cucumber-log",
            "c.log",
            "--junit",
            "j.xml",
            "--cucumber-json",
            "c.json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for name in ["s.json", "c.log", "j.xml", "c.json"] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    assert!(!dir.join("reports").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `@tp-` tag of the suite's feature files, counted in their text.
fn tp_tags() -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|x| x == "feature") {
                let text = std::fs::read_to_string(&path).unwrap();
                *n += text
                    .lines()
                    .filter(|l| l.trim_start().starts_with('@'))
                    .map(|l| l.matches("@tp-").count())
                    .sum::<usize>();
            }
        }
    }
    let mut n = 0;
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("features"),
        &mut n,
    );
    n
}

#[test]
fn list_names_every_test_purpose_with_its_clause() {
    let dir = scratch("list");
    let o = cpmcc(&dir, &["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let init = stdout
        .lines()
        .find(|l| l.starts_with("OFF-INIT-01 "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let columns: Vec<&str> = init.split_whitespace().collect();
    assert_eq!(columns[1..3], ["6.2.3.1", "offline"], "{init}");
    assert_eq!(stdout.lines().count(), tp_tags(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("OFF-TERM-03 ") && l.contains("needs-inactivity-timer")),
        "{stdout}"
    );
    assert!(!dir.join("reports").exists(), "list writes no reports");
}

#[test]
fn list_json_has_one_entry_per_test_purpose() {
    let dir = scratch("list-json");
    let o = cpmcc(&dir, &["list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), tp_tags());
    let init = all.iter().find(|t| t["id"] == "OFF-INIT-01").unwrap();
    assert_eq!(init["clause"], "6.2.3.1");
    assert_eq!(init["mode"], "offline");
    assert!(init["title"].as_str().unwrap().contains("200 OK"), "{init}");
    assert!(init["needs"].as_array().unwrap().is_empty(), "{init}");
    let grp = all.iter().find(|t| t["id"] == "OFF-GRP-INIT-02").unwrap();
    assert_eq!(
        grp["needs"],
        serde_json::json!(["group", "pre-defined-group-team-a"])
    );

    // Another features folder, and one that does not parse.
    let features = dir.join("features");
    std::fs::create_dir_all(&features).unwrap();
    std::fs::write(
        features.join("x.feature"),
        "@clause-9.9 @online\nFeature: x\n\n  @tp-ON-X-01 @needs-y\n  Scenario: y\n    Given z\n",
    )
    .unwrap();
    let o = cpmcc(&dir, &["list", "--json", "--features", "features"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all[0]["id"], "ON-X-01");
    assert_eq!(all[0]["mode"], "online");
    assert_eq!(all.as_array().unwrap().len(), 1);
    std::fs::write(features.join("bad.feature"), "no feature here\n").unwrap();
    let o = cpmcc(&dir, &["list", "--features", "features"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad.feature"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_written_baseline_round_trips_and_a_lost_pass_is_a_regression() {
    let dir = scratch("baseline");
    // YAML by its name; the run that writes it passes as before.
    let o = short_run(&dir, &["--write-baseline", "base/clean.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let written = std::fs::read_to_string(dir.join("base/clean.yaml")).unwrap();
    assert!(written.contains("cpmcc_baseline: 1"), "{written}");
    assert!(written.contains("test_purpose: OFF-INIT-01"), "{written}");
    assert!(written.contains("verdict: pass"), "{written}");

    // The same run against it: nothing changed, the gate passes.
    let o = short_run(
        &dir,
        &[
            "--baseline",
            "base/clean.yaml",
            "--write-baseline",
            "again.json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("1 unchanged, 0 regressed"),
        "{}",
        text(&o)
    );
    let summary = read_json(&dir.join("reports/latest/summary.json"));
    assert_eq!(summary["gate"], "pass", "{summary}");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["baseline"]["unchanged"], 1, "{summary}");
    // The JSON form holds the same verdicts.
    let again = read_json(&dir.join("again.json"));
    assert_eq!(again["cpmcc_baseline"], 1);
    assert_eq!(again["scenarios"][0]["test_purpose"], "OFF-INIT-01");
    assert_eq!(again["scenarios"][0]["verdict"], "pass");

    // A SUT that starts charging too early: OFF-INIT-01 regressed.
    let o = short_run(
        &dir,
        &[
            "--baseline",
            "base/clean.yaml",
            "--deviation",
            "start_before_answer",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.lines()
            .any(|l| l.contains("REGRESSED") && l.contains("OFF-INIT-01")),
        "{out}"
    );
    assert!(
        out.contains("gate against the baseline: FAIL (exit 1)"),
        "{out}"
    );
    let summary = read_json(&dir.join("reports/latest/summary.json"));
    assert_eq!(summary["gate"], "fail");
    assert_eq!(summary["exit_code"], 1);
    let regressions = summary["baseline"]["regressions"].as_array().unwrap();
    assert_eq!(regressions.len(), 1, "{summary}");
    assert_eq!(regressions[0]["test_purpose"], "OFF-INIT-01");
    assert_eq!(regressions[0]["baseline"], "pass");
    assert_eq!(regressions[0]["now"], "fail");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_listed_failure_that_now_passes_fails_the_gate_and_a_bad_baseline_stops_the_run() {
    let dir = scratch("baseline-fixed");
    std::fs::write(
        dir.join("known.json"),
        r#"{
  "cpmcc_baseline": 1,
  "scenarios": [
    { "test_purpose": "OFF-INIT-01",
      "scenario": "The recipient's 200 OK starts offline charging",
      "verdict": "fail" },
    { "test_purpose": "OFF-GONE-01", "scenario": "no longer there", "verdict": "pass" }
  ]
}"#,
    )
    .unwrap();
    let o = short_run(&dir, &["--baseline", "known.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.lines()
            .any(|l| l.contains("NOW PASSES") && l.contains("OFF-INIT-01")),
        "{out}"
    );
    // Removed scenarios are listed, not failures.
    assert!(
        out.lines()
            .any(|l| l.contains("removed") && l.contains("OFF-GONE-01")),
        "{out}"
    );
    let summary = read_json(&dir.join("reports/latest/summary.json"));
    assert_eq!(
        summary["baseline"]["now_passing"][0]["test_purpose"],
        "OFF-INIT-01"
    );
    assert_eq!(
        summary["baseline"]["removed"][0]["test_purpose"],
        "OFF-GONE-01"
    );
    assert!(
        summary["baseline"]["regressions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A baseline that does not parse, or is not there: exit 2 before the
    // run, naming the file and why.
    std::fs::write(
        dir.join("bad.json"),
        r#"{"cpmcc_baseline": 1, "scenarios": [{"#,
    )
    .unwrap();
    let o = short_run(&dir, &["--baseline", "bad.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("baseline bad.json does not parse"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains("listening"),
        "the run never started: {}",
        text(&o)
    );
    std::fs::write(
        dir.join("bad.yml"),
        "cpmcc_baseline: 1\nscenarios:\n  - test_purpose: X\n    scenario: y\n    verdict: passed\n",
    )
    .unwrap();
    let o = short_run(&dir, &["--baseline", "bad.yml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("bad.yml") && text(&o).contains("scenarios[0].verdict"),
        "{}",
        text(&o)
    );
    let o = short_run(&dir, &["--baseline", "missing.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot read baseline missing.json"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_sha256(v: &serde_json::Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn the_certificate_names_the_sut_the_suite_and_the_verdicts_per_clause() {
    let dir = scratch("certificate");
    let o = short_run(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = dir.join("reports/latest");
    let cert = read_json(&run.join("certificate.json"));
    // The SUT as its CER named it.
    let sut = &cert["sut"][0];
    assert_eq!(sut["origin_host"], "cpm.sut.test", "{cert}");
    assert!(
        sut["product_name"].as_str().is_some_and(|p| !p.is_empty()),
        "{cert}"
    );
    assert!(sut["vendor_id"].is_u64(), "{cert}");
    assert_eq!(cert["profile"], "cpmcc reference CPM server");
    assert!(cert["capabilities"]["offline"].is_array(), "{cert}");
    // The reference profile charges online too: its functions are listed.
    assert!(
        cert["capabilities"]["online"]
            .to_string()
            .contains("originating_pf"),
        "{cert}"
    );
    // With what and when.
    assert_eq!(cert["cpmcc"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(cert["cpmcc"]["git_commit"].is_string(), "{cert}");
    assert!(is_sha256(&cert["hashes"]["features_sha256"]), "{cert}");
    assert!(is_sha256(&cert["hashes"]["profile_sha256"]), "{cert}");
    assert!(cert["hashes"]["feature_files"].as_u64().unwrap() > 0);
    for at in ["started", "ended"] {
        let t = cert[at].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{at}: {t}"
        );
    }
    // Verdicts per clause, and the gate.
    let clause = cert["clauses"]["6.2.3.1"].as_array().unwrap();
    assert_eq!(clause.len(), 1, "{cert}");
    assert_eq!(clause[0]["test_purpose"], "OFF-INIT-01");
    assert_eq!(clause[0]["verdict"], "pass");
    assert_eq!(cert["gate"]["result"], "pass");
    assert_eq!(cert["gate"]["exit_code"], 0);
    // The summary has the same identity block, the gate and the exit code.
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["gate"], "pass");
    assert_eq!(summary["exit_code"], 0);
    assert!(summary["baseline"].is_null());
    for key in ["sut", "hashes", "cpmcc", "started", "ended", "profile"] {
        assert_eq!(summary["identity"][key], cert[key], "{key}");
    }
    let md = std::fs::read_to_string(run.join("certificate.md")).unwrap();
    assert!(md.contains("## 6.2.3.1"), "{md}");
    assert!(md.contains("| OFF-INIT-01 |"), "{md}");
    assert!(md.contains("cpm.sut.test"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
