//! Recording worker metrics allocates nothing: classifying datagrams, recording processing
//! time, timing upstream requests and responses, and publishing snapshots are run under a
//! counting global allocator after the recorder was built.

use std::net::SocketAddr;

use sipfront::core::{write_branch, BranchKey, Local, OurBranch, Stats};
use sipfront::metrics::{classify, MetricsRegistry, WorkerState};

mod counting;

#[test]
fn recording_and_publishing_allocate_nothing() {
    let node: SocketAddr = "127.0.0.2:5080".parse().unwrap();
    let registry = MetricsRegistry::new(vec![node]);
    let mut w = registry.worker(0);
    let branch = write_branch(
        &BranchKey::new(""),
        &OurBranch {
            worker: 0,
            slot: 9,
            gen: 2,
            ingress: Local::Listen(0),
            loop_hash: 1,
        },
    );
    let b = branch.as_str();
    let invite = format!(
        "INVITE sip:600@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch={b}\r\nCSeq: 1 INVITE\r\n\r\n"
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch={b}\r\nCSeq: 1 INVITE\r\n\r\n"
    );
    let stats = Stats::default();
    let state = WorkerState {
        stats: &stats,
        in_flight: (1, 1),
        send_dropped: 0,
    };
    counting::start();
    for i in 0..1000u64 {
        let class = classify(invite.as_bytes());
        w.record_processing(class, 1000 + i);
        w.upstream().on_send(node, invite.as_bytes(), i * 10);
        let class = classify(ok.as_bytes());
        w.upstream().on_response(ok.as_bytes(), class, i * 10 + 5);
        w.record_processing(class, 500 + i);
        w.maybe_publish(i * 50, state);
    }
    let allocations = counting::stop();
    assert_eq!(allocations, 0, "allocations while recording");
    let c = registry.collect();
    assert!(c.processing.iter().map(|h| h.len()).sum::<u64>() > 0);
    assert!(!c.upstream[0][1].is_empty());
}
