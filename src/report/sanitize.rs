//! Text from the wire, made safe to print.
//!
//! A SUT (or anyone who can reach the harness's sockets) controls the bytes
//! of header values, AVPs, URIs and unparseable datagrams, and some of those
//! end up in the terminal summary, the JSON summary and the cucumber log. A
//! carriage return, a newline, an ANSI escape (`ESC [2J` clears the screen) or
//! a bidi override could then forge a line (`total: … PASS`) or hide one.
//! [`escape`] makes every such character visible (`\x1b`, `\r`, `\n`,
//! `\u{202e}`), so that each line the harness writes is one it began.
//!
//! Backslashes are left as they are: escaping is then idempotent
//! (`escape(escape(s)) == escape(s)`), so text may pass through it at both
//! storage and rendering without growing.

use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log as it is: C0 and C1
/// controls (newline and tab included), DEL, the Unicode line and paragraph
/// separators, and the bidi embedding, override and isolate marks.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// `text` as one printable line: every control character (newlines
/// included) written as a visible escape.
pub fn escape(text: &str) -> String {
    if !text.chars().any(must_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if must_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` whose newlines are the harness's own (a detail of several lines):
/// split at `\n`, each line escaped (a `\r` before a newline is shown too).
pub fn escape_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('\n').map(escape)
}

/// [`escape`], then cut to at most `max` characters; what is cut is counted
/// in a visible tail (`… (+1234 chars)`), so a cut is never mistaken for the
/// whole. Cuts fall on character boundaries, never inside an escape.
pub fn one_line(text: &str, max: usize) -> String {
    let escaped = escape(text);
    let total = escaped.chars().count();
    if total <= max {
        return escaped;
    }
    let tail_room = 24.min(max);
    let keep = max - tail_room;
    let mut out: String = escaped.chars().take(keep).collect();
    // Never end in the middle of an escape such as `\x1b`.
    if let Some(slash) = out.rfind('\\')
        && out.len() - slash < 10
    {
        out.truncate(slash);
    }
    let cut = total - out.chars().count();
    let _ = write!(out, "… (+{cut} chars)");
    out
}

/// A writer that escapes what passes through it, keeping newlines: for logs
/// whose line structure is the writer's own (the cucumber log), so that a
/// carriage return or an ANSI escape from the wire cannot rewrite a line.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    /// An incomplete UTF-8 sequence held back from the last write.
    pending: Vec<u8>,
}

impl<W: std::io::Write> EscapingWriter<W> {
    pub fn new(inner: W) -> Self {
        EscapingWriter {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // An incomplete sequence at the end waits for the next write;
            // an invalid one is written as U+FFFD.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        let out: Vec<String> = escape_lines(&text).collect();
        self.inner.write_all(out.join("\n").as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.inner.write_all(escape(&text).as_bytes())?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape("a\r\ntotal: 14 scenarios PASS"),
            "a\\r\\ntotal: 14 scenarios PASS"
        );
        assert_eq!(escape("\x1b[2J\x1b[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(
            escape("bell\x07 del\x7f tab\t"),
            "bell\\x07 del\\x7f tab\\t"
        );
        assert_eq!(escape("c1 \u{9b}2J"), "c1 \\u{9b}2J");
        assert_eq!(escape("bidi \u{202e}SSAP"), "bidi \\u{202e}SSAP");
        assert_eq!(escape("ls \u{2028}x"), "ls \\u{2028}x");
        assert_eq!(escape("é ü 日本"), "é ü 日本", "printable non-ASCII stays");
    }

    #[test]
    fn escaping_is_idempotent_and_yields_one_line() {
        let hostile = "x\r\n\x1b[2Jtotal: 1 scenarios, 1 pass: PASS\n\u{202e}\\x1b";
        let once = escape(hostile);
        assert_eq!(escape(&once), once);
        assert!(!once.contains('\n') && !once.contains('\r') && !once.contains('\x1b'));
    }

    #[test]
    fn lines_keep_their_newlines_but_not_their_carriage_returns() {
        let lines: Vec<String> = escape_lines("one\r\ntwo\x1b[1A\nthree").collect();
        assert_eq!(lines, ["one\\r", "two\\x1b[1A", "three"]);
    }

    #[test]
    fn one_line_cuts_long_text_and_says_how_much() {
        let long = format!("INVITE sip:{}@x SIP/2.0", "a".repeat(60_000));
        let cut = one_line(&long, 200);
        assert!(cut.chars().count() <= 200, "{}", cut.chars().count());
        assert!(cut.starts_with("INVITE sip:aaa"));
        assert!(cut.ends_with("chars)"), "{cut}");
        assert_eq!(one_line("short", 200), "short");
        // A cut never splits an escape or a character.
        let controls = "\x1b".repeat(500);
        let cut = one_line(&controls, 100);
        assert!(cut.starts_with("\\x1b\\x1b"));
        assert!(!cut.contains("\\x1… ") && !cut.contains("\\… "), "{cut}");
        let wide = "日".repeat(500);
        assert!(one_line(&wide, 50).chars().count() <= 50);
    }

    #[test]
    fn the_writer_escapes_across_writes_and_keeps_lines() {
        use std::io::Write as _;
        let mut w = EscapingWriter::new(Vec::new());
        let text = "step failed\r\n  observed: \x1b[2Jé\n";
        let bytes = text.as_bytes();
        // Split inside the two-byte `é`.
        let split = text.find('é').unwrap_or(0) + 1;
        w.write_all(&bytes[..split]).unwrap_or_default();
        w.write_all(&bytes[split..]).unwrap_or_default();
        w.flush().unwrap_or_default();
        let out = String::from_utf8(w.inner).unwrap_or_default();
        assert_eq!(out, "step failed\\r\n  observed: \\x1b[2Jé\n");
    }
}
