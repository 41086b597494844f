//! Tollgate's test harness: real processes on free loopback ports.
//!
//! - [`redis::RedisServer`]: a `redis-server` spawned on a free port, killed on drop.
//! - [`tollgate::TollgateProcess`]: the `tollgate` binary serving a given config on port 0,
//!   killed on drop.
//!
//! A test that needs a binary that is not installed fails with an install hint; it never
//! passes silently.
pub mod authorizer;
pub mod redis;
pub mod tollgate;
