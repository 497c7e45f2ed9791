//! The catalogue of test purposes: every `@tp-…` scenario of the features,
//! with its clause, charging mode, title and what it needs of the SUT, read
//! from the feature files themselves (what `cpmcc list` prints).

use std::path::{Path, PathBuf};

use cucumber::gherkin::{Feature, GherkinEnv};
use serde::Serialize;

/// One test purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestPurpose {
    /// The id of its `@tp-…` tag, e.g. `OFF-INIT-01`.
    pub id: String,
    /// The clause of its Feature's `@clause-…` tag, e.g. `6.2.3.1`.
    pub clause: String,
    /// `offline` or `online` (the Feature's tag); empty if it has neither.
    pub mode: String,
    /// The scenario's title.
    pub title: String,
    /// What the scenario needs of the SUT profile: its `needs-…`, `group`,
    /// `pre-defined-group-…` and `ordering-strict` tags, in tag order.
    pub needs: Vec<String>,
    /// The feature file, relative to the features folder.
    pub feature: String,
}

/// A feature file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} does not parse: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Whether a tag (without `@`) says what a scenario needs of the SUT.
pub fn is_need(tag: &str) -> bool {
    tag.starts_with("needs-")
        || tag == "group"
        || tag.starts_with("pre-defined-group-")
        || tag == "ordering-strict"
}

/// Every test purpose of the `.feature` files under `root` (searched
/// recursively), files in path order, scenarios in file order.
pub fn load(root: &Path) -> Result<Vec<TestPurpose>, CatalogError> {
    let mut files = Vec::new();
    feature_files(root, &mut files)?;
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let feature =
            Feature::parse_path(&file, GherkinEnv::default()).map_err(|e| CatalogError::Parse {
                path: file.clone(),
                reason: e.to_string(),
            })?;
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        all.extend(of_feature(&feature, &name));
    }
    Ok(all)
}

fn feature_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
    let read_err = |path: &Path, e: std::io::Error| CatalogError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if dir.is_file() {
        out.push(dir.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let path = entry.map_err(|e| read_err(dir, e))?.path();
        if path.is_dir() {
            feature_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "feature") {
            out.push(path);
        }
    }
    Ok(())
}

/// The test purposes of one parsed feature; `file` names it. A scenario
/// with no `@tp-…` tag is no test purpose; one with two is listed twice.
pub fn of_feature(feature: &Feature, file: &str) -> Vec<TestPurpose> {
    let value = |tags: &[&String], prefix: &str| {
        tags.iter()
            .find_map(|t| t.strip_prefix(prefix).map(str::to_owned))
    };
    let has = |tags: &[&String], tag: &str| tags.iter().any(|t| t.as_str() == tag);
    let scenarios = feature.scenarios.iter().map(|s| (&[][..], s)).chain(
        feature
            .rules
            .iter()
            .flat_map(|r| r.scenarios.iter().map(move |s| (&r.tags[..], s))),
    );
    let mut out = Vec::new();
    for (rule_tags, scenario) in scenarios {
        let tags: Vec<&String> = feature
            .tags
            .iter()
            .chain(rule_tags)
            .chain(&scenario.tags)
            .chain(scenario.examples.iter().flat_map(|e| &e.tags))
            .collect();
        let mode = ["offline", "online"]
            .into_iter()
            .find(|m| has(&tags, m))
            .unwrap_or_default();
        let mut needs: Vec<String> = Vec::new();
        for tag in tags.iter().filter(|t| is_need(t)) {
            if !needs.contains(tag) {
                needs.push((*tag).clone());
            }
        }
        for id in tags.iter().filter_map(|t| t.strip_prefix("tp-")) {
            out.push(TestPurpose {
                id: id.to_owned(),
                clause: value(&tags, "clause-").unwrap_or_default(),
                mode: mode.to_owned(),
                title: scenario.name.clone(),
                needs: needs.clone(),
                feature: file.to_owned(),
            });
        }
    }
    out
}

