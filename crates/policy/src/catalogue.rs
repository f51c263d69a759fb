//! The built-in handler catalogue: every action the agent can execute, in one place.
//!
//! For each handler: its parameters with the *widest* constraints the handler code
//! accepts, its target kind, its risk, whether it mutates anything, and the id of the
//! output schema its output is reduced to. The linter checks every policy action
//! against its handler here (a policy may only narrow), the validator applies the
//! handler's own constraints in addition to the policy's, and the agent registers its
//! handler functions under these ids. A handler that is not listed here cannot be
//! named by any policy.
//!
//! Patterns here are anchored like policy patterns (`\A(?:…)\z`) and ASCII-only.

use crate::model::{Duration, ParamType, Risk, Target};

/// The control-plane components the agent supervises.
pub const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Handlers that change an object the customer owns: they run only with the
/// customer's approval, whatever the tenant's statement reserves for approval, and a
/// tenant whose statement names no approvers cannot have them run at all. The gateway
/// asks for the approval and the agent refuses a dispatch that does not carry it.
pub const CUSTOMER_APPROVAL_REQUIRED: &[&str] = &["etcd.restore", "kube.webhook-bypass"];

/// A backup id as `etcd.backup` makes them: `YYYYMMDDTHHMMSSZ-` and 8 hex digits.
pub const BACKUP_ID_PATTERN: &str = "[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}";

/// Whether handler `id` always needs the customer's approval.
pub fn needs_customer_approval(id: &str) -> bool {
    CUSTOMER_APPROVAL_REQUIRED.contains(&id)
}

/// Which certificate of a component `certs.rotate` renews.
pub const CERT_KINDS: &[&str] = &["client", "peer", "serving"];

/// The kinds of admission webhook configuration (`kube.webhook-bypass`'s `kind`).
pub const WEBHOOK_KINDS: &[&str] = &["mutating", "validating"];

/// The etcd alarms an action may disarm (`etcd.alarm-disarm`'s `alarm`, which
/// defaults to the only one). CORRUPT is absent on purpose: recovering from it is
/// replacing the member, never disarming.
pub const DISARMABLE_ALARMS: &[&str] = &["NOSPACE"];

/// A Kubernetes node name: an RFC 1123 DNS subdomain (lower-case letters, digits, `-`
/// and `.`; labels start and end alphanumeric), as `kubectl` and the API server
/// accept it. No leading `-`, no `/`, no spaces, no globs.
pub const NODE_NAME_PATTERN: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
/// The longest node name Kubernetes accepts.
pub const NODE_NAME_MAX: u32 = 253;

/// An etcd member name (`--name`): the instance id, lower-case letters, digits, `-`
/// and `.`, as inventory instance ids are.
pub const MEMBER_NAME_PATTERN: &str = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?";
/// The longest member name accepted.
pub const MEMBER_NAME_MAX: u32 = 63;

/// A release version such as `3.5.17`, `v1.31.2` or `1.31.2-rc.1+build.5`
/// (semantic-versioning shaped; the artifact itself must still be in the TUF
/// repository with its approvals).
pub const VERSION_PATTERN: &str =
    "v?(0|[1-9][0-9]{0,5})\\.(0|[1-9][0-9]{0,5})\\.(0|[1-9][0-9]{0,5})(-[0-9A-Za-z]+(\\.[0-9A-Za-z]+)*)?(\\+[0-9A-Za-z]+(\\.[0-9A-Za-z]+)*)?";
/// The longest version string accepted.
pub const VERSION_MAX: u32 = 64;

/// The type of one handler parameter, as `'static` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerParamType {
    String {
        pattern: &'static str,
        max_length: u32,
    },
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    Duration {
        min_secs: u64,
        max_secs: u64,
    },
    Enum(&'static [&'static str]),
}

/// One parameter a handler accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerParam {
    pub name: &'static str,
    /// Whether the handler needs it; a policy must then require it too.
    pub required: bool,
    pub ty: HandlerParamType,
}

