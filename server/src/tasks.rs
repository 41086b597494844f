//! Owned background tasks: every long-lived task of the server (sweepers, watchers, the
//! catalog follower, the store's pub/sub and probes, certificate reload) is spawned through a
//! [`Tasks`] set, so shutdown can stop them and wait for them, in order, within a deadline.
//!
//! Owns: spawning, cancellation, the count and names of live tasks, and waiting for them.
//! Must not import: anything from this crate (a leaf; `tests/it/architecture.rs` checks). It
//! knows nothing of what the tasks do.
//!
//! A set is a cancellation token and a task tracker (mini-redis's `Shutdown` plus its
//! `JoinSet`, from tokio-util). [`Tasks::child`] gives a sub-system (the store) its own set:
//! it can be shut down before or after the others, and its parent's shutdown cancels and
//! waits for it too. Two ways to spawn:
//! - [`Tasks::spawn`]: the task may stop at any await point; on shutdown it is dropped there.
//! - [`Tasks::spawn_graceful`]: the task gets the token and ends itself at a safe point (a
//!   sweeper that has taken tickets off the store finishes releasing them first).
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// The token [`Tasks::spawn_graceful`] hands its task.
pub use tokio_util::sync::CancellationToken;

/// A set of owned tasks; clones share it.
#[derive(Clone)]
pub struct Tasks(Arc<Inner>);

struct Inner {
    name: &'static str,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Live tasks by spawn number: their names, for the shutdown log.
    live: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    next: AtomicU64,
    children: Mutex<Vec<Tasks>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("name", &self.0.name)
            .field("live", &self.live_names())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Tasks still running when a shutdown's deadline passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} task(s) still running after the deadline: {}", .0.len(), .0.join(", "))]
pub struct Outlived(pub Vec<String>);

/// Takes a task off the live list when its future is dropped (finished or cancelled).
struct LiveGuard {
    live: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.lock().remove(&self.id);
    }
}

impl Tasks {
    /// An empty set called `name` (in logs).
    pub fn new(name: &'static str) -> Self {
        Self::with_token(name, CancellationToken::new())
    }

    fn with_token(name: &'static str, cancel: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            name,
            cancel,
            tracker: TaskTracker::new(),
            live: Arc::default(),
            next: AtomicU64::new(0),
            children: Mutex::default(),
        }))
    }

    /// A set for a sub-system: cancelled with this one (not the other way round), and waited
    /// for by this one's [`shutdown`](Self::shutdown).
    pub fn child(&self, name: &'static str) -> Tasks {
        let child = Self::with_token(name, self.0.cancel.child_token());
        self.0.children.lock().push(child.clone());
        child
    }

    /// The set's name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    fn track(&self, name: &'static str) -> LiveGuard {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.live.lock().insert(id, name);
        LiveGuard {
            live: self.0.live.clone(),
            id,
        }
    }

    /// Runs `fut` until it ends or the set is cancelled, whichever is first (a cancelled task
    /// is dropped at the await point it is waiting at). Must be called within a tokio runtime.
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = self.track(name);
        let cancel = self.0.cancel.clone();
        self.0.tracker.spawn(async move {
            let _guard = guard;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        })
    }

    /// Runs the future `f` makes from the set's token; the task watches the token and ends at
    /// a point of its choosing (its work must still end within the shutdown deadline). Must be
    /// called within a tokio runtime.
    pub fn spawn_graceful<F, Fut>(&self, name: &'static str, f: F) -> JoinHandle<()>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let guard = self.track(name);
        let fut = f(self.0.cancel.clone());
        self.0.tracker.spawn(async move {
            let _guard = guard;
            fut.await
        })
    }

    /// The set's cancellation token (e.g. a server's graceful-shutdown signal).
    pub fn token(&self) -> CancellationToken {
        self.0.cancel.clone()
    }

    /// Whether the set was cancelled (shut down, or its parent was).
    pub fn is_cancelled(&self) -> bool {
        self.0.cancel.is_cancelled()
    }

    /// Tasks of this set and its children not finished yet.
    pub fn live(&self) -> usize {
        self.0.tracker.len() + self.children().iter().map(Tasks::live).sum::<usize>()
    }

    /// The names of the live tasks, this set's and its children's (`set/task`).
    pub fn live_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .live
            .lock()
            .values()
            .map(|n| format!("{}/{n}", self.0.name))
            .collect();
        for c in self.children() {
            names.extend(c.live_names());
        }
        names
    }

    fn children(&self) -> Vec<Tasks> {
        self.0.children.lock().clone()
    }

    /// Waits until every task of this set and its children has ended.
    async fn wait(&self) {
        self.0.tracker.close();
        self.0.tracker.wait().await;
        for c in self.children() {
            Box::pin(c.wait()).await;
        }
    }

    /// Cancels the set and its children and waits up to `deadline` for their tasks to end.
    /// Tasks still running then are named in the error (and keep running until they next
    /// yield to a cancelled token; the runtime drops them when it shuts down).
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), Outlived> {
        self.0.cancel.cancel();
        match tokio::time::timeout(deadline, self.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Outlived(self.live_names())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_and_waits_for_every_task() {
        let tasks = Tasks::new("root");
        let store = tasks.child("store");
        tasks.spawn("forever", std::future::pending());
        store.spawn("pubsub", std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("done", async move {
            let _ = rx.await;
        });
        assert_eq!(tasks.live(), 3);
        let mut names = tasks.live_names();
        names.sort();
        assert_eq!(names, ["root/done", "root/forever", "store/pubsub"]);
        drop(tx);
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(tasks.live(), 0);
        assert!(
            store.is_cancelled(),
            "a parent's shutdown cancels its children"
        );
        assert!(tasks.live_names().is_empty());
    }

    #[tokio::test]
    async fn a_child_shuts_down_alone() {
        let tasks = Tasks::new("root");
        let workers = tasks.child("workers");
        tasks.spawn("store", std::future::pending());
        workers.spawn("sweeper", std::future::pending());
        workers.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(workers.live(), 0);
        assert!(
            !tasks.is_cancelled(),
            "a child's shutdown leaves its parent running"
        );
        assert_eq!(tasks.live(), 1);
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(tasks.live(), 0);
    }

    #[tokio::test]
    async fn a_graceful_task_finishes_its_work_before_it_ends() {
        let tasks = Tasks::new("root");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn_graceful("sweeper", |token| async move {
            token.cancelled().await;
            // Work that must not be cut off, after the cancellation.
            tokio::task::yield_now().await;
            let _ = tx.send("released");
        });
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(rx.await.unwrap(), "released");
    }

    #[tokio::test]
    async fn a_task_that_ignores_its_token_is_named_at_the_deadline() {
        let tasks = Tasks::new("root");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn_graceful("stubborn", |_token| async move {
            let _ = rx.await;
        });
        let err = tasks.shutdown(Duration::from_millis(10)).await.unwrap_err();
        assert_eq!(err, Outlived(vec!["root/stubborn".into()]));
        drop(tx);
        tasks.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(tasks.live(), 0);
    }

    #[tokio::test]
    async fn a_task_spawned_after_shutdown_does_not_run() {
        let tasks = Tasks::new("root");
        tasks.shutdown(Duration::from_secs(1)).await.unwrap();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        tasks
            .spawn("late", async move { r.store(true, Ordering::SeqCst) })
            .await
            .unwrap();
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(tasks.live(), 0);
    }
}
