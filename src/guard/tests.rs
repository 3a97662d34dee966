//! The guard as the core uses it, on a virtual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;

const T0: u64 = 1_764_000_000_000;
const SEC: u64 = 1000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn guard(cfg: GuardConfig) -> Guard {
    Guard::new(&cfg, &[ip("10.0.0.5"), ip("2001:db8:a::5")]).expect("valid config")
}

fn small() -> GuardConfig {
    GuardConfig {
        rate_pps: 10,
        rate_burst: 3,
        ban_ip_failures: 3,
        ban_user_failures: 5,
        ban_window_secs: 60,
        ban_secs: 600,
        allow: vec!["192.168.0.0/16".into(), "2001:db8:ff::/48".into()],
        ..GuardConfig::default()
    }
}

#[test]
fn guard_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Guard>();
    check::<Arc<Guard>>();
}

#[test]
fn exempt_sources_are_never_limited_or_banned() {
    let g = guard(small());
    for src in [
        "10.0.0.5",
        "::ffff:10.0.0.5",
        "192.168.44.1",
        "2001:db8:ff:1::9",
    ] {
        let a = ip(src);
        assert!(g.is_exempt(a), "{src}");
        for _ in 0..100 {
            assert_eq!(g.admit(a, T0), Admit::Ok, "{src}");
        }
        for _ in 0..10 {
            assert!(!g.on_auth_failure(a, "1001", T0));
        }
        assert!(!g.ban(a, T0));
        assert!(!g.is_banned(a, T0), "{src}");
    }
    // The Asterisk node's IPv6 neighbour in the same /64 is not exempt.
    assert!(!g.is_exempt(ip("2001:db8:a::6")));
    assert_eq!(g.stats(), GuardStats::default());
}

#[test]
fn rate_limit_drops_and_counts() {
    let g = guard(small());
    let a = ip("203.0.113.7");
    let got: Vec<Admit> = (0..5).map(|_| g.admit(a, T0)).collect();
    assert_eq!(
        got,
        [
            Admit::Ok,
            Admit::Ok,
            Admit::Ok,
            Admit::Limited,
            Admit::Limited
        ]
    );
    assert_eq!(g.admit(a, T0 + 100), Admit::Ok);
    let s = g.stats();
    assert_eq!((s.limited, s.tracked_ips), (2, 1));

    let off = guard(GuardConfig {
        rate_enabled: false,
        ..small()
    });
    assert!((0..1000).all(|_| off.admit(a, T0) == Admit::Ok));
}

#[test]
fn failures_from_one_source_ban_it_for_the_ban_period() {
    let g = guard(small());
    let a = ip("198.51.100.9");
    assert!(!g.is_banned(a, T0));
    assert!(!g.on_auth_failure(a, "1001", T0));
    assert!(!g.on_auth_failure(a, "1002", T0 + SEC));
    assert!(
        g.on_auth_failure(a, "1003", T0 + 2 * SEC),
        "third failure bans"
    );
    assert!(g.is_banned(a, T0 + 2 * SEC));
    assert!(g.is_banned(a, T0 + 601 * SEC));
    assert!(!g.is_banned(ip("198.51.100.10"), T0 + 3 * SEC));

    let bans = g.bans(T0 + 3 * SEC);
    assert_eq!(bans.len(), 1);
    assert_eq!(
        bans[0],
        BanInfo {
            ip: a,
            prefix_len: 32,
            since_ms: T0 + 2 * SEC,
            until_ms: T0 + 602 * SEC,
            reason: BanReason::IpFailures { failures: 3 },
        }
    );
    let s = g.stats();
    assert_eq!((s.bans_issued, s.bans_active, s.banned_drops), (1, 1, 2));
    let json = serde_json::to_string(&bans[0]).expect("serializes");
    assert_eq!(
        json,
        format!(
            r#"{{"ip":"198.51.100.9","prefix_len":32,"since_ms":{},"until_ms":{},"reason":{{"kind":"ip_failures","failures":3}}}}"#,
            T0 + 2 * SEC,
            T0 + 602 * SEC
        )
    );

    // Expiry: the lookup that finds it expired removes it.
    assert!(!g.is_banned(a, T0 + 602 * SEC));
    assert_eq!(g.stats().bans_active, 0);
    assert!(g.bans(T0 + 602 * SEC).is_empty());
    // Its counter started over: two more failures do not ban again.
    assert!(!g.on_auth_failure(a, "1001", T0 + 603 * SEC));
    assert!(!g.on_auth_failure(a, "1001", T0 + 604 * SEC));
}

#[test]
fn failures_without_a_user_name_count_per_source_only() {
    let g = guard(GuardConfig {
        ban_user_failures: 1,
        ..small()
    });
    let a = ip("198.51.100.40");
    assert!(!g.on_auth_failure(a, "", T0));
    assert!(!g.on_auth_failure(a, "", T0 + 1));
    assert!(g.on_auth_failure(a, "", T0 + 2));
    // With ban_user_failures = 1, a named user's first failure bans at once.
    assert!(g.on_auth_failure(ip("198.51.100.41"), "1001", T0));
}

