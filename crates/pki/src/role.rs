//! What a certificate is for: the [`Role`] it carries, the [`CertName`] it is issued to,
//! and the extra [`SubjectAltName`]s a serving role may be reached at.
//!
//! All three are parsed once, here, from the strings an operator types; the rest of the
//! crate only accepts the parsed types.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::ExtendedKeyUsagePurpose;

use crate::error::{Error, Result};

/// The URI subject alternative name prefix that carries a certificate's role:
/// `urn:palisade:role:<role>`.
///
/// Why a URI SAN (as SPIFFE does with `spiffe://…`): it is a standard X.509 field that
/// every TLS stack carries through untouched, it needs no private OID, and it is read by
/// the peer *after* chain validation, so only the CA can have put it there. The CA
/// signing a certificate says "this is ours"; the role says *what* is calling.
pub const ROLE_URI_PREFIX: &str = "urn:palisade:role:";

/// A Palisade process kind, as carried in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The administrative API: serves operators, calls agents and the log.
    Gateway,
    /// The door into a control-plane instance: serves the gateway; calls the log.
    Agent,
    /// The per-cluster Merkle log: serves appends and reads, calls witnesses.
    Log,
    /// A checkpoint cosigner: only serves.
    Witness,
    /// A person on call: only calls the gateway.
    Operator,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 5] = [
        Role::Gateway,
        Role::Agent,
        Role::Log,
        Role::Witness,
        Role::Operator,
    ];

    /// The lowercase name used on the command line, in file names and in the role URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Agent => "agent",
            Role::Log => "log",
            Role::Witness => "witness",
            Role::Operator => "operator",
        }
    }

    /// Whether this role runs a TLS server (its certificate gets `serverAuth` and host names).
    pub fn serves(self) -> bool {
        !matches!(self, Role::Operator)
    }

    /// Whether this role connects to other Palisade processes (its certificate gets `clientAuth`).
    pub fn calls(self) -> bool {
        !matches!(self, Role::Witness)
    }

    /// The role URI carried in the certificate, `urn:palisade:role:<role>`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    /// The extended key usages a certificate of this role needs, so that a stack checking
    /// EKUs (rustls, OpenSSL) refuses the certificate on the side of TLS the role never plays.
    pub(crate) fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        let mut ekus = Vec::with_capacity(2);
        if self.serves() {
            ekus.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.calls() {
            ekus.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        ekus
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    /// Parses the exact lowercase role name; anything else is refused, so a role URI
    /// has one spelling only.
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::InvalidRole {
                value: s.to_owned(),
            })
    }
}

/// A certificate's name: its CN, the `<name>` in `<role>-<name>.crt`, and (for serving
/// roles) a DNS name in its SANs.
///
/// 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit: a DNS label, so the name is always a valid host name and a safe file name
/// (no `/`, no `..`, no leading dot or dash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertName(String);

impl CertName {
    /// Parses and checks a name.
    pub fn new(value: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > 63 {
            return Err(invalid("it is longer than 63 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "it contains a character other than a-z, 0-9 and `-`",
            ));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(invalid("it starts or ends with `-`"));
        }
        Ok(CertName(value.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CertName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        CertName::new(s)
    }
}

impl AsRef<str> for CertName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An extra name a serving certificate is valid for, beyond its own name, `localhost`,
/// `127.0.0.1` and `::1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS host name, stored lowercase.
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl FromStr for SubjectAltName {
    type Err = Error;

    /// An IP address if it parses as one, else a DNS name: dot-separated labels of
    /// 1 to 63 letters, digits and `-` (not at either end), 253 characters at most.
    /// Wildcards are refused: every Palisade server has its own certificate.
    fn from_str(s: &str) -> Result<Self> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(SubjectAltName::Ip(ip));
        }
        let invalid = |reason| Error::InvalidSan {
            value: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > 253 {
            return Err(invalid("it is longer than 253 characters"));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(invalid("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(invalid("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(invalid(
                    "it contains a character other than letters, digits, `-` and `.`",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with `-`"));
            }
        }
        Ok(SubjectAltName::Dns(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => f.write_str(name),
            SubjectAltName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert!("Gateway".parse::<Role>().is_err());
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn every_role_plays_the_tls_sides_it_needs() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert_eq!(
            Role::Gateway.extended_key_usages(),
            [ServerAuth, ClientAuth]
        );
        assert_eq!(Role::Agent.extended_key_usages(), [ServerAuth, ClientAuth]);
        assert_eq!(Role::Log.extended_key_usages(), [ServerAuth, ClientAuth]);
        assert_eq!(Role::Witness.extended_key_usages(), [ServerAuth]);
        assert_eq!(Role::Operator.extended_key_usages(), [ClientAuth]);
    }

    #[test]
    fn names_follow_the_dns_label_rule() {
        for good in ["a", "gw-1", "0", "agent-cluster-7", &"a".repeat(63)] {
            assert!(CertName::new(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            "",
            "-gw",
            "gw-",
            "GW",
            "gw_1",
            "gw.1",
            "../ca",
            "a/b",
            "gw 1",
            "é",
            &"a".repeat(64),
        ] {
            let err = CertName::new(bad).err();
            assert!(
                matches!(&err, Some(Error::InvalidName { value, .. }) if value == bad),
                "{bad:?} should be refused naming the value, got {err:?}"
            );
        }
    }

    #[test]
    fn extra_sans_are_ips_or_dns_names() {
        assert_eq!(
            "10.0.0.5".parse::<SubjectAltName>().ok(),
            Some(SubjectAltName::Ip([10, 0, 0, 5].into()))
        );
        assert!(matches!(
            "::1".parse::<SubjectAltName>(),
            Ok(SubjectAltName::Ip(_))
        ));
        assert_eq!(
            "GW.Example.internal".parse::<SubjectAltName>().ok(),
            Some(SubjectAltName::Dns("gw.example.internal".into()))
        );
        for bad in ["", "*.example.com", "a..b", "-a.b", "a b", "a/b"] {
            assert!(
                matches!(bad.parse::<SubjectAltName>(), Err(Error::InvalidSan { .. })),
                "{bad:?} should be refused"
            );
        }
    }
}
