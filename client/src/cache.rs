//! The local deny cache: a key the server said is throttled (or out of quota) until `T` is
//! answered locally until `T`, so an abusive caller costs no RPC. Bounded memory.
use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::CheckResult;

/// What a cached denial is keyed by: api, stage, method, route, and a SHA-256 of the API key (the
/// key itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DenyKey {
    api_id: String,
    stage: String,
    method: String,
    route: String,
    key_hash: [u8; 32],
}

impl DenyKey {
    pub(crate) fn new(api_id: &str, stage: &str, method: &str, route: &str, api_key: &str) -> Self {
        Self {
            api_id: api_id.to_owned(),
            stage: stage.to_owned(),
            method: method.to_owned(),
            route: route.to_owned(),
            key_hash: Sha256::digest(api_key.as_bytes()).into(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    until: Instant,
    result: CheckResult,
}

/// A bounded map of denials, each valid until its `retry_after` runs out.
#[derive(Debug)]
pub(crate) struct DenyCache {
    capacity: usize,
    map: Mutex<HashMap<DenyKey, Entry>>,
}

impl DenyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The cached denial for `key` with its remaining `retry_after`, while it lasts.
    pub(crate) fn get(&self, key: &DenyKey) -> Option<CheckResult> {
        let now = Instant::now();
        let mut map = self.map.lock();
        let entry = map.get(key)?;
        if entry.until <= now {
            map.remove(key);
            return None;
        }
        let mut result = entry.result.clone();
        result.retry_after = Some(entry.until - now);
        Some(result)
    }

    /// Remembers a denial for `retry_after`. When full, expired entries go first; if none has
    /// expired, the one that expires soonest goes.
    pub(crate) fn insert(&self, key: DenyKey, result: CheckResult, retry_after: Duration) {
        if self.capacity == 0 || retry_after.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = now + retry_after;
        let mut map = self.map.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.until > now);
            if map.len() >= self.capacity {
                let soonest = map
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, Entry { until, result });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decision;

    fn throttled() -> CheckResult {
        CheckResult {
            decision: Decision::Throttled,
            http_status: 429,
            message: "Too Many Requests".into(),
            ..CheckResult::default()
        }
    }

    fn key(k: &str) -> DenyKey {
        DenyKey::new("petstore", "prod", "GET", "/pets", k)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_until_retry_after_then_forgets() {
        let c = DenyCache::new(10);
        c.insert(key("a"), throttled(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(500)).await;
        let hit = c.get(&key("a")).expect("cached");
        assert_eq!(hit.decision, Decision::Throttled);
        assert_eq!(hit.retry_after, Some(Duration::from_millis(1500)));
        assert!(c.get(&key("b")).is_none(), "other keys are not affected");
        assert!(
            c.get(&DenyKey::new("petstore", "prod", "POST", "/pets", "a"))
                .is_none()
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(c.get(&key("a")).is_none());
        assert_eq!(c.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let c = DenyCache::new(3);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            c.insert(key(k), throttled(), Duration::from_secs(10 + i as u64));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&key("a")).is_none(), "the soonest to expire went");
        assert!(c.get(&key("d")).is_some());
    }
}
