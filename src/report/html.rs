//! The run's `index.html`: one self-contained page (inline CSS, a few lines
//! of inline JS, no network) with the verdicts per clause, and for every
//! scenario its verdict, the rules broken with expected against observed,
//! and its ladder diagram as inline SVG, the first broken rule marked after
//! the last event. Clicking an arrow opens its detail below the diagram.
//!
//! Everything that may come from the SUT or the wire, and everything from a
//! file, goes through [`escape_html`] once, where it is written: element
//! text, attribute values and SVG text alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::harness::verdict::{Ladder, ScenarioResult, Summary, Verdict};

/// The page's name in the run folder.
pub const FILE_NAME: &str = "index.html";

/// `text` safe as HTML element text and as a quoted attribute value.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, a cut marked with `…`.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push('…');
    s
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left;vertical-align:top}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.4em;margin:.2em 0}
.v{font-weight:bold;padding:0 .4em;border-radius:3px}
.v-pass{background:#cfc}.v-fail{background:#fcc}.v-inconclusive{background:#ffc}
.v-not_applicable{background:#eee}.v-error{background:#fca}
section.scenario{border-top:1px solid #ccc;margin-top:1.5em}
svg text{font-family:monospace;font-size:12px}
svg .arrow:hover line{stroke-width:3}
details{margin-left:1em}
details:target,details[open]{background:#eef}
"#;

/// Opens the detail an arrow links to.
const SCRIPT: &str = "function openHash(){var d=document.getElementById(location.hash.slice(1));\
if(d&&d.tagName==='DETAILS'){d.open=true;}}\
window.addEventListener('hashchange',openHash);openHash();";

/// The whole page for a run. `gate` is the run's gate result (`pass`,
/// `fail`, `interrupted`).
pub fn render(summary: &Summary, gate: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cpmcc: {sut}</title><style>{STYLE}</style></head><body>\n\
         <h1>cpmcc conformance run: {sut}</h1>\n\
         <p>Gate: <span class=\"v v-{gate_class}\">{gate}</span> &mdash; ordering reading: {ordering} &mdash; \
         {n} scenario(s) in {secs:.2} s{interrupted}</p>\n",
        sut = escape_html(&summary.sut),
        gate_class = if gate == "pass" { "pass" } else { "fail" },
        gate = escape_html(&gate.to_uppercase()),
        ordering = escape_html(&summary.ordering),
        n = summary.results.len(),
        secs = summary.wall_time.as_secs_f64(),
        interrupted = if summary.interrupted {
            " &mdash; <strong>interrupted</strong>"
        } else {
            ""
        },
    );
    clause_table(&mut out, summary);
    let total = summary.strays_total.max(summary.strays.len() as u64);
    if total > 0 {
        let _ = write!(
            out,
            "<h2>Messages that belonged to no scenario: {total}</h2><ul>"
        );
        for s in &summary.strays {
            let _ = write!(out, "<li><code>{}</code></li>", escape_html(s));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Scenarios</h2>\n");
    for (i, r) in summary.results.iter().enumerate() {
        scenario(&mut out, i, r);
    }
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

const VERDICTS: [Verdict; 5] = [
    Verdict::Pass,
    Verdict::Fail,
    Verdict::Inconclusive,
    Verdict::NotApplicable,
    Verdict::Error,
];

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
        Verdict::NotApplicable => "not_applicable",
        Verdict::Error => "error",
    }
}

fn clause_table(out: &mut String, summary: &Summary) {
    let mut by_clause: BTreeMap<&str, Vec<&ScenarioResult>> = BTreeMap::new();
    for r in &summary.results {
        by_clause.entry(r.clause.as_str()).or_default().push(r);
    }
    out.push_str(
        "<h2>Verdicts per clause</h2>\n<table class=\"clauses\"><tr><th>clause</th><th>scenarios</th>",
    );
    for v in VERDICTS {
        let _ = write!(out, "<th>{v}</th>");
    }
    out.push_str("</tr>\n");
    let row = |out: &mut String, name: &str, results: &[&ScenarioResult]| {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            escape_html(name),
            results.len()
        );
        for v in VERDICTS {
            let n = results.iter().filter(|r| r.verdict == v).count();
            let class = if n > 0 {
                format!(" class=\"v-{}\"", verdict_class(v))
            } else {
                String::new()
            };
            let _ = write!(out, "<td{class}>{n}</td>");
        }
        out.push_str("</tr>\n");
    };
    for (clause, results) in &by_clause {
        row(out, clause, results);
    }
    let all: Vec<&ScenarioResult> = summary.results.iter().collect();
    row(out, "total", &all);
    out.push_str("</table>\n");
}

fn scenario(out: &mut String, i: usize, r: &ScenarioResult) {
    let _ = write!(
        out,
        "<section class=\"scenario\" id=\"s{i}\"><h3><span class=\"v v-{class}\">{verdict}</span> \
         {tp} <small>[{clause}] {feature}</small>: {name}</h3>\n<p>duration {ms} ms</p>\n",
        class = verdict_class(r.verdict),
        verdict = r.verdict,
        tp = escape_html(&r.test_purpose),
        clause = escape_html(&r.clause),
        feature = escape_html(&r.feature),
        name = escape_html(&r.scenario),
        ms = r.duration.as_millis(),
    );
    if let Some(reason) = &r.known_deviation {
        let _ = writeln!(out, "<p>Known deviation: {}</p>", escape_html(reason));
    }
    if !r.ladder.broken.is_empty() {
        out.push_str(
            "<table class=\"broken\"><tr><th>rule</th><th>clause</th><th>where</th>\
             <th>expected</th><th>observed</th></tr>\n",
        );
        for b in &r.ladder.broken {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code><br>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
                escape_html(b.rule),
                escape_html(b.text),
                escape_html(b.clause),
                escape_html(&b.subject),
                escape_html(&b.expected),
                escape_html(&b.observed),
            );
        }
        out.push_str("</table>\n");
    } else if !r.rules.is_empty() {
        let ids: Vec<String> = r.rules.iter().map(|id| escape_html(id)).collect();
        let _ = writeln!(out, "<p>Rules broken: <code>{}</code></p>", ids.join(", "));
    }
    if let Some(detail) = &r.detail {
        let _ = writeln!(
            out,
            "<details><summary>detail</summary><pre>{}</pre></details>",
            escape_html(detail)
        );
    }
    if !r.warnings.is_empty() {
        out.push_str("<p>Warnings:</p><ul>");
        for w in &r.warnings {
            let _ = write!(out, "<li>{}</li>", escape_html(w));
        }
        out.push_str("</ul>\n");
    }
    if r.ladder.events.is_empty() {
        out.push_str("<p>No messages recorded.</p>\n");
    } else {
        out.push_str(&ladder_svg(&format!("s{i}"), &r.ladder));
        out.push_str("\n<ol class=\"events\">");
        for (j, e) in r.ladder.events.iter().enumerate() {
            let _ = write!(
                out,
                "<li><details id=\"s{i}-e{j}\"><summary>+{} ms {} &rarr; {}: {}</summary><pre>{}</pre></details></li>",
                e.at_ms,
                escape_html(&e.from),
                escape_html(&e.to),
                escape_html(&e.label),
                escape_html(&e.detail),
            );
        }
        out.push_str("</ol>\n");
        if r.ladder.more > 0 {
            let _ = writeln!(out, "<p>… {} more event(s) not kept.</p>", r.ladder.more);
        }
    }
    out.push_str("</section>\n");
}

const LEFT: usize = 80;
const COLUMN: usize = 190;
const TOP: usize = 50;
const ROW: usize = 32;
const NOTE_LINE: usize = 16;

/// The ladder as an SVG: a lifeline per role, one arrow (`class="arrow"`)
/// per event linking to `#<id>-e<n>`, the relative time on the left, and
/// the broken rules in a red note after the last event.
pub fn ladder_svg(id: &str, ladder: &Ladder) -> String {
    let x = |name: &str| {
        let i = ladder
            .lifelines
            .iter()
            .position(|l| l == name)
            .unwrap_or(ladder.lifelines.len());
        LEFT + COLUMN / 2 + i * COLUMN
    };
    let columns = ladder.lifelines.len().max(1);
    let width = (LEFT + columns * COLUMN).max(600);
    let rows = ladder.events.len() + usize::from(ladder.more > 0);
    let note_lines: Vec<String> = ladder
        .broken
        .iter()
        .flat_map(|b| {
            let mut lines = vec![format!("✗ {} ({}): {}", b.rule, b.clause, b.subject)];
            for (what, text) in [("expected", &b.expected), ("observed", &b.observed)] {
                for (n, line) in text.lines().take(3).enumerate() {
                    let head = if n == 0 { what } else { "" };
                    lines.push(format!("  {head:<9} {line}"));
                }
            }
            lines
        })
        .map(|l| cut(&l, (width - 20) / 7))
        .collect();
    let note_height = if note_lines.is_empty() {
        0
    } else {
        note_lines.len() * NOTE_LINE + 16
    };
    let bottom = TOP + (rows + 1) * ROW;
    let height = bottom + note_height + 10;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"ladder\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">\
         <defs><marker id=\"{id}-head\" markerWidth=\"10\" markerHeight=\"8\" refX=\"10\" refY=\"4\" orient=\"auto\">\
         <path d=\"M0,0 L10,4 L0,8 z\" fill=\"#333\"/></marker></defs>"
    );
    for l in &ladder.lifelines {
        let lx = x(l);
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"10\" width=\"{}\" height=\"24\" fill=\"#eef\" stroke=\"#99a\"/>\
             <text x=\"{lx}\" y=\"27\" text-anchor=\"middle\">{}</text>\
             <line x1=\"{lx}\" y1=\"34\" x2=\"{lx}\" y2=\"{bottom}\" stroke=\"#99a\" stroke-dasharray=\"4 3\"/>",
            lx - COLUMN / 2 + 10,
            COLUMN - 20,
            escape_html(&cut(l, 24)),
        );
    }
    for (j, e) in ladder.events.iter().enumerate() {
        let y = TOP + (j + 1) * ROW;
        let (x1, x2) = (x(&e.from), x(&e.to));
        let mid = (x1 + x2) / 2;
        let colour = if e.to == Ladder::ENABLER || e.from == Ladder::ENABLER {
            "#a50"
        } else {
            "#333"
        };
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{y}\" fill=\"#666\">+{} ms</text>\
             <a href=\"#{id}-e{j}\"><g class=\"arrow\"><title>{}</title>\
             <line x1=\"{x1}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"1.5\" marker-end=\"url(#{id}-head)\"/>\
             <text x=\"{mid}\" y=\"{}\" text-anchor=\"middle\" fill=\"{colour}\">{}</text></g></a>",
            e.at_ms,
            escape_html(&cut(&e.detail, 300)),
            y - 5,
            escape_html(&cut(&e.label, 40)),
        );
    }
    if ladder.more > 0 {
        let y = TOP + (ladder.events.len() + 1) * ROW;
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{y}\" fill=\"#666\">… {} more event(s)</text>",
            ladder.more
        );
    }
    if !note_lines.is_empty() {
        let _ = write!(
            s,
            "<g class=\"broken-note\"><rect x=\"4\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fee\" stroke=\"#c00\"/>",
            bottom + 4,
            width - 8,
            note_height - 4
        );
        for (n, line) in note_lines.iter().enumerate() {
            let _ = write!(
                s,
                "<text x=\"12\" y=\"{}\" fill=\"#c00\" xml:space=\"preserve\">{}</text>",
                bottom + 20 + n * NOTE_LINE,
                escape_html(line)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::verdict::{BrokenRule, LadderEvent};
    use std::time::Duration;

    const HOSTILE: &str = "<script>alert(1)</script>\"><img onerror=alert(2) src=x>'";

    fn event(j: u64, from: &str, to: &str, label: &str, detail: &str) -> (u64, LadderEvent) {
        (
            j,
            LadderEvent {
                at_ms: j * 10,
                from: from.into(),
                to: to.into(),
                label: label.into(),
                detail: detail.into(),
            },
        )
    }

    fn hostile_summary() -> Summary {
        let mut ladder = Ladder::of(
            vec![HOSTILE.into(), Ladder::SUT.into(), Ladder::ENABLER.into()],
            vec![
                event(0, HOSTILE, Ladder::SUT, "INVITE", HOSTILE),
                event(1, Ladder::SUT, Ladder::ENABLER, HOSTILE, HOSTILE),
                event(2, Ladder::ENABLER, Ladder::SUT, "ACA 2001", "ok"),
            ],
        );
        ladder.broken.push(BrokenRule {
            rule: "off.start.after-answer",
            clause: "6.2.3.1",
            text: "Start only after the answer",
            subject: HOSTILE.into(),
            expected: HOSTILE.into(),
            observed: format!("{HOSTILE}\nsecond line {HOSTILE}"),
        });
        Summary {
            sut: HOSTILE.into(),
            ordering: HOSTILE.into(),
            strays: vec![HOSTILE.into()],
            strays_total: 1,
            results: vec![ScenarioResult {
                feature: HOSTILE.into(),
                clause: HOSTILE.into(),
                test_purpose: HOSTILE.into(),
                scenario: HOSTILE.into(),
                verdict: Verdict::Fail,
                detail: Some(HOSTILE.into()),
                rules: vec!["off.start.after-answer"],
                known_deviation: Some(HOSTILE.into()),
                warnings: vec![HOSTILE.into()],
                served_users: vec![],
                duration: Duration::from_millis(5),
                ladder,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn wire_text_renders_no_live_tag() {
        let page = render(&hostile_summary(), "fail");
        assert_eq!(
            page.matches("<script").count(),
            1,
            "only the page's own script"
        );
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(!page.contains("<img"), "{page}");
        assert_eq!(
            page.matches("onerror").count(),
            page.matches("&lt;img onerror").count(),
            "every onerror is escaped text"
        );
        assert!(!page.contains("alert(1)</script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img onerror"));
        // The rule is marked on the diagram.
        let svg = &page[page.find("<svg").unwrap_or(0)..];
        assert!(svg.contains("class=\"broken-note\""));
        assert!(svg.contains("off.start.after-answer"));
    }

    #[test]
    fn one_arrow_per_event() {
        let ladder = Ladder::of(
            vec!["alice".into(), Ladder::SUT.into(), Ladder::ENABLER.into()],
            (0..7)
                .map(|j| event(j, "alice", Ladder::SUT, "INVITE", "d"))
                .collect(),
        );
        let svg = ladder_svg("s0", &ladder);
        assert_eq!(svg.matches("class=\"arrow\"").count(), 7);
        assert_eq!(svg.matches("<line").count(), 7 + 3, "arrows and lifelines");
        for j in 0..7 {
            assert!(svg.contains(&format!("href=\"#s0-e{j}\"")));
        }
        assert!(!svg.contains("broken-note"), "no rule broken, no note");
    }

    #[test]
    fn a_long_ladder_is_cut_and_says_how_much() {
        let ladder = Ladder::of(
            vec!["alice".into(), Ladder::SUT.into()],
            (0..(Ladder::MAX_EVENTS as u64 + 12))
                .rev()
                .map(|j| event(j, "alice", Ladder::SUT, "BYE", "d"))
                .collect(),
        );
        assert_eq!(ladder.events.len(), Ladder::MAX_EVENTS);
        assert_eq!(ladder.more, 12);
        assert_eq!(ladder.events[0].at_ms, 0, "sorted by time");
        let svg = ladder_svg("s0", &ladder);
        assert!(svg.contains("… 12 more event(s)"));
    }
}
