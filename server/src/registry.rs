//! Keeps every instance's catalog in step with the store's plans and keys.
//!
//! - On start and on every config reload the file's plans and keys are seeded into the store
//!   ([`crate::defs::seed`]); until the store has them (e.g. it is down at start) the catalog
//!   overlays the file's records, so the file always works.
//! - Every definition write bumps a version and publishes on the events channel; each instance
//!   reloads on that message (and after its subscription reconnects, since messages may have
//!   been missed), so a change made through one instance is honoured by all within
//!   milliseconds.
//! - An admin write is a compare-and-set on the version: validated against the definitions
//!   this instance holds, applied only if nobody wrote in between (else reload and retry).
//!
//! Imports `auth`, `catalog`, `defs`, `store` (`DefsStore`, `EventStore`), `config`, `tasks` and
//! leaves; must not import `pipeline`, `admin` or `api` (they call in).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::{AuthCache, Authorizers};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::Config;
use crate::defs::{self, Change, Definitions};
use crate::store::{AnyStore, DefsStore, EventStore, StoreError, StoreEvent};
use crate::tasks::Tasks;

/// How often a failed reload is retried.
pub const RETRY: Duration = Duration::from_secs(1);
/// Compare-and-set attempts before an admin write gives up.
pub const WRITE_ATTEMPTS: usize = 8;

/// What seeding did.
enum Seed {
    /// Wrote these changes; the store is at this version.
    Done(u64, Vec<Change>),
    /// The store already holds the file's records.
    Nothing,
    /// Someone wrote first.
    Conflict,
}

/// How often the store's definitions version is compared with ours, in case a pub/sub message
/// was lost without the subscription noticing (a silently dropped idle connection).
pub const POLL: Duration = Duration::from_secs(5);

/// Why an admin write did not happen.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The change was refused (validation, not found, ...).
    Rejected(E),
    /// The store failed.
    Store(StoreError),
    /// Others kept writing first.
    Contended,
}

/// The live catalog and the definitions behind it.
pub struct Registry {
    /// What the check path reads.
    pub catalog: Arc<ArcSwap<Catalog>>,
    config: ArcSwap<Config>,
    defs: ArcSwap<Definitions>,
    store: AnyStore,
    clock: Arc<dyn Clock>,
    auth_cache: Arc<AuthCache>,
    kick: Notify,
    seed_needed: AtomicBool,
    install_lock: Mutex<()>,
    /// One reload at a time: two overlapping ones (the start-up load and the follower's) would
    /// both seed, and the loser would see its own instance's seed as the store going back.
    reload_lock: tokio::sync::Mutex<()>,
    timeout: Duration,
}

/// The deadline of loading (and seeding) all plans and keys: a background task, so a slow
/// answer delays nothing but the reload, while a too-short deadline would retry — and re-send —
/// a big load forever.
pub const DEFS_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