impl HandlerParam {
    /// The widest [`ParamType`] the handler accepts for this parameter.
    pub fn widest(&self) -> ParamType {
        match self.ty {
            HandlerParamType::String {
                pattern,
                max_length,
            } => ParamType::String {
                pattern: Some(pattern.to_string()),
                max_length,
                allow_non_ascii: false,
            },
            HandlerParamType::Integer { min, max } => ParamType::Integer { min, max },
            HandlerParamType::Boolean => ParamType::Boolean,
            HandlerParamType::Duration { min_secs, max_secs } => ParamType::Duration {
                min: Duration::from_secs(min_secs),
                max: Duration::from_secs(max_secs),
            },
            HandlerParamType::Enum(values) => ParamType::Enum {
                values: values.iter().map(|v| (*v).to_string()).collect(),
            },
        }
    }
}

/// One built-in handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handler {
    pub id: &'static str,
    pub summary: &'static str,
    pub target: Target,
    /// The lowest risk a policy may give an action using this handler.
    pub risk: Risk,
    /// Whether it changes anything (cluster state, components, or stored backups).
    pub mutates: bool,
    pub output_schema: &'static str,
    pub params: &'static [HandlerParam],
}

impl Handler {
    pub fn param(&self, name: &str) -> Option<&'static HandlerParam> {
        self.params.iter().find(|p| p.name == name)
    }
}

const COMPONENT: HandlerParamType = HandlerParamType::Enum(COMPONENTS);
const NODE: HandlerParam = HandlerParam {
    name: "node",
    required: true,
    ty: HandlerParamType::String {
        pattern: NODE_NAME_PATTERN,
        max_length: NODE_NAME_MAX,
    },
};

use Risk::{Disruptive, Mutate, Read};
use Target::{Cluster, Instance};

