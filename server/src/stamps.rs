//! Invalidation stamps: one counter per owner (striped), bumped when the store says an owner's
//! usage was set or cleared (`UpdateUsage`, a reset, a refund) and seen here through the
//! store's events, plus one bumped for everything (the event stream restarted: events may have
//! been missed).
//!
//! Local shortcuts that answer a key without the store — the over-limit cache's remembered
//! denials ([`crate::overlimit`]) and local leases' units ([`crate::lease`]) — read the owner's
//! stamp *before* the store call whose answer they keep, and keep it with that answer. An
//! answer whose stamp is no longer the owner's current one is never served: a store call that
//! started before an `UpdateUsage` cannot outlive it, even when its answer arrives after the
//! event did.
//!
//! Stripes keep the memory fixed whatever the number of keys: owners sharing a stripe only
//! invalidate each other's shortcuts now and then (a store call more), never the reverse.
//!
//! A leaf: imports nothing of the crate; `overlimit`, `lease` and the pipeline share it.
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Stripes (a power of two).
pub const STRIPES: usize = 4096;

/// The stamps of every owner.
pub struct Stamps {
    all: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Stamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamps")
            .field("all", &self.all.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Stamps {
    fn default() -> Self {
        Self::new()
    }
}

impl Stamps {
    /// Every stamp at 0.
    pub fn new() -> Self {
        Self {
            all: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, owner: &str) -> &AtomicU64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        owner.hash(&mut h);
        &self.stripes[h.finish() as usize & (STRIPES - 1)]
    }

    /// `owner`'s stamp now: it changes whenever `owner` (or everything) is invalidated, and
    /// only then (both counters only grow, so their sum never comes back to a value).
    pub fn of(&self, owner: &str) -> u64 {
        self.all
            .load(Ordering::Acquire)
            .wrapping_add(self.stripe(owner).load(Ordering::Acquire))
    }

    /// `owner`'s usage changed: its shortcuts taken before now are stale.
    pub fn bump(&self, owner: &str) {
        self.stripe(owner).fetch_add(1, Ordering::AcqRel);
    }

    /// Everything is stale.
    pub fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_its_owner_or_everything_only() {
        let s = Stamps::new();
        let (a, b) = (s.of("tg:{k:a}"), s.of("tg:{k:b}"));
        s.bump("tg:{k:a}");
        assert_ne!(s.of("tg:{k:a}"), a);
        let a = s.of("tg:{k:a}");
        s.bump_all();
        assert_ne!(s.of("tg:{k:a}"), a);
        assert_ne!(s.of("tg:{k:b}"), b);
        // b's stamp moves with a's only if they share a stripe (rare: 1 in STRIPES).
        let (a, b) = (s.of("tg:{k:a}"), s.of("tg:{k:b}"));
        s.bump("tg:{k:a}");
        let shared = std::ptr::eq(s.stripe("tg:{k:a}"), s.stripe("tg:{k:b}"));
        assert_eq!(s.of("tg:{k:b}") != b, shared);
        assert_ne!(s.of("tg:{k:a}"), a);
    }
}
