use std::net::SocketAddr;

use super::*;
use crate::core::{write_branch, BranchKey, Local, OurBranch};

fn node() -> SocketAddr {
    "127.0.0.2:5080".parse().unwrap()
}

fn branch(slot: u32, gen: u32) -> String {
    write_branch(
        &BranchKey::new(""),
        &OurBranch {
            worker: 0,
            slot,
            gen,
            ingress: Local::Listen(0),
            loop_hash: 7,
        },
    )
    .as_str()
    .to_owned()
}

fn request(method: &str, slot: u32, gen: u32) -> Vec<u8> {
    format!(
        "{method} sip:600@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch={};rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKphone\r\nCSeq: 1 {method}\r\n\r\n",
        branch(slot, gen)
    )
    .into_bytes()
}

fn response(code: u16, method: &str, slot: u32, gen: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch={}\r\nCSeq: 1 {method}\r\n\r\n",
        branch(slot, gen)
    )
    .into_bytes()
}

fn count(t: &UpstreamTracker, kind: UpstreamKind) -> u64 {
    t.histograms()[0][kind as usize].len()
}

#[test]
fn upstream_first_and_final_latency() {
    let mut t = UpstreamTracker::new(vec![node()]);
    t.on_send(node(), &request("INVITE", 3, 9), 1_000);
    // A retransmission keeps the first send time.
    t.on_send(node(), &request("INVITE", 3, 9), 500_000);
    let trying = response(100, "INVITE", 3, 9);
    t.on_response(&trying, classify(&trying), 11_000);
    assert_eq!(count(&t, UpstreamKind::First), 1);
    assert_eq!(count(&t, UpstreamKind::Final), 0);
    let ringing = response(180, "INVITE", 3, 9);
    t.on_response(&ringing, classify(&ringing), 20_000);
    assert_eq!(count(&t, UpstreamKind::First), 1, "only the first response");
    let ok = response(200, "INVITE", 3, 9);
    t.on_response(&ok, classify(&ok), 1_001_000);
    assert_eq!(count(&t, UpstreamKind::Final), 1);
    let h = &t.histograms()[0];
    assert!(h[0].hdr.equivalent(h[0].hdr.max(), 10_000));
    assert!(h[1].hdr.equivalent(h[1].hdr.max(), 1_000_000));
    // The Prometheus buckets saw the same samples, with their exact sum.
    assert_eq!(h[0].buckets.count(), 1);
    assert_eq!(h[1].buckets.sum_ns, 1_000_000);
    // A retransmitted 200 after the final one is not counted again.
    t.on_response(&ok, classify(&ok), 2_000_000);
    assert_eq!(count(&t, UpstreamKind::Final), 1);
}

#[test]
fn upstream_ignores_other_destinations_cancel_and_foreign_branches() {
    let mut t = UpstreamTracker::new(vec![node()]);
    let phone: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    t.on_send(phone, &request("INVITE", 1, 1), 0);
    t.on_send(node(), &request("CANCEL", 2, 1), 0);
    t.on_send(
        node(),
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKother\r\n\r\n",
        0,
    );
    for (slot, m) in [(1, "INVITE"), (2, "CANCEL")] {
        let r = response(200, m, slot, 1);
        t.on_response(&r, classify(&r), 10);
    }
    assert_eq!(count(&t, UpstreamKind::First), 0);
    // An INVITE in flight: the 200 to its CANCEL (CSeq CANCEL) does not count for it.
    t.on_send(node(), &request("INVITE", 4, 1), 0);
    let r = response(200, "CANCEL", 4, 1);
    t.on_response(&r, classify(&r), 10);
    assert_eq!(count(&t, UpstreamKind::First), 0);
    // Garbage never panics.
    t.on_response(
        b"SIP/2.0 xyz;branch=z9hG4bKsf.zz",
        MsgClass::ResponseOther,
        1,
    );
    t.on_response(b"", MsgClass::ResponseOther, 1);
}