/// Every built-in handler, sorted by id.
pub const HANDLERS: &[Handler] = &[
    Handler {
        id: "certs.expiry",
        summary: "Expiry dates of the instance's control-plane certificates (names and dates only).",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/certs-expiry/v1",
        params: &[],
    },
    Handler {
        id: "certs.rotate",
        summary: "Renew one certificate of a component from the CA on the instance (new key, same names) and restart it with a health wait.",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/certs-rotate/v1",
        params: &[
            HandlerParam {
                name: "component",
                required: true,
                ty: COMPONENT,
            },
            HandlerParam {
                name: "kind",
                required: true,
                ty: HandlerParamType::Enum(CERT_KINDS),
            },
        ],
    },
    Handler {
        id: "component.metrics",
        summary: "Allowlisted metric families of a running component: names and numbers, labels allowlisted, built-in resources only.",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/component-metrics/v1",
        params: &[HandlerParam {
            name: "component",
            required: true,
            ty: COMPONENT,
        }],
    },
    Handler {
        id: "component.restart",
        summary: "Restart one supervised component on the instance from its verified artifact.",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/component-restart/v1",
        params: &[
            HandlerParam {
                name: "component",
                required: true,
                ty: COMPONENT,
            },
            HandlerParam {
                name: "wait_healthy",
                required: false,
                ty: HandlerParamType::Boolean,
            },
        ],
    },
    Handler {
        id: "component.status",
        summary: "State, version and artifact digest of the instance's supervised components.",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/component-status/v1",
        params: &[HandlerParam {
            name: "component",
            required: false,
            ty: COMPONENT,
        }],
    },
    Handler {
        id: "component.upgrade",
        summary: "Replace a component with another version approved in the TUF repository.",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/component-upgrade/v1",
        params: &[
            HandlerParam {
                name: "component",
                required: true,
                ty: COMPONENT,
            },
            HandlerParam {
                name: "version",
                required: true,
                ty: HandlerParamType::String {
                    pattern: VERSION_PATTERN,
                    max_length: VERSION_MAX,
                },
            },
        ],
    },
    Handler {
        id: "etcd.alarm-disarm",
        summary: "Disarm the NOSPACE alarm (after space was reclaimed); CORRUPT is never disarmed.",
        target: Cluster,
        risk: Mutate,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-alarms/v1",
        // CORRUPT is not a value: a member etcd found diverged must be replaced, and
        // re-opening it to writes would let it serve diverged data.
        params: &[HandlerParam {
            name: "alarm",
            required: false,
            ty: HandlerParamType::Enum(DISARMABLE_ALARMS),
        }],
    },
    Handler {
        id: "etcd.alarms",
        summary: "List active etcd alarms.",
        target: Cluster,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-alarms/v1",
        params: &[],
    },
    Handler {
        id: "etcd.backup",
        summary: "Take an encrypted etcd snapshot and upload it with a signed manifest.",
        target: Cluster,
        risk: Mutate,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-backup/v1",
        params: &[],
    },
    Handler {
        id: "etcd.backup-prune",
        summary: "Delete old backups, keeping the newest `keep_last` and anything newer than `older_than`.",
        target: Cluster,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-backup-prune/v1",
        params: &[
            HandlerParam {
                name: "keep_last",
                required: true,
                ty: HandlerParamType::Integer { min: 1, max: 1000 },
            },
            HandlerParam {
                name: "older_than",
                required: false,
                ty: HandlerParamType::Duration {
                    min_secs: 3_600,
                    max_secs: 366 * 86_400,
                },
            },
        ],
    },
    Handler {
        id: "etcd.backups",
        summary: "List backups: ids, times, sizes and manifest digests.",
        target: Cluster,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-backups/v1",
        params: &[],
    },
    Handler {
        id: "etcd.compact",
        summary: "Compact etcd's history to the current revision minus `retain_revisions` (numbers only).",
        target: Cluster,
        risk: Mutate,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-compact/v1",
        params: &[HandlerParam {
            name: "retain_revisions",
            required: true,
            ty: HandlerParamType::Integer {
                min: 0,
                max: 100_000_000,
            },
        }],
    },
    Handler {
        id: "etcd.defragment",
        summary: "Defragment the instance's etcd member (blocks that member while it runs).",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-defragment/v1",
        params: &[],
    },
    Handler {
        id: "etcd.health",
        summary: "Health of the instance's etcd member.",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-health/v1",
        params: &[],
    },
    Handler {
        id: "etcd.member-join",
        summary: "Join this (replacement) instance's empty etcd member to the cluster: added as a learner, caught up, promoted.",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-member-join/v1",
        params: &[],
    },
    Handler {
        id: "etcd.member-remove",
        summary: "Remove one etcd member that has been unhealthy for the configured time, only if quorum remains without it.",
        target: Cluster,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-member-remove/v1",
        params: &[HandlerParam {
            name: "member",
            required: true,
            ty: HandlerParamType::String {
                pattern: MEMBER_NAME_PATTERN,
                max_length: MEMBER_NAME_MAX,
            },
        }],
    },
    Handler {
        id: "etcd.members",
        summary: "etcd cluster membership: member ids, names, peer URLs, learner flags.",
        target: Cluster,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-members/v1",
        params: &[],
    },
    Handler {
        id: "etcd.quota",
        summary: "The member's database size, the part in use and its backend quota (numbers only).",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-quota/v1",
        params: &[],
    },
    Handler {
        id: "etcd.restore",
        summary: "Restore this instance's etcd member from an encrypted backup (decrypted by the customer's KMS plugin); needs the customer's approval. Run on every member.",
        target: Instance,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/etcd-restore/v1",
        params: &[HandlerParam {
            name: "backup_id",
            required: true,
            ty: HandlerParamType::String {
                pattern: BACKUP_ID_PATTERN,
                max_length: 32,
            },
        }],
    },
    Handler {
        id: "etcd.status",
        summary: "Status of the instance's etcd member: version, DB size, leader, raft index.",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/etcd-status/v1",
        params: &[],
    },
    Handler {
        id: "instance.resources",
        summary: "CPU, memory and disk usage of the instance (totals only).",
        target: Instance,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/instance-resources/v1",
        params: &[],
    },
    Handler {
        id: "kube.cordon",
        summary: "Mark a node unschedulable.",
        target: Cluster,
        risk: Mutate,
        mutates: true,
        output_schema: "palisade.dev/output/kube-node/v1",
        params: &[NODE],
    },
    Handler {
        id: "kube.nodes",
        summary: "List nodes: names, conditions, versions, schedulability (no pod data).",
        target: Cluster,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/kube-nodes/v1",
        params: &[],
    },
    Handler {
        id: "kube.uncordon",
        summary: "Mark a node schedulable again.",
        target: Cluster,
        risk: Mutate,
        mutates: true,
        output_schema: "palisade.dev/output/kube-node/v1",
        params: &[NODE],
    },
    Handler {
        id: "kube.webhook-bypass",
        summary: "Set failurePolicy Ignore on one admission webhook that blocks the API server; needs the customer's approval.",
        target: Cluster,
        risk: Disruptive,
        mutates: true,
        output_schema: "palisade.dev/output/kube-webhook-bypass/v1",
        params: &[
            HandlerParam {
                name: "kind",
                required: true,
                ty: HandlerParamType::Enum(WEBHOOK_KINDS),
            },
            HandlerParam {
                name: "configuration",
                required: true,
                ty: HandlerParamType::String {
                    pattern: NODE_NAME_PATTERN,
                    max_length: NODE_NAME_MAX,
                },
            },
            HandlerParam {
                name: "webhook",
                required: true,
                ty: HandlerParamType::String {
                    pattern: NODE_NAME_PATTERN,
                    max_length: NODE_NAME_MAX,
                },
            },
        ],
    },
    Handler {
        id: "kube.webhooks",
        summary: "Admission webhooks: names, failurePolicy, timeout, target host, rejection and call-error counts.",
        target: Cluster,
        risk: Read,
        mutates: false,
        output_schema: "palisade.dev/output/kube-webhooks/v1",
        params: &[],
    },
];