impl Registry {
    /// A registry serving `config`'s own plans and keys until the store's are loaded.
    pub fn new(
        config: Config,
        store: AnyStore,
        clock: Arc<dyn Clock>,
        authorizers: Arc<Authorizers>,
        auth_cache: Arc<AuthCache>,
    ) -> Arc<Self> {
        let defs = Definitions::default();
        let catalog = build_with_file(&config, &defs, authorizers, &*clock);
        Arc::new(Self {
            catalog: Arc::new(ArcSwap::from_pointee(catalog)),
            timeout: config.store.timeout.max(Duration::from_millis(200)) * 10,
            config: ArcSwap::from_pointee(config),
            defs: ArcSwap::from_pointee(defs),
            store,
            clock,
            auth_cache,
            kick: Notify::new(),
            seed_needed: AtomicBool::new(true),
            install_lock: Mutex::new(()),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The clock the registry and the admin rules read wall time from (a fake in tests).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The definitions as last read from (or written to) the store.
    pub fn defs(&self) -> Arc<Definitions> {
        self.defs.load_full()
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The authorizer decision cache.
    pub fn auth_cache(&self) -> &Arc<AuthCache> {
        &self.auth_cache
    }

    /// Puts a reloaded config in force: the catalog is rebuilt at once (the file's plans and
    /// keys overlaid) and the store is re-seeded in the background.
    pub fn set_config(&self, config: Config, authorizers: Arc<Authorizers>) {
        let _g = self.install_lock.lock();
        let defs = self.defs.load_full();
        self.catalog.store(Arc::new(build_with_file(
            &config,
            &defs,
            authorizers,
            &*self.clock,
        )));
        self.config.store(Arc::new(config));
        self.seed_needed.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }

    /// Asks the follower ([`Registry::spawn_follower`]) to load the definitions now (after a
    /// start-up load that did not finish in time).
    pub fn request_reload(&self) {
        self.kick.notify_one();
    }

    /// Installs `defs` and rebuilds the catalog, unless [`accepts`] says something newer
    /// stays.
    fn install(&self, defs: Definitions, origin: Origin) {
        let _g = self.install_lock.lock();
        if !accepts(defs.version, origin, self.defs.load().version) {
            return;
        }
        let config = self.config.load_full();
        let authorizers = self.catalog.load().authorizers.clone();
        self.catalog.store(Arc::new(build_with_file(
            &config,
            &defs,
            authorizers,
            &*self.clock,
        )));
        ::metrics::gauge!(crate::metrics::DEFINITIONS_VERSION).set(defs.version as f64);
        self.defs.store(Arc::new(defs));
    }

    /// `f`, bounded by [`DEFS_LOAD_TIMEOUT`]: reading or seeding every plan and key moves data
    /// in proportion to their number (100,000 keys ≈ 30 MB), far more than one admin write.
    async fn timed_bulk<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout.max(DEFS_LOAD_TIMEOUT), f)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// `f`, bounded by the registry's store deadline.
    pub async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// Loads the definitions from the store (seeding the file's first if needed) and installs
    /// them.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reload_lock.lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            // What we knew before reading: the store held at least this version then, so a
            // lower one read now means it was reset, while a write of ours landing during the
            // read may make what we read older than what we hold without anything going back.
            let before = self.defs.load().version;
            let raw = self.timed_bulk(self.store.defs_load()).await?;
            let (mut defs, warnings) = Definitions::from_raw(raw);
            for w in warnings {
                tracing::warn!(problem = %w, "damaged definition in the store");
            }
            if defs.version < before {
                // The store was flushed or replaced (a restart without persistence, a failover
                // to a replica behind): put the file's plans and keys back.
                tracing::warn!(
                    stored = defs.version,
                    known = before,
                    "the store's plans and keys went back in time; re-seeding the config file's"
                );
                self.seed_needed.store(true, Ordering::SeqCst);
            }
            // Cleared only once the seed is written: a cancelled reload seeds next time.
            if self.seed_needed.load(Ordering::SeqCst) {
                let config = self.config.load_full();
                match self.seed(&config, &defs).await? {
                    Seed::Done(version, changes) => {
                        defs.apply(&changes);
                        defs.version = version;
                    }
                    Seed::Nothing => {}
                    // A concurrent write: read again and retry.
                    Seed::Conflict => continue,
                }
                self.seed_needed.store(false, Ordering::SeqCst);
            }
            self.install(defs, Origin::Loaded { before });
            return Ok(());
        }
        Err(StoreError::backend(
            "definitions kept changing while seeding",
        ))
    }

    /// Writes the file's plans and keys.
    async fn seed(&self, config: &Config, defs: &Definitions) -> Result<Seed, StoreError> {
        let now = self.clock.now_micros();
        // Plans seeded by earlier releases kept their first-seen time under their own key.
        let mut created = std::collections::HashMap::new();
        for p in &config.usage_plans {
            if p.created_at.is_none() && p.quota.is_some() && !defs.plans.contains_key(&p.id) {
                let t = self.timed(self.store.plan_created_at(&p.id, now)).await?;
                created.insert(p.id.clone(), t);
            }
        }
        let changes = defs::seed(config, defs, now, &|id| created.get(id).copied());
        if changes.is_empty() {
            return Ok(Seed::Nothing);
        }
        match self
            .timed_bulk(self.store.defs_write(defs.version, &encode(&changes)?))
            .await?
        {
            Some(v) => {
                tracing::info!(
                    changes = changes.len(),
                    version = v,
                    "seeded plans and keys from the config file"
                );
                Ok(Seed::Done(v, changes))
            }
            None => Ok(Seed::Conflict),
        }
    }

    /// Applies the changes `f` computes from the current definitions, atomically: retried on
    /// a concurrent write. Returns the definitions after the write.
    pub async fn write<E>(
        &self,
        f: impl Fn(&Definitions) -> Result<Vec<Change>, E>,
    ) -> Result<Arc<Definitions>, WriteError<E>> {
        for _ in 0..WRITE_ATTEMPTS {
            let cur = self.defs.load_full();
            let changes = f(&cur).map_err(WriteError::Rejected)?;
            if changes.is_empty() {
                return Ok(cur);
            }
            match self
                .timed(async { self.store.defs_write(cur.version, &encode(&changes)?).await })
                .await
                .map_err(WriteError::Store)?
            {
                Some(v) => {
                    let mut next = (*cur).clone();
                    next.apply(&changes);
                    next.version = v;
                    self.install(next, Origin::Written);
                    return Ok(self.defs.load_full());
                }
                None => self.reload().await.map_err(WriteError::Store)?,
            }
        }
        Err(WriteError::Contended)
    }

    /// Follows the store's events on `tasks` until they are shut down: reloads on definition
    /// changes (and retries failed reloads), flushes local authorizer caches on request.
    pub fn spawn_follower(self: &Arc<Self>, tasks: &Tasks) {
        let me = Arc::clone(self);
        let mut events = me.store.events();
        tasks.spawn("catalog follower", async move {
            let mut pending = false;
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let retry = async {
                    if pending {
                        tokio::time::sleep(RETRY).await
                    } else {
                        std::future::pending::<()>().await
                    }
                };
                tokio::select! {
                    ev = events.recv() => match ev {
                        // The checker follows these (its over-limit cache).
                        Ok(StoreEvent::Usage(_)) => continue,
                        Ok(StoreEvent::AuthFlush(name)) => {
                            me.auth_cache.flush_local(&name);
                            continue;
                        }
                        Ok(StoreEvent::Definitions) => {
                            // Our own writes come back as events too: skip what we have.
                            if !pending
                                && matches!(me.timed(me.store.defs_version()).await, Ok(v) if v == me.defs.load().version)
                            {
                                continue;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            // Flush requests may be among the lost events.
                            me.auth_cache.flush_all_local();
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = me.kick.notified() => {}
                    _ = retry => {}
                    _ = poll.tick() => {
                        match me.timed(me.store.defs_version()).await {
                            // A seed that never completed (a start-up load that timed out) is
                            // due whatever the version says.
                            Ok(v) if v == me.defs.load().version
                                && !me.seed_needed.load(Ordering::SeqCst) => continue,
                            Ok(_) => {}
                            // A down store is the probe's and the checks' business.
                            Err(_) => continue,
                        }
                    }
                }
                let r = me.reload().await;
                ::metrics::counter!(
                    crate::metrics::DEFINITIONS_LOADS_TOTAL,
                    "result" => if r.is_ok() { "ok" } else { "error" }
                )
                .increment(1);
                match r {
                    Ok(()) => {
                        if pending {
                            tracing::info!("plans and keys reloaded from the store");
                        }
                        pending = false;
                    }
                    Err(e) => {
                        if !pending {
                            tracing::warn!(error = %e, "cannot load plans and keys from the store; retrying");
                        }
                        pending = true;
                    }
                }
            }
        });
    }
}

/// Where definitions offered to [`Registry::install`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The result of an admin write of ours.
    Written,
    /// Read from the store by a load that started when we held version `before`.
    Loaded { before: u64 },
}

/// Whether definitions at `version` from `origin` replace the installed ones at `installed`.
///
/// - Newer always wins.
/// - A write's result that is not newer lost a race with a load or another write: skipped.
/// - A load that went back below what we held when it *started* means the store was reset (a
///   restart without persistence, a failover to a replica behind): the store is the truth.
/// - A load between the two read the store before one of our own writes landed: it is stale,
///   and installing it would hide a plan or key the caller has just been told exists.
fn accepts(version: u64, origin: Origin, installed: u64) -> bool {
    if version > installed {
        return true;
    }
    match origin {
        Origin::Written => false,
        Origin::Loaded { before } => version == installed || version < before,
    }
}

fn encode(changes: &[Change]) -> Result<Vec<crate::store::DefWrite>, StoreError> {
    defs::writes(changes)
        .map_err(|e| StoreError::Protocol(format!("cannot encode a definition: {e}")))
}

/// The catalog of `defs` with the file's plans and keys laid over (what the store holds once
/// seeded); `defs` is copied only when the store lacks some of the file's records.
fn build_with_file(
    config: &Config,
    defs: &Definitions,
    authorizers: Arc<Authorizers>,
    clock: &dyn Clock,
) -> Catalog {
    let changes = defs::seed(config, defs, clock.now_micros(), &|_| None);
    if changes.is_empty() {
        return Catalog::build(config, defs, authorizers);
    }
    let mut out = defs.clone();
    out.apply(&changes);
    Catalog::build(config, &out, authorizers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_read_before_our_write_does_not_undo_it() {
        // Loaded v4 (started at v4) while our write installed v5: stale, kept out.
        assert!(!accepts(4, Origin::Loaded { before: 4 }, 5));
        // The same load with nothing newer installed goes in.
        assert!(accepts(4, Origin::Loaded { before: 4 }, 4));
        assert!(accepts(6, Origin::Loaded { before: 4 }, 5));
    }

    #[test]
    fn a_store_that_went_back_is_followed() {
        // We held v9 when the load started and the store says v2: it was reset.
        assert!(accepts(2, Origin::Loaded { before: 9 }, 9));
        assert!(accepts(0, Origin::Loaded { before: 9 }, 12));
    }

    #[test]
    fn a_write_result_never_replaces_something_as_new_or_newer() {
        assert!(accepts(6, Origin::Written, 5));
        assert!(!accepts(5, Origin::Written, 5));
        assert!(!accepts(4, Origin::Written, 5));
    }
}
