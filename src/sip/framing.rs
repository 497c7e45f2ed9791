//! Bytes to SIP messages and back, sans-IO.
//!
//! - [`StreamDecoder`] frames SIP over a stream (TCP) by Content-Length
//!   (RFC 3261 §18.3): several messages in one read, one message over many
//!   reads, CRLF keep-alives between messages (RFC 5626 §3.5.1).
//! - [`parse_message`] / [`parse_datagram`] turn one message's bytes into an
//!   [`rsip::SipMessage`]. rsip 0.4 is strict where RFC 3261 is liberal: it
//!   does not know compact header names (`v:`, `i:`, `l:` ...), does not unfold
//!   continuation lines, rejects whitespace before the colon and bare-LF line
//!   ends, and keeps a comma-separated `Via: a, b` as one header. We normalise
//!   those forms first (RFC 4475 collects them), then hand the text to rsip.
//! - [`encode`] writes a message with a correct Content-Length and the body
//!   bytes verbatim (rsip's `Display` would lossily re-encode a non-UTF-8 body).

use thiserror::Error;

/// Default cap on the header section of one message on a stream.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default cap on the body of one message on a stream.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Fatal framing errors on a stream: the connection cannot be resynchronised
/// and should be closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    #[error("SIP header section exceeds {limit} bytes without an empty line ending it")]
    HeadersTooLarge { limit: usize },
    #[error("SIP body of {length} bytes (Content-Length) exceeds the limit of {limit} bytes")]
    BodyTooLarge { length: usize, limit: usize },
    #[error("Content-Length value {value:?} is not a decimal number")]
    BadContentLength { value: String },
    #[error("two Content-Length headers disagree: {first} and {second}")]
    ConflictingContentLength { first: usize, second: usize },
}

/// Why bytes could not be turned into a SIP message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("message is empty")]
    Empty,
    #[error("no empty line ends the header section")]
    NoHeaderEnd,
    #[error("header line {line:?} has no colon")]
    NoColon { line: String },
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("Content-Length value {value:?} is not a decimal number")]
    BadContentLength { value: String },
    #[error("Content-Length {declared} exceeds the {available} body bytes in the datagram")]
    TruncatedBody { declared: usize, available: usize },
    #[error("rsip rejected the message: {detail}")]
    Rsip { detail: String },
}

/// Sans-IO decoder for SIP over a byte stream.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    max_header_bytes: usize,
    max_body_bytes: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::with_limits(MAX_HEADER_BYTES, MAX_BODY_BYTES)
    }

    pub fn with_limits(max_header_bytes: usize, max_body_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_header_bytes,
            max_body_bytes,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message (its raw bytes), `Ok(None)` when more bytes
    /// are needed. An error is fatal for the stream.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        // Keep-alives (CRLF, RFC 5626) and stray line ends between messages.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip > 0 {
            self.buf.drain(..skip);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_len, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.max_header_bytes {
                return Err(FramingError::HeadersTooLarge {
                    limit: self.max_header_bytes,
                });
            }
            return Ok(None);
        };
        if head_len > self.max_header_bytes {
            return Err(FramingError::HeadersTooLarge {
                limit: self.max_header_bytes,
            });
        }
        let length = stream_content_length(&self.buf[..head_len])?.unwrap_or(0);
        if length > self.max_body_bytes {
            return Err(FramingError::BodyTooLarge {
                length,
                limit: self.max_body_bytes,
            });
        }
        let total = body_start + length;
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let message = std::mem::replace(&mut self.buf, rest);
        Ok(Some(message))
    }
}

/// Finds the empty line ending the header section: returns (length of the
/// header section without the empty line, offset of the body). Accepts CRLF
/// and bare LF line ends.
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // A line ended at i; is the next line empty?
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Header lines of a header section (after the start line), unfolded,
/// as (name, value) with the name trimmed and the value trimmed.
fn header_lines(head: &str) -> Result<Vec<(String, String)>, ParseError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in head.split('\n').skip(1) {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 §7.3.1): joins the previous value.
            if let Some(last) = out.last_mut() {
                let more = line.trim();
                if !more.is_empty() {
                    if !last.1.is_empty() {
                        last.1.push(' ');
                    }
                    last.1.push_str(more);
                }
                continue;
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::NoColon {
                line: line.to_string(),
            });
        };
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// Whether a header section needs none of what [`parse`] normalises: CRLF
/// line ends, a canonical start line, full header names followed by `: `
/// and a trimmed value, no folding, single-valued list headers, and one
/// Content-Length equal to the body's length.
fn is_canonical(head: &str, body_len: usize) -> bool {
    let mut lines = head.split('\n');
    let Some(start) = lines.next().and_then(|l| l.strip_suffix('\r')) else {
        return false;
    };
    if normalise_start_line(start) != start {
        return false;
    }
    let mut content_length = None;
    for raw in lines {
        if raw.is_empty() {
            continue; // after the last line's LF
        }
        let Some(line) = raw.strip_suffix('\r') else {
            return false;
        };
        let Some((name, value)) = line.split_once(": ") else {
            return false;
        };
        let untrimmed = |v: &str| v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']);
        if name.len() < 2 || name.contains([' ', '\t']) || value.is_empty() || untrimmed(value) {
            return false;
        }
        if is_content_length(name) {
            if content_length.is_some() {
                return false;
            }
            match value.parse::<usize>() {
                Ok(n) => content_length = Some(n),
                Err(_) => return false,
            }
        } else if is_list_header(name) && value.contains(',') {
            return false;
        }
    }
    content_length == Some(body_len)
}

