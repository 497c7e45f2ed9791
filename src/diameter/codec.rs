//! Header, message, and their wire form (RFC 6733 sections 3 and 4).
//!
//! Decoding is strict about framing (lengths, padding, version, flag bits)
//! and says exactly where it failed; it never panics. Content is not judged
//! here: an AVP nobody knows is kept as it came.

use std::fmt;

use super::avp::Avp;
use super::dictionary;
use super::{code, command, result};

/// Length of the Diameter header.
pub const HEADER_LEN: usize = 20;

/// The 20-byte Diameter header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Version; 1 is the only one there is.
    pub version: u8,
    /// Flags: [`Header::REQUEST`], [`Header::PROXIABLE`], [`Header::ERROR`], [`Header::RETRANSMIT`].
    pub flags: u8,
    /// Message length as decoded; [`Message::encode`] recomputes it.
    pub length: u32,
    /// Command code (24 bits on the wire).
    pub command_code: u32,
    /// Application id.
    pub application_id: u32,
    /// Hop-by-hop identifier.
    pub hop_by_hop: u32,
    /// End-to-end identifier.
    pub end_to_end: u32,
}

impl Header {
    /// R: request.
    pub const REQUEST: u8 = 0x80;
    /// P: proxiable.
    pub const PROXIABLE: u8 = 0x40;
    /// E: answer carrying a protocol error.
    pub const ERROR: u8 = 0x20;
    /// T: potentially retransmitted.
    pub const RETRANSMIT: u8 = 0x10;

    /// The R bit.
    pub fn is_request(&self) -> bool {
        self.flags & Self::REQUEST != 0
    }
    /// The P bit.
    pub fn is_proxiable(&self) -> bool {
        self.flags & Self::PROXIABLE != 0
    }
    /// The E bit.
    pub fn is_error(&self) -> bool {
        self.flags & Self::ERROR != 0
    }
    /// The T bit.
    pub fn is_retransmit(&self) -> bool {
        self.flags & Self::RETRANSMIT != 0
    }

    /// Reads a header from the first 20 bytes without judging it (no
    /// version or length check). `None` if fewer than 20 bytes.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = buf.first_chunk()?;
        let u24 = |i: usize| u32::from_be_bytes([0, b[i], b[i + 1], b[i + 2]]);
        let u32at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Header {
            version: b[0],
            length: u24(1),
            flags: b[4],
            command_code: u24(5),
            application_id: u32at(8),
            hop_by_hop: u32at(12),
            end_to_end: u32at(16),
        })
    }
}

