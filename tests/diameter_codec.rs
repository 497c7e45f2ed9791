//! Codec: round trips, typed values, framing errors and their result codes,
//! and a mutation loop that must never panic.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cpmcc::diameter::{
    Avp, DecodeError, Header, Message, VENDOR_3GPP, app, code, command, dictionary, result,
};

fn sample() -> Message {
    Message::request(command::ACCOUNTING, app::ACCOUNTING_RF)
        .with(Avp::utf8(code::SESSION_ID, "pf.test;1;abc").mandatory(true))
        .with(Avp::diameter_identity(code::ORIGIN_HOST, "sut.test.invalid").mandatory(true))
        .with(Avp::enumerated(code::ACCOUNTING_RECORD_TYPE, 2).mandatory(true))
        .with(Avp::unsigned32(code::ACCOUNTING_RECORD_NUMBER, 0).mandatory(true))
        .with(
            Avp::grouped(
                code::SERVICE_INFORMATION,
                vec![
                    Avp::grouped(
                        code::POC_INFORMATION,
                        vec![Avp::unsigned32(code::NUMBER_OF_PARTICIPANTS, 3).vendor(VENDOR_3GPP)],
                    )
                    .vendor(VENDOR_3GPP),
                ],
            )
            .vendor(VENDOR_3GPP)
            .mandatory(true),
        )
        // unknown, odd length, non-M: must survive byte for byte
        .with(Avp::octets(99_999, vec![1, 2, 3, 4, 5]).vendor(4242))
}

#[test]
fn round_trip_is_byte_exact() {
    let m = sample();
    let bytes = m.encode();
    assert_eq!(bytes.len() % 4, 0);
    let d = Message::decode(&bytes).unwrap();
    assert_eq!(d.header.length as usize, bytes.len());
    assert_eq!(d.avps, m.avps);
    assert_eq!(d.encode(), bytes);
    let unknown = d.avp_vendor(99_999, Some(4242)).unwrap();
    assert_eq!(unknown.data, vec![1, 2, 3, 4, 5]);
}

#[test]
fn header_fields_and_flags() {
    let mut m = sample();
    m.header.hop_by_hop = 0x1122_3344;
    m.header.end_to_end = 0x5566_7788;
    let b = m.encode();
    assert_eq!(b[0], 1);
    assert_eq!(b[4], Header::REQUEST | Header::PROXIABLE);
    assert_eq!(&b[5..8], &[0, 1, 15]);
    assert_eq!(&b[8..12], &3u32.to_be_bytes());
    let d = Message::decode(&b).unwrap();
    assert!(d.is_request() && d.header.is_proxiable() && !d.header.is_error());
    assert_eq!(d.header.hop_by_hop, 0x1122_3344);
    let a = d.answer();
    assert!(!a.is_request());
    assert_eq!(a.header.end_to_end, 0x5566_7788);
    assert_eq!(a.session_id(), Some("pf.test;1;abc"));
    assert_eq!(a.avps.len(), 1);
}

#[test]
fn find_path_through_groups() {
    let m = Message::decode(&sample().encode()).unwrap();
    let n = m
        .find_path(&[
            (code::SERVICE_INFORMATION, Some(VENDOR_3GPP)),
            (code::POC_INFORMATION, Some(VENDOR_3GPP)),
            (code::NUMBER_OF_PARTICIPANTS, Some(VENDOR_3GPP)),
        ])
        .unwrap();
    assert_eq!(n.as_u32().unwrap(), 3);
    assert!(m.find_path(&[(code::SERVICE_INFORMATION, None)]).is_none());
}

