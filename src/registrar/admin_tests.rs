//! The administrative operations ([`super::admin`]): removals queued for Asterisk's
//! Expires: 0, and the paged listing of every AOR (complete, once each, also while the
//! table changes between pages).

use super::tests::{cfg, registrar, req, run, PRIV, PUB, T0};
use super::*;

#[test]
fn admin_remove() {
    let r = registrar(cfg());
    run(
        &r,
        &req("c1", 1, Some(600), &[(PUB, None, None), (PRIV, None, None)]),
        T0,
    )
    .unwrap();
    let mut q = req("c1", 1, Some(600), &[(PUB, None, None)]);
    q.aor = "bob@example.com";
    run(&r, &q, T0).unwrap();
    let mut all = Vec::new();
    r.for_each_aor(|a| all.push(a.to_owned()));
    all.sort();
    assert_eq!(all, ["alice@example.com", "bob@example.com"]);
    let removal = |removed, remaining, emptied| Removal {
        removed,
        remaining,
        emptied,
    };
    let mut emptied = Vec::new();
    // One of two bindings: the AOR stays registered, nothing is queued for Asterisk.
    assert_eq!(
        r.remove("alice@example.com", Some(PUB), T0),
        removal(1, 1, false)
    );
    assert_eq!(r.expire(T0 + 1, |a| emptied.push(a.to_owned())), 0);
    assert!(emptied.is_empty(), "{emptied:?}");
    assert_eq!(r.remove("alice@example.com", None, T0), removal(1, 0, true));
    assert_eq!(
        r.remove("alice@example.com", None, T0),
        removal(0, 0, false)
    );
    // The next sweep reports the emptied AOR once (REGFWD sends Expires: 0), not again.
    r.expire(T0 + 1, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied, ["alice@example.com"]);
    r.expire(T0 + 2, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied, ["alice@example.com"]);
    // Removed, then registered again before the sweep: not reported.
    assert_eq!(
        r.remove("bob@example.com", Some(PUB), T0),
        removal(1, 0, true)
    );
    let mut q = req("c2", 1, Some(600), &[(PUB, None, None)]);
    q.aor = "bob@example.com";
    run(&r, &q, T0 + 10).unwrap();
    r.expire(T0 + 20, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied, ["alice@example.com"]);
    assert_eq!(aor_user("alice@example.com"), "alice");
}

#[test]
fn admin_remove_queues_only_live_aors_and_is_bounded() {
    let r = registrar(cfg());
    // Only an expired (not yet swept) binding: removing it tells Asterisk nothing (the
    // sweep that would have removed it did not report it either).
    run(&r, &req("c1", 1, Some(60), &[(PUB, None, None)]), T0).unwrap();
    assert!(!r.remove("alice@example.com", None, T0 + 61_000).emptied);
    let mut emptied = Vec::new();
    r.expire(T0 + 61_000, |a| emptied.push(a.to_owned()));
    assert!(emptied.is_empty(), "{emptied:?}");
    // The same AOR emptied twice before a sweep is queued once.
    for _ in 0..2 {
        run(&r, &req("c1", 2, Some(60), &[(PUB, None, None)]), T0).unwrap();
        assert!(r.remove("alice@example.com", None, T0).emptied);
    }
    r.expire(T0, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied, ["alice@example.com"]);
    // Past the cap, removals are counted and not queued.
    let n = MAX_PENDING_UNREGISTERS + 3;
    for i in 0..n {
        let aor = format!("u{i}@example.com");
        let mut q = req("c1", 1, Some(600), &[(PUB, None, None)]);
        q.aor = &aor;
        run(&r, &q, T0).unwrap();
        assert!(r.remove(&aor, None, T0).removed == 1);
    }
    assert_eq!(r.unregisters_dropped(), 3);
    emptied.clear();
    r.expire(T0, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied.len(), MAX_PENDING_UNREGISTERS);
    assert_eq!(emptied.first().map(String::as_str), Some("u0@example.com"));
    emptied.clear();
    r.expire(T0, |a| emptied.push(a.to_owned()));
    assert!(emptied.is_empty());
}

/// Registers `n` AORs `u<i>@example.com` (i from `from`), one binding each.
fn register_many(r: &Registrar, from: usize, n: usize, expires: u32) {
    for i in from..from + n {
        let aor = format!("u{i}@example.com");
        let uri = format!("sip:u{i}@203.0.113.7:5060");
        let mut q = req("c1", 1, Some(expires), &[(uri.as_str(), None, None)]);
        q.aor = &aor;
        run(r, &q, T0).unwrap();
    }
}

