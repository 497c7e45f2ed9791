//! Messages that belonged to no scenario, kept within bounds.
//!
//! Every stray fails the gate, but a peer that floods the harness must not
//! be able to grow its memory or its report without limit: each stray is
//! kept as one short escaped line (what it was, where from, how big), only
//! the first [`StrayLog::KEEP`] are kept, and all are counted, in total and
//! per kind.

use std::collections::BTreeMap;

use super::sanitize;

/// The longest line kept for one stray, in characters.
pub const MAX_LINE: usize = 200;

/// A bounded record of strays: the first few in full (one short line each),
/// the rest only counted.
#[derive(Debug, Clone, Default)]
pub struct StrayLog {
    kept: Vec<String>,
    total: u64,
    by_kind: BTreeMap<String, u64>,
}

impl StrayLog {
    /// How many strays are kept as lines; the rest are only counted.
    pub const KEEP: usize = 100;

    /// Records one stray of `kind` (a fixed phrase of the harness, e.g.
    /// `request for no test user`), described by `detail` (which may carry
    /// anything from the wire: it is escaped and cut to [`MAX_LINE`]).
    pub fn push(&mut self, kind: &str, detail: &str) {
        self.total += 1;
        match self.by_kind.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.by_kind.insert(kind.to_owned(), 1);
            }
        }
        if self.kept.len() < Self::KEEP {
            self.kept
                .push(sanitize::one_line(&format!("{kind} {detail}"), MAX_LINE));
        }
    }

    /// Counts `n` more strays of `kind` whose lines another log already
    /// dropped (it kept only its first few).
    pub fn count_more(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        *self.by_kind.entry(kind.to_owned()).or_default() += n;
    }

    /// Adds another log's counts and as many of its lines as still fit.
    pub fn extend(&mut self, other: &StrayLog) {
        self.total += other.total;
        for (kind, n) in &other.by_kind {
            *self.by_kind.entry(kind.clone()).or_default() += n;
        }
        let room = Self::KEEP.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.iter().take(room).cloned());
    }

    /// The kept lines, in arrival order.
    pub fn kept(&self) -> &[String] {
        &self.kept
    }

    /// Every stray recorded, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Strays per kind.
    pub fn by_kind(&self) -> &BTreeMap<String, u64> {
        &self.by_kind
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_but_kept_small() {
        let mut log = StrayLog::default();
        let big = format!("from 10.0.0.1:5060 (60000 bytes): {}", "X".repeat(60_000));
        for _ in 0..1_500 {
            log.push("unreadable message", &big);
        }
        log.push(
            "request for no test user",
            "from 10.0.0.1:5060: OPTIONS sip:x@y",
        );
        assert_eq!(log.total(), 1_501);
        assert_eq!(log.kept().len(), StrayLog::KEEP);
        assert!(log.kept().iter().all(|l| l.chars().count() <= MAX_LINE));
        assert!(log.kept()[0].starts_with("unreadable message from 10.0.0.1:5060 (60000 bytes)"));
        assert_eq!(log.by_kind()["unreadable message"], 1_500);
        assert_eq!(log.by_kind()["request for no test user"], 1);
    }

    #[test]
    fn lines_are_escaped() {
        let mut log = StrayLog::default();
        log.push(
            "request for no test user",
            "from 1.2.3.4:5: OPTIONS sip:a\r\ntotal: 1 scenarios: PASS\x1b[2J",
        );
        let line = &log.kept()[0];
        assert!(!line.contains(['\r', '\n', '\x1b']), "{line}");
        assert!(line.contains("\\r\\ntotal"), "{line}");
    }

    #[test]
    fn logs_merge_within_the_bound() {
        let mut a = StrayLog::default();
        let mut b = StrayLog::default();
        for i in 0..80 {
            a.push("a", &i.to_string());
            b.push("b", &i.to_string());
        }
        a.extend(&b);
        assert_eq!(a.total(), 160);
        assert_eq!(a.kept().len(), StrayLog::KEEP);
        assert_eq!(a.by_kind()["b"], 80);
    }
}
