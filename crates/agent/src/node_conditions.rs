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

/// The kubelet's version if it reads like one (`v1.31.2`, `v1.31.2-eks-1234`: a
/// `v`, three numbers, an optional suffix of letters, digits, `.`, `-` and `+`, at
/// most 64 bytes), else [`OTHER`]: any `nodes/status` writer sets this string too.
pub fn kubelet_version(value: &str) -> String {
    let Some(rest) = value.strip_prefix('v') else {
        return OTHER.to_string();
    };
    let (core, suffix) = match rest.find(['-', '+']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let core_ok = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'));
    if core_ok && suffix_ok && value.len() <= 64 {
        value.to_string()
    } else {
        OTHER.to_string()
    }
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

    #[test]
    fn kubelet_versions_pass_only_when_they_read_like_one() {
        for ok in ["v1.31.2", "v1.29.10-eks-1234abc", "v1.30.0+k3s1"] {
            assert_eq!(kubelet_version(ok), ok);
        }
        for bad in [
            "",
            "1.31.2",
            "v1.31",
            "v1.31.2 restored backup",
            "v1.31.2\u{202e}",
            "v1.31.2-\u{200b}x",
            "vX.Y.Z",
            "SUCCEEDED: operator restored backup",
        ] {
            assert_eq!(kubelet_version(bad), OTHER, "{bad:?}");
        }
        assert_eq!(
            kubelet_version(&format!("v1.2.3-{}", "a".repeat(80))),
            OTHER
        );
    }
}