fn is_content_length(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")
}

fn stream_content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let text = String::from_utf8_lossy(head);
    let lines = header_lines(&text).unwrap_or_default();
    let mut found: Option<usize> = None;
    for (name, value) in lines {
        if !is_content_length(&name) {
            continue;
        }
        let n: usize = value.parse().map_err(|_| FramingError::BadContentLength {
            value: value.clone(),
        })?;
        if let Some(first) = found
            && first != n
        {
            return Err(FramingError::ConflictingContentLength { first, second: n });
        }
        found = Some(n);
    }
    Ok(found)
}

/// Compact header forms (RFC 3261 §7.3.3 and later RFCs) to full names.
pub fn expand_compact_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.to_ascii_lowercase().as_str() {
        "a" => "Accept-Contact",
        "b" => "Referred-By",
        "c" => "Content-Type",
        "d" => "Request-Disposition",
        "e" => "Content-Encoding",
        "f" => "From",
        "i" => "Call-ID",
        "j" => "Reject-Contact",
        "k" => "Supported",
        "l" => "Content-Length",
        "m" => "Contact",
        "n" => "Identity-Info",
        "o" => "Event",
        "r" => "Refer-To",
        "s" => "Subject",
        "t" => "To",
        "u" => "Allow-Events",
        "v" => "Via",
        "x" => "Session-Expires",
        "y" => "Identity",
        _ => name,
    }
}