/// Why bytes are not a Diameter message. Offsets count from the first byte
/// of the message (for [`Avp::as_grouped`], from the group's data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 20 bytes.
    #[error("truncated header: {len} bytes, a Diameter header has 20")]
    TruncatedHeader {
        /// Bytes available.
        len: usize,
    },
    /// Version other than 1.
    #[error("unsupported Diameter version {version} (expected 1)")]
    UnsupportedVersion {
        /// Version found.
        version: u8,
    },
    /// Message Length below 20 or not a multiple of 4.
    #[error("message length {declared} is invalid (at least 20 and a multiple of 4)")]
    BadMessageLength {
        /// Message Length field.
        declared: u32,
    },
    /// Message Length past the end of the buffer.
    #[error("message length {declared} exceeds the {available} bytes available")]
    MessageLengthPastEnd {
        /// Message Length field.
        declared: u32,
        /// Bytes available.
        available: usize,
    },
    /// Bytes after the message (decode takes exactly one message).
    #[error("{extra} bytes after the end of the message (length {declared})")]
    TrailingBytes {
        /// Message Length field.
        declared: u32,
        /// Bytes left over.
        extra: usize,
    },
    /// An answer flag combination that cannot be: E bit on a request.
    #[error("invalid header bits {flags:#04x}: E bit set on a request")]
    InvalidHeaderBits {
        /// Flags byte.
        flags: u8,
    },
    /// Fewer bytes left than an AVP header needs (8, or 12 with V set).
    #[error("AVP at offset {offset}{}: only {available} bytes left for its header", fmt_code(*code))]
    AvpHeaderTruncated {
        /// Offset of the AVP.
        offset: usize,
        /// Code, when at least 4 bytes were there.
        code: Option<u32>,
        /// Bytes left.
        available: usize,
    },
    /// AVP Length smaller than its own header.
    #[error(
        "AVP {code} at offset {offset}: length {length} is shorter than its {header_len}-byte header"
    )]
    AvpLengthTooShort {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// AVP flags.
        flags: u8,
        /// Vendor-Id, if V was set.
        vendor_id: Option<u32>,
        /// AVP Length field.
        length: u32,
        /// 8 or 12.
        header_len: usize,
    },
    /// AVP Length past the end of the message (or group).
    #[error(
        "AVP {code} at offset {offset}: length {length} runs past the end ({available} bytes left)"
    )]
    AvpLengthPastEnd {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// AVP flags.
        flags: u8,
        /// Vendor-Id, if V was set.
        vendor_id: Option<u32>,
        /// AVP Length field.
        length: u32,
        /// Bytes left from the AVP's offset.
        available: usize,
    },
    /// Padding bytes not zero, or missing before the next AVP / the end.
    #[error("AVP {code} at offset {offset}: {}", if *missing { "padding missing" } else { "non-zero padding" })]
    BadPadding {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// True if the padding is missing, false if it is not zero.
        missing: bool,
        /// The AVP as far as it was read.
        avp: Avp,
    },
    /// Reserved AVP flag bits set.
    #[error("AVP {code} at offset {offset}: reserved flag bits set in {flags:#04x}")]
    InvalidAvpBits {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// Flags byte.
        flags: u8,
        /// The AVP as read.
        avp: Avp,
    },
    /// A typed value could not be read.
    #[error("AVP {code} at offset {offset}: invalid value: {source}")]
    InvalidValue {
        /// Offset of the AVP (0 when not known).
        offset: usize,
        /// AVP code.
        code: u32,
        /// The AVP.
        avp: Avp,
        /// What was wrong.
        source: super::avp::AvpValueError,
    },
}

