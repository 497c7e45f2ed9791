//! Bytes to SIP messages and back, sans-IO.
//!
//! - [`StreamDecoder`] frames SIP over a stream (TCP) by Content-Length
//!   (RFC 3261 §18.3): several messages in one read, one message over many
//!   reads, CRLF keep-alives between messages (RFC 5626 §3.5.1).
//! - [`parse_message`] / [`parse_datagram`] turn one message's bytes into an
//!   [`rsip::SipMessage`]. rsip 0.4 is strict where RFC 3261 is liberal: it
//!   does not know compact header names (`v:`, `i:`, `l:` ...), does not unfold
//!   continuation lines, rejects whitespace before the colon and bare-LF line
//!   ends, keeps a comma-separated `Via: a, b` as one header, loses a tag
//!   written `; tag = x`, misreads some legal Request-URI user parts, and has
//!   no room for an extension method. We normalise those forms first (RFC 4475
//!   collects them), then hand the text to rsip; a message already in rsip's
//!   form goes to rsip as it is (the fast path).
//! - [`read_message`] / [`read_datagram`] also return a request with an
//!   extension method (as [`ExtensionRequest`]) and the [`Leniency`]s a message
//!   needed: what RFC 4475 §3.1.2 calls invalid but lets a liberal receiver
//!   read. Everything else it calls invalid is a typed [`ParseError`].
//! - [`encode`] writes a message with a correct Content-Length and the body
//!   bytes verbatim (rsip's `Display` would lossily re-encode a non-UTF-8 body).

use std::borrow::Cow;

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
    #[error("{line:?} is not a SIP start line: the stream cannot be framed")]
    BadStartLine { line: String },
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
    #[error("start line {line:?} is malformed: {reason}")]
    BadStartLine { line: String, reason: &'static str },
    #[error("SIP version {version:?} is not SIP/2.0 (a UAS answers 505, RFC 3261 §8.2.2)")]
    UnsupportedVersion { version: String },
    #[error("status code {code:?} is not three digits from 100 to 699 (RFC 3261 §7.2)")]
    BadStatusCode { code: String },
    #[error("{name} header {value:?} is malformed: {reason}")]
    BadHeader {
        name: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "request method {method:?} is an extension method rsip cannot hold; read it with read_message / read_datagram"
    )]
    ExtensionMethod { method: String },
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
        check_stream_start(&self.buf)?;
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

