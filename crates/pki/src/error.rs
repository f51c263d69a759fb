//! The one error type of this crate.
//!
//! Every message names the offending value or path and says what to do next, because
//! these errors reach an operator's terminal through `palisade pki` and a server's log
//! when a peer is refused.

use std::path::PathBuf;

use crate::role::Role;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong creating, loading or checking Palisade certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate name does not follow the naming rule.
    #[error(
        "invalid certificate name `{value}`: {reason}; use 1 to 63 characters of a-z, 0-9 and \
         `-`, starting and ending with a letter or digit (for example `gw-1`)"
    )]
    InvalidName {
        /// The rejected name.
        value: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// A role name is not one of Palisade's roles.
    #[error("unknown role `{value}`: expected one of gateway, agent, log, witness, operator")]
    InvalidRole {
        /// The rejected role name.
        value: String,
    },

    /// An extra subject alternative name is neither an IP address nor a DNS name.
    #[error(
        "invalid subject alternative name `{value}`: {reason}; give an IP address \
         (`10.0.0.5`, `::1`) or a DNS name (`gw.example.internal`)"
    )]
    InvalidSan {
        /// The rejected name.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Extra names were asked for on a certificate that never serves TLS.
    #[error(
        "role `{role}` is client-only, so its certificate carries no host names; drop the \
         extra names or issue a certificate for a serving role"
    )]
    SansOnClientOnlyRole {
        /// The client-only role.
        role: Role,
    },

    /// The requested validity is zero or too large to represent.
    #[error("invalid validity of {days} days: give at least 1 day")]
    InvalidDays {
        /// The rejected number of days.
        days: u32,
    },

    /// The requested leaf would still be valid after its CA expired.
    #[error(
        "a certificate valid for {days} days would outlive the CA at {ca_cert} (it expires at \
         unix time {ca_not_after}); ask for fewer days or create a new CA with \
         `palisade pki init --force` and reissue every certificate"
    )]
    OutlivesCa {
        /// The requested validity.
        days: u32,
        /// The CA certificate.
        ca_cert: PathBuf,
        /// The CA's notAfter, in seconds since the Unix epoch.
        ca_not_after: i64,
    },

    /// A file would be overwritten and `force` was not given. Nothing was changed.
    #[error("refusing to overwrite {path}: it already exists; nothing was changed (pass --force to replace it)")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// `issue` found no CA in the directory.
    #[error("no CA at {path}: run `palisade pki init --dir {dir}` first")]
    CaMissing {
        /// The PKI directory.
        dir: PathBuf,
        /// The missing CA file.
        path: PathBuf,
    },

    /// The CA key can be read by users other than its owner.
    #[error(
        "refusing to use CA key {path}: its mode is {mode:04o}, so other users can read it; \
         run `chmod 600 {path}` (and consider the CA compromised if others did read it)"
    )]
    CaKeyTooOpen {
        /// The CA key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The CA files exist but are not a usable CA.
    #[error("the CA at {path} is not usable: {reason}; recreate it with `palisade pki init --force` and reissue every certificate")]
    BadCa {
        /// The CA file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A PEM file could not be read as what it should contain.
    #[error("cannot read {what} from {path}: {reason}; expected a PEM file as written by `palisade pki`")]
    Pem {
        /// What the file should hold (`certificate`, `private key`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },

    /// rcgen failed to build or sign a certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },

    /// The system random number generator failed.
    #[error("the system random number generator failed; check that /dev/urandom is available")]
    Random,

    /// A peer certificate is not a well-formed X.509 certificate.
    #[error("peer certificate is malformed: {reason}")]
    MalformedCertificate {
        /// What is wrong with it.
        reason: String,
    },

    /// A certificate names no Palisade role.
    #[error(
        "certificate `{subject}` carries no `urn:palisade:role:` name, so what it is cannot be \
         checked; reissue it with `palisade pki issue`"
    )]
    NoRole {
        /// The certificate's subject, for the log.
        subject: String,
    },

    /// A certificate names more than one role, or a role this version does not know.
    #[error(
        "certificate `{subject}` carries an ambiguous or unknown role ({uris}); a Palisade \
         certificate carries exactly one of urn:palisade:role:gateway|agent|log|witness|operator"
    )]
    AmbiguousRole {
        /// The certificate's subject, for the log.
        subject: String,
        /// The role URIs found, comma separated.
        uris: String,
    },

    /// The peer presented no certificate where one is required.
    #[error("the peer presented no client certificate; it must connect with a certificate issued by `palisade pki issue`")]
    NoPeerCertificate,

    /// The peer's role is not allowed here.
    #[error("peer `{name}` has role `{role}`, but only {allowed} may connect here; use a certificate of an allowed role")]
    RoleNotAllowed {
        /// The peer's role.
        role: Role,
        /// The peer's certificate name.
        name: String,
        /// The allowed roles, comma separated.
        allowed: String,
    },

    /// A TLS configuration was asked to admit no role at all.
    #[error("no roles are allowed, so every peer would be refused; name at least one role")]
    NoRolesAllowed,

    /// A configuration was given a certificate whose role cannot play that side of TLS.
    #[error("certificate {path} has role `{role}`, which cannot act as a TLS {side}; use a certificate of a role that does")]
    WrongSide {
        /// The certificate file.
        path: PathBuf,
        /// Its role.
        role: Role,
        /// `server` or `client`.
        side: &'static str,
    },

    /// rustls refused a configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// rustls refused the trust anchors or verifier settings.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