/// Every page of a listing: (keys of each page, in order).
fn list_pages(r: &Registrar, limit: usize, now: u64) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<Box<str>> = None;
    loop {
        let mut keys: Vec<String> = Vec::new();
        let page = r.list(after.as_deref(), limit, now, |k, b| {
            assert!(b.uri.starts_with("sip:"), "{}", b.uri);
            if keys.last().map(String::as_str) != Some(k) {
                keys.push(k.to_owned());
            }
        });
        assert_eq!(page.aors, keys.len());
        assert!(keys.len() <= limit.clamp(1, MAX_PAGE));
        pages.push(keys);
        match page.next {
            Some(n) => {
                assert!(after.as_deref() != Some(&*n), "cursor must advance");
                after = Some(n);
            }
            None => return pages,
        }
    }
}

#[test]
fn listing_pages_cover_every_aor_once() {
    let r = registrar(cfg());
    let n = 2_500;
    register_many(&r, 0, n, 600);
    let want: std::collections::BTreeSet<String> =
        (0..n).map(|i| format!("u{i}@example.com")).collect();
    for limit in [1, 7, 100, 1000, 5000] {
        let pages = list_pages(&r, limit, T0);
        let all: Vec<String> = pages.iter().flatten().cloned().collect();
        assert_eq!(all.len(), n, "limit {limit}: duplicates or gaps");
        let got: std::collections::BTreeSet<String> = all.into_iter().collect();
        assert_eq!(got, want, "limit {limit}");
        // `next` is None exactly after the last AOR: no empty trailing page.
        let per = limit.clamp(1, MAX_PAGE);
        assert_eq!(pages.len(), n.div_ceil(per), "limit {limit}");
    }
    // The same order every time (it depends on the keys alone).
    assert_eq!(list_pages(&r, 7, T0), list_pages(&r, 7, T0));
    // Empty table: one empty page, no cursor.
    let empty = registrar(cfg());
    assert_eq!(list_pages(&empty, 10, T0), vec![Vec::<String>::new()]);
}

#[test]
fn listing_while_the_table_changes() {
    use std::collections::BTreeSet;
    let r = registrar(cfg());
    register_many(&r, 0, 1_000, 600);
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<Box<str>> = None;
    // Removed after being listed (the cursor's own AOR) / before the listing reached them.
    let (mut removed_listed, mut removed_unlisted) = (BTreeSet::new(), BTreeSet::new());
    let mut round = 0usize;
    loop {
        let page = r.list(after.as_deref(), 50, T0, |k, _| seen.push(k.to_owned()));
        // Between pages: remove the AOR the cursor names and a few not listed yet, add
        // new ones.
        if let Some(cur) = &page.next {
            assert!(r.remove(cur, None, T0).emptied);
            removed_listed.insert(cur.to_string());
        }
        for i in (round * 13..1_000).step_by(97).take(2) {
            let aor = format!("u{i}@example.com");
            if !seen.contains(&aor) && r.remove(&aor, None, T0).emptied {
                removed_unlisted.insert(aor);
            }
        }
        register_many(&r, 10_000 + round * 3, 3, 600);
        round += 1;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let set: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(set.len(), seen.len(), "an AOR was listed twice");
    for i in 0..1_000 {
        let aor = format!("u{i}@example.com");
        let held = !removed_listed.contains(&aor) && !removed_unlisted.contains(&aor);
        assert!(
            !held || set.contains(&aor),
            "{aor} held throughout but not listed"
        );
    }
    for aor in &removed_listed {
        assert!(set.contains(aor), "{aor}");
    }
    for aor in &removed_unlisted {
        assert!(!set.contains(aor), "{aor} listed after its removal");
    }
    assert!(removed_listed.len() > 10 && removed_unlisted.len() > 10);
    // Some AORs added during the listing sorted after the cursor and were listed.
    assert!(
        seen.iter().any(|s| s.starts_with("u1000")),
        "no new AOR listed"
    );
}

#[test]
fn listing_skips_expired_and_survives_hash_collisions() {
    let mut r = registrar(cfg());
    r.table.force_collisions(); // every AOR in one record, one stripe
    register_many(&r, 0, 5, 600);
    register_many(&r, 5, 2, 60);
    let pages = list_pages(&r, 2, T0 + 61_000);
    let all: Vec<String> = pages.iter().flatten().cloned().collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..5)
            .map(|i| format!("u{i}@example.com"))
            .collect::<Vec<_>>()
    );
    // Within one hash the order is by key bytes.
    assert_eq!(all, sorted);
    // A cursor naming an AOR that is gone still resumes after it.
    let mut keys = Vec::new();
    r.list(Some("u2@example.com"), 10, T0, |k, _| {
        keys.push(k.to_owned())
    });
    keys.dedup();
    assert_eq!(
        keys,
        [
            "u3@example.com",
            "u4@example.com",
            "u5@example.com",
            "u6@example.com"
        ]
    );
}
