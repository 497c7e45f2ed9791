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
