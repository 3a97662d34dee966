//! Failed-authentication bans.
//!
//! Two failure counters, each a fixed window that opens at the first failure and lasts
//! `ban_window_secs`:
//! - per client (IP, or IPv6 prefix): `ban_ip_failures` failures in a window ban the client;
//! - per user name: `ban_user_failures` failures for one user, from any clients, put the user
//!   "under attack" for `ban_secs`; the client whose failure crossed the threshold and every
//!   client that fails for that user while it is under attack are banned. The user itself is
//!   never locked: a phone with the right password keeps registering while its account is
//!   being guessed at (locking it would hand attackers a way to switch phones off).
//!
//! A success forgives a client's failures only when they were all for the user that just
//! succeeded (a phone that had a wrong password and was fixed); a client that failed for other
//! user names keeps its count, so one valid account does not buy unlimited guesses at others.
//! User counters are never reset by a success, for the same reason.
//!
//! Counters and bans live in bounded [`Striped`] tables: `max_tracked_failures` clients and as
//! many users, `max_bans` bans. When the ban table is full the oldest ban is dropped (all bans
//! last `ban_secs`, so it is also the one closest to expiry). `is_banned` costs one atomic load
//! while nothing is banned, and one hash plus one stripe lock otherwise; an expired ban is
//! removed by the lookup that finds it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::addr::ClientId;
use super::table::{Found, Hashing, Key, Striped};
use super::BanInfo;

/// Why a client was banned.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BanReason {
    /// `failures` failed authentications from this client within the window.
    IpFailures { failures: u32 },
    /// A failed authentication for `user` while that user was under attack.
    UserFailures { user: Box<str> },
    /// Banned by an operator.
    #[default]
    Manual,
}

impl std::fmt::Display for BanReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanReason::IpFailures { failures } => {
                write!(f, "{failures} failed authentications from this address")
            }
            BanReason::UserFailures { user } => {
                write!(f, "failed authentication for user {user:?} under attack")
            }
            BanReason::Manual => f.write_str("banned by operator"),
        }
    }
}

/// Longest user name kept in a ban or a log line (the name comes from the wire).
const MAX_SHOWN_USER: usize = 64;

/// `user` cut to [`MAX_SHOWN_USER`] bytes at a character boundary.
fn shown(user: &str) -> &str {
    let mut end = user.len().min(MAX_SHOWN_USER);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user.get(..end).unwrap_or("")
}

#[derive(Debug, Clone, Default)]
pub(super) struct Ban {
    since_ms: u64,
    until_ms: u64,
    reason: BanReason,
}

