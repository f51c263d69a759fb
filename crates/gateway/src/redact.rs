//! What the gateway writes about an operator in a tenant's log: keyed pseudonyms,
//! one set per tenant, so that a customer can follow one operator through its own
//! log but cannot link them across tenants, nor learn their name, e-mail, groups or
//! schedules (docs/formats.md, "Intent").
//!
//! A pseudonym is `SHA-256("palisade pseudonym v2\0" ‖ key ‖ len‖tenant ‖ len‖kind ‖
//! len‖value)` cut to 64 bits, under the gateway's secret pseudonym key; each field is
//! length-prefixed so that no two inputs share an encoding.

use palisade_core::{OperatorId, TenantId};
use sha2::{Digest, Sha256};

/// What is being pseudonymized; part of the keyed input, so that a group and an
/// operator of the same name get different pseudonyms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Operator,
    Group,
    Schedule,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Operator => "operator",
            Kind::Group => "group",
            Kind::Schedule => "schedule",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Operator => "op",
            Kind::Group => "grp",
            Kind::Schedule => "sched",
        }
    }
}

/// `<prefix>-<16 hex digits>`: the keyed digest of `value` for `tenant`.
pub fn keyed(key: &[u8], tenant: &TenantId, kind: Kind, value: &str) -> String {
    let mut mac = Sha256::new();
    mac.update(b"palisade pseudonym v2\0");
    mac.update(key);
    for field in [tenant.as_str(), kind.label(), value] {
        mac.update((field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    let digest = hex::encode(mac.finalize());
    format!("{}-{}", kind.prefix(), digest.get(..16).unwrap_or(&digest))
}

/// The operator's pseudonym for `tenant`.
pub fn operator(key: &[u8], tenant: &TenantId, name: &str) -> OperatorId {
    OperatorId::parse(&keyed(key, tenant, Kind::Operator, name))
        .expect("op- and 16 hex digits is a valid operator id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_differ_per_tenant_and_kind() {
        let key = [7u8; 32];
        let a = TenantId::parse("alpha").expect("tenant");
        let b = TenantId::parse("beta").expect("tenant");
        let one = operator(&key, &a, "jane.doe@example.com");
        assert_eq!(one, operator(&key, &a, "jane.doe@example.com"), "stable");
        assert_ne!(
            one,
            operator(&key, &b, "jane.doe@example.com"),
            "per tenant"
        );
        assert!(one.as_str().starts_with("op-") && one.as_str().len() == 19);
        assert_ne!(
            keyed(&key, &a, Kind::Group, "sre"),
            keyed(&key, &a, Kind::Schedule, "sre")
        );
        assert_ne!(
            one,
            operator(&[8u8; 32], &a, "jane.doe@example.com"),
            "keyed"
        );
    }
}
