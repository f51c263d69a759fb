//! Palisade's encrypted etcd backups (claim C5: no operator reaches customer content
//! in etcd backups, nor any plaintext key).
//!
//! - [`format`]: the object format, a header and STREAM-sealed segments;
//! - [`snapshot`]: the etcd snapshot's own SHA-256 trailer;
//! - [`manifest`]: what a backup is, signed by the agent that took it;
//! - [`store`]: object storage (a local directory or an S3-compatible bucket);
//! - [`take`]: the agent's side, snapshot in, object and manifest out;
//! - [`catalog`]: listing and pruning what is stored;
//! - [`restore`]: the customer's side, restore with their key, verify without it.
//!
//! What this protects against: whoever can read or write the object store (operators
//! included) learns sizes and times, never content; any change to an object or a
//! manifest is detected before a restored file appears. What it does not: the agent
//! host sees the snapshot while it streams through (it is the control-plane host,
//! whose etcd holds the same data, with Secrets encrypted by the KMS plugin), and
//! deleting backups is possible for whoever can write the store (pruning through the
//! agent is logged; a bucket's own object lock is the defence against the rest).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))] // Tests may unwrap; library code may not.

pub mod catalog;
pub mod format;
pub mod manifest;
pub mod restore;
pub mod snapshot;
pub mod store;
pub mod take;

pub use manifest::{Manifest, VerifiedManifest};
pub use store::{BackupStore, S3Options, StoreUrl};
