//! Pure rate-limit math: no I/O, no async, no clock reads.
//!
//! - [`gcra`]: token buckets as GCRA (one "theoretical arrival time" per bucket).
//! - [`quota`]: DAY / WEEK / MONTH period arithmetic in UTC.
//! - [`headers`]: IETF `RateLimit-Policy` / `RateLimit` rendering.
//! - [`evaluate`](mod@evaluate): one whole check (every bucket, then the quota; commit only if all admit).
//!
//! The Redis Lua script (`store::redis::scripts`) is a line-by-line copy of [`evaluate()`]; a
//! property test in the tests crate requires both to decide identically.
//!
//! A leaf: imports nothing of the crate (no I/O, no clock); the stores and the domain import it.
pub mod evaluate;

/// How long an idempotency record (`request_id`) is kept: a retry with the same id within it
/// is answered from the first decision, and a reservation can be settled within it.
pub const IDEMPOTENCY_TTL_MS: u64 = 600_000;
/// A reservation is released this long (ms) before its idempotency record expires
/// ([`IDEMPOTENCY_TTL_MS`]): the release needs the record.
pub const RELEASE_MARGIN_MS: u64 = 5_000;
pub mod gcra;
pub mod headers;
pub mod quota;

pub use evaluate::{BucketInput, CheckResult, QuotaInput, QuotaState, Verdict, evaluate};
pub use gcra::{Limit, LimitError};
pub use quota::Period;
