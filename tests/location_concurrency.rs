//! Several threads registering, refreshing, unregistering, looking up and expiring the
//! same AORs at once: the table's gauges, expiry index and records stay consistent.

use std::sync::Arc;

use sipfront::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig};
use sipfront::sip::Transport;

const T0: u64 = 1_764_159_377_000;
const USERS: u32 = 64;
const OPS: u32 = 20_000;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn concurrent_mixed_operations_stay_consistent() {
    let cfg = RegistrarConfig {
        persist: "none".into(),
        max_contacts: 3,
        ..RegistrarConfig::default()
    };
    let r = Arc::new(Registrar::new(cfg).unwrap());
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                let call_id = format!("thread-{t}");
                let mut out = Vec::with_capacity(512);
                for i in 0..OPS {
                    let x = xorshift(&mut seed);
                    let user = (x % u64::from(USERS)) as u32;
                    let aor = format!("u{user}@example.com");
                    let uri = format!("sip:u{user}@10.0.{t}.{}:5060", (x >> 8) % 4);
                    let now = T0 + u64::from(i) * 10;
                    match (x >> 16) % 8 {
                        0..=3 => {
                            r.lookup(&aor, now, |b| assert!(b.uri.starts_with("sip:u")));
                        }
                        4..=5 => {
                            let contacts = [ContactInput {
                                uri: &uri,
                                expires: Some(60 + (x >> 24) as u32 % 120),
                                q: None,
                            }];
                            let req = RegisterRequest {
                                aor: &aor,
                                call_id: &call_id,
                                cseq: i + 1,
                                expires_header: None,
                                star: false,
                                contacts: &contacts,
                                source: std::net::SocketAddr::from(([198, 51, 100, t as u8], 5060)),
                                transport: Transport::Udp,
                                socket: "127.0.0.1:5060".parse().unwrap(),
                                conn: 0,
                                path: &[],
                                user_agent: None,
                            };
                            out.clear();
                            let o = r.register(&req, now, &mut out).expect("accepted");
                            assert!(o.bindings >= 1 && o.bindings <= 3);
                        }
                        6 => {
                            let contacts = [ContactInput {
                                uri: &uri,
                                expires: Some(0),
                                q: None,
                            }];
                            let req = RegisterRequest {
                                aor: &aor,
                                call_id: &call_id,
                                cseq: i + 1,
                                expires_header: None,
                                star: false,
                                contacts: &contacts,
                                source: std::net::SocketAddr::from(([198, 51, 100, t as u8], 5060)),
                                transport: Transport::Udp,
                                socket: "127.0.0.1:5060".parse().unwrap(),
                                conn: 0,
                                path: &[],
                                user_agent: None,
                            };
                            out.clear();
                            r.register(&req, now, &mut out).expect("accepted");
                        }
                        _ => {
                            r.expire(now, |_| {});
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread panicked");
    }
    // Gauges agree with what the records hold.
    let (aors, contacts) = r.counts();
    let far = T0 + u64::from(OPS) * 10 + 10_000_000;
    let (mut seen_aors, mut seen_contacts) = (0, 0);
    for user in 0..USERS {
        let n = match r.lookup(&format!("u{user}@example.com"), 0, |_| {}) {
            sipfront::registrar::LookupResult::Found(n) => n,
            _ => 0,
        };
        seen_aors += usize::from(n > 0);
        seen_contacts += n;
    }
    assert_eq!((aors, contacts), (seen_aors, seen_contacts));
    // Everything expires and the index empties with it.
    let mut emptied = 0;
    for _ in 0..100 {
        if r.next_expiry_ms().is_none() {
            break;
        }
        r.expire(far, |_| emptied += 1);
    }
    assert_eq!(emptied, aors);
    assert_eq!(r.counts(), (0, 0));
}