#[test]
fn failures_spread_beyond_the_window_do_not_ban() {
    let g = guard(small());
    let a = ip("198.51.100.20");
    for i in 0..20 {
        // Two failures per 61 s window.
        let t = T0 + i * 31 * SEC;
        assert!(!g.on_auth_failure(a, &format!("u{i}"), t), "failure {i}");
    }
    assert!(!g.is_banned(a, T0 + 20 * 31 * SEC));
}

#[test]
fn success_forgives_only_a_phone_that_failed_for_itself() {
    let g = guard(small());
    let phone = ip("198.51.100.30");
    g.on_auth_failure(phone, "1001", T0);
    g.on_auth_failure(phone, "1001", T0 + SEC);
    g.on_auth_success(phone, "1001", T0 + 2 * SEC);
    assert!(!g.on_auth_failure(phone, "1001", T0 + 3 * SEC));
    assert!(!g.on_auth_failure(phone, "1001", T0 + 4 * SEC));
    assert!(g.on_auth_failure(phone, "1001", T0 + 5 * SEC));

    // An enumerator with one valid account keeps its count.
    let enumerator = ip("198.51.100.31");
    g.on_auth_failure(enumerator, "2001", T0);
    g.on_auth_failure(enumerator, "2002", T0 + SEC);
    g.on_auth_success(enumerator, "2001", T0 + 2 * SEC);
    assert!(g.on_auth_failure(enumerator, "2004", T0 + 3 * SEC));
}

#[test]
fn a_user_under_attack_bans_every_source_failing_for_it() {
    let g = guard(small());
    let user = "1001";
    // Five sources, one failure each: the fifth crosses ban_user_failures.
    for i in 0..4u8 {
        assert!(!g.on_auth_failure(ip(&format!("203.0.113.{i}")), user, T0 + u64::from(i)));
    }
    assert!(g.on_auth_failure(ip("203.0.113.4"), user, T0 + 4));
    // While under attack, any further failure for that user bans its source at once...
    assert!(g.on_auth_failure(ip("203.0.113.50"), user, T0 + 10 * SEC));
    assert_eq!(
        g.bans(T0 + 10 * SEC)[1].reason,
        BanReason::UserFailures {
            user: "1001".into()
        }
    );
    // ...but failures for other users do not, and the phone itself is never locked.
    assert!(!g.on_auth_failure(ip("203.0.113.51"), "1002", T0 + 10 * SEC));
    assert!(!g.is_banned(ip("203.0.113.0"), T0 + 10 * SEC));
    // The attack state ends after ban_secs.
    assert!(!g.on_auth_failure(ip("203.0.113.52"), user, T0 + 601 * SEC));
    assert_eq!(g.stats().bans_issued, 2);
}

#[test]
fn manual_ban_unban_and_ipv6_prefixes() {
    let g = guard(small());
    let a = ip("2001:db8:1:2::10");
    assert!(g.ban(a, T0));
    assert!(!g.ban(a, T0 + SEC), "already banned");
    // The whole /64 is banned, and listed as the prefix.
    assert!(g.is_banned(ip("2001:db8:1:2:ffff::1"), T0 + SEC));
    assert!(!g.is_banned(ip("2001:db8:1:3::10"), T0 + SEC));
    let bans = g.bans(T0 + SEC);
    assert_eq!(
        (bans[0].ip, bans[0].prefix_len, &bans[0].reason),
        (ip("2001:db8:1:2::"), 64, &BanReason::Manual)
    );
    assert!(g.unban(ip("2001:db8:1:2::99")));
    assert!(!g.unban(a));
    assert!(!g.is_banned(a, T0 + 2 * SEC));
    assert_eq!(g.stats().bans_active, 0);

    // Unban also forgets the failures that led to the ban.
    let b = ip("192.0.2.77");
    for i in 0..3 {
        g.on_auth_failure(b, "x", T0 + i);
    }
    assert!(g.unban(b));
    assert!(!g.on_auth_failure(b, "x", T0 + 10));
}

#[test]
fn ban_table_is_bounded() {
    let g = guard(GuardConfig {
        max_bans: 64,
        shards: 4,
        ..small()
    });
    for i in 0..10_000u32 {
        g.ban(
            IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i)),
            T0 + u64::from(i),
        );
    }
    let s = g.stats();
    assert_eq!(s.bans_issued, 10_000);
    assert!(s.bans_active <= 64, "{}", s.bans_active);
    // The newest bans survive.
    assert!(g.is_banned(IpAddr::V4(Ipv4Addr::from(0xc633_0000 + 9_999)), T0 + 10_000));
    assert!(g.bans(T0 + 10_000).len() <= 64);
}

