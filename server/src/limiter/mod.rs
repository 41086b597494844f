//! Pure rate-limit math: no I/O, no async, no clock reads.
//!
//! - [`gcra`]: token buckets as GCRA (one "theoretical arrival time" per bucket).
//! - [`quota`]: DAY / WEEK / MONTH period arithmetic in UTC.
//! - [`headers`]: IETF `RateLimit-Policy` / `RateLimit` rendering.
//! - [`evaluate`]: one whole check (every bucket, then the quota; commit only if all admit).
//!
//! The Redis Lua script (`store::redis::scripts`) is a line-by-line copy of [`evaluate`]; a
//! property test in the tests crate requires both to decide identically.
pub mod evaluate;
pub mod gcra;
pub mod headers;
pub mod quota;

pub use evaluate::{BucketInput, CheckResult, QuotaInput, QuotaState, Verdict, evaluate};
pub use gcra::{Limit, LimitError};
pub use quota::Period;
