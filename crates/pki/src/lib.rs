//! Palisade's private PKI: one CA per installation, certificates that say *what* their
//! holder is, and the mutual-TLS configurations every Palisade process uses.
//!
//! Every connection between Palisade processes is mutual TLS. A CA signature alone
//! only says *someone we issued a certificate to* is calling; Palisade also needs to know
//! whether that someone is the gateway (which may dispatch to an agent) or an operator
//! (which may not). So every certificate carries exactly one **role** —
//! [`Role::Gateway`], [`Role::Agent`], [`Role::Log`], [`Role::Witness`] or
//! [`Role::Operator`] — as the URI SAN `urn:palisade:role:<role>` (see
//! [`ROLE_URI_PREFIX`] for why a URI), and every server and client checks it after chain
//! validation ([`server_config`], [`client_config`], [`require_role`]).
//!
//! # Directory layout
//!
//! A PKI directory `D` (created mode 0700 by [`init_ca`] if missing) holds:
//!
//! | file | content | mode |
//! |---|---|---|
//! | `D/ca.crt` | the CA certificate (PEM): every process's only trust anchor | 0644 |
//! | `D/ca.key` | the CA private key (PKCS#8 PEM): needed only to issue | 0600 |
//! | `D/<role>-<name>.crt` | a certificate issued by [`issue`], e.g. `gateway-gw-1.crt` | 0644 |
//! | `D/<role>-<name>.key` | its private key | 0600 |
//!
//! Keys are ECDSA P-256. Files are written atomically (temporary file in `D` created
//! with its final mode, fsync, then link/rename, then fsync of `D`), and nothing is
//! overwritten unless the caller passes `force`: a refusal changes nothing.
//!
//! # What this protects against, and what not
//!
//! - A peer with a certificate from another CA, an expired one, or one used on the wrong
//!   side of TLS (e.g. a witness certificate as a client): the handshake fails.
//! - A peer with a valid certificate of the wrong role (an operator calling an agent, a
//!   log answering where an agent should): refused by the role check.
//! - Whoever can read `ca.key` can mint any role: keep it offline or on the machine that
//!   runs `palisade pki issue` only. [`load_ca`] refuses a CA key readable by others.
//! - There is no revocation (no CRL, no OCSP). Keep leaf lifetimes short; to revoke,
//!   create a new CA (`init --force`) and reissue.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ca;
mod error;
mod files;
mod peer;
mod random;
mod reload;
mod role;
mod tls;

pub use ca::{
    init_ca, issue, load_ca, CaPaths, CertificateAuthority, IssuedPaths, CA_VALIDITY_DAYS,
    DEFAULT_LEAF_DAYS,
};
pub use error::{Error, Result};
pub use peer::{peer_role, require_role};
pub use reload::ReloadingCert;
pub use role::{CertName, Role, SubjectAltName, ROLE_URI_PREFIX};
pub use tls::{
    client_config, crypto_provider, install_default_provider, load_certs, load_private_key,
    load_roots, server_config, ClientAuth,
};
