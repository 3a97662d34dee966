//! Weighted rendezvous (highest random weight) hashing: the one ranking of Asterisk nodes
//! for a key, shared by call affinity, subscriptions and `register_mode = "hash"`.
//!
//! Each node has a key (FNV-1a of its `ip:port` text, so the ranking is the same in every
//! process and release); a request's key is FNV-1a of its Call-ID or user name. Node `i`
//! scores `w_i / -ln(u_i)`, with `u_i` in (0, 1) drawn from `mix(key ^ node_key_i)`; the
//! highest score wins, the next ones are the failover order. Properties the farm relies on:
//! a node's share of keys is proportional to its weight; removing (or skipping) a node
//! moves only the keys it had, each to its own next-ranked node; with equal weights the
//! ranking is the order of `mix(key ^ node_key)`, the unweighted rendezvous hash REGFWD's
//! `hash` mode has always used (so deployed users keep their node).

use std::net::SocketAddr;

use crate::util::fnv::fnv1a;

/// SplitMix64's finaliser: spreads the bits of `key ^ node_key`.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node's hashing key: FNV-1a of `ip:port` (IPv6 as `[addr]:port`).
pub fn node_key(addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 64];
    let n = {
        use std::io::Write;
        let mut w = &mut buf[..];
        let before = w.len();
        // An address always fits in 64 bytes ("[" + 39 + "]:" + 5 = 47 at most).
        let _ = write!(w, "{addr}");
        before - w.len()
    };
    fnv1a(&buf[..n])
}

/// A request's hashing key: FNV-1a of its Call-ID or user name.
pub fn key_of(text: &str) -> u64 {
    fnv1a(text.as_bytes())
}

/// The score of a node (`node_key`, `weight` ≥ 1) for `key`: higher wins.
pub fn score(key: u64, node_key: u64, weight: u32) -> f64 {
    // 53 bits of the mix, centred in their interval: u in (0, 1), never 0 or 1.
    let u = ((mix(key ^ node_key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 5 + i as u8], 5060)))
            .collect()
    }

    fn best(key: u64, keys: &[u64], weights: &[u32], skip: Option<usize>) -> usize {
        (0..keys.len())
            .filter(|i| Some(*i) != skip)
            .max_by(|a, b| {
                score(key, keys[*a], weights[*a]).total_cmp(&score(key, keys[*b], weights[*b]))
            })
            .unwrap()
    }

    #[test]
    fn node_keys_are_the_fnv_of_the_address_text() {
        let a: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        assert_eq!(node_key(a), fnv1a(b"10.0.0.5:5060"));
        let v6: SocketAddr = "[2001:db8::1]:5080".parse().unwrap();
        assert_eq!(node_key(v6), fnv1a(b"[2001:db8::1]:5080"));
    }

    #[test]
    fn equal_weights_rank_like_the_unweighted_rendezvous_hash() {
        let keys: Vec<u64> = nodes(5).into_iter().map(node_key).collect();
        for i in 0..2000 {
            let k = key_of(&format!("user{i}"));
            let unweighted = (0..keys.len()).max_by_key(|n| mix(k ^ keys[*n])).unwrap();
            assert_eq!(best(k, &keys, &[1; 5], None), unweighted);
        }
    }

    #[test]
    fn shares_follow_the_weights() {
        let keys: Vec<u64> = nodes(3).into_iter().map(node_key).collect();
        let weights = [1, 2, 1];
        let mut per = [0usize; 3];
        for i in 0..40_000 {
            per[best(key_of(&format!("call-{i}")), &keys, &weights, None)] += 1;
        }
        // Expected 10,000 / 20,000 / 10,000.
        assert!((9_000..11_000).contains(&per[0]), "{per:?}");
        assert!((18_500..21_500).contains(&per[1]), "{per:?}");
        assert!((9_000..11_000).contains(&per[2]), "{per:?}");
    }

    #[test]
    fn losing_a_node_moves_only_its_keys() {
        let keys: Vec<u64> = nodes(4).into_iter().map(node_key).collect();
        let weights = [3, 1, 1, 2];
        let mut moved = 0;
        for i in 0..10_000 {
            let k = key_of(&format!("call-{i}"));
            let before = best(k, &keys, &weights, None);
            let after = best(k, &keys, &weights, Some(2));
            if before != 2 {
                assert_eq!(after, before, "a key of a surviving node moved");
            } else {
                moved += 1;
            }
        }
        // Node 2 holds a seventh of the keys.
        assert!((1_100..1_800).contains(&moved), "{moved}");
    }
}
