//! The run's capture: every SIP and Diameter message the harness's own
//! sockets sent or received, as [`WireEvent`]s in a bounded
//! [`WireRecorder`], written at the end of the run as `capture.pcap` by
//! [`to_pcap`].
//!
//! Nothing here touches a socket: the transports hand over the bytes they
//! wrote or read, with the addresses and the time, and [`to_pcap`] wraps
//! each in synthetic Ethernet, IPv4 or IPv6 and UDP or TCP headers on those
//! addresses, so that Wireshark and tshark decode them. TCP segments get
//! sequence and acknowledgement numbers that follow on per direction, so
//! tshark reassembles messages that span several reads; there is no
//! handshake (the capture starts mid-connection, as one taken with a sniffer
//! started late would).
//!
//! The recorder is bounded in messages and in bytes: under a flood it keeps
//! the first ones and counts the rest as dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

/// The file's name in a run folder.
pub const FILE_NAME: &str = "capture.pcap";

/// Which way a message went, seen from the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Written by the harness to `remote`.
    Sent,
    /// Read by the harness from `remote`.
    Received,
}

/// The socket's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireTransport {
    /// One datagram.
    Udp,
    /// Bytes written to or read from a stream in one call.
    Tcp,
}

/// What one socket call sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEvent {
    /// When (wall clock, for the pcap timestamp).
    pub at: SystemTime,
    /// Which way.
    pub direction: Direction,
    /// Over what.
    pub transport: WireTransport,
    /// The harness's address (a wildcard is written as loopback when the
    /// remote is loopback).
    pub local: SocketAddr,
    /// The other side's address.
    pub remote: SocketAddr,
    /// The bytes, as they were on the wire.
    pub bytes: Vec<u8>,
}

/// How much a recorder keeps at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages kept.
    pub events: usize,
    /// Bytes of messages kept.
    pub bytes: usize,
}

impl Default for Limits {
    /// 200,000 messages or 64 MiB, whichever comes first: far more than a
    /// whole suite, far less than a flood could grow to.
    fn default() -> Self {
        Self {
            events: 200_000,
            bytes: 64 << 20,
        }
    }
}

/// What a recorder holds: the events kept, in the order recorded, and what
/// did not fit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Kept, oldest first.
    pub events: Vec<WireEvent>,
    /// Bytes of the kept events.
    pub bytes: usize,
    /// Events that did not fit (past a limit), not kept.
    pub dropped_events: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    recorded: Recorded,
}

/// The shared, bounded record of wire events. Cheap to clone; every clone
/// records into the same place.
#[derive(Clone, Debug)]
pub struct WireRecorder {
    inner: Arc<Mutex<Inner>>,
}

impl Default for WireRecorder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl WireRecorder {
    /// An empty recorder that keeps at most `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                recorded: Recorded::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `bytes`, stamped now. Copies them only if they fit.
    pub fn record(
        &self,
        direction: Direction,
        transport: WireTransport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        let mut inner = self.lock();
        if !inner.fits(bytes.len()) {
            inner.drop_one(bytes.len());
            return;
        }
        // Stamped under the lock: the kept order is the time order.
        let event = WireEvent {
            at: SystemTime::now(),
            direction,
            transport,
            local,
            remote,
            bytes: bytes.to_vec(),
        };
        inner.keep(event);
    }

    /// Records an event as it is (its own time).
    pub fn push(&self, event: WireEvent) {
        let mut inner = self.lock();
        if inner.fits(event.bytes.len()) {
            inner.keep(event);
        } else {
            inner.drop_one(event.bytes.len());
        }
    }

    /// Everything recorded so far, leaving the recorder empty (its dropped
    /// counts too).
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut self.lock().recorded)
    }

    /// Events kept and dropped so far.
    pub fn counts(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.recorded.events.len(), inner.recorded.dropped_events)
    }
}

impl Inner {
    fn fits(&self, len: usize) -> bool {
        self.recorded.events.len() < self.limits.events
            && self.recorded.bytes.saturating_add(len) <= self.limits.bytes
    }
    fn keep(&mut self, event: WireEvent) {
        self.recorded.bytes += event.bytes.len();
        self.recorded.events.push(event);
    }
    fn drop_one(&mut self, len: usize) {
        self.recorded.dropped_events += 1;
        self.recorded.dropped_bytes += len as u64;
    }
}

