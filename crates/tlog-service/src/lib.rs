//! Palisade's log and witness services and the customer's verifier.
//!
//! - [`store`]: tiles, bundles and checkpoints in object storage (local or S3).
//! - [`sequencer`]: the single writer of a log: batching, durability, recovery.
//! - [`journal`]: how a log on a local directory makes each batch durable.
//! - [`witness_client`]: the log's side of tlog-witness.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod fetch;
pub mod https;
pub mod journal;
pub mod keyfile;
pub mod log_keys;
pub mod metrics;
pub mod sequencer;
pub mod server;
pub mod store;
pub mod witness_client;
pub mod witness_server;