#[test]
fn publish_is_rate_limited_and_collect_merges_workers() {
    let reg = MetricsRegistry::new(vec![node()]);
    let mut w0 = reg.worker(0);
    let mut w1 = reg.worker(1);
    let mut stats = Stats {
        rx_requests: 5,
        ..Stats::default()
    };
    stats.tx_responses[2] = 3;
    w0.record_processing(MsgClass::RequestInvite, 2_000);
    w1.record_processing(MsgClass::RequestInvite, 4_000);
    w1.record_processing(MsgClass::ResponseOther, 1_000);
    fn st(s: &Stats) -> WorkerState<'_> {
        WorkerState {
            stats: s,
            in_flight: (1, 2),
            send_dropped: 1,
        }
    }
    w0.maybe_publish(1_000, st(&stats));
    w1.maybe_publish(1_000, st(&stats));
    // Within the interval nothing new is published.
    w0.record_processing(MsgClass::RequestInvite, 8_000);
    stats.rx_requests = 6;
    w0.maybe_publish(1_050, st(&stats));
    let c = reg.collect();
    assert_eq!(c.workers.len(), 2);
    assert_eq!(c.stats.rx_requests, 10);
    assert_eq!(c.stats.tx_responses[2], 6);
    assert_eq!(c.in_flight, (2, 4));
    assert_eq!(c.send_dropped, 2);
    assert_eq!(c.processing[MsgClass::RequestInvite as usize].len(), 2);
    assert_eq!(c.processing[MsgClass::ResponseOther as usize].len(), 1);
    // After the interval the newer counters show; the histograms only after theirs.
    w0.maybe_publish(1_100, st(&stats));
    let c = reg.collect();
    assert_eq!(c.stats.rx_requests, 11);
    assert_eq!(c.processing[MsgClass::RequestInvite as usize].len(), 2);
    w0.maybe_publish(1_000 + HISTOGRAM_PUBLISH_INTERVAL_MS, st(&stats));
    let c = reg.collect();
    assert_eq!(c.processing[MsgClass::RequestInvite as usize].len(), 3);
    assert_eq!(c.upstream.len(), 1);
}

#[test]
fn a_changed_series_is_published_whole_beside_unchanged_ones() {
    let reg = MetricsRegistry::new(vec![node()]);
    let mut w = reg.worker(0);
    let stats = Stats::default();
    let state = WorkerState {
        stats: &stats,
        in_flight: (0, 0),
        send_dropped: 0,
    };
    w.record_processing(MsgClass::RequestRegister, 3_000);
    w.publish(1, state);
    assert_eq!(
        reg.collect().processing[MsgClass::RequestRegister as usize].len(),
        1
    );
    // A changed series is copied whole; the unchanged ones keep their copy.
    w.record_processing(MsgClass::RequestRegister, 7_000);
    w.publish(2, state);
    let c = reg.collect();
    let reg_series = &c.processing[MsgClass::RequestRegister as usize];
    assert_eq!(reg_series.len(), 2);
    assert_eq!(reg_series.buckets.sum_ns, 10_000);
    assert!(c.processing[MsgClass::RequestInvite as usize].is_empty());
}

#[test]
fn values_out_of_range_are_clamped() {
    let reg = MetricsRegistry::new(Vec::new());
    let mut w = reg.worker(0);
    w.record_processing(MsgClass::RequestOther, 0);
    w.record_processing(MsgClass::RequestOther, u64::MAX);
    w.publish(
        1,
        WorkerState {
            stats: &Stats::default(),
            in_flight: (0, 0),
            send_dropped: 0,
        },
    );
    assert_eq!(
        reg.collect().processing[MsgClass::RequestOther as usize].len(),
        2
    );
}

/// The per-datagram cost of timing: two clock reads, classification and a histogram record.
/// `cargo test --release --lib metrics::tests::overhead -- --ignored --nocapture`
#[test]
#[ignore]
fn overhead() {
    let reg = MetricsRegistry::new(vec![node()]);
    let mut w = reg.worker(0);
    let msgs = [
        request("INVITE", 1, 1),
        response(200, "REGISTER", 1, 1),
        request("REGISTER", 1, 1),
    ];
    let n = 3_000_000u64;
    let per = |start: std::time::Instant| start.elapsed().as_nanos() as f64 / n as f64;
    let start = std::time::Instant::now();
    for i in 0..n {
        let data = &msgs[(i % 3) as usize];
        let t0 = std::time::Instant::now();
        let class = classify(std::hint::black_box(data));
        let ns = t0.elapsed().as_nanos() as u64;
        w.record_processing(class, ns);
    }
    println!(
        "all of it (2 clock reads + classify + record): {:.1} ns per datagram",
        per(start)
    );
    let start = std::time::Instant::now();
    let mut sink = 0u64;
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        sink = sink.wrapping_add(t0.elapsed().as_nanos() as u64);
    }
    println!("2 clock reads: {:.1} ns ({sink})", per(start));
    let start = std::time::Instant::now();
    for i in 0..n {
        sink = sink.wrapping_add(classify(std::hint::black_box(&msgs[(i % 3) as usize])) as u64);
    }
    println!("classify: {:.1} ns ({sink})", per(start));
    let start = std::time::Instant::now();
    for i in 0..n {
        w.record_processing(
            MsgClass::RequestOther,
            std::hint::black_box(1000 + (i & 1023)),
        );
    }
    println!("record: {:.1} ns", per(start));
    let mut t = UpstreamTracker::new(vec![node()]);
    let (req, resp) = (request("INVITE", 5, 1), response(200, "INVITE", 5, 1));
    let start = std::time::Instant::now();
    for i in 0..n {
        t.on_send(node(), std::hint::black_box(&req), i);
        t.on_response(
            std::hint::black_box(&resp),
            MsgClass::ResponseInvite,
            i + 10,
        );
    }
    println!(
        "upstream on_send + on_response: {:.1} ns per pair",
        per(start)
    );
    let start = std::time::Instant::now();
    let stats = Stats::default();
    for i in 0..1000 {
        w.publish(
            i,
            WorkerState {
                stats: &stats,
                in_flight: (0, 0),
                send_dropped: 0,
            },
        );
    }
    println!(
        "publish: {:.1} us each",
        start.elapsed().as_nanos() as f64 / 1000.0 / 1000.0
    );
}