/// Refuses a stream whose next message cannot start as a SIP message does:
/// `Method SP Request-URI SP SIP/x` or `SIP/x SP code ...` (RFC 3261 §7).
/// Judged once the first line is complete, or once 256 bytes hold no line
/// end; only the shape is judged here, the details are [`read_message`]'s.
fn check_stream_start(buf: &[u8]) -> Result<(), FramingError> {
    let end = buf.iter().position(|b| *b == b'\n');
    let line = match end {
        Some(i) => &buf[..i],
        None if buf.len() > 256 => buf,
        None => {
            // Not yet a whole line: bytes no start line can begin with are
            // refused at once.
            let first = buf[0];
            if first.is_ascii_graphic() {
                return Ok(());
            }
            return Err(FramingError::BadStartLine {
                line: String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned(),
            });
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let refuse = || FramingError::BadStartLine {
        line: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
    };
    let text = std::str::from_utf8(line).map_err(|_| refuse())?;
    let is_sip = |t: &str| t.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    let mut parts = text.split_whitespace();
    let first = parts.next().unwrap_or_default();
    if is_sip(first) {
        return Ok(());
    }
    let last = parts.next_back();
    match (parts.next(), last) {
        (Some(_), Some(version)) if is_token(first) && is_sip(version) => Ok(()),
        _ => Err(refuse()),
    }
}

/// Finds the empty line ending the header section: returns (length of the
/// header section without the empty line, offset of the body). Accepts CRLF
/// and bare LF line ends.
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    // Jump from line end to line end (a tight search, not a byte-by-byte
    // walk with two look-aheads: this runs on every message).
    let mut from = 0;
    while let Some(off) = buf[from..].iter().position(|b| *b == b'\n') {
        let i = from + off;
        // A line ended at i; is the next line empty?
        match buf.get(i + 1) {
            Some(b'\n') => return Some((i + 1, i + 2)),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i + 1, i + 3)),
            _ => from = i + 1,
        }
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

/// Whether a header section needs none of what [`read`] normalises: CRLF
/// line ends, a canonical start line with a method rsip knows, full header
/// names followed by `: ` and a trimmed value, no folding, single-valued list
/// headers, one Content-Length equal to the body's length, and nothing to
/// forgive (a value the slow path would refuse takes the slow path).
fn is_canonical(head: &str, body_len: usize) -> bool {
    let mut lines = head.split('\n');
    let Some(start) = lines.next().and_then(|l| l.strip_suffix('\r')) else {
        return false;
    };
    match start_line(start) {
        Ok((StartLine::Request { method, .. }, None)) if KNOWN_METHODS.contains(&method) => {}
        Ok((StartLine::Response { reason, .. }, None)) if !reason.is_empty() => {}
        _ => return false,
    }
    let mut content_length = None;
    for raw in lines {
        if raw.is_empty() {
            continue; // after the last line's LF
        }
        let Some(line) = raw.strip_suffix('\r') else {
            return false;
        };
        // `name: value` (a char search: a str pattern costs a searcher per line).
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let Some(value) = value.strip_prefix(' ') else {
            return false;
        };
        let untrimmed = |v: &str| v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']);
        if name.len() < 2 || name.contains([' ', '\t']) || value.is_empty() || untrimmed(value) {
            return false;
        }
        let kind = header_kind(name);
        let odd = match kind {
            HeaderKind::ContentLength => {
                if content_length.is_some() {
                    return false;
                }
                match value.parse::<usize>() {
                    Ok(n) => content_length = Some(n),
                    Err(_) => return false,
                }
                false
            }
            HeaderKind::Via => value.contains(',') || !is_tight_via(value),
            HeaderKind::Address { list } => {
                (list && value.contains(',')) || !is_tight_address(value)
            }
            HeaderKind::CSeq => false,
            HeaderKind::Other => continue,
        };
        // Faults are judged by the slow path, on unfolded values.
        if odd || !matches!(check_header(kind, name, value, true), Ok(None)) {
            return false;
        }
    }
    content_length == Some(body_len)
}

/// What the reader does with a header field, by name (full names; the slow
/// path expands compact ones first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeaderKind {
    Via,
    CSeq,
    ContentLength,
    /// name-addr / addr-spec values with header parameters; `list` when
    /// several may share one line (RFC 3261 §7.3.1).
    Address {
        list: bool,
    },
    Other,
}

fn header_kind(name: &str) -> HeaderKind {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    let single = HeaderKind::Address { list: false };
    let list = HeaderKind::Address { list: true };
    match name.len() {
        1 => match name.as_bytes()[0].to_ascii_lowercase() {
            b'v' => HeaderKind::Via,
            b'l' => HeaderKind::ContentLength,
            b'f' | b't' | b'r' | b'b' => single,
            b'm' => list,
            _ => HeaderKind::Other,
        },
        2 if is("to") => single,
        3 if is("via") => HeaderKind::Via,
        4 if is("from") => single,
        4 if is("cseq") => HeaderKind::CSeq,
        5 if is("route") => list,
        7 if is("contact") => list,
        8 if is("reply-to") || is("refer-to") => single,
        11 if is("referred-by") => single,
        12 if is("record-route") => list,
        14 if is("content-length") => HeaderKind::ContentLength,
        19 if is("p-asserted-identity") => single,
        20 if is("p-preferred-identity") => single,
        _ => HeaderKind::Other,
    }
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

/// The methods rsip's `Method` can hold, spelled as RFC 3261 and its
/// extensions spell them. Methods are case-sensitive (RFC 3261 §7.1): any
/// other token, `invite` or `RE%47IST%45R` included, is an extension method.
const KNOWN_METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// Stands in for an extension method when rsip parses the rest of the
/// request; never visible outside [`ExtensionRequest`].
const PLACEHOLDER_METHOD: &str = "OPTIONS";

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// Something a peer sent that RFC 3261 does not allow but that was read
/// anyway, as RFC 4475 suggests a liberal receiver may: for the report,
/// never a failure by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leniency {
    /// Extra SP between the elements of the start line, or SP before its
    /// CRLF (RFC 4475 §3.1.2.9 lwsstart, §3.1.2.10 trws).
    StartLineWhitespace { line: String },
    /// Whitespace inside the `<...>` of an address, dropped (RFC 4475
    /// §3.1.2.14 badaspec).
    SpaceInAngleBrackets { header: String, value: String },
    /// A display name with characters outside `token`, not quoted (RFC 4475
    /// §3.1.2.15 baddn).
    UnquotedDisplayName { header: String, value: String },
}

