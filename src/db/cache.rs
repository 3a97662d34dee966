//! The in-memory credential cache read by every worker.
//!
//! Two concurrent maps with 64 independently locked shards each: `positive` (user →
//! [`Credential`]) and `negative` (user → until when it is known not to exist). A lookup takes
//! one shard's read lock for a hash probe and an `Arc` clone; it never waits for the database
//! or for a whole refresh.
//!
//! Refresh without stalling readers: each refresh has a generation number. Every row read
//! stamps its entry with that generation (an atomic store under the shard's *read* lock;
//! unchanged credentials are not replaced); a changed credential replaces the entry under a
//! write lock held for one insert. When the full load succeeded, entries with an older
//! generation (users deleted from the table) are removed one by one. Entries inserted by miss
//! lookups while a refresh runs carry the new generation and survive it.

use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::auth::Credential;

const SHARDS: usize = 64;

/// Result of [`CredentialCache::lookup`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Known user.
    Found(Arc<Credential>),
    /// Known not to exist (negatively cached): answer as for a wrong password.
    Unknown,
    /// Not in the cache: ask the [`super::LookupPool`].
    Miss,
}

struct Entry {
    cred: Arc<Credential>,
    generation: AtomicU64,
}

/// Users → credentials, shared by all threads.
pub struct CredentialCache {
    positive: DashMap<Box<str>, Entry>,
    negative: DashMap<Box<str>, u64>,
    /// A reload may change it.
    negative_ttl_ms: AtomicU64,
    max_negative: usize,
    generation: AtomicU64,
}