/// One line per test purpose, columns aligned: id, clause, mode, title,
/// then what it needs. Text from the files is escaped.
pub fn render(all: &[TestPurpose]) -> String {
    use crate::report::sanitize::escape;
    let width = |f: fn(&TestPurpose) -> &str| all.iter().map(|t| f(t).len()).max().unwrap_or(0);
    let (wid, wclause, wmode) = (width(|t| &t.id), width(|t| &t.clause), width(|t| &t.mode));
    let mut text = String::new();
    for t in all {
        let mut line = format!(
            "{:<wid$}  {:<wclause$}  {:<wmode$}  {}",
            escape(&t.id),
            escape(&t.clause),
            escape(&t.mode),
            escape(&t.title)
        );
        if !t.needs.is_empty() {
            line.push_str("  [needs: ");
            line.push_str(&escape(&t.needs.join(", ")));
            line.push(']');
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;

    const FEATURE: &str = "\
@clause-6.2.3.7 @offline @group
Feature: 6.2.3.7 Termination

  @tp-OFF-X-01 @needs-operator-terminate
  Scenario: The operator ends it
    Given CPM clients \"alice\" and \"bob\"

  Scenario: Not a test purpose
    Given CPM clients \"alice\" and \"bob\"

  @tp-OFF-X-02 @ordering-strict @pre-defined-group-team-a @slow
  Scenario: Strictly
    Given CPM clients \"alice\" and \"bob\"

  @needs-dial-in
  Rule: dial-in
    @tp-OFF-X-03
    Scenario: Dialled in
      Given CPM clients \"alice\" and \"bob\"
";

    fn parsed() -> Vec<TestPurpose> {
        let feature = Feature::parse(FEATURE, GherkinEnv::default()).unwrap();
        of_feature(&feature, "offline/x.feature")
    }

    #[test]
    fn every_tp_scenario_is_listed_with_its_feature_tags() {
        let all = parsed();
        let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["OFF-X-01", "OFF-X-02", "OFF-X-03"]);
        assert_eq!(
            all[0],
            TestPurpose {
                id: "OFF-X-01".into(),
                clause: "6.2.3.7".into(),
                mode: "offline".into(),
                title: "The operator ends it".into(),
                needs: vec!["group".into(), "needs-operator-terminate".into()],
                feature: "offline/x.feature".into(),
            }
        );
    }

    #[test]
    fn needs_are_the_capability_tags_only() {
        let all = parsed();
        assert_eq!(
            all[1].needs,
            ["group", "ordering-strict", "pre-defined-group-team-a"]
        );
        // A Rule's tags count for its scenarios.
        assert_eq!(all[2].needs, ["group", "needs-dial-in"]);
    }

    #[test]
    fn one_line_per_test_purpose() {
        let text = render(&parsed());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "OFF-X-01  6.2.3.7  offline  The operator ends it  [needs: group, needs-operator-terminate]"
        );
    }

    #[test]
    fn the_suite_s_features_all_have_a_clause_and_a_mode() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("features");
        let all = load(&root).unwrap();
        assert!(all.len() >= 20, "{}", all.len());
        assert!(
            all.iter()
                .all(|t| !t.clause.is_empty() && !t.mode.is_empty())
        );
        let init = all.iter().find(|t| t.id == "OFF-INIT-01").unwrap();
        assert_eq!(init.clause, "6.2.3.1");
        assert_eq!(init.mode, "offline");
        let mut ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "test-purpose ids are unique");
    }

    #[test]
    fn a_file_that_does_not_parse_is_named() {
        let dir = std::env::temp_dir().join(format!("cpmcc-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.feature"),
            "Scenario without a feature\n  Given x\n",
        )
        .unwrap();
        let e = load(&dir).unwrap_err();
        assert!(e.to_string().contains("bad.feature"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