/// The handler with this id, if there is one.
pub fn handler_by_id(id: &str) -> Option<&'static Handler> {
    HANDLERS.iter().find(|h| h.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_sorted_unique_and_consistent() {
        for pair in HANDLERS.windows(2) {
            if let [a, b] = pair {
                assert!(a.id < b.id, "{} before {}", a.id, b.id);
            }
        }
        for h in HANDLERS {
            assert!(
                palisade_core::ActionName::parse(h.id).is_ok(),
                "{} is not an action name",
                h.id
            );
            assert_eq!(h.mutates, h.risk > Risk::Read, "{}", h.id);
            assert!(h.output_schema.starts_with("palisade.dev/output/"));
            for p in h.params {
                if let HandlerParamType::String { pattern, .. } = p.ty {
                    assert!(pattern.is_ascii(), "{}.{}", h.id, p.name);
                    assert!(
                        regex::Regex::new(&format!("\\A(?:{pattern})\\z")).is_ok(),
                        "{}.{}",
                        h.id,
                        p.name
                    );
                }
            }
        }
    }

    /// Every handler has its row in the policy guide's catalogue and a place in an
    /// incident runbook.
    #[test]
    fn every_handler_is_documented() {
        let policy = include_str!("../../../docs/policy.md");
        let runbooks = include_str!("../../../docs/runbooks.md");
        for h in HANDLERS {
            assert!(
                policy.contains(&format!("| `{}` |", h.id)),
                "{} has no row in docs/policy.md",
                h.id
            );
            assert!(
                runbooks.contains(h.id),
                "{} is in no runbook of docs/runbooks.md",
                h.id
            );
        }
        for id in CUSTOMER_APPROVAL_REQUIRED {
            assert!(handler_by_id(id).is_some(), "{id} is not a handler");
        }
    }

    #[test]
    fn backup_prune_bounds() {
        let h = handler_by_id("etcd.backup-prune").expect("listed");
        let older = h.param("older_than").expect("param");
        assert_eq!(
            older.ty,
            HandlerParamType::Duration {
                min_secs: 3_600,
                max_secs: 366 * 86_400
            }
        );
    }
}
