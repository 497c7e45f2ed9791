//! One AVP: header fields and raw, unpadded data.
//!
//! Data is kept raw, so an AVP nobody knows re-encodes byte for byte; typed
//! values are read with the `as_*` accessors, which fail with an
//! [`AvpValueError`] naming the AVP instead of panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::codec::{DecodeError, decode_avps, encode_avp};

/// Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
pub const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

/// A Diameter AVP. `data` is unpadded; padding is added on encode.
///
/// The encoder writes `flags` as they are and the Vendor-Id field whenever
/// `vendor_id` is `Some`, even if the V bit disagrees: that is how a test
/// builds a malformed AVP. Use [`Avp::vendor`] to set both consistently.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Avp {
    /// AVP code.
    pub code: u32,
    /// Flags byte: [`Avp::VENDOR`], [`Avp::MANDATORY`], [`Avp::PROTECTED`], reserved bits.
    pub flags: u8,
    /// Vendor-Id, present on the wire when the V bit is set.
    pub vendor_id: Option<u32>,
    /// Data, without padding.
    pub data: Vec<u8>,
}

/// A typed accessor was used on data of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvpValueError {
    /// The data length does not fit the type.
    #[error("AVP {code}: {kind} needs {expected} bytes of data, found {actual}")]
    WrongLength {
        /// AVP code.
        code: u32,
        /// Type that was asked for.
        kind: &'static str,
        /// Length that type needs.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// A UTF8String that is not UTF-8.
    #[error("AVP {code}: not valid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// AVP code.
        code: u32,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// An Address with an address family other than IPv4 (1) or IPv6 (2),
    /// or with a length that does not fit its family.
    #[error("AVP {code}: address family {family:?} with {len} bytes of address is not IPv4/IPv6")]
    UnsupportedAddress {
        /// AVP code.
        code: u32,
        /// Address family (IANA), if at least two bytes were present.
        family: Option<u16>,
        /// Bytes after the family.
        len: usize,
    },
}

impl Avp {
    /// V: the Vendor-Id field is present.
    pub const VENDOR: u8 = 0x80;
    /// M: the receiver must understand this AVP.
    pub const MANDATORY: u8 = 0x40;
    /// P: end-to-end security (deprecated by RFC 6733).
    pub const PROTECTED: u8 = 0x20;
    /// Bits RFC 6733 reserves; a receiver answers 3009 when they are set.
    pub const RESERVED: u8 = 0x1f;

    /// An AVP with raw data and no flags.
    pub fn new(code: u32, data: Vec<u8>) -> Self {
        Avp {
            code,
            flags: 0,
            vendor_id: None,
            data,
        }
    }

    /// Unsigned32.
    pub fn unsigned32(code: u32, v: u32) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Unsigned64.
    pub fn unsigned64(code: u32, v: u64) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Integer32.
    pub fn integer32(code: u32, v: i32) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Integer64.
    pub fn integer64(code: u32, v: i64) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Float32.
    pub fn float32(code: u32, v: f32) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Float64.
    pub fn float64(code: u32, v: f64) -> Self {
        Self::new(code, v.to_be_bytes().to_vec())
    }
    /// Enumerated (an Integer32 on the wire).
    pub fn enumerated(code: u32, v: i32) -> Self {
        Self::integer32(code, v)
    }
    /// UTF8String.
    pub fn utf8(code: u32, v: &str) -> Self {
        Self::new(code, v.as_bytes().to_vec())
    }
    /// DiameterIdentity (an FQDN, ASCII on the wire).
    pub fn diameter_identity(code: u32, v: &str) -> Self {
        Self::utf8(code, v)
    }
    /// OctetString.
    pub fn octets(code: u32, v: Vec<u8>) -> Self {
        Self::new(code, v)
    }
    /// Address: address family (1 IPv4, 2 IPv6) then the address.
    pub fn address(code: u32, ip: IpAddr) -> Self {
        let mut data = Vec::with_capacity(18);
        match ip {
            IpAddr::V4(v4) => {
                data.extend_from_slice(&1u16.to_be_bytes());
                data.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                data.extend_from_slice(&2u16.to_be_bytes());
                data.extend_from_slice(&v6.octets());
            }
        }
        Self::new(code, data)
    }
    /// Time: NTP seconds since 1900-01-01 UTC, 32 bits, wrapping into the
    /// next era after 2036-02-07 (RFC 6733 section 4.3.1). Times before
    /// 1970 are fine; sub-second parts are dropped.
    pub fn time(code: u32, t: SystemTime) -> Self {
        Self::unsigned32(code, ntp_seconds(t))
    }
    /// Grouped: the children encoded one after another, each padded.
    pub fn grouped(code: u32, children: Vec<Avp>) -> Self {
        let mut data = Vec::new();
        for c in &children {
            encode_avp(c, &mut data);
        }
        Self::new(code, data)
    }

