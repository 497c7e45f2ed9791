//! Diameter base protocol (RFC 6733): sans-IO codec, dictionary, peer state
//! machine, and a TCP transport.
//!
//! Layering, from the bottom:
//! - [`avp`] and [`codec`]: [`Avp`], [`Header`], [`Message`] and their exact
//!   wire form. Unknown AVPs are kept raw and re-encode byte for byte; the
//!   encoder writes whatever the fields say, so a test can build malformed
//!   messages on purpose.
//! - [`dictionary`]: names and types of every AVP of `spec/binding.md`, the
//!   `code::*` constants, and the M-bit check (result 5001).
//! - [`commands`]: CER/CEA, DWR/DWA, DPR/DPA builders and error answers.
//! - [`peer`]: the deterministic peer state machine (no I/O, time passed in).
//! - [`transport`]: TCP framing and the tokio driver that runs a [`Peer`].

pub mod avp;
pub mod codec;
pub mod commands;
pub mod dictionary;
pub mod peer;
pub mod transport;

pub use avp::{Avp, AvpValueError};
pub use codec::{DecodeError, Header, Message};
pub use commands::{AppId, LocalIdentity, RemoteIdentity, error_answer};
pub use dictionary::{AvpDef, AvpKind, code, lookup};
pub use peer::{CloseReason, Peer, PeerConfig, PeerError, PeerEvent, PeerState, Role};
pub use transport::{FrameDecoder, FramingError, PeerHandle, TransportError, spawn};

/// The 3GPP vendor id (IANA enterprise number), used on every 3GPP AVP.
pub const VENDOR_3GPP: u32 = 10415;

/// Command codes (RFC 6733, RFC 4006/8506, RFC 4005).
pub mod command {
    /// CER/CEA.
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    /// RAR/RAA.
    pub const RE_AUTH: u32 = 258;
    /// ACR/ACA (Rf, CH-1).
    pub const ACCOUNTING: u32 = 271;
    /// CCR/CCA (Ro, CH-2).
    pub const CREDIT_CONTROL: u32 = 272;
    /// ASR/ASA.
    pub const ABORT_SESSION: u32 = 274;
    /// STR/STA.
    pub const SESSION_TERMINATION: u32 = 275;
    /// DWR/DWA.
    pub const DEVICE_WATCHDOG: u32 = 280;
    /// DPR/DPA.
    pub const DISCONNECT_PEER: u32 = 282;

    /// Short name of a command for one-line summaries ("ACR", "CEA", ...).
    pub fn abbreviation(code: u32, request: bool) -> Option<&'static str> {
        let (r, a) = match code {
            CAPABILITIES_EXCHANGE => ("CER", "CEA"),
            RE_AUTH => ("RAR", "RAA"),
            ACCOUNTING => ("ACR", "ACA"),
            CREDIT_CONTROL => ("CCR", "CCA"),
            ABORT_SESSION => ("ASR", "ASA"),
            SESSION_TERMINATION => ("STR", "STA"),
            DEVICE_WATCHDOG => ("DWR", "DWA"),
            DISCONNECT_PEER => ("DPR", "DPA"),
            _ => return None,
        };
        Some(if request { r } else { a })
    }
}

/// Application ids.
pub mod app {
    /// Diameter common messages (CER, DWR, DPR).
    pub const COMMON: u32 = 0;
    /// Diameter base accounting, used by Rf (CH-1).
    pub const ACCOUNTING_RF: u32 = 3;
    /// Diameter credit control, used by Ro (CH-2).
    pub const CREDIT_CONTROL_RO: u32 = 4;
    /// Relay: advertising it means "any application".
    pub const RELAY: u32 = 0xffff_ffff;
}

