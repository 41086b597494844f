//! CheckRequest helpers shared by the end-to-end suites: the `petstore`/`prod` `GET /pets`
//! request, firing many copies from concurrent callers, and tallying the decisions.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::task::JoinSet;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_proto::v1::{CheckRequestRequest, CheckRequestResponse, Decision};
use tonic::transport::Channel;

use crate::config::{Config, Period, Plan};

/// A CheckService client.
pub type Client = CheckServiceClient<Channel>;

/// `GET /pets` on petstore/prod with `api_key`.
pub fn get_pets(api_key: &str) -> CheckRequestRequest {
    CheckRequestRequest {
        api_id: "petstore".into(),
        stage: "prod".into(),
        http_method: "GET".into(),
        path: "/pets".into(),
        api_key: api_key.into(),
        ..Default::default()
    }
}

/// The decision of a response.
pub fn decision(r: &CheckRequestResponse) -> Decision {
    Decision::try_from(r.decision).unwrap_or(Decision::Unspecified)
}

/// One CheckRequest; panics on an error status.
pub async fn check(client: &mut Client, req: CheckRequestRequest) -> CheckRequestResponse {
    client
        .check_request(req)
        .await
        .unwrap_or_else(|s| panic!("CheckRequest failed: {s:?}"))
        .into_inner()
}

/// Whether a `GET /pets` with `key` is answered ALLOW, not degraded (errors count as no).
pub async fn allowed_not_degraded(mut c: Client, key: &str) -> bool {
    matches!(c.check_request(get_pets(key)).await,
        Ok(r) if decision(r.get_ref()) == Decision::Allow && !r.get_ref().degraded)
}

/// Sends `total` copies of `req` from `callers` concurrent tasks, round-robin over `clients`.
pub async fn fire(
    clients: &[Client],
    callers: usize,
    total: usize,
    req: CheckRequestRequest,
) -> Vec<CheckRequestResponse> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..callers {
        let mut client = clients[i % clients.len()].clone();
        let next = next.clone();
        let req = req.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                out.push(check(&mut client, req.clone()).await);
            }
            out
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("a caller task panicked"));
    }
    assert_eq!(all.len(), total);
    all
}

/// Decisions by name (`ALLOW`, `THROTTLED`, ...) and how many of each.
pub fn tally(responses: &[CheckRequestResponse]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in responses {
        *m.entry(decision(r).as_str_name().to_string()).or_default() += 1;
    }
    m
}

/// Through a store failover with `failure_mode: open`: checks `key` every 100 ms until one is
/// answered not degraded, asserting every answer is an ALLOW within 3 s (degraded or not) and
/// that recovery comes within 60 s of `since`. Returns that answer and how many were degraded.
pub async fn until_recovered(
    c: &mut Client,
    key: &str,
    since: std::time::Instant,
) -> (CheckRequestResponse, usize) {
    use std::time::{Duration, Instant};
    let mut degraded = 0;
    loop {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), c.check_request(get_pets(key)))
            .await
            .expect("every check is answered within the deadline")
            .expect("failure mode open answers, never an error")
            .into_inner();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered in {:?}",
            started.elapsed()
        );
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        if !r.degraded {
            return (r, degraded);
        }
        degraded += 1;
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no recovery 60 s after the failure"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The YAML tail most end-to-end configs share (for a suite whose `server`/`store` head is text):
/// API `petstore`, stage `prod` with `GET /pets` (API key required), plan `metered` with a
/// daily quota of `quota`, and key `k1` with the value `key` in it. A suite that builds its
/// whole config uses [`Config::petstore_with`] instead.
pub fn petstore_with_key(quota: u64, key: &str) -> String {
    Config::memory()
        .petstore_with(Plan::new("metered").quota(quota, Period::Day), key)
        .definitions_yaml()
}
