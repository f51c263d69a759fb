//! The node condition strings `kube.nodes` may report.
//!
//! A condition's `type`, `status` and `reason` are strings any data-plane principal
//! with `nodes/status` (every kubelet, any node-problem detector, a compromised
//! node) can write. Returned verbatim, they would be a channel from the data plane
//! into the operator's output and the customer's log: a crafted reason can carry
//! content or a forged instruction. So only the well-known condition types, statuses
//! and kubelet/node-controller reasons pass; everything else is reported as
//! [`OTHER`], which still tells the operator that something non-standard is set.

/// What an unknown type, status or reason is reported as.
pub const OTHER: &str = "other";

/// The condition types the kubelet and the cloud route controller set.
pub const TYPES: &[&str] = &[
    "Ready",
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
    "NetworkUnavailable",
];

/// A condition's status (`metav1.ConditionStatus`).
pub const STATUSES: &[&str] = &["True", "False", "Unknown"];

/// The reasons the kubelet (pkg/kubelet/nodestatus), the node lifecycle controller
/// and the cloud route controller set on those types.
pub const REASONS: &[&str] = &[
    "KubeletReady",
    "KubeletNotReady",
    "KubeletHasSufficientMemory",
    "KubeletHasInsufficientMemory",
    "KubeletHasNoDiskPressure",
    "KubeletHasDiskPressure",
    "KubeletHasSufficientPID",
    "KubeletHasInsufficientPID",
    "NodeStatusUnknown",
    "NodeStatusNeverUpdated",
    "RouteCreated",
    "NoRouteCreated",
];

fn known(list: &[&str], value: &str) -> String {
    list.iter()
        .find(|k| **k == value)
        .map_or(OTHER, |k| *k)
        .to_string()
}

/// The condition type if it is a well-known one, else [`OTHER`].
pub fn condition_type(value: &str) -> String {
    known(TYPES, value)
}

/// The status if it is `True`, `False` or `Unknown`, else [`OTHER`].
pub fn status(value: &str) -> String {
    known(STATUSES, value)
}

/// The reason if it is a well-known one, else [`OTHER`].
pub fn reason(value: &str) -> String {
    known(REASONS, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_strings_pass_exactly() {
        assert_eq!(condition_type("Ready"), "Ready");
        assert_eq!(condition_type("ready"), OTHER);
        assert_eq!(condition_type("Ready "), OTHER);
        assert_eq!(status("True"), "True");
        assert_eq!(status("Succeeded"), OTHER);
        assert_eq!(reason("KubeletReady"), "KubeletReady");
        assert_eq!(reason("KubeletReady\u{202e}"), OTHER);
        assert_eq!(reason(""), OTHER);
    }
}