    /// The AVP's wire form, padding included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len() + 3);
        encode_avp(self, &mut out);
        out
    }

    /// Sets the Vendor-Id and the V bit.
    pub fn vendor(mut self, vendor_id: u32) -> Self {
        self.vendor_id = Some(vendor_id);
        self.flags |= Self::VENDOR;
        self
    }
    /// Sets or clears the M bit.
    pub fn mandatory(mut self, m: bool) -> Self {
        if m {
            self.flags |= Self::MANDATORY;
        } else {
            self.flags &= !Self::MANDATORY;
        }
        self
    }
    /// Replaces the whole flags byte (for malformed output).
    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// The V bit.
    pub fn is_vendor_specific(&self) -> bool {
        self.flags & Self::VENDOR != 0
    }
    /// The M bit.
    pub fn is_mandatory(&self) -> bool {
        self.flags & Self::MANDATORY != 0
    }
    /// Length of the AVP header on the wire (8, or 12 with a Vendor-Id).
    pub fn header_len(&self) -> usize {
        if self.vendor_id.is_some() { 12 } else { 8 }
    }
    /// The AVP Length field as encoded (header + data, padding excluded).
    pub fn wire_len(&self) -> usize {
        self.header_len() + self.data.len()
    }
    /// True if code and vendor are as given.
    pub fn is(&self, code: u32, vendor: Option<u32>) -> bool {
        self.code == code && self.vendor_id == vendor
    }

    fn fixed<const N: usize>(&self, kind: &'static str) -> Result<[u8; N], AvpValueError> {
        <[u8; N]>::try_from(self.data.as_slice()).map_err(|_| AvpValueError::WrongLength {
            code: self.code,
            kind,
            expected: N,
            actual: self.data.len(),
        })
    }

    /// Unsigned32 value.
    pub fn as_u32(&self) -> Result<u32, AvpValueError> {
        self.fixed::<4>("Unsigned32").map(u32::from_be_bytes)
    }
    /// Unsigned64 value.
    pub fn as_u64(&self) -> Result<u64, AvpValueError> {
        self.fixed::<8>("Unsigned64").map(u64::from_be_bytes)
    }
    /// Integer32 or Enumerated value.
    pub fn as_i32(&self) -> Result<i32, AvpValueError> {
        self.fixed::<4>("Integer32").map(i32::from_be_bytes)
    }
    /// Integer64 value.
    pub fn as_i64(&self) -> Result<i64, AvpValueError> {
        self.fixed::<8>("Integer64").map(i64::from_be_bytes)
    }
    /// Float32 value.
    pub fn as_f32(&self) -> Result<f32, AvpValueError> {
        self.fixed::<4>("Float32").map(f32::from_be_bytes)
    }
    /// Float64 value.
    pub fn as_f64(&self) -> Result<f64, AvpValueError> {
        self.fixed::<8>("Float64").map(f64::from_be_bytes)
    }
    /// UTF8String or DiameterIdentity value.
    pub fn as_utf8(&self) -> Result<&str, AvpValueError> {
        std::str::from_utf8(&self.data).map_err(|e| AvpValueError::InvalidUtf8 {
            code: self.code,
            valid_up_to: e.valid_up_to(),
        })
    }
    /// Address value (IPv4 or IPv6 only).
    pub fn as_address(&self) -> Result<IpAddr, AvpValueError> {
        let err = |family| AvpValueError::UnsupportedAddress {
            code: self.code,
            family,
            len: self.data.len().saturating_sub(2),
        };
        let (fam, rest) = match self.data.split_first_chunk::<2>() {
            Some((f, rest)) => (u16::from_be_bytes(*f), rest),
            None => return Err(err(None)),
        };
        match fam {
            1 => <[u8; 4]>::try_from(rest)
                .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                .map_err(|_| err(Some(fam))),
            2 => <[u8; 16]>::try_from(rest)
                .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                .map_err(|_| err(Some(fam))),
            _ => Err(err(Some(fam))),
        }
    }
    /// Time value, read with the NTP era rule of RFC 4330: values with the
    /// top bit set are 1968..2036, values without it 2036..2104. A raw 0
    /// (a "1900" placeholder some clients send) therefore reads as
    /// 2036-02-07; use [`Avp::as_ntp_seconds`] to see the raw value.
    pub fn as_time(&self) -> Result<SystemTime, AvpValueError> {
        self.as_ntp_seconds().map(ntp_to_system_time)
    }
    /// Raw NTP seconds of a Time AVP.
    pub fn as_ntp_seconds(&self) -> Result<u32, AvpValueError> {
        self.fixed::<4>("Time").map(u32::from_be_bytes)
    }
    /// Children of a Grouped AVP, decoded now. Offsets in errors are
    /// relative to the start of this AVP's data.
    pub fn as_grouped(&self) -> Result<Vec<Avp>, DecodeError> {
        decode_avps(&self.data, 0)
    }
    /// First child with this code and no vendor (decodes the group).
    pub fn find(&self, code: u32) -> Option<Avp> {
        self.find_vendor(code, None)
    }
    /// First child with this code and vendor (decodes the group).
    pub fn find_vendor(&self, code: u32, vendor: Option<u32>) -> Option<Avp> {
        self.as_grouped()
            .ok()?
            .into_iter()
            .find(|a| a.is(code, vendor))
    }
}

/// NTP seconds (mod 2^32) of a time.
pub fn ntp_seconds(t: SystemTime) -> u32 {
    let unix: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let back = e.duration();
            // Round towards the past so 1969-12-31T23:59:59.5 is ..59.
            let s = i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
            -(s.saturating_add(i64::from(back.subsec_nanos() > 0)))
        }
    };
    // Truncation to 32 bits is the era wrap of the wire format.
    unix.wrapping_add(NTP_UNIX_OFFSET).rem_euclid(1 << 32) as u32
}

/// The time an NTP seconds value denotes, by the era rule of RFC 4330.
pub fn ntp_to_system_time(v: u32) -> SystemTime {
    let ntp = if v & 0x8000_0000 != 0 {
        i64::from(v)
    } else {
        i64::from(v) + (1i64 << 32)
    };
    let unix = ntp - NTP_UNIX_OFFSET;
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}
