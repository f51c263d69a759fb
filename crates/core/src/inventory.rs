//! The inventory: which tenants own which clusters, and which control-plane instances
//! (agents) each cluster has. Read by the gateway and the log; `palisade up` writes a
//! demo one (tenant `demo`, cluster `demo`, instance `demo-0`).

use crate::config::{FieldError, ProcessConfig};
use crate::id::{ClusterId, InstanceId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where `palisade up` keeps what belongs to the demo tenant, apart from everything
/// the provider side holds (paths relative to the stack's directory).
pub mod demo_tenant {
    /// The tenant's own directory.
    pub const DIR: &str = "tenant-demo";
    /// The tenant's statement key (`.key` private, `.pub` public).
    pub const KEY: &str = "tenant-demo/tenant.key";
    pub const PUBLIC_KEY: &str = "tenant-demo/tenant.pub";
    /// The tenant's witness: its name, key, and the statement naming it.
    pub const WITNESS_NAME: &str = "tenant-demo.example/witness";
    pub const WITNESS_KEY: &str = "tenant-demo/witness/keys/tenant-demo.example_witness.key";
    pub const WITNESS_PUBLIC_KEY: &str = "tenant-demo/witness/keys/tenant-demo.example_witness.pub";
    pub const TRUST_STATEMENT: &str = "tenant-demo/trust.json";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<Tenant>,
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: TenantId,
    /// A human name for displays.
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub id: ClusterId,
    pub tenant: TenantId,
    #[serde(default, rename = "instance")]
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub id: InstanceId,
    /// Where this instance's agent listens (`https://host:port`).
    pub agent_url: String,
}

impl Inventory {
    /// The inventory `palisade up` starts with.
    pub fn demo(agent_url: &str) -> Self {
        Self::demo_instances(&[agent_url.to_string()])
    }

    /// The demo inventory with one instance per agent URL (`demo-0`, `demo-1`, …).
    pub fn demo_instances(agent_urls: &[String]) -> Self {
        Inventory {
            tenants: vec![Tenant {
                id: TenantId::from_literal("demo"),
                display_name: "Demo tenant".into(),
            }],
            clusters: vec![Cluster {
                id: ClusterId::from_literal("demo"),
                tenant: TenantId::from_literal("demo"),
                instances: agent_urls
                    .iter()
                    .enumerate()
                    .filter_map(|(i, url)| {
                        Some(Instance {
                            id: InstanceId::parse(&format!("demo-{i}")).ok()?,
                            agent_url: url.clone(),
                        })
                    })
                    .collect(),
            }],
        }
    }

    pub fn cluster(&self, id: &ClusterId) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &c.id == id)
    }
}

impl ProcessConfig for Inventory {
    const PROCESS: &'static str = "inventory";

    fn validate(&self) -> Result<(), FieldError> {
        let mut tenants = BTreeSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !tenants.insert(&t.id) {
                return Err(FieldError::new(
                    format!("tenant[{i}].id"),
                    format!("tenant {} is listed twice", t.id),
                ));
            }
        }
        let mut clusters = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !clusters.insert(&c.id) {
                return Err(FieldError::new(
                    format!("cluster[{i}].id"),
                    format!("cluster {} is listed twice", c.id),
                ));
            }
            if !tenants.contains(&c.tenant) {
                return Err(FieldError::new(
                    format!("cluster[{i}].tenant"),
                    format!("tenant {} is not declared in a [[tenant]] table", c.tenant),
                ));
            }
            let mut instances = BTreeSet::new();
            for (j, inst) in c.instances.iter().enumerate() {
                let field = format!("cluster[{i}].instance[{j}]");
                if !instances.insert(&inst.id) {
                    return Err(FieldError::new(
                        format!("{field}.id"),
                        format!("instance {} is listed twice", inst.id),
                    ));
                }
                if !inst.agent_url.starts_with("https://") {
                    return Err(FieldError::new(
                        format!("{field}.agent_url"),
                        format!(
                            "{:?} must be an https:// URL (agents only speak mTLS)",
                            inst.agent_url
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with;
    use std::path::Path;

    fn parse(text: &str) -> Result<Inventory, crate::config::ConfigError> {
        parse_with(text, Path::new("inventory.toml"), Path::new("."), &|_| None)
    }

    #[test]
    fn demo_inventory_round_trips_through_toml() {
        let demo = Inventory::demo("https://127.0.0.1:7403");
        assert_eq!(demo.clusters[0].instances[0].id.as_str(), "demo-0");
        let text = toml::to_string(&demo).expect("toml");
        assert_eq!(parse(&text).expect("valid"), demo);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("[[tenant]]\nid = \"a\"\n[[cluster]]\nid = \"c\"\ntenant = \"b\"\n")
            .expect_err("tenant");
        assert_eq!(err.field.as_deref(), Some("cluster[0].tenant"), "{err}");
        let err = parse("[[tenant]]\nid = \"A\"\n").expect_err("bad id");
        assert!(err.to_string().contains("tenant id \"A\""), "{err}");
        let err = parse(
            "[[tenant]]\nid = \"a\"\n[[cluster]]\nid = \"c\"\ntenant = \"a\"\n[[cluster.instance]]\nid = \"i\"\nagent_url = \"http://x\"\n",
        )
        .expect_err("url");
        assert_eq!(
            err.field.as_deref(),
            Some("cluster[0].instance[0].agent_url"),
            "{err}"
        );
    }
}
