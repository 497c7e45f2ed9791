//! Throughput numbers, printed, never asserted (machines here are shared and
//! noisy): ACR encode+decode per second, CPM INVITE parses per second, SIP
//! transaction-layer requests per second with many live transactions, and
//! the wall time of the offline suite against the reference SUT.
//!
//! `cargo bench --bench throughput` (release build). Each figure is the
//! median of several rounds measured in this one run.
//! `cargo bench --bench throughput -- transactions` runs only the
//! transaction-layer figures.

use std::path::Path;
use std::time::{Duration, Instant};

use cpmcc::charging::rf::{bench_acr_roundtrip, sample_acr_start};
use cpmcc::diameter::Message;
use cpmcc::harness::{self, RunOptions};
use cpmcc::profile::SutProfile;
use cpmcc::sip::framing::parse_message;
use cpmcc::sip::{Target, Timers, TransactionLayer, TxEvent, response_to};

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

/// A small MESSAGE for nobody, as a flood sends it, with its own branch.
fn message_for_nobody(i: u64) -> rsip::Request {
    let text = format!(
        "MESSAGE sip:nobody-{i}@test.invalid SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKflood{i}\r\n\
From: <sip:mallory@evil.invalid>;tag=j{i}\r\n\
To: <sip:nobody@test.invalid>\r\n\
Call-ID: flood-{i}\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n"
    );
    match parse_message(text.as_bytes()) {
        Ok(rsip::SipMessage::Request(r)) => r,
        other => panic!("the benchmark MESSAGE must parse as a request: {other:?}"),
    }
}

/// One request through the layer as the endpoint and the Agent handle it:
/// in, the TU's 404 (a 32 s Timer J), out; `poll` adds the driver's
/// `poll_timeout` after each step, as the endpoint does.
fn answer_one(layer: &mut TransactionLayer, request: rsip::Request, now: Instant, poll: bool) {
    let source = Target::udp(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)));
    layer.handle_incoming(request.into(), source, now);
    if poll {
        std::hint::black_box(layer.poll_timeout());
    }
    while let Some(ev) = layer.poll_event() {
        if let TxEvent::Request {
            key: Some(key),
            request,
            ..
        } = ev
        {
            let response = response_to(&request, rsip::StatusCode::from(404), Some("t"));
            layer
                .send_response(&key, response, now)
                .expect("a fresh server transaction takes its final response");
        }
    }
    while layer.poll_transmit().is_some() {}
    if poll {
        std::hint::black_box(layer.poll_timeout());
    }
}

/// Requests for nobody handled per second with `live` transactions already
/// in their 32 s Timer J, the way a flood leaves the layer. The rounds run
/// on one layer, so it ends with `live + ROUNDS * batch` transactions.
fn transaction_rate(live: u64, batch: u64) -> f64 {
    let now = Instant::now();
    let mut layer = TransactionLayer::new(Timers::default());
    for i in 0..live {
        answer_one(&mut layer, message_for_nobody(i), now, false);
    }
    let mut next = live;
    let mut rounds = Vec::new();
    for round in 0..=ROUNDS {
        let fresh: Vec<_> = (next..next + batch).map(message_for_nobody).collect();
        next += batch;
        let start = Instant::now();
        for request in fresh {
            answer_one(&mut layer, request, now, true);
        }
        let elapsed = start.elapsed();
        assert_eq!(layer.len() as u64, next, "every transaction lives on");
        if round > 0 {
            // Round 0 warms up.
            rounds.push(batch as f64 / elapsed.as_secs_f64());
        }
    }
    median(rounds)
}

/// Resident set size of this process, in kB (Linux; 0 elsewhere).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Bytes a request for nobody holds for its 32 s once answered, against
/// answered and forgotten (RFC 3261 §8.2.7).
fn transaction_memory(live: u64) {
    let now = Instant::now();
    let before = rss_kb();
    let mut layer = TransactionLayer::new(Timers::default());
    for i in 0..live {
        answer_one(&mut layer, message_for_nobody(i), now, false);
    }
    let held = rss_kb().saturating_sub(before) * 1024 / live;
    assert_eq!(layer.len() as u64, live);
    drop(layer);
    let source = Target::udp(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)));
    let mut layer = TransactionLayer::new(Timers::default());
    let fresh: Vec<_> = (live..2 * live).map(message_for_nobody).collect();
    let start = Instant::now();
    for request in fresh {
        layer.handle_incoming(request.into(), source, now);
        while let Some(ev) = layer.poll_event() {
            if let TxEvent::Request {
                key: Some(key),
                request,
                ..
            } = ev
            {
                let response = response_to(&request, rsip::StatusCode::from(404), Some("t"));
                layer
                    .send_response_and_forget(&key, response, now)
                    .expect("a fresh server transaction takes its final response");
            }
        }
        while layer.poll_transmit().is_some() {}
    }
    let rate = live as f64 / start.elapsed().as_secs_f64();
    assert!(layer.is_empty());
    println!(
        "SIP request for nobody answered 404: {held} bytes held each for 64·T1 (RSS over {live}); \
         answered and forgotten: nothing held, {rate:.0} /s"
    );
}

fn transactions() {
    transaction_memory(50_000);
    let batch = 1_000;
    for live in [0, 5_000, 50_000] {
        let r = transaction_rate(live, batch);
        println!(
            "SIP request for nobody in, 404 out, {live:>6} live transactions (+{batch} a round): {r:>10.0} /s"
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "transactions") {
        return transactions();
    }
    transactions();
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
    for (label, tags, target) in [
        ("offline suite", Some("@offline"), "target < 3 s"),
        ("whole suite (offline + online)", None, "target < 5 s"),
    ] {
        let mut walls = Vec::new();
        let mut scenarios = 0;
        for _ in 0..3 {
            let profile =
                SutProfile::load(&root.join("fixtures/sut/reference.yaml")).expect("profile");
            let summary = runtime
                .block_on(harness::run(RunOptions {
                    profile,
                    features: root.join("features"),
                    tags: tags.map(str::to_owned),
                    concurrency: harness::DEFAULT_CONCURRENCY,
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
            "{label} wall time (median of 3): {:>8.2} s   ({target}; {scenarios} scenarios; bound by the 1.5 s inactivity timer)",
            median(walls),
        );
    }
}