impl std::fmt::Display for Leniency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leniency::StartLineWhitespace { line } => {
                write!(
                    f,
                    "start line {line:?} has extra whitespace (RFC 3261 §7.1: single SP)"
                )
            }
            Leniency::SpaceInAngleBrackets { header, value } => write!(
                f,
                "{header} {value:?} has whitespace inside <> (RFC 3261 §25.1 addr-spec)"
            ),
            Leniency::UnquotedDisplayName { header, value } => write!(
                f,
                "{header} {value:?} has a display name that is neither tokens nor quoted"
            ),
        }
    }
}

/// A request whose method rsip cannot represent (RFC 3261 §7.1
/// `extension-method`, e.g. RFC 4475 `intmeth`). Everything but the method
/// is read as for any request.
#[derive(Debug, Clone)]
pub struct ExtensionRequest {
    method: String,
    /// `method` holds a placeholder; the real one is `self.method`.
    request: rsip::Request,
}

impl ExtensionRequest {
    /// The method exactly as sent.
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn uri(&self) -> &rsip::Uri {
        &self.request.uri
    }

    pub fn headers(&self) -> &rsip::Headers {
        &self.request.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.request.body
    }

    /// The request with a placeholder method: for building responses from
    /// its headers, never to be passed on as a request.
    pub(crate) fn carrier(&self) -> &rsip::Request {
        &self.request
    }
}

/// What one message's bytes turned out to be.
#[derive(Debug, Clone)]
pub enum Reading {
    Message(rsip::SipMessage),
    Extension(ExtensionRequest),
}

/// A message read, with what had to be forgiven to read it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub reading: Reading,
    pub leniencies: Vec<Leniency>,
}

/// Parses one message from a stream (the body is everything after the header
/// section, as framed by [`StreamDecoder`]). A request with an extension
/// method is [`ParseError::ExtensionMethod`] here; [`read_message`] returns it.
pub fn parse_message(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    only_message(read(bytes, false)?)
}

/// Parses one UDP datagram: a Content-Length shorter than the body truncates
/// it, a longer one is an error (RFC 3261 §18.3); a missing one means the
/// body runs to the end of the datagram.
pub fn parse_datagram(bytes: &[u8]) -> Result<rsip::SipMessage, ParseError> {
    only_message(read(bytes, true)?)
}

/// Like [`parse_message`], keeping extension-method requests and what was
/// forgiven.
pub fn read_message(bytes: &[u8]) -> Result<Parsed, ParseError> {
    read(bytes, false)
}

/// Like [`parse_datagram`], keeping extension-method requests and what was
/// forgiven.
pub fn read_datagram(bytes: &[u8]) -> Result<Parsed, ParseError> {
    read(bytes, true)
}

fn only_message(parsed: Parsed) -> Result<rsip::SipMessage, ParseError> {
    match parsed.reading {
        Reading::Message(m) => Ok(m),
        Reading::Extension(e) => Err(ParseError::ExtensionMethod { method: e.method }),
    }
}

/// The start line, checked.
enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16, reason: &'a str },
}

fn bad_start(line: &str, reason: &'static str) -> ParseError {
    ParseError::BadStartLine {
        line: line.to_string(),
        reason,
    }
}

fn check_version(line: &str, version: &str) -> Result<(), ParseError> {
    match version.split_once('/') {
        Some((sip, v)) if sip.eq_ignore_ascii_case("SIP") => {
            if v == "2.0" {
                Ok(())
            } else {
                Err(ParseError::UnsupportedVersion {
                    version: version.to_string(),
                })
            }
        }
        _ => Err(bad_start(line, "no SIP-Version")),
    }
}