fn fmt_code(code: Option<u32>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

impl DecodeError {
    /// The Result-Code RFC 6733 asks an answer to this request to carry.
    pub fn result_code(&self) -> u32 {
        match self {
            DecodeError::TruncatedHeader { .. }
            | DecodeError::BadMessageLength { .. }
            | DecodeError::MessageLengthPastEnd { .. }
            | DecodeError::TrailingBytes { .. } => result::INVALID_MESSAGE_LENGTH,
            DecodeError::UnsupportedVersion { .. } => result::UNSUPPORTED_VERSION,
            DecodeError::InvalidHeaderBits { .. } => result::INVALID_HDR_BITS,
            DecodeError::AvpHeaderTruncated { .. }
            | DecodeError::AvpLengthTooShort { .. }
            | DecodeError::AvpLengthPastEnd { .. }
            | DecodeError::BadPadding { .. } => result::INVALID_AVP_LENGTH,
            DecodeError::InvalidAvpBits { .. } => result::INVALID_AVP_BITS,
            DecodeError::InvalidValue { .. } => result::INVALID_AVP_VALUE,
        }
    }

    /// The offending AVP to put inside Failed-AVP, where one is known.
    /// For a bad length, RFC 6733 7.1.5: the AVP header with a zero-filled
    /// payload of the minimum length of its type.
    pub fn failed_avp(&self) -> Option<Avp> {
        let zeroed = |code: u32, flags: u8, vendor_id: Option<u32>| {
            let min = dictionary::lookup(code, vendor_id)
                .map(|d| d.kind.min_len())
                .unwrap_or(0);
            Avp {
                code,
                flags,
                vendor_id,
                data: vec![0; min],
            }
        };
        match self {
            DecodeError::AvpHeaderTruncated { code, .. } => code.map(|c| zeroed(c, 0, None)),
            DecodeError::AvpLengthTooShort {
                code,
                flags,
                vendor_id,
                ..
            }
            | DecodeError::AvpLengthPastEnd {
                code,
                flags,
                vendor_id,
                ..
            } => Some(zeroed(*code, *flags, *vendor_id)),
            DecodeError::BadPadding { avp, .. }
            | DecodeError::InvalidAvpBits { avp, .. }
            | DecodeError::InvalidValue { avp, .. } => Some(avp.clone()),
            _ => None,
        }
    }

    /// Offset of the problem within the message, where known.
    pub fn offset(&self) -> Option<usize> {
        match self {
            DecodeError::AvpHeaderTruncated { offset, .. }
            | DecodeError::AvpLengthTooShort { offset, .. }
            | DecodeError::AvpLengthPastEnd { offset, .. }
            | DecodeError::BadPadding { offset, .. }
            | DecodeError::InvalidAvpBits { offset, .. }
            | DecodeError::InvalidValue { offset, .. } => Some(*offset),
            DecodeError::UnsupportedVersion { .. } => Some(0),
            DecodeError::BadMessageLength { .. }
            | DecodeError::MessageLengthPastEnd { .. }
            | DecodeError::TrailingBytes { .. } => Some(1),
            DecodeError::InvalidHeaderBits { .. } => Some(4),
            DecodeError::TruncatedHeader { .. } => None,
        }
    }

    /// Adds `base` to the offset (errors of nested decoding).
    pub fn shifted(mut self, base: usize) -> Self {
        match &mut self {
            DecodeError::AvpHeaderTruncated { offset, .. }
            | DecodeError::AvpLengthTooShort { offset, .. }
            | DecodeError::AvpLengthPastEnd { offset, .. }
            | DecodeError::BadPadding { offset, .. }
            | DecodeError::InvalidAvpBits { offset, .. }
            | DecodeError::InvalidValue { offset, .. } => *offset += base,
            _ => {}
        }
        self
    }
}

/// Decodes a sequence of padded AVPs filling `buf` exactly. `base` is added
/// to offsets in errors.
pub(crate) fn decode_avps(buf: &[u8], base: usize) -> Result<Vec<Avp>, DecodeError> {
    let mut avps = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let offset = base + pos;
        let Some(h) = rest.first_chunk::<8>() else {
            return Err(DecodeError::AvpHeaderTruncated {
                offset,
                code: rest.first_chunk::<4>().map(|c| u32::from_be_bytes(*c)),
                available: rest.len(),
            });
        };
        let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let flags = h[4];
        let length = u32::from_be_bytes([0, h[5], h[6], h[7]]);
        let (vendor_id, header_len) = if flags & Avp::VENDOR != 0 {
            match rest.get(8..12) {
                Some(v) => (Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])), 12),
                None => {
                    return Err(DecodeError::AvpHeaderTruncated {
                        offset,
                        code: Some(code),
                        available: rest.len(),
                    });
                }
            }
        } else {
            (None, 8)
        };
        let len = length as usize;
        if len < header_len {
            return Err(DecodeError::AvpLengthTooShort {
                offset,
                code,
                flags,
                vendor_id,
                length,
                header_len,
            });
        }
        if len > rest.len() {
            return Err(DecodeError::AvpLengthPastEnd {
                offset,
                code,
                flags,
                vendor_id,
                length,
                available: rest.len(),
            });
        }
        let avp = Avp {
            code,
            flags,
            vendor_id,
            data: rest[header_len..len].to_vec(),
        };
        let padded = (len + 3) & !3;
        match rest.get(len..padded) {
            None => {
                return Err(DecodeError::BadPadding {
                    offset,
                    code,
                    missing: true,
                    avp,
                });
            }
            Some(pad) if pad.iter().any(|&b| b != 0) => {
                return Err(DecodeError::BadPadding {
                    offset,
                    code,
                    missing: false,
                    avp,
                });
            }
            Some(_) => {}
        }
        if flags & Avp::RESERVED != 0 {
            return Err(DecodeError::InvalidAvpBits {
                offset,
                code,
                flags,
                avp,
            });
        }
        avps.push(avp);
        pos += padded;
    }
    Ok(avps)
}