#[test]
fn scanner_check_follows_config() {
    let g = guard(small());
    assert!(g.is_scanner(b"friendly-scanner"));
    assert!(!g.is_scanner(b"Yealink SIP-T54W 96.86.0.100"));
    let custom = guard(GuardConfig {
        scanner_user_agents: vec!["BadBot".into()],
        ..small()
    });
    assert!(custom.is_scanner(b"xx badbot/1.0"));
    assert!(!custom.is_scanner(b"friendly-scanner"));
    let off = guard(GuardConfig {
        scanner_enabled: false,
        ..small()
    });
    assert!(!off.is_scanner(b"friendly-scanner"));
}

#[test]
fn invalid_config_is_refused_by_new() {
    let bad = GuardConfig {
        allow: vec!["nonsense".into()],
        ..GuardConfig::default()
    };
    assert!(matches!(
        Guard::new(&bad, &[]),
        Err(ConfigError::AllowEntry { index: 0, .. })
    ));
}

#[test]
fn workers_share_one_guard() {
    let g = Arc::new(guard(GuardConfig {
        rate_pps: 1,
        rate_burst: 100,
        ..small()
    }));
    let attacker = ip("203.0.113.200");
    let handles: Vec<_> = (0..4u32)
        .map(|w| {
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..1000u32 {
                    // Every worker sees the attacker, and its own distinct sources.
                    if g.admit(attacker, T0) == Admit::Ok {
                        ok += 1;
                    }
                    let own = IpAddr::V4(Ipv4Addr::from(0x0a10_0000 + w * 10_000 + i));
                    assert_eq!(g.admit(own, T0), Admit::Ok);
                    g.on_auth_failure(attacker, "1001", T0);
                    g.is_banned(attacker, T0);
                }
                ok
            })
        })
        .collect();
    let admitted: u32 = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .sum();
    assert_eq!(admitted, 100, "the shared bucket holds exactly the burst");
    let s = g.stats();
    assert_eq!(s.limited, 3900);
    assert_eq!(s.bans_issued, 1);
    assert!(g.is_banned(attacker, T0));
}

#[test]
fn reconfigure_changes_rates_allow_list_bans_and_scanners_live() {
    let g = guard(small());
    let a = ip("203.0.113.7");
    // Burst 3 at start.
    assert_eq!((0..5).filter(|_| g.admit(a, T0) == Admit::Ok).count(), 3);
    assert!(!g.is_exempt(ip("172.16.0.1")));
    assert!(!g.is_scanner(b"evil-dialer 1.0"));

    let next = GuardConfig {
        rate_burst: 50,
        allow: vec!["172.16.0.0/12".into()],
        ban_ip_failures: 1,
        scanner_user_agents: vec!["evil-dialer".into()],
        ..small()
    };
    let restart = g.reconfigure(&next, &[ip("10.0.0.6")]).expect("valid");
    assert!(restart.is_empty(), "{restart:?}");
    // The new burst applies to a new source; the allow list and Asterisk set are replaced.
    let b = ip("203.0.113.8");
    assert_eq!((0..60).filter(|_| g.admit(b, T0) == Admit::Ok).count(), 50);
    assert!(g.is_exempt(ip("172.16.0.1")));
    assert!(!g.is_exempt(ip("192.168.44.1")), "old allow entry gone");
    assert!(g.is_exempt(ip("10.0.0.6")) && !g.is_exempt(ip("10.0.0.5")));
    assert!(g.is_scanner(b"evil-dialer 1.0"));
    assert!(!g.is_scanner(b"friendly-scanner"), "the list was replaced");
    // One failure now bans.
    assert!(g.on_auth_failure(ip("198.51.100.1"), "1001", T0));

    // Switching the rate limit off is live; table sizes are reported, not applied.
    let off = GuardConfig {
        rate_enabled: false,
        max_tracked_ips: 99,
        ..next
    };
    let restart = g.reconfigure(&off, &[]).expect("valid");
    assert_eq!(restart, ["guard.max_tracked_ips"]);
    assert!((0..1000).all(|_| g.admit(a, T0) == Admit::Ok));
}

#[test]
fn reconfigure_cannot_turn_on_what_was_not_built() {
    let g = guard(GuardConfig {
        rate_enabled: false,
        ban_enabled: false,
        ..small()
    });
    let restart = g.reconfigure(&small(), &[]).expect("valid");
    assert_eq!(restart, ["guard.rate_enabled", "guard.ban_enabled"]);
    let a = ip("203.0.113.7");
    assert!((0..100).all(|_| g.admit(a, T0) == Admit::Ok));
    let bad = GuardConfig {
        allow: vec!["not a network".into()],
        ..small()
    };
    assert!(g.reconfigure(&bad, &[]).is_err());
}