/// A fixed workload for instruction counting (like `core_ir`): the metrics work of N whole
/// calls as a worker does it (6 datagrams timed, classified and recorded; the INVITE to
/// Asterisk and its 180 and 200 timed upstream). Ir per call = (Ir with N − Ir with 0) / N:
/// `SIPFRONT_IR_CALLS=N valgrind --tool=callgrind <lib test binary> --ignored --exact
/// metrics::tests::ir_workload`
#[test]
#[ignore]
fn ir_workload() {
    let n: u64 = std::env::var("SIPFRONT_IR_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let node = node();
    let reg = MetricsRegistry::new(vec![node]);
    let mut w = reg.worker(0);
    let invite = request("INVITE", 7, 1);
    let ringing = response(180, "INVITE", 7, 1);
    let ok = response(200, "INVITE", 7, 1);
    let ack = request("ACK", 7, 1);
    let bye = request("BYE", 8, 1);
    let bye_ok = response(200, "BYE", 8, 1);
    let epoch = std::time::Instant::now();
    let ns = |t: std::time::Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
    for _ in 0..n {
        for (data, upstream_send, upstream_resp) in [
            (&invite, true, false),
            (&ringing, false, true),
            (&ok, false, true),
            (&ack, false, false),
            (&bye, false, false),
            (&bye_ok, false, false),
        ] {
            let start = std::time::Instant::now();
            let now = ns(start);
            let class = classify(std::hint::black_box(data));
            if upstream_resp {
                w.upstream().on_response(data, class, now);
            }
            if upstream_send {
                w.upstream().on_send(node, data, now);
            }
            let took = start.elapsed().as_nanos() as u64;
            w.record_processing(class, took);
        }
    }
    assert!(n == 0 || reg.collect().stats.rx_requests == 0);
}

#[test]
fn reloaded_nodes_keep_their_histograms_and_scrapes_merge_by_address() {
    let other: SocketAddr = "127.0.0.2:5081".parse().unwrap();
    let reg = MetricsRegistry::new(vec![node()]);
    let mut w = reg.worker(0);
    w.upstream()
        .on_send(node(), &request("INVITE", 1, 1), 1_000);
    let ok = response(200, "INVITE", 1, 1);
    w.upstream().on_response(&ok, classify(&ok), 5_000);
    let stats = Stats::default();
    let state = WorkerState {
        stats: &stats,
        in_flight: (0, 0),
        send_dropped: 0,
    };
    w.publish(1, state);

    // Reload: a new node first, the old one kept.
    reg.set_nodes(&[other, node()]);
    w.set_nodes(&[other, node()]);
    assert_eq!(w.upstream().nodes(), [other, node()]);
    assert_eq!(
        w.upstream().histograms()[1][UpstreamKind::Final as usize].len(),
        1
    );
    assert_eq!(
        w.upstream().histograms()[0][UpstreamKind::Final as usize].len(),
        0
    );
    // Before the worker publishes again, the scrape still finds the old node's data.
    let c = reg.collect();
    assert_eq!(c.nodes, [other, node()]);
    assert_eq!(c.upstream[1][UpstreamKind::Final as usize].len(), 1);
    w.publish(200, state);
    let c = reg.collect();
    assert_eq!(c.upstream[1][UpstreamKind::Final as usize].len(), 1);
    assert_eq!(c.upstream[0][UpstreamKind::Final as usize].len(), 0);

    // The old node removed: its histograms go.
    reg.set_nodes(&[other]);
    w.set_nodes(&[other]);
    w.publish(400, state);
    let c = reg.collect();
    assert_eq!(c.nodes, [other]);
    assert_eq!(c.upstream.len(), 1);
}

#[test]
fn waiting_for_a_publication() {
    let reg = MetricsRegistry::new(Vec::new());
    let mut w = reg.worker(0);
    assert!(!reg.wait_publication(std::time::Duration::from_millis(1)));
    let stats = Stats::default();
    let waiter = {
        let reg = reg.clone();
        std::thread::spawn(move || reg.wait_publication(std::time::Duration::from_secs(30)))
    };
    // Publish until the waiter has seen one (it may start waiting after the first).
    let mut t = 0;
    while !waiter.is_finished() {
        t += PUBLISH_INTERVAL_MS;
        w.publish(
            t,
            WorkerState {
                stats: &stats,
                in_flight: (0, 0),
                send_dropped: 0,
            },
        );
        std::thread::yield_now();
    }
    assert!(waiter.join().unwrap());
}