/// Result-Code values (RFC 6733 section 7.1, RFC 4006 section 9).
pub mod result {
    /// DIAMETER_SUCCESS.
    pub const SUCCESS: u32 = 2001;
    /// DIAMETER_LIMITED_SUCCESS.
    pub const LIMITED_SUCCESS: u32 = 2002;
    /// DIAMETER_COMMAND_UNSUPPORTED.
    pub const COMMAND_UNSUPPORTED: u32 = 3001;
    /// DIAMETER_UNABLE_TO_DELIVER.
    pub const UNABLE_TO_DELIVER: u32 = 3002;
    /// DIAMETER_REALM_NOT_SERVED.
    pub const REALM_NOT_SERVED: u32 = 3003;
    /// DIAMETER_TOO_BUSY.
    pub const TOO_BUSY: u32 = 3004;
    /// DIAMETER_LOOP_DETECTED.
    pub const LOOP_DETECTED: u32 = 3005;
    /// DIAMETER_APPLICATION_UNSUPPORTED.
    pub const APPLICATION_UNSUPPORTED: u32 = 3007;
    /// DIAMETER_INVALID_HDR_BITS.
    pub const INVALID_HDR_BITS: u32 = 3008;
    /// DIAMETER_INVALID_AVP_BITS.
    pub const INVALID_AVP_BITS: u32 = 3009;
    /// DIAMETER_UNKNOWN_PEER.
    pub const UNKNOWN_PEER: u32 = 3010;
    /// DIAMETER_END_USER_SERVICE_DENIED (RFC 4006).
    pub const END_USER_SERVICE_DENIED: u32 = 4010;
    /// DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE (RFC 4006).
    pub const CREDIT_CONTROL_NOT_APPLICABLE: u32 = 4011;
    /// DIAMETER_CREDIT_LIMIT_REACHED (RFC 4006).
    pub const CREDIT_LIMIT_REACHED: u32 = 4012;
    /// DIAMETER_AVP_UNSUPPORTED.
    pub const AVP_UNSUPPORTED: u32 = 5001;
    /// DIAMETER_UNKNOWN_SESSION_ID.
    pub const UNKNOWN_SESSION_ID: u32 = 5002;
    /// DIAMETER_INVALID_AVP_VALUE.
    pub const INVALID_AVP_VALUE: u32 = 5004;
    /// DIAMETER_MISSING_AVP.
    pub const MISSING_AVP: u32 = 5005;
    /// DIAMETER_AVP_OCCURS_TOO_MANY_TIMES.
    pub const AVP_OCCURS_TOO_MANY_TIMES: u32 = 5009;
    /// DIAMETER_NO_COMMON_APPLICATION.
    pub const NO_COMMON_APPLICATION: u32 = 5010;
    /// DIAMETER_UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: u32 = 5011;
    /// DIAMETER_UNABLE_TO_COMPLY.
    pub const UNABLE_TO_COMPLY: u32 = 5012;
    /// DIAMETER_INVALID_AVP_LENGTH.
    pub const INVALID_AVP_LENGTH: u32 = 5014;
    /// DIAMETER_INVALID_MESSAGE_LENGTH.
    pub const INVALID_MESSAGE_LENGTH: u32 = 5015;
    /// DIAMETER_USER_UNKNOWN (RFC 4006).
    pub const USER_UNKNOWN: u32 = 5030;
    /// DIAMETER_RATING_FAILED (RFC 4006).
    pub const RATING_FAILED: u32 = 5031;

    /// True for protocol errors (3xxx), which answers carry with the E bit.
    pub fn is_protocol_error(code: u32) -> bool {
        (3000..4000).contains(&code)
    }
}

/// Disconnect-Cause values (RFC 6733 section 5.4.3).
pub mod disconnect_cause {
    /// REBOOTING.
    pub const REBOOTING: u32 = 0;
    /// BUSY.
    pub const BUSY: u32 = 1;
    /// DO_NOT_WANT_TO_TALK_TO_YOU.
    pub const DO_NOT_WANT_TO_TALK_TO_YOU: u32 = 2;
}