/// Largest TCP payload put in one packet (an IPv4 packet holds at most
/// 65,535 bytes with its headers): longer writes become several segments.
const TCP_SEGMENT: usize = 65_000;
/// Largest UDP payload an IPv4 packet can hold; an IPv6 one holds 20 more.
const UDP_MAX_V4: usize = 65_535 - 20 - 8;
const UDP_MAX_V6: usize = 65_535 - 8;
/// The file's snap length: every packet written fits whole.
const SNAPLEN: u32 = 262_144;
/// Where each direction's sequence numbers start.
const ISN: u32 = 1;
/// Synthetic, locally administered MAC addresses.
const MAC_HARNESS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The pcap file (Ethernet link type, nanosecond timestamps) of `events`,
/// one packet per event (a TCP write longer than 65,000 bytes: one per
/// 65,000), in their order.
pub fn to_pcap(events: &[WireEvent]) -> Vec<u8> {
    let header = PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        endianness: pcap_file::Endianness::native(),
        ..PcapHeader::default()
    };
    // Writing to a Vec only fails on a packet over the snap length, which
    // `frames` never makes; a failed packet is skipped, not fatal.
    let Ok(mut writer) = PcapWriter::with_header(Vec::new(), header) else {
        return Vec::new();
    };
    let mut flows = Flows::default();
    for event in events {
        let ts = event
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        for (frame, orig_len) in flows.frames(event) {
            let _ = writer.write_packet(&PcapPacket::new(ts, orig_len, &frame));
        }
    }
    writer.into_writer()
}

/// The next sequence number of each TCP direction, by (source,
/// destination).
#[derive(Debug, Default)]
struct Flows {
    next_seq: HashMap<(SocketAddr, SocketAddr), u32>,
    ip_id: u16,
}

impl Flows {
    /// The Ethernet frames for one event, each with its original length.
    fn frames(&mut self, event: &WireEvent) -> Vec<(Vec<u8>, u32)> {
        let (local, remote) = addresses(event.local.ip(), event.remote.ip());
        let local = SocketAddr::new(local, event.local.port());
        let remote = SocketAddr::new(remote, event.remote.port());
        let (src, dst, src_mac, dst_mac) = match event.direction {
            Direction::Sent => (local, remote, MAC_HARNESS, MAC_REMOTE),
            Direction::Received => (remote, local, MAC_REMOTE, MAC_HARNESS),
        };
        let mut frames = Vec::new();
        match event.transport {
            WireTransport::Udp => {
                let max = if src.is_ipv4() {
                    UDP_MAX_V4
                } else {
                    UDP_MAX_V6
                };
                let payload = &event.bytes[..event.bytes.len().min(max)];
                let segment = udp(src, dst, payload);
                let mut frame = self.ip_frame(src, dst, src_mac, dst_mac, 17, &segment);
                let orig = frame.len() + (event.bytes.len() - payload.len());
                frame.shrink_to_fit();
                frames.push((frame, orig as u32));
            }
            WireTransport::Tcp => {
                for chunk in event.bytes.chunks(TCP_SEGMENT) {
                    let seq = *self.next_seq.entry((src, dst)).or_insert(ISN);
                    let ack = *self.next_seq.entry((dst, src)).or_insert(ISN);
                    self.next_seq
                        .insert((src, dst), seq.wrapping_add(chunk.len() as u32));
                    let segment = tcp(src, dst, seq, ack, chunk);
                    let frame = self.ip_frame(src, dst, src_mac, dst_mac, 6, &segment);
                    let len = frame.len() as u32;
                    frames.push((frame, len));
                }
            }
        }
        frames
    }

    fn ip_frame(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        protocol: u8,
        segment: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + 40 + segment.len());
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                self.ip_id = self.ip_id.wrapping_add(1);
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&((20 + segment.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
                h[6] = 0x40; // don't fragment
                h[8] = 64;
                h[9] = protocol;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let sum = checksum(&[&h]);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (s, d) => {
                // `addresses` made both of one family: V6 here.
                let (s, d) = (v6(s), v6(d));
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(segment.len() as u16).to_be_bytes());
                f.push(protocol);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
        }
        f.extend_from_slice(segment);
        f
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The two addresses as a packet can carry them: of one family (IPv4 when
/// both are, or are IPv4-mapped), a wildcard local address as the loopback
/// a loopback remote reached.
fn addresses(local: IpAddr, remote: IpAddr) -> (IpAddr, IpAddr) {
    let (mut local, remote) = (local.to_canonical(), remote.to_canonical());
    if local.is_unspecified() && remote.is_loopback() {
        local = remote;
    }
    match (local, remote) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (local, remote),
        _ => (IpAddr::V6(v6(local)), IpAddr::V6(v6(remote))),
    }
}

/// The pseudo-header part of a UDP or TCP checksum.
fn pseudo(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, protocol]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            p.extend_from_slice(&v6(s).octets());
            p.extend_from_slice(&v6(d).octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, protocol]);
        }
    }
    p
}

fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&src.port().to_be_bytes());
    s.extend_from_slice(&dst.port().to_be_bytes());
    s.extend_from_slice(&(len as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let sum = match checksum(&[&pseudo(src.ip(), dst.ip(), 17, len), &s]) {
        0 => 0xffff,
        sum => sum,
    };
    s[6..8].copy_from_slice(&sum.to_be_bytes());
    s
}

fn tcp(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&src.port().to_be_bytes());
    s.extend_from_slice(&dst.port().to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(5 << 4); // 20-byte header, no options
    s.push(0x18); // PSH, ACK
    s.extend_from_slice(&u16::MAX.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    s.extend_from_slice(payload);
    let sum = checksum(&[&pseudo(src.ip(), dst.ip(), 6, len), &s]);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// The Internet checksum (RFC 1071) over the parts, as if concatenated
/// (every part but the last must have an even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;
    use std::net::Ipv4Addr;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn event(
        ms: u64,
        direction: Direction,
        transport: WireTransport,
        local: &str,
        remote: &str,
        bytes: &[u8],
    ) -> WireEvent {
        WireEvent {
            at: at(ms),
            direction,
            transport,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            bytes: bytes.to_vec(),
        }
    }

    fn read(pcap: &[u8]) -> (PcapHeader, Vec<(Duration, Vec<u8>)>) {
        let mut r = PcapReader::new(pcap).unwrap();
        let header = r.header();
        let mut packets = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.orig_len as usize, p.data.len());
            packets.push((p.timestamp, p.data.into_owned()));
        }
        (header, packets)
    }

    /// Summing a header with its checksum in gives 0.
    fn verifies(parts: &[&[u8]]) -> bool {
        checksum(parts) == 0
    }

    #[test]
    fn a_udp_message_becomes_one_ethernet_ipv4_udp_packet_on_its_addresses() {
        let invite = b"INVITE sip:bob@example.test SIP/2.0\r\n\r\n";
        let pcap = to_pcap(&[
            event(
                5,
                Direction::Sent,
                WireTransport::Udp,
                "127.0.0.1:5070",
                "127.0.0.2:5060",
                invite,
            ),
            event(
                7,
                Direction::Received,
                WireTransport::Udp,
                "0.0.0.0:5070",
                "127.0.0.2:5060",
                b"SIP/2.0 100 Trying\r\n\r\n",
            ),
        ]);
        let (header, packets) = read(&pcap);
        assert_eq!(header.datalink, DataLink::ETHERNET);
        assert_eq!(packets.len(), 2);
        let (ts, p) = &packets[0];
        assert_eq!(*ts, at(5).duration_since(SystemTime::UNIX_EPOCH).unwrap());
        assert_eq!(&p[12..14], &[0x08, 0x00], "IPv4");
        let ip = &p[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            20 + 8 + invite.len()
        );
        assert_eq!(ip[9], 17, "UDP");
        assert_eq!(&ip[12..16], &[127, 0, 0, 1], "from the harness");
        assert_eq!(&ip[16..20], &[127, 0, 0, 2]);
        assert!(verifies(&[ip]), "IPv4 header checksum");
        let udp = &p[34..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 5070);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5060);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
        assert!(verifies(&[
            &pseudo(
                "127.0.0.1".parse().unwrap(),
                "127.0.0.2".parse().unwrap(),
                17,
                udp.len()
            ),
            udp
        ]));
        assert_eq!(&udp[8..], invite);

        // Received: the other way round, the wildcard made the loopback
        // the remote used.
        let p = &packets[1].1;
        assert_eq!(&p[14 + 12..14 + 16], &[127, 0, 0, 2]);
        assert_eq!(&p[14 + 16..14 + 20], &[127, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([p[34], p[35]]), 5060);
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), 5070);
    }

    #[test]
    fn tcp_sequence_numbers_follow_on_per_direction_and_acknowledge_the_other() {
        let (l, r) = ("127.0.0.1:3868", "127.0.0.1:40000");
        let pcap = to_pcap(&[
            event(1, Direction::Received, WireTransport::Tcp, l, r, &[1; 100]),
            event(2, Direction::Sent, WireTransport::Tcp, l, r, &[2; 60]),
            event(3, Direction::Received, WireTransport::Tcp, l, r, &[3; 40]),
            // Another connection starts on its own numbers.
            event(
                4,
                Direction::Sent,
                WireTransport::Tcp,
                l,
                "127.0.0.1:40001",
                &[4; 10],
            ),
        ]);
        let (_, packets) = read(&pcap);
        let seg = |i: usize| {
            let p = &packets[i].1;
            let t = &p[34..];
            (
                u16::from_be_bytes([t[0], t[1]]),
                u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                t[13],
                t[20..].len(),
            )
        };
        assert_eq!(seg(0), (40000, ISN, ISN, 0x18, 100));
        assert_eq!(seg(1), (3868, ISN, ISN + 100, 0x18, 60));
        assert_eq!(seg(2), (40000, ISN + 100, ISN + 60, 0x18, 40));
        assert_eq!(seg(3), (3868, ISN, ISN, 0x18, 10));
        let p = &packets[1].1;
        assert_eq!(p[14 + 9], 6, "TCP");
        let tcp = &p[34..];
        assert!(verifies(&[
            &pseudo(
                "127.0.0.1".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                6,
                tcp.len()
            ),
            tcp
        ]));
    }

    #[test]
    fn a_long_tcp_write_is_split_into_segments_that_fit_an_ip_packet() {
        let bytes: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        let pcap = to_pcap(&[event(
            0,
            Direction::Sent,
            WireTransport::Tcp,
            "127.0.0.1:1",
            "127.0.0.1:2",
            &bytes,
        )]);
        let (_, packets) = read(&pcap);
        assert_eq!(packets.len(), 3);
        let mut joined = Vec::new();
        let mut seq = ISN;
        for (_, p) in &packets {
            assert!(p.len() - 14 <= 65_535);
            let t = &p[34..];
            assert_eq!(u32::from_be_bytes([t[4], t[5], t[6], t[7]]), seq);
            seq += t[20..].len() as u32;
            joined.extend_from_slice(&t[20..]);
        }
        assert_eq!(joined, bytes);
    }

    #[test]
    fn ipv6_and_mixed_families_become_ipv6_packets() {
        let pcap = to_pcap(&[
            event(
                0,
                Direction::Sent,
                WireTransport::Udp,
                "[::1]:5060",
                "[::1]:5070",
                b"x",
            ),
            event(
                1,
                Direction::Received,
                WireTransport::Tcp,
                "[::]:3868",
                "10.0.0.1:4000",
                b"y",
            ),
            // IPv4-mapped on both sides is IPv4.
            event(
                2,
                Direction::Sent,
                WireTransport::Udp,
                "[::ffff:127.0.0.1]:5060",
                "[::ffff:127.0.0.1]:5070",
                b"z",
            ),
        ]);
        let (_, packets) = read(&pcap);
        let p = &packets[0].1;
        assert_eq!(&p[12..14], &[0x86, 0xdd]);
        assert_eq!(p[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[18], p[19]]), 9, "payload length");
        assert_eq!(p[20], 17);
        assert_eq!(&p[22..38], &Ipv6Addr::LOCALHOST.octets());
        let udp = &p[54..];
        assert!(verifies(&[
            &pseudo(
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                17,
                udp.len()
            ),
            udp
        ]));
        let p = &packets[1].1;
        assert_eq!(&p[12..14], &[0x86, 0xdd]);
        assert_eq!(
            &p[22..38],
            &Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets()
        );
        assert_eq!(&packets[2].1[12..14], &[0x08, 0x00]);
    }

    #[test]
    fn the_recorder_keeps_what_fits_and_counts_the_rest() {
        let rec = WireRecorder::new(Limits {
            events: 3,
            bytes: 10,
        });
        let (l, r): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let clone = rec.clone();
        rec.record(Direction::Sent, WireTransport::Udp, l, r, &[0; 4]);
        clone.record(Direction::Received, WireTransport::Udp, l, r, &[0; 4]);
        rec.record(Direction::Sent, WireTransport::Udp, l, r, &[0; 4]); // 12 bytes: no
        rec.record(Direction::Sent, WireTransport::Udp, l, r, &[0; 2]);
        rec.record(Direction::Sent, WireTransport::Udp, l, r, &[]); // 4th: no
        assert_eq!(rec.counts(), (3, 2));
        let got = rec.take();
        assert_eq!(got.events.len(), 3);
        assert_eq!(got.bytes, 10);
        assert_eq!((got.dropped_events, got.dropped_bytes), (2, 4));
        assert_eq!(got.events[1].direction, Direction::Received);
        assert!(got.events[0].at <= got.events[2].at);
        assert_eq!(rec.counts(), (0, 0), "taken");
    }

    #[test]
    fn no_events_make_a_valid_empty_capture() {
        let (header, packets) = read(&to_pcap(&[]));
        assert_eq!(header.snaplen, SNAPLEN);
        assert!(packets.is_empty());
    }
}