#[test]
fn typed_values() {
    assert_eq!(Avp::unsigned64(1, u64::MAX).as_u64().unwrap(), u64::MAX);
    assert_eq!(Avp::integer32(1, -5).as_i32().unwrap(), -5);
    assert_eq!(Avp::integer64(1, -5).as_i64().unwrap(), -5);
    assert_eq!(Avp::float32(1, 1.5).as_f32().unwrap(), 1.5);
    assert_eq!(Avp::float64(1, -2.25).as_f64().unwrap(), -2.25);
    for ip in ["192.0.2.1", "2001:db8::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(
            Avp::address(code::HOST_IP_ADDRESS, ip)
                .as_address()
                .unwrap(),
            ip
        );
    }
    assert!(Avp::utf8(1, "x").as_u32().is_err());
    assert!(Avp::octets(1, vec![0xff, 0xfe]).as_utf8().is_err());
    assert!(
        Avp::octets(code::HOST_IP_ADDRESS, vec![0, 9, 1, 2])
            .as_address()
            .is_err()
    );
    assert!(
        Avp::octets(code::HOST_IP_ADDRESS, vec![0])
            .as_address()
            .is_err()
    );
}

#[test]
fn time_values_across_eras() {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(Avp::time(55, now).as_time().unwrap(), now);
    // 1969: before the Unix epoch, still era 0.
    let t1969 = UNIX_EPOCH - Duration::from_secs(86_400);
    let a = Avp::time(55, t1969);
    assert_eq!(a.as_ntp_seconds().unwrap(), 2_208_988_800 - 86_400);
    assert_eq!(a.as_time().unwrap(), t1969);
    // 2040: era 1, wraps.
    let t2040 = UNIX_EPOCH + Duration::from_secs(2_208_988_800);
    let a = Avp::time(55, t2040);
    assert_eq!(
        a.as_ntp_seconds().unwrap(),
        2_208_988_800u64.wrapping_mul(2).wrapping_rem(1 << 32) as u32
    );
    assert_eq!(a.as_time().unwrap(), t2040);
    // Raw 0 is kept raw.
    assert_eq!(Avp::unsigned32(55, 0).as_ntp_seconds().unwrap(), 0);
    let _ = SystemTime::now();
}

fn set_len(b: &mut [u8]) {
    let l = (b.len() as u32).to_be_bytes();
    b[1..4].copy_from_slice(&l[1..]);
}

#[test]
fn framing_errors_say_where_and_what_to_answer() {
    let good = sample().encode();
    assert!(matches!(
        Message::decode(&good[..10]),
        Err(DecodeError::TruncatedHeader { len: 10 })
    ));

    let mut b = good.clone();
    b[0] = 2;
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e.result_code(), result::UNSUPPORTED_VERSION);

    let e = Message::decode(&good[..good.len() - 4]).unwrap_err();
    assert!(matches!(e, DecodeError::MessageLengthPastEnd { .. }), "{e}");

    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::TrailingBytes { extra: 4, .. })
    ));

    // AVP length shorter than its header: first AVP (Session-Id) length 4.
    let mut b = good.clone();
    b[25..28].copy_from_slice(&[0, 0, 4]);
    let e = Message::decode(&b).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::AvpLengthTooShort {
                offset: 20,
                code: 263,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.result_code(), result::INVALID_AVP_LENGTH);
    assert_eq!(e.failed_avp().unwrap().code, code::SESSION_ID);

    // AVP length past the end.
    let mut b = good.clone();
    b[25..28].copy_from_slice(&[0, 0x10, 0]);
    let e = Message::decode(&b).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::AvpLengthPastEnd {
                offset: 20,
                code: 263,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.result_code(), result::INVALID_AVP_LENGTH);

    // Non-zero padding: the unknown AVP (5 bytes of data) is last.
    let mut b = good.clone();
    let n = b.len();
    b[n - 1] = 0xaa;
    let e = Message::decode(&b).unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::BadPadding {
                missing: false,
                code: 99_999,
                ..
            }
        ),
        "{e}"
    );

    // Missing padding: drop it and fix the message length (not a multiple of 4).
    let mut b = good.clone();
    b.truncate(n - 3);
    set_len(&mut b);
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadMessageLength { .. })
    ));
    // ...and with another AVP after the unpadded one.
    let mut b = good[..n - 3].to_vec();
    b.extend_from_slice(&Avp::unsigned32(1, 1).encode());
    b.extend_from_slice(&[0; 3]);
    set_len(&mut b);
    let e = Message::decode(&b).unwrap_err();
    // Padding missing before the next AVP cannot be told from a misaligned
    // next AVP; either way it is an AVP length problem.
    assert_eq!(e.result_code(), result::INVALID_AVP_LENGTH, "{e}");

    // Reserved AVP bits: 3009.
    let mut b = good.clone();
    b[24] |= 0x01;
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e.result_code(), result::INVALID_AVP_BITS);
    assert!(e.failed_avp().is_some());

    // E bit on a request: 3008.
    let mut b = good.clone();
    b[4] |= Header::ERROR;
    assert_eq!(
        Message::decode(&b).unwrap_err().result_code(),
        result::INVALID_HDR_BITS
    );
}