/// Headers whose comma-separated values we split into one header each, so
/// that "the first Via" is the topmost value however the peer wrote it.
fn is_list_header(name: &str) -> bool {
    ["via", "route", "record-route", "contact"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Splits a header value at commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for ch in value.chars() {
        if escaped {
            cur.push(ch);
            escaped = false;
            continue;
        }
        match ch {
            '\\' if in_quotes => {
                escaped = true;
                cur.push(ch);
            }
            '"' => {
                in_quotes = !in_quotes;
                cur.push(ch);
            }
            '<' if !in_quotes => {
                in_angle = true;
                cur.push(ch);
            }
            '>' if !in_quotes => {
                in_angle = false;
                cur.push(ch);
            }
            ',' if !in_quotes && !in_angle => {
                let t = cur.trim();
                if !t.is_empty() {
                    parts.push(t.to_string());
                }
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    let t = cur.trim();
    if !t.is_empty() {
        parts.push(t.to_string());
    }
    parts
}

/// Collapses the whitespace in the start line ("SIP / 2.0" stays, but runs of
/// spaces between the three elements of a request line become one).
fn normalise_start_line(line: &str) -> String {
    let line = line.trim();
    if line.starts_with("SIP/") {
        // Status line: version, code, free reason phrase.
        let mut it = line.splitn(2, char::is_whitespace);
        let version = it.next().unwrap_or_default();
        let rest = it.next().unwrap_or_default().trim_start();
        let mut it = rest.splitn(2, char::is_whitespace);
        let code = it.next().unwrap_or_default();
        let reason = it.next().unwrap_or_default().trim();
        // rsip needs a reason phrase token; an empty one is legal SIP.
        let reason = if reason.is_empty() { "-" } else { reason };
        format!("{version} {code} {reason}")
    } else {
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Parses one message from a stream (the body is everything after the header
/// section, as framed by [`StreamDecoder`]).
pub fn parse_message(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    parse(bytes, false)
}

/// Parses one UDP datagram: a Content-Length shorter than the body truncates
/// it, a longer one is an error (RFC 3261 §18.3); a missing one means the
/// body runs to the end of the datagram.
pub fn parse_datagram(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    parse(bytes, true)
}

fn parse(bytes: &[u8], datagram: bool) -> Result<rsip::SipMessage, ParseError> {
    let skip = bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let bytes = &bytes[skip..];
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head_len, body_start) = find_header_end(bytes).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| ParseError::NotUtf8)?;
    let mut body = &bytes[body_start..];
    // Fast path: a message already in the one form rsip reads gives rsip the
    // bytes as they are (rebuilding it halves the parse rate). Anything
    // rsip still refuses takes the normalising path below.
    if is_canonical(head, body.len())
        && let Ok(message) = rsip::SipMessage::try_from(bytes)
    {
        return Ok(message);
    }
    let start = head.split('\n').next().unwrap_or_default();
    let start = start.strip_suffix('\r').unwrap_or(start);
    let lines = header_lines(head)?;

    let mut text = String::with_capacity(head.len() + 64);
    text.push_str(&normalise_start_line(start));
    text.push_str("\r\n");
    let mut declared: Option<usize> = None;
    for (name, value) in &lines {
        let name = expand_compact_name(name);
        if is_content_length(name) {
            let n: usize = value.parse().map_err(|_| ParseError::BadContentLength {
                value: value.clone(),
            })?;
            declared = Some(n);
            continue; // re-added below with the real length
        }
        if is_list_header(name) && value.trim() != "*" {
            for part in split_list(value) {
                text.push_str(&format!("{name}: {part}\r\n"));
            }
        } else {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if let Some(n) = declared {
        if n > body.len() {
            if datagram {
                return Err(ParseError::TruncatedBody {
                    declared: n,
                    available: body.len(),
                });
            }
        } else {
            body = &body[..n];
        }
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = text.into_bytes();
    raw.extend_from_slice(body);
    rsip::SipMessage::try_from(raw.as_slice()).map_err(|e| ParseError::Rsip {
        detail: e.to_string(),
    })
}

/// Standard reason phrases for status codes we send (rsip's `Display` writes
/// the enum variant name, e.g. "486 BusyHere").
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

/// Encodes a message for the wire: the start line, every header except
/// Content-Length, a Content-Length equal to the body's length, the body
/// bytes verbatim.
pub fn encode(message: &rsip::SipMessage) -> Vec<u8> {
    use rsip::message::HasHeaders;
    let mut text = String::with_capacity(512);
    match message {
        rsip::SipMessage::Request(r) => {
            text.push_str(&format!("{} {} {}\r\n", r.method, r.uri, r.version));
        }
        rsip::SipMessage::Response(r) => {
            let code = r.status_code.code();
            let reason = match &r.status_code {
                rsip::StatusCode::Other(_, reason) => reason.clone(),
                other => {
                    let std = reason_phrase(code);
                    if std.is_empty() {
                        // Variant name, e.g. "BusyHere": still a legal phrase.
                        other
                            .to_string()
                            .split_once(' ')
                            .map(|(_, r)| r.to_string())
                            .unwrap_or_default()
                    } else {
                        std.to_string()
                    }
                }
            };
            text.push_str(&format!("{} {} {}\r\n", r.version, code, reason));
        }
    }
    for h in message.headers().iter() {
        if matches!(h, rsip::Header::ContentLength(_)) {
            continue;
        }
        if let rsip::Header::Other(name, _) = h
            && is_content_length(name)
        {
            continue;
        }
        text.push_str(&h.to_string());
        text.push_str("\r\n");
    }
    let body = message.body();
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = text.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    const CLEAN: &str = "INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn only_canonical_messages_take_the_fast_path() {
        let (head_len, body_start) = find_header_end(CLEAN.as_bytes()).unwrap();
        let head = &CLEAN[..head_len];
        let body = CLEAN.len() - body_start;
        assert!(is_canonical(head, body));
        assert!(
            !is_canonical(head, body + 1),
            "Content-Length must match the body"
        );
        for odd in [
            CLEAN.replace("Call-ID: c1", "i: c1"),
            CLEAN.replace("Call-ID: c1", "Call-ID:c1"),
            CLEAN.replace("Call-ID: c1", "Call-ID : c1"),
            CLEAN.replace("To: <sip:bob@x>\r\n", "To: <sip:bob@x>\r\n <folded>\r\n"),
            CLEAN.replace("\r\nFrom", "\nFrom"),
            CLEAN.replace("branch=z9hG4bK1", "branch=z9hG4bK1, SIP/2.0/UDP 5.6.7.8"),
            CLEAN.replace("INVITE sip", "INVITE  sip"),
        ] {
            let (h, b) = find_header_end(odd.as_bytes()).unwrap();
            assert!(!is_canonical(&odd[..h], odd.len() - b), "{odd:?}");
        }
    }

    #[test]
    fn both_paths_read_a_canonical_message_alike() {
        let fast = parse_message(CLEAN.as_bytes()).unwrap();
        // The same message with one compact header takes the normalising path.
        let slow = parse_message(CLEAN.replace("Call-ID: c1", "i: c1").as_bytes()).unwrap();
        use rsip::prelude::*;
        match (fast, slow) {
            (rsip::SipMessage::Request(f), rsip::SipMessage::Request(s)) => {
                assert_eq!(f.call_id_header().unwrap(), s.call_id_header().unwrap());
                assert_eq!(f.via_header().unwrap(), s.via_header().unwrap());
                assert_eq!(f.uri, s.uri);
                assert_eq!(f.body, s.body);
            }
            other => panic!("expected two requests, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""a, b" <sip:x@y;lr>, <sip:z,w@q>"#),
            vec![
                r#""a, b" <sip:x@y;lr>"#.to_string(),
                "<sip:z,w@q>".to_string()
            ]
        );
    }

    #[test]
    fn compact_names_expand_case_insensitively() {
        assert_eq!(expand_compact_name("V"), "Via");
        assert_eq!(expand_compact_name("i"), "Call-ID");
        assert_eq!(expand_compact_name("Via"), "Via");
    }
}