/// Reads the start line (RFC 3261 §7.1, §7.2); extra whitespace is forgiven
/// and reported, anything else wrong is an error.
fn start_line(line: &str) -> Result<(StartLine<'_>, Option<Leniency>), ParseError> {
    let is_response = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_response {
        let (version, rest) = line.split_once(' ').unwrap_or((line, ""));
        check_version(line, version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let lenient = (rest.starts_with(' ') || code.is_empty())
            .then(|| Leniency::StartLineWhitespace { line: line.into() });
        let (code, reason) = if lenient.is_some() {
            let rest = rest.trim_start();
            let (c, r) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            (c, r.trim_start())
        } else {
            (code, reason)
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatusCode { code: code.into() });
        }
        let n: u16 = code
            .parse()
            .map_err(|_| ParseError::BadStatusCode { code: code.into() })?;
        if !(100..=699).contains(&n) {
            return Err(ParseError::BadStatusCode { code: code.into() });
        }
        return Ok((StartLine::Response { code: n, reason }, lenient));
    }
    let mut strict = line.splitn(3, ' ');
    let (method, uri, version, lenient) = match (strict.next(), strict.next(), strict.next()) {
        (Some(m), Some(u), Some(v))
            if !m.is_empty() && !u.is_empty() && !v.is_empty() && !v.contains(' ') =>
        {
            (m, u, v, None)
        }
        _ => {
            let mut loose = line.split_whitespace();
            let (Some(m), Some(u), Some(v), None) =
                (loose.next(), loose.next(), loose.next(), loose.next())
            else {
                return Err(bad_start(
                    line,
                    "a request line is Method SP Request-URI SP SIP-Version",
                ));
            };
            let lenient = Leniency::StartLineWhitespace { line: line.into() };
            (m, u, v, Some(lenient))
        }
    };
    if !is_token(method) {
        return Err(bad_start(line, "the method is not a token"));
    }
    check_version(line, version)?;
    if uri.starts_with('<') {
        return Err(bad_start(line, "the Request-URI is enclosed in <>"));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(bad_start(line, "the Request-URI has no scheme"));
    };
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        // Headers follow the host part; the user part may hold '?'.
        let host_part = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if host_part.contains('?') {
            return Err(bad_start(
                line,
                "the Request-URI carries headers, not allowed there (RFC 3261 §19.1.1)",
            ));
        }
    }
    Ok((StartLine::Request { method, uri }, lenient))
}

/// Drops the linear whitespace RFC 3261 allows around `;`, `=` (and inside
/// a Via's sent-protocol and sent-by) outside quoted strings and `<>`, so that
/// rsip's typed parsers and ours see `;tag=x` however the peer wrote it.
/// Returns the value and whether whitespace inside `<>` had to go.
fn tighten(value: &str) -> (String, bool) {
    let mut out = String::with_capacity(value.len());
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut pending_ws = false;
    let mut angle_ws = false;
    for ch in value.chars() {
        if in_quotes {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quotes = false;
            }
            continue;
        }
        if in_angle {
            if ch.is_whitespace() {
                angle_ws = true;
                continue;
            }
            if ch == '>' {
                in_angle = false;
            }
            out.push(ch);
            continue;
        }
        if ch == ' ' || ch == '\t' {
            pending_ws = true;
            continue;
        }
        let tight = matches!(ch, ';' | '=' | ',');
        let after_tight = out.ends_with([';', '=', ',']);
        if pending_ws && !tight && !after_tight && !out.is_empty() {
            out.push(' ');
        }
        pending_ws = false;
        match ch {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            _ => {}
        }
        out.push(ch);
    }
    (out, angle_ws)
}