impl CredentialCache {
    /// An empty cache; unknown users are remembered for `negative_ttl_ms`, at most
    /// `max_negative` of them.
    pub fn new(negative_ttl_ms: u64, max_negative: usize) -> Self {
        CredentialCache {
            positive: DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                RandomState::new(),
                SHARDS,
            ),
            negative: DashMap::with_capacity_and_hasher_and_shard_amount(
                0,
                RandomState::new(),
                SHARDS,
            ),
            negative_ttl_ms: AtomicU64::new(negative_ttl_ms),
            max_negative,
            generation: AtomicU64::new(0),
        }
    }

    /// Non-blocking lookup (beyond a shard read lock held for one probe).
    pub fn lookup(&self, user: &str, now_ms: u64) -> Lookup {
        if let Some(e) = self.positive.get(user) {
            return Lookup::Found(e.cred.clone());
        }
        match self.negative.get(user) {
            Some(until) if *until > now_ms => Lookup::Unknown,
            _ => Lookup::Miss,
        }
    }

    /// Number of cached users.
    pub fn len(&self) -> usize {
        self.positive.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positive.is_empty()
    }

    /// Number of negatively cached users (including expired ones not yet purged).
    pub fn negative_len(&self) -> usize {
        self.negative.len()
    }

    /// Stores a credential found by a miss lookup; returns the shared value.
    pub fn insert(&self, user: &str, cred: Credential) -> Arc<Credential> {
        let generation = self.generation.load(Ordering::Acquire);
        let arc = Arc::new(cred);
        self.positive.insert(
            user.into(),
            Entry {
                cred: arc.clone(),
                generation: AtomicU64::new(generation),
            },
        );
        self.negative.remove(user);
        arc
    }

    /// Remembers that `user` does not exist, until `now_ms + negative_ttl`.
    pub fn insert_negative(&self, user: &str, now_ms: u64) {
        let ttl = self.negative_ttl_ms.load(Ordering::Relaxed);
        if ttl == 0 {
            return;
        }
        if self.negative.len() >= self.max_negative {
            self.negative.retain(|_, until| *until > now_ms);
            if self.negative.len() >= self.max_negative {
                return;
            }
        }
        self.negative
            .insert(user.into(), now_ms.saturating_add(ttl));
    }

    /// How long unknown users are remembered from now on (a reload; entries already made
    /// keep their end).
    pub fn set_negative_ttl_ms(&self, ttl_ms: u64) {
        self.negative_ttl_ms.store(ttl_ms, Ordering::Relaxed);
    }

    /// Drops a user (e.g. a test or an admin command); the next lookup is a miss.
    pub fn remove(&self, user: &str) {
        self.positive.remove(user);
        self.negative.remove(user);
    }

    /// Starts a refresh: returns its generation.
    pub(crate) fn begin_refresh(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records one row of refresh `generation`. Returns true if the credential was new or
    /// changed.
    pub(crate) fn refresh_upsert(&self, user: &str, cred: Credential, generation: u64) -> bool {
        if let Some(e) = self.positive.get(user) {
            if *e.cred == cred {
                e.generation.store(generation, Ordering::Release);
                return false;
            }
        }
        let existed = self
            .positive
            .insert(
                user.into(),
                Entry {
                    cred: Arc::new(cred),
                    generation: AtomicU64::new(generation),
                },
            )
            .is_some();
        if !existed {
            self.negative.remove(user);
        }
        true
    }

    /// Ends a successful refresh: removes users not seen by it and expired negative entries.
    /// Returns the number of users removed.
    pub(crate) fn finish_refresh(&self, generation: u64, now_ms: u64) -> usize {
        let stale: Vec<Box<str>> = self
            .positive
            .iter()
            .filter(|e| e.value().generation.load(Ordering::Acquire) < generation)
            .map(|e| e.key().clone())
            .collect();
        let mut removed = 0;
        for k in stale {
            if self
                .positive
                .remove_if(&k, |_, e| e.generation.load(Ordering::Acquire) < generation)
                .is_some()
            {
                removed += 1;
            }
        }
        self.negative.retain(|_, until| *until > now_ms);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(pw: &str) -> Credential {
        Credential::from_plain("u", "r", pw, false)
    }

    #[test]
    fn found_unknown_miss() {
        let c = CredentialCache::new(1000, 10);
        assert!(matches!(c.lookup("a", 0), Lookup::Miss));
        c.insert_negative("a", 0);
        assert!(matches!(c.lookup("a", 999), Lookup::Unknown));
        assert!(matches!(c.lookup("a", 1000), Lookup::Miss));
        c.insert("a", cred("x"));
        assert!(matches!(c.lookup("a", 0), Lookup::Found(_)));
        assert_eq!(c.negative_len(), 0);
    }

    #[test]
    fn negative_is_bounded() {
        let c = CredentialCache::new(1000, 2);
        c.insert_negative("a", 0);
        c.insert_negative("b", 0);
        c.insert_negative("c", 0);
        assert_eq!(c.negative_len(), 2);
        c.insert_negative("d", 5000); // a and b expired: purged, d fits
        assert!(matches!(c.lookup("d", 5000), Lookup::Unknown));
    }

    #[test]
    fn refresh_generations() {
        let c = CredentialCache::new(1000, 10);
        let g = c.begin_refresh();
        assert!(c.refresh_upsert("a", cred("1"), g));
        assert!(c.refresh_upsert("b", cred("1"), g));
        assert_eq!(c.finish_refresh(g, 0), 0);
        let Lookup::Found(before) = c.lookup("a", 0) else {
            panic!()
        };
        let g = c.begin_refresh();
        assert!(!c.refresh_upsert("a", cred("1"), g)); // unchanged: same Arc kept
        c.insert("m", cred("9")); // miss during refresh survives
        assert!(c.refresh_upsert("b", cred("2"), g));
        assert_eq!(c.finish_refresh(g, 0), 0);
        let Lookup::Found(after) = c.lookup("a", 0) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&before, &after));
        let Lookup::Found(b) = c.lookup("b", 0) else {
            panic!()
        };
        assert_eq!(*b, cred("2"));
        let g = c.begin_refresh();
        c.refresh_upsert("a", cred("1"), g);
        assert_eq!(c.finish_refresh(g, 0), 2); // b and m gone
        assert!(matches!(c.lookup("b", 0), Lookup::Miss));
        assert_eq!(c.len(), 1);
    }
}
