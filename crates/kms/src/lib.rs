//! Palisade's Kubernetes KMS v2 plugin.
//!
//! kube-apiserver encrypts every Secret (and whatever else its `EncryptionConfiguration`
//! names) with a data-encryption key derived from a 32-byte seed, and asks this plugin
//! to wrap that seed with the customer's key-encryption key (KEK). The KEK never
//! leaves its backend:
//!
//! - [`pkcs11`]: an AES-256 key generated inside an HSM as sensitive and
//!   non-extractable; wrapping is AES-GCM inside the HSM;
//! - [`aws`] (feature `aws`, on by default): a customer-owned key in AWS KMS;
//! - [`file_key`]: a key in a local file, for development only, refused unless
//!   explicitly allowed.
//!
//! The service ([`service`]) speaks the KMS v2 gRPC contract (`proto/kms_v2.proto`)
//! on a Unix socket whose callers are checked by peer credentials ([`socket`]); every
//! request is parsed into a bounded, typed value before a backend sees it
//! ([`limits`]). Several keys can be configured for rotation without downtime
//! ([`keyring`]); health is a cached round trip against the backend ([`health`]);
//! metrics go to a separate loopback listener ([`metrics`]); [`config`] is the
//! `serve --config` file. [`client`] is the
//! library Palisade's backups use to wrap their data keys through the same plugin, and
//! [`scan`] checks that nothing readable is left in etcd.
//!
//! What this does not protect against: a caller the peer-credential check admits can
//! ask for any ciphertext to be unwrapped (that is the apiserver's job); a root user on
//! the plugin's host can read the plaintext seeds in the plugin's memory. The KEK
//! itself stays in the HSM or cloud KMS.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))] // Tests may unwrap; library code may not.

pub mod ambiguity;
pub mod client;
pub mod config;
pub mod envelope;
pub mod file_key;
pub mod health;
pub mod kek;
pub mod keyring;
pub mod limits;
pub mod metrics;
pub mod pkcs11;
pub mod scan;
pub mod server;
pub mod service;
pub mod socket;
pub mod token_signer;

#[cfg(feature = "aws")]
pub mod aws;

/// The gRPC types and stubs generated from `proto/kms_v2.proto` (package `v2`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("v2");
}

pub use client::KmsClient;
pub use kek::{Backend, Kek, KekError, KeyId};
pub use keyring::KeyRing;

/// The `version` every Status answer carries.
pub const API_VERSION: &str = "v2";