/// Appends one AVP with its padding. The length field is masked to 24 bits
/// (an AVP over 16 MiB encodes wrongly rather than panicking).
pub(crate) fn encode_avp(avp: &Avp, out: &mut Vec<u8>) {
    let len = avp.wire_len() as u32 & 0x00ff_ffff;
    out.extend_from_slice(&avp.code.to_be_bytes());
    out.push(avp.flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    if let Some(v) = avp.vendor_id {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&avp.data);
    let pad = (4 - avp.data.len() % 4) % 4;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

/// A Diameter message: header and top-level AVPs. Grouped AVPs keep their
/// raw data and are decoded on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header; `length` is recomputed on encode.
    pub header: Header,
    /// Top-level AVPs in wire order.
    pub avps: Vec<Avp>,
}

impl Message {
    /// A new request (R and P set, ids zero: the peer assigns them).
    pub fn request(command_code: u32, application_id: u32) -> Self {
        Message {
            header: Header {
                version: 1,
                flags: Header::REQUEST | Header::PROXIABLE,
                length: 0,
                command_code,
                application_id,
                hop_by_hop: 0,
                end_to_end: 0,
            },
            avps: Vec::new(),
        }
    }

    /// The skeleton of an answer: R and E cleared, P kept, same command,
    /// application and ids, Session-Id copied first if present.
    pub fn answer(&self) -> Message {
        let mut header = self.header;
        header.flags &= !(Header::REQUEST | Header::ERROR | Header::RETRANSMIT);
        header.length = 0;
        let mut avps = Vec::new();
        if let Some(sid) = self.avp(code::SESSION_ID) {
            avps.push(sid.clone());
        }
        Message { header, avps }
    }

    /// Decodes exactly one message.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let header = Header::peek(buf).ok_or(DecodeError::TruncatedHeader { len: buf.len() })?;
        if header.version != 1 {
            return Err(DecodeError::UnsupportedVersion {
                version: header.version,
            });
        }
        let declared = header.length;
        let len = declared as usize;
        if len < HEADER_LEN || !len.is_multiple_of(4) {
            return Err(DecodeError::BadMessageLength { declared });
        }
        if len > buf.len() {
            return Err(DecodeError::MessageLengthPastEnd {
                declared,
                available: buf.len(),
            });
        }
        if len < buf.len() {
            return Err(DecodeError::TrailingBytes {
                declared,
                extra: buf.len() - len,
            });
        }
        if header.is_request() && header.is_error() {
            return Err(DecodeError::InvalidHeaderBits {
                flags: header.flags,
            });
        }
        let avps = decode_avps(&buf[HEADER_LEN..len], HEADER_LEN)?;
        Ok(Message { header, avps })
    }

    /// Encodes, recomputing the Message Length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let h = &self.header;
        out.push(h.version);
        out.extend_from_slice(&[0, 0, 0]);
        out.push(h.flags);
        out.extend_from_slice(&(h.command_code & 0x00ff_ffff).to_be_bytes()[1..]);
        out.extend_from_slice(&h.application_id.to_be_bytes());
        out.extend_from_slice(&h.hop_by_hop.to_be_bytes());
        out.extend_from_slice(&h.end_to_end.to_be_bytes());
        for a in &self.avps {
            encode_avp(a, out);
        }
        let len = ((out.len() - start) as u32 & 0x00ff_ffff).to_be_bytes();
        out[start + 1..start + 4].copy_from_slice(&len[1..]);
    }

    /// First top-level AVP with this code and no vendor.
    pub fn avp(&self, code: u32) -> Option<&Avp> {
        self.avp_vendor(code, None)
    }
    /// First top-level AVP with this code and vendor.
    pub fn avp_vendor(&self, code: u32, vendor: Option<u32>) -> Option<&Avp> {
        self.avps.iter().find(|a| a.is(code, vendor))
    }
    /// All top-level AVPs with this code and vendor.
    pub fn avps_with(&self, code: u32, vendor: Option<u32>) -> impl Iterator<Item = &Avp> {
        self.avps.iter().filter(move |a| a.is(code, vendor))
    }
    /// Follows a path of (code, vendor) through grouped AVPs, taking the
    /// first match at each level. Returns an owned AVP because the
    /// children of a group are decoded on the way.
    pub fn find_path(&self, path: &[(u32, Option<u32>)]) -> Option<Avp> {
        let ((c, v), rest) = path.split_first()?;
        let mut cur = self.avp_vendor(*c, *v)?.clone();
        for (c, v) in rest {
            cur = cur.find_vendor(*c, *v)?;
        }
        Some(cur)
    }
    /// Appends an AVP.
    pub fn push(&mut self, avp: Avp) {
        self.avps.push(avp);
    }
    /// Appends an AVP, builder style.
    pub fn with(mut self, avp: Avp) -> Self {
        self.avps.push(avp);
        self
    }
    /// Session-Id, if present and UTF-8.
    pub fn session_id(&self) -> Option<&str> {
        self.avp(code::SESSION_ID)?.as_utf8().ok()
    }
    /// Result-Code, if present and well-formed.
    pub fn result_code(&self) -> Option<u32> {
        self.avp(code::RESULT_CODE)?.as_u32().ok()
    }
    /// The R bit.
    pub fn is_request(&self) -> bool {
        self.header.is_request()
    }
    /// Command and direction, e.g. "ACR", or "cmd 999 R" when unknown.
    pub fn command_name(&self) -> String {
        match command::abbreviation(self.header.command_code, self.is_request()) {
            Some(n) => n.to_owned(),
            None => format!(
                "cmd {} {}",
                self.header.command_code,
                if self.is_request() { "R" } else { "A" }
            ),
        }
    }

    /// One line for reports, e.g. `ACR START #0 Session-Id=pf;1 hbh=0x1`.
    pub fn describe(&self) -> String {
        let mut s = self.command_name();
        let u = |c| self.avp(c).and_then(|a| a.as_u32().ok());
        match self.header.command_code {
            command::ACCOUNTING => {
                if let Some(t) = u(code::ACCOUNTING_RECORD_TYPE) {
                    s.push(' ');
                    s.push_str(
                        &dictionary::enum_name(code::ACCOUNTING_RECORD_TYPE, None, t as i32)
                            .map_or_else(
                                || t.to_string(),
                                |n| n.trim_end_matches("_RECORD").to_owned(),
                            ),
                    );
                }
                if let Some(n) = u(code::ACCOUNTING_RECORD_NUMBER) {
                    s.push_str(&format!(" #{n}"));
                }
            }
            command::CREDIT_CONTROL => {
                if let Some(t) = u(code::CC_REQUEST_TYPE) {
                    s.push(' ');
                    s.push_str(
                        &dictionary::enum_name(code::CC_REQUEST_TYPE, None, t as i32).map_or_else(
                            || t.to_string(),
                            |n| n.trim_end_matches("_REQUEST").to_owned(),
                        ),
                    );
                }
                if let Some(n) = u(code::CC_REQUEST_NUMBER) {
                    s.push_str(&format!(" #{n}"));
                }
            }
            _ => {}
        }
        if let Some(rc) = self.result_code() {
            s.push_str(&format!(" Result-Code={rc}"));
        }
        if self.header.is_error() {
            s.push_str(" [E]");
        }
        if let Some(sid) = self.session_id() {
            s.push_str(&format!(" Session-Id={sid}"));
        }
        s.push_str(&format!(" hbh={:#x}", self.header.hop_by_hop));
        s
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