#[test]
fn grouped_errors_are_lazy_and_located() {
    let bad =
        Avp::octets(code::SERVICE_INFORMATION, vec![0, 0, 3, 105, 0, 0, 0, 4]).vendor(VENDOR_3GPP);
    let m = Message::request(command::ACCOUNTING, 3).with(bad.clone());
    let d = Message::decode(&m.encode()).unwrap();
    let e = d.avps[0].as_grouped().unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::AvpLengthTooShort {
                offset: 0,
                code: 873,
                ..
            }
        ),
        "{e}"
    );
    assert!(d.pretty().contains("malformed"));
}

#[test]
fn dictionary_and_mandatory_check() {
    let d = dictionary::lookup(code::TRIGGER_TYPE, Some(VENDOR_3GPP)).unwrap();
    assert_eq!(d.name, "Trigger-Type");
    assert!(dictionary::lookup(code::TRIGGER_TYPE, None).is_none());
    assert_eq!(
        dictionary::enum_name(code::TRIGGER_TYPE, Some(VENDOR_3GPP), 51),
        Some("CHANGE_IN_THRSHLD_OF_PARTICIPANTS_NMB")
    );
    let m = sample();
    assert!(dictionary::check_mandatory(&m).is_ok());
    let unknown_m = Avp::unsigned32(77_777, 1).vendor(1).mandatory(true);
    let m2 = m.clone().with(unknown_m.clone());
    assert_eq!(dictionary::check_mandatory(&m2), Err(unknown_m.clone()));
    // nested inside a known group
    let m3 = m.with(Avp::grouped(code::SUBSCRIPTION_ID, vec![unknown_m.clone()]).mandatory(true));
    assert_eq!(dictionary::check_mandatory(&m3), Err(unknown_m));
    let p = m3.pretty();
    assert!(
        p.contains("Accounting-Record-Type [M] = START_RECORD (2)"),
        "{p}"
    );
    assert!(
        p.contains("AVP 99999 (vendor 4242) [V] = 0x0102030405"),
        "{p}"
    );
    assert!(
        sample().describe().starts_with("ACR START #0"),
        "{}",
        sample().describe()
    );
}

/// Deterministic xorshift so the loop is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_and_truncated_input_never_panics() {
    let good = sample().encode();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ok = 0;
    for cut in 0..=good.len() {
        let _ = Message::decode(&good[..cut]);
    }
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let i = (rng.next() as usize) % b.len();
            b[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(3) {
            b.truncate((rng.next() as usize) % (b.len() + 1));
        }
        if rng.next().is_multiple_of(2) && b.len() >= 4 {
            set_len(&mut b);
        }
        match Message::decode(&b) {
            Ok(m) => {
                ok += 1;
                let _ = m.pretty();
                let _ = m.describe();
                let _ = dictionary::check_mandatory(&m);
                for a in &m.avps {
                    let _ = a.as_grouped();
                    let _ = a.as_time();
                    let _ = a.as_address();
                }
            }
            Err(e) => {
                let _ = e.result_code();
                let _ = e.failed_avp();
                let _ = e.to_string();
            }
        }
    }
    assert!(ok > 0, "some mutations should still decode");
}
