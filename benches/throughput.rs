//! Throughput numbers, printed, never asserted (machines here are shared and
//! noisy): ACR encode+decode per second, CPM INVITE parses per second, and
//! the wall time of the offline suite against the reference SUT.
//!
//! `cargo bench --bench throughput` (release build). Each figure is the
//! median of several rounds measured in this one run.

use std::path::Path;
use std::time::{Duration, Instant};

use cpmcc::charging::rf::{bench_acr_roundtrip, sample_acr_start};
use cpmcc::diameter::Message;
use cpmcc::harness::{self, RunOptions};
use cpmcc::profile::SutProfile;
use cpmcc::sip::framing::parse_message;

const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rate(iterations: u64, f: impl Fn(u64) -> Duration) -> f64 {
    f(iterations / 10); // warm-up
    median(
        (0..ROUNDS)
            .map(|_| iterations as f64 / f(iterations).as_secs_f64())
            .collect(),
    )
}

/// A CPM session INVITE as the harness sends it; Content-Length is filled in.
const INVITE_HEAD: &str = "INVITE sip:bob.r7s3@test.invalid SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK74bf9;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice.r7s3@test.invalid>;tag=9fxced76sl\r\n\
To: <sip:bob.r7s3@test.invalid>\r\n\
Call-ID: 3848276298220188511@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice.r7s3@127.0.0.1:5070;transport=udp>;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\"\r\n\
Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\"\r\n\
Conversation-ID: f81d4fae-7dec-11d0-a765-00a0c91e6bf6\r\n\
Contribution-ID: abcdef01-7dec-11d0-a765-00a0c91e6bf6\r\n\
Allow: INVITE, ACK, CANCEL, BYE, UPDATE, REFER, OPTIONS\r\n\
Supported: timer\r\n\
Content-Type: application/sdp\r\n";

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim\r\na=accept-wrapped-types:*\r\n\
a=path:msrp://127.0.0.1:9/s1;tcp\r\na=setup:actpass\r\na=sendrecv\r\n";

fn parse_rate(message: &[u8]) -> f64 {
    assert!(
        parse_message(message).is_ok(),
        "the benchmark INVITE must parse"
    );
    rate(200_000, |n| {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(parse_message(std::hint::black_box(message)).ok());
        }
        start.elapsed()
    })
}

fn main() {
    let (req, local) = sample_acr_start();
    let acr = req.to_acr(&local, "cdf.test.invalid");
    let codec = rate(500_000, |n| {
        let start = Instant::now();
        let mut buf = Vec::with_capacity(512);
        for _ in 0..n {
            buf.clear();
            std::hint::black_box(&acr).encode_into(&mut buf);
            let decoded = Message::decode(std::hint::black_box(&buf));
            std::hint::black_box(decoded.ok());
        }
        start.elapsed()
    });
    println!(
        "ACR encode+decode (codec):          {codec:>12.0} /s   (target >= 500000 /s on one core)"
    );
    let mapped = rate(200_000, bench_acr_roundtrip);
    println!("ACR build+encode+decode+CH-1 map:    {mapped:>12.0} /s");

    let invite = format!("{INVITE_HEAD}Content-Length: {}\r\n\r\n{SDP}", SDP.len());
    let parse = parse_rate(invite.as_bytes());
    println!(
        "CPM INVITE parse (canonical form):   {parse:>12.0} /s   (target >= 100000 /s on one core)"
    );
    // Compact names take the normalising path, as folding or bare LF would.
    let compact = invite.replace("Call-ID: ", "i: ").replace("From: ", "f: ");
    let parse = parse_rate(compact.as_bytes());
    println!("CPM INVITE parse (compact headers):  {parse:>12.0} /s");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut walls = Vec::new();
    let mut scenarios = 0;
    for _ in 0..3 {
        let profile = SutProfile::load(&root.join("fixtures/sut/reference.yaml")).expect("profile");
        let summary = runtime
            .block_on(harness::run(RunOptions {
                profile,
                features: root.join("features"),
                tags: None,
                concurrency: 16,
                free_ports: true,
                deviations: Vec::new(),
                cucumber_log: None,
                junit: None,
                cucumber_json: None,
            }))
            .expect("suite runs");
        assert!(summary.passed(), "{}", summary.render());
        scenarios = summary.results.len();
        walls.push(summary.wall_time.as_secs_f64());
    }
    println!(
        "offline suite wall time (median of 3): {:>8.2} s   (target < 3 s; {} scenarios; bound by the 1.5 s inactivity timer)",
        median(walls),
        scenarios
    );
}
