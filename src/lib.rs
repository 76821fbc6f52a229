//! redis-nvm: a Redis / Valkey module that makes every write durable on
//! byte-addressable non-volatile memory before its reply leaves the server.
//!
//! The crate is split in two halves:
//! - the storage core (`pmem`, `pool`, `log`, `keyspace`, `effect`, `replay`, `warmup`),
//!   which knows nothing of Redis
//!   and is tested without a server, and
//! - the Redis glue (`redis`), a thin layer that captures writes as effects, appends
//!   them to the log, and restores them at start-up.
//!
//! `unsafe` is allowed only in `pmem` (mapping and cache-line flushes) and in
//! `redis::ffi` (the raw module API); everything else is safe Rust.

pub mod effect;
pub mod keyspace;
pub mod log;
pub mod pmem;
pub mod pool;
pub mod redis;
pub mod replay;
pub mod warmup;
