//! Palisade's shared vocabulary, used by every other crate.
//!
//! - [`id`]: typed identifiers (tenant, cluster, instance, operator, event), parsed once
//!   at the edge so that nothing unvalidated travels inward.
//! - [`canonical`]: the one canonical JSON encoding used for everything that is hashed
//!   or signed.
//! - [`event`]: the access events that are written to a cluster's log.
//! - [`refusal`]: what a refusal may tell the customer (fixed codes).
//! - [`sanitize`]: escaping text that reaches a log entry or an audit line.
//! - [`digest`]: SHA-256 digests as they appear in events and manifests.
//! - [`config`]: loading and validating per-process TOML configuration files.
//!
//! This crate does no network I/O; [`config::load`] reads one file.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod config;
pub mod digest;
pub mod event;
pub mod id;
pub mod inventory;
pub mod output;
pub mod ports;
pub mod refusal;
pub mod sanitize;
pub mod statement;
pub mod time;

pub use canonical::{to_canonical_vec, CanonicalError};
pub use digest::Sha256Digest;
pub use id::{ActionName, ClusterId, EventId, IdError, InstanceId, OperatorId, TenantId};