/// Whether [`tighten`] would leave an address value as it is; answers
/// without allocating (the fast path asks it of every From, To, Contact).
/// `false` only sends the value to the slow path.
fn is_tight_address(value: &str) -> bool {
    let b = value.as_bytes();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut seen_angle = false;
    for (i, &c) in b.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            b'"' => in_quotes = true,
            b'<' => seen_angle = true,
            b'\t' => return false,
            b' ' => {
                // Only single spaces between display-name words stay.
                let tight = |x: u8| matches!(x, b' ' | b'\t' | b';' | b'=' | b',');
                if seen_angle || i == 0 || i + 1 == b.len() || tight(b[i - 1]) || tight(b[i + 1]) {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// Whether [`tighten_via`] would leave a Via value as it is, without
/// allocating: single spaces in sent-protocol / sent-by only between words,
/// none in the parameters.
fn is_tight_via(value: &str) -> bool {
    let (head, params) = value.split_at(value.find(';').unwrap_or(value.len()));
    let b = head.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\t' | b',' | b'=' | b'"' | b'<' => return false,
            b' ' => {
                let tight = |x: u8| matches!(x, b' ' | b'/' | b':');
                if i == 0 || i + 1 == b.len() || tight(b[i - 1]) || tight(b[i + 1]) {
                    return false;
                }
            }
            _ => {}
        }
    }
    !params
        .bytes()
        .any(|c| matches!(c, b' ' | b'\t' | b'"' | b','))
}

/// A Via value with the whitespace RFC 3261 allows taken out:
/// `SIP / 2.0 / UDP host : 5060 ; branch = x` → `SIP/2.0/UDP host:5060;branch=x`.
pub(crate) fn tighten_via(value: &str) -> String {
    let (tight, _) = tighten(value);
    let (head, params) = match tight.find(';') {
        Some(i) => tight.split_at(i),
        None => (tight.as_str(), ""),
    };
    let mut head = head.split_whitespace().collect::<Vec<_>>().join(" ");
    for (from, to) in [(" /", "/"), ("/ ", "/"), (" :", ":"), (": ", ":")] {
        while head.contains(from) {
            head = head.replace(from, to);
        }
    }
    head + params
}

/// Header parameters of a tightened address value: after the `<>` URI of
/// a name-addr, or after the first `;` of an addr-spec (RFC 3261 §20.10).
fn address_params(value: &str) -> &str {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, ch) in value.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quotes = false;
            }
            continue;
        }
        match ch {
            '"' => in_quotes = true,
            '<' => {
                return match value[i..].find('>') {
                    Some(j) => &value[i + j + 1..],
                    None => "",
                };
            }
            ';' => return &value[i..],
            _ => {}
        }
    }
    ""
}

/// Calls `f` with each (name, value) of `;a=1;b;c="x;y"`, names as written,
/// until it returns `true`; returns whether it did.
fn any_param<'a>(params: &'a str, mut f: impl FnMut(&'a str, Option<&'a str>) -> bool) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, &b) in params.as_bytes().iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b';' => {
                if i > start || i > 0 {
                    let (n, v) = param_pair(&params[start..i]);
                    if f(n, v) {
                        return true;
                    }
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < params.len() || start > 0 {
        let (n, v) = param_pair(&params[start..]);
        return f(n, v);
    }
    false
}

fn has_empty_param(params: &str) -> bool {
    any_param(params, |n, _| n.is_empty())
}

fn param_pair(piece: &str) -> (&str, Option<&str>) {
    match piece.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (piece.trim(), None),
    }
}

/// The value of header parameter `name` (case-insensitive) of an address
/// header value (From, To, Contact...), however much whitespace the peer
/// put around `;` and `=`; quotes around the value are kept.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let tight: Cow<str> = if is_tight_address(value) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(tighten(value).0)
    };
    let mut found = None;
    any_param(address_params(&tight), |n, v| {
        let hit = n.eq_ignore_ascii_case(name);
        if hit {
            found = Some(v.unwrap_or_default().to_string());
        }
        hit
    });
    found
}