#[derive(Debug, Clone, Copy, Default)]
struct IpFailures {
    window_start: u64,
    count: u32,
    /// Hash of the user name of the first failure in the window; `mixed` once another
    /// user name failed from this client.
    user: u64,
    mixed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct UserFailures {
    window_start: u64,
    count: u32,
    attacked_until: u64,
}

/// Thresholds, in the units the tables use.
#[derive(Debug, Clone, Copy)]
pub(super) struct BanPolicy {
    pub ip_failures: u32,
    pub user_failures: u32,
    pub window_ms: u64,
    pub ban_ms: u64,
}

pub(super) struct Bans {
    /// Thresholds and durations; a reload may change them (read once per failure or ban).
    policy: Mutex<BanPolicy>,
    ip_failures: Striped<IpFailures>,
    user_failures: Striped<UserFailures>,
    bans: Striped<Ban>,
    /// Live entries in `bans` (expired ones until a lookup or listing removes them).
    count: AtomicUsize,
    issued: AtomicU64,
    /// Bumped by every change to the ban list (ban, extension, unban): what a persister
    /// compares to know the file is behind.
    generation: AtomicU64,
}

impl Bans {
    pub fn new(policy: BanPolicy, max_tracked: usize, max_bans: usize, stripes: usize) -> Self {
        Bans {
            policy: Mutex::new(policy),
            ip_failures: Striped::new(stripes, max_tracked),
            user_failures: Striped::new(stripes, max_tracked),
            bans: Striped::new(stripes, max_bans),
            count: AtomicUsize::new(0),
            issued: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// The change counter of the ban list.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Put back a ban read from a file: `id` banned from `since_ms` until `until_ms` for
    /// `reason`, unless that is over at `now_ms`; whether it was put back.
    pub fn restore(
        &self,
        hashing: &Hashing,
        id: ClientId,
        ban: (u64, u64),
        reason: BanReason,
        now_ms: u64,
    ) -> bool {
        let (since_ms, until_ms) = ban;
        if now_ms >= until_ms {
            return false;
        }
        let key = hashing.key(id.0);
        let mut stripe = self.bans.lock(key);
        let (b, found) = stripe.entry(key);
        if found == Found::Existing && until_ms <= b.until_ms {
            return false;
        }
        *b = Ban {
            since_ms,
            until_ms,
            reason,
        };
        if found == Found::New {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn policy(&self) -> BanPolicy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New thresholds and durations (a reload): failures counted so far and bans issued
    /// keep their windows and ends.
    pub fn set_policy(&self, policy: BanPolicy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Whether `id` is banned now (counts the drop when it is).
    pub fn is_banned(&self, hashing: &Hashing, id: ClientId, now_ms: u64) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let key = hashing.key(id.0);
        let mut stripe = self.bans.lock(key);
        let until = match stripe.peek_mut(key) {
            Some(b) => b.until_ms,
            None => return false,
        };
        if now_ms < until {
            stripe.counter += 1;
            return true;
        }
        if stripe.remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        false
    }

    /// Record a failed authentication; true when it got `id` banned.
    pub fn on_failure(&self, hashing: &Hashing, id: ClientId, user: &str, now_ms: u64) -> bool {
        let p = self.policy();
        let ukey = (!user.is_empty()).then(|| hashing.user_key(user));
        let ikey = hashing.key(id.0);
        let mut reason = None;
        {
            let mut stripe = self.ip_failures.lock(ikey);
            let (f, found) = stripe.entry(ikey);
            let uhash = ukey.map_or(0, |k| k.hash);
            if found != Found::Existing || now_ms.saturating_sub(f.window_start) >= p.window_ms {
                *f = IpFailures {
                    window_start: now_ms,
                    count: 0,
                    user: uhash,
                    mixed: false,
                };
            }
            f.count = f.count.saturating_add(1);
            f.mixed |= f.user != uhash;
            if f.count >= p.ip_failures {
                reason = Some(BanReason::IpFailures { failures: f.count });
                stripe.remove(ikey);
            }
        }
        if let Some(ukey) = ukey {
            let mut stripe = self.user_failures.lock(ukey);
            let (f, found) = stripe.entry(ukey);
            let attacked = if found == Found::Existing && now_ms < f.attacked_until {
                true
            } else {
                if found != Found::Existing || now_ms.saturating_sub(f.window_start) >= p.window_ms
                {
                    *f = UserFailures {
                        window_start: now_ms,
                        count: 0,
                        attacked_until: 0,
                    };
                }
                f.count = f.count.saturating_add(1);
                if f.count >= p.user_failures {
                    f.attacked_until = now_ms.saturating_add(p.ban_ms);
                    f.count = 0;
                    drop(stripe);
                    tracing::warn!(
                        user = shown(user),
                        "authentication failures for one user: banning every address that fails for it"
                    );
                    true
                } else {
                    false
                }
            };
            if attacked && reason.is_none() {
                reason = Some(BanReason::UserFailures {
                    user: shown(user).into(),
                });
            }
        }
        match reason {
            Some(r) => self.ban(hashing, id, now_ms, r),
            None => false,
        }
    }

    /// Forgive `id`'s failures if they were all for `user`.
    pub fn on_success(&self, hashing: &Hashing, id: ClientId, user: &str) {
        let ikey = hashing.key(id.0);
        let uhash = hashing.user_key(user).hash;
        let mut stripe = self.ip_failures.lock(ikey);
        if let Some(f) = stripe.peek_mut(ikey) {
            if !f.mixed && f.user == uhash {
                stripe.remove(ikey);
            }
        }
    }

    /// Ban `id` for `ban_ms` from now; false when it already was (the ban is extended).
    pub fn ban(&self, hashing: &Hashing, id: ClientId, now_ms: u64, reason: BanReason) -> bool {
        let key = hashing.key(id.0);
        let until_ms = now_ms.saturating_add(self.policy().ban_ms);
        let mut stripe = self.bans.lock(key);
        let (b, found) = stripe.entry(key);
        if found == Found::Existing && now_ms < b.until_ms {
            b.until_ms = b.until_ms.max(until_ms);
            self.generation.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let text = reason.to_string();
        *b = Ban {
            since_ms: now_ms,
            until_ms,
            reason,
        };
        if found == Found::New {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        drop(stripe);
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = %id.display_short(), until_ms, reason = %text, "banned");
        true
    }

    /// Lift `id`'s ban and forget its failures; whether a ban was there.
    pub fn unban(&self, hashing: &Hashing, id: ClientId) -> bool {
        let key = hashing.key(id.0);
        let removed = {
            let mut stripe = self.bans.lock(key);
            let r = stripe.remove(key).is_some();
            if r {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            r
        };
        self.ip_failures.lock(key).remove(key);
        if removed {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// Every live ban, oldest first; expired ones are removed on the way.
    pub fn list(&self, now_ms: u64, ipv6_prefix: u8) -> Vec<BanInfo> {
        let mut out = Vec::new();
        let mut expired = 0;
        self.bans.for_each(|s| {
            s.retain(|key: Key, b: &Ban| {
                if now_ms >= b.until_ms {
                    expired += 1;
                    return false;
                }
                let (ip, prefix_len) = ClientId(key.id).display(ipv6_prefix);
                out.push(BanInfo {
                    ip,
                    prefix_len,
                    since_ms: b.since_ms,
                    until_ms: b.until_ms,
                    reason: b.reason.clone(),
                });
                true
            })
        });
        self.count.fetch_sub(expired, Ordering::Relaxed);
        out.sort_by_key(|b| (b.since_ms, b.ip));
        out
    }

    /// (banned drops, bans issued, bans in the table)
    pub fn stats(&self) -> (u64, u64, u64) {
        let mut drops = 0;
        self.bans.for_each(|s| drops += s.counter);
        (
            drops,
            self.issued.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed) as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_from_the_wire_are_cut_for_display() {
        assert_eq!(shown("1001"), "1001");
        let long = "é".repeat(40); // 80 bytes
        let cut = shown(&long);
        assert!(cut.len() <= MAX_SHOWN_USER && long.starts_with(cut));
        assert_eq!(cut.chars().count(), 32);
    }
}
