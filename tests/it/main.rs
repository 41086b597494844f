//! Every end-to-end suite, compiled into one test binary: linking the whole server once instead
//! of once per suite is most of what a fresh `cargo test` spends. Each suite is a module named
//! after its old file; run one with `cargo test -p tollgate-tests --test it <suite>::`.
mod admin;
mod architecture;
mod authz;
mod bypass;
mod cli;
mod cli_check;
mod cluster;
mod conformance;
mod docs;
mod e2e;
mod envoy;
mod examples;
mod faults;
mod gateway;
mod harness;
mod hostile;
mod hot_keys;
mod identities;
mod jwt;
mod lifecycle;
mod listener_limits;
mod listener_tls;
mod metering;
mod reasons;
mod revocation;
mod secrets;
mod sentinel;
mod sigv4;
mod state_codec;
mod store_tls;