fn bad_header(name: &str, value: &str, reason: &'static str) -> ParseError {
    ParseError::BadHeader {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Checks one (single) value of a header the harness relies on; returns
/// what it forgives. `known_tight`: the caller found the value tight
/// already (the fast path).
fn check_header(
    kind: HeaderKind,
    name: &str,
    value: &str,
    known_tight: bool,
) -> Result<Option<Leniency>, ParseError> {
    if kind == HeaderKind::Via {
        let tight: Cow<str> = if known_tight || is_tight_via(value) {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(tighten_via(value))
        };
        let (head, params) = tight.split_at(tight.find(';').unwrap_or(tight.len()));
        let mut it = head.split_whitespace();
        let proto = it.next().unwrap_or_default();
        let sent_by = it.next();
        if proto.split('/').count() != 3 || sent_by.is_none() || it.next().is_some() {
            return Err(bad_header(name, value, "not SIP/2.0/transport sent-by"));
        }
        if has_empty_param(params) {
            return Err(bad_header(name, value, "an empty parameter"));
        }
        return Ok(None);
    }
    if kind == HeaderKind::CSeq {
        let mut it = value.split_whitespace();
        let (Some(seq), Some(method), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad_header(name, value, "not sequence-number SP method"));
        };
        if !seq.bytes().all(|b| b.is_ascii_digit())
            || seq.parse::<u64>().map_or(true, |n| n >= 1 << 31)
        {
            return Err(bad_header(
                name,
                value,
                "the sequence number is not below 2**31 (RFC 3261 §8.1.1.5)",
            ));
        }
        if !is_token(method) {
            return Err(bad_header(name, value, "the method is not a token"));
        }
        return Ok(None);
    }
    if let HeaderKind::Address { list } = kind {
        if value == "*" && list {
            return Ok(None);
        }
        let (tight, angle_ws) = if known_tight || is_tight_address(value) {
            (Cow::Borrowed(value), false)
        } else {
            let (t, ws) = tighten(value);
            (Cow::Owned(t), ws)
        };
        // One pass: quotes closed, where the first '<' outside them is.
        let (mut in_quotes, mut escaped, mut angle, mut closed) = (false, false, None, false);
        for (i, &c) in tight.as_bytes().iter().enumerate() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_quotes = false;
                }
                continue;
            }
            match c {
                b'"' => in_quotes = true,
                b'<' if angle.is_none() => angle = Some(i),
                b'>' if angle.is_some() => closed = true,
                _ => {}
            }
        }
        if in_quotes {
            return Err(bad_header(name, value, "an unterminated quoted string"));
        }
        let params = address_params(&tight);
        if has_empty_param(params) {
            return Err(bad_header(name, value, "an empty parameter"));
        }
        match angle {
            None => {
                let uri = tight.split(';').next().unwrap_or_default();
                if uri.contains('?') || uri.contains(' ') {
                    return Err(bad_header(
                        name,
                        value,
                        "a URI with headers or spaces must be enclosed in <> (RFC 3261 §20)",
                    ));
                }
            }
            Some(i) => {
                if !closed {
                    return Err(bad_header(name, value, "an unterminated <"));
                }
                let display = tight[..i].trim();
                if angle_ws {
                    return Ok(Some(Leniency::SpaceInAngleBrackets {
                        header: name.into(),
                        value: value.into(),
                    }));
                }
                if !display.starts_with('"')
                    && !display.split(' ').all(is_token)
                    && !display.is_empty()
                {
                    return Ok(Some(Leniency::UnquotedDisplayName {
                        header: name.into(),
                        value: value.into(),
                    }));
                }
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// Whether rsip's reading of `text` is faithful: it writes back the same
/// text and found the user part there is (rsip takes `a.b@host` or
/// `sips%3Au%40x@host` whole for a host, RFC 4475 esc01).
fn read_right(uri: &rsip::Uri, text: &str) -> bool {
    let has_user = text
        .split_once(':')
        .is_some_and(|(_, rest)| rest.contains('@'));
    uri.auth.is_some() == has_user && uri.to_string() == text
}

/// The Request-URI as rsip reads it or, when rsip refuses its user part
/// (RFC 4475 semiuri, intmeth: `;`, `?`, `,`... are legal there), rsip's
/// reading of the rest with the user part and password kept as sent.
fn liberal_uri(uri: &str) -> Option<rsip::Uri> {
    if let Ok(u) = rsip::Uri::try_from(uri)
        && read_right(&u, uri)
    {
        return Some(u);
    }
    let (scheme, rest) = uri.split_once(':')?;
    let (userinfo, host) = rest.rsplit_once('@')?;
    let mut parsed = rsip::Uri::try_from(format!("{scheme}:{host}").as_str()).ok()?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    parsed.auth = Some(rsip::Auth::from((user, password)));
    Some(parsed)
}

fn read(bytes: &[u8], datagram: bool) -> Result<Parsed, ParseError> {
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
        return Ok(Parsed {
            reading: Reading::Message(message),
            leniencies: Vec::new(),
        });
    }
    let start = head.split('\n').next().unwrap_or_default();
    let start = start.strip_suffix('\r').unwrap_or(start);
    let (start, lenient) = start_line(start)?;
    let mut leniencies: Vec<Leniency> = lenient.into_iter().collect();
    let lines = header_lines(head)?;

    let mut headers = String::with_capacity(head.len() + 64);
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
        let kind = header_kind(name);
        let values = if is_list_header(name) && value.trim() != "*" {
            split_list(value)
        } else {
            vec![value.clone()]
        };
        for v in values {
            if let Some(l) = check_header(kind, name, &v, false)? {
                leniencies.push(l);
            }
            let v = if kind == HeaderKind::Via {
                tighten_via(&v)
            } else if matches!(kind, HeaderKind::Address { .. }) {
                tighten(&v).0
            } else if kind == HeaderKind::CSeq {
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                v
            };
            headers.push_str(name);
            headers.push_str(": ");
            headers.push_str(&v);
            headers.push_str("\r\n");
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
    headers.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let rsip_error = |e: rsip::Error| ParseError::Rsip {
        detail: e.to_string(),
    };
    match start {
        StartLine::Response { code, reason } => {
            // rsip needs a reason phrase token; an empty one is legal SIP.
            let reason = if reason.trim().is_empty() {
                "-"
            } else {
                reason.trim()
            };
            let mut raw = format!("SIP/2.0 {code} {reason}\r\n{headers}").into_bytes();
            raw.extend_from_slice(body);
            let message = rsip::SipMessage::try_from(raw.as_slice()).map_err(rsip_error)?;
            Ok(Parsed {
                reading: Reading::Message(message),
                leniencies,
            })
        }
        StartLine::Request { method, uri } => {
            let known = KNOWN_METHODS.contains(&method);
            let carried = if known { method } else { PLACEHOLDER_METHOD };
            let build = |uri: &str| {
                let mut raw = format!("{carried} {uri} SIP/2.0\r\n{headers}").into_bytes();
                raw.extend_from_slice(body);
                rsip::Request::try_from(raw.as_slice())
            };
            let request = match build(uri) {
                // rsip reads some legal user parts wrongly without an error
                // (RFC 4475 intmeth): what it read must write back the same.
                Ok(mut r) => {
                    if !read_right(&r.uri, uri)
                        && let Some(liberal) = liberal_uri(uri)
                    {
                        r.uri = liberal;
                    }
                    r
                }
                Err(first) => {
                    // rsip refuses some legal user parts: read the URI
                    // ourselves and let rsip read the rest.
                    let Some(liberal) = liberal_uri(uri) else {
                        return Err(rsip_error(first));
                    };
                    let mut r = build("sip:placeholder.invalid").map_err(rsip_error)?;
                    r.uri = liberal;
                    r
                }
            };
            let reading = if known {
                Reading::Message(rsip::SipMessage::Request(request))
            } else {
                Reading::Extension(ExtensionRequest {
                    method: method.to_string(),
                    request,
                })
            };
            Ok(Parsed {
                reading,
                leniencies,
            })
        }
    }
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
            CLEAN.replace(">;tag=1", "> ;tag=1"),
            CLEAN.replace(";tag=1", ";tag = 1"),
            CLEAN.replace("SIP/2.0/UDP 1.2.3.4:5060", "SIP/2.0/UDP 1.2.3.4 : 5060"),
            CLEAN.replace("SIP/2.0/UDP", "SIP / 2.0 / UDP"),
            CLEAN.replace("<sip:bob@x>", "< sip:bob@x >"),
            CLEAN.replace("INVITE sip:bob@x", "NEWMETHOD sip:bob@x"),
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
    fn tightness_checks_agree_with_tightening() {
        for v in [
            "<sip:a@b>;tag=1",
            "\"A B\" <sip:a@b>;tag=1",
            "A B <sip:a@b>;tag=1",
            "A  B <sip:a@b>",
            " <sip:a@b>",
            "<sip:a@b> ",
            "<sip:a@b> ;tag=1",
            "<sip:a@b>;tag= 1",
            "< sip:a@b>",
            "sip:a@b;tag=1",
            "sip:a@b ; tag=1",
            "\"x ; y\" <sip:a@b>",
            "A\t<sip:a@b>",
        ] {
            assert_eq!(is_tight_address(v), tighten(v).0 == v, "{v:?}");
        }
        for v in [
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP h : 5060;branch=z9hG4bK1",
            "SIP / 2.0 / UDP h;branch=z9hG4bK1",
            "SIP/2.0/UDP  h",
            "SIP/2.0/UDP h ;branch=x",
            "SIP/2.0/UDP h;branch = x",
            "SIP/2.0/UDP [::1]:5060;rport",
        ] {
            assert_eq!(is_tight_via(v), tighten_via(v) == v, "{v:?}");
        }
    }

    #[test]
    fn compact_names_expand_case_insensitively() {
        assert_eq!(expand_compact_name("V"), "Via");
        assert_eq!(expand_compact_name("i"), "Call-ID");
        assert_eq!(expand_compact_name("Via"), "Via");
    }
}
