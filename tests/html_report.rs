//! The run's `index.html` as a browser sees it: headless Chromium loads the
//! page from the run folder, its DOM is checked for the verdicts, the
//! ladder's SVG arrows and (for a SUT that starts charging too early) the
//! rule it broke, and a screenshot is kept beside the page as `index.png`.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh folder to run in: its `reports/` is the run's, never the checkout's.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpmcc-html-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A short run from `dir`; returns the run folder.
fn short_run(dir: &Path, extra: &[&str], exit: i32) -> PathBuf {
    let mut args = vec!["--free-ports", "--tags", "@tp-OFF-INIT-01"];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_cpmcc"))
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(exit), "{}", text(&o));
    let reports = dir.join("reports");
    let run = reports.join(std::fs::read_link(reports.join("latest")).unwrap());
    assert!(run.join("index.html").is_file(), "{}", text(&o));
    run
}

/// `chromium` or `chromium-browser`, if either runs.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn browse(browser: &str, run: &Path, extra: &[String]) -> Output {
    let page = format!("file://{}", run.join("index.html").display());
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,1600",
        ])
        .args(extra)
        .arg(&page)
        .output()
        .unwrap()
}

/// The DOM as Chromium built it from the page.
fn dump_dom(browser: &str, run: &Path) -> String {
    let o = browse(browser, run, &["--dump-dom".into()]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn screenshot(browser: &str, run: &Path) {
    let png = run.join("index.png");
    let o = browse(browser, run, &[format!("--screenshot={}", png.display())]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "no screenshot at {}: {}",
        png.display(),
        text(&o)
    );
}

/// The page has the verdict, a ladder with arrows, and one detail per arrow.
fn check_common(dom: &str, verdict: &str) {
    assert!(dom.contains("Verdicts per clause"), "{dom}");
    assert!(dom.contains("OFF-INIT-01"), "{dom}");
    assert!(
        dom.contains(&format!("<h3><span class=\"v v-{verdict}\">")),
        "no {verdict} verdict: {dom}"
    );
    assert!(dom.contains("<svg"), "no ladder: {dom}");
    let arrows = dom.matches("class=\"arrow\"").count();
    assert!(arrows >= 4, "{arrows} arrows: {dom}");
    assert_eq!(
        dom.matches("<details id=\"s0-e").count(),
        arrows,
        "one detail per arrow"
    );
    for label in ["INVITE", "200 (INVITE)", "ACR Start #0", "ACA 2001"] {
        assert!(dom.contains(label), "no {label}: {dom}");
    }
}

#[test]
fn a_browser_shows_the_verdicts_the_ladder_and_the_broken_rule() {
    let Some(browser) = chromium() else {
        // CI installs chromium (.ci/run): there the check must not skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, and CI requires the browser check"
        );
        println!("note: chromium not installed; skipping the HTML report's browser check");
        return;
    };
    let dir = scratch("browser");

    let clean = short_run(&dir, &[], 0);
    let dom = dump_dom(browser, &clean);
    check_common(&dom, "pass");
    assert!(!dom.contains("broken-note"), "a pass marks no rule: {dom}");
    screenshot(browser, &clean);

    let early = short_run(&dir, &["--deviation", "start_before_answer"], 1);
    assert_ne!(clean, early);
    let dom = dump_dom(browser, &early);
    check_common(&dom, "fail");
    assert!(dom.contains("off.start.after-answer"), "{dom}");
    let svg = &dom[dom.find("<svg").unwrap()..dom.find("</svg>").unwrap()];
    assert!(
        svg.contains("broken-note") && svg.contains("off.start.after-answer"),
        "the rule is marked on the diagram: {svg}"
    );
    screenshot(browser, &early);
    // The scratch folder stays, screenshots and all, for a human to look at.
    println!(
        "screenshots: {} and {}",
        clean.join("index.png").display(),
        early.join("index.png").display()
    );
}
