//! Downgrades (claim C8): a component is never replaced by a lower version unless
//! that exact downgrade was itself approved as a release.
//!
//! An older approved release stays in the repository, so "approved" alone would let
//! an operator roll a component back to a version with known flaws. A release may
//! instead be published *marked as a rollback* from one version (`rollback_from` in
//! its signed custom data, part of the statement the author signs and M-of-N
//! reviewers approve, so the pipeline key alone cannot add it). [`check_upgrade`]
//! allows going from `running` to a lower `requested` only when the requested
//! release carries `rollback_from == running`.
//!
//! Versions compare as semantic versions (`v`-prefix ignored, build metadata
//! ignored, a pre-release lower than its release). Two spellings of one version
//! (`3.5.17+a` and `3.5.17+b`, `v3.5.17` and `3.5.17`) are different builds: moving
//! between them needs the same mark as a downgrade.

use std::cmp::Ordering;

/// A version as the catalogue's `VERSION_PATTERN` admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseVersion {
    core: [u64; 3],
    pre: Vec<String>,
}

/// Why a version change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DowngradeError {
    #[error("version {0:?} is not of the form MAJOR.MINOR.PATCH[-PRE][+BUILD]; the change is refused because it cannot be told apart from a downgrade")]
    Unparsable(String),
    #[error("{requested} is lower than the running {running}: a downgrade needs a release of {requested} approved as a rollback from {running} (`palisade release propose --rollback-from {running}`){}", marked_note(.marked_from))]
    NotApprovedRollback {
        running: String,
        requested: String,
        marked_from: Option<String>,
    },
    #[error("{requested} is another build of the running {running} (same version, other spelling): switching builds needs a release of {requested} approved as a rollback from {running} (`palisade release propose --rollback-from {running}`)")]
    OtherBuildOfTheSameVersion { running: String, requested: String },
}

fn marked_note(m: &Option<String>) -> String {
    match m {
        Some(from) => format!("; this release is approved as a rollback from {from} only"),
        None => String::new(),
    }
}

impl ReleaseVersion {
    pub fn parse(s: &str) -> Result<Self, DowngradeError> {
        let bad = || DowngradeError::Unparsable(s.chars().take(64).collect());
        let v = s.strip_prefix('v').unwrap_or(s);
        let v = v.split_once('+').map_or(v, |(v, _build)| v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let mut parts = core.split('.');
        let mut nums = [0u64; 3];
        for n in &mut nums {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            *n = p.parse().map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        let pre = match pre {
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_string).collect();
                if ids
                    .iter()
                    .any(|i| i.is_empty() || !i.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(bad());
                }
                ids
            }
            None => Vec::new(),
        };
        Ok(Self { core: nums, pre })
    }
}

fn cmp_pre_id(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl Ord for ReleaseVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = cmp_pre_id(a, b);
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for ReleaseVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether replacing `running` by the approved release `requested` (whose signed
/// `rollback_from` mark is `rollback_from`) is allowed: the same or a higher
/// version always; a lower one only when that release is approved as a rollback
/// from exactly `running`.
pub fn check_upgrade(
    running: &str,
    requested: &str,
    rollback_from: Option<&str>,
) -> Result<(), DowngradeError> {
    let from = ReleaseVersion::parse(running)?;
    let to = ReleaseVersion::parse(requested)?;
    if to > from || requested == running || rollback_from == Some(running) {
        return Ok(());
    }
    if to == from {
        return Err(DowngradeError::OtherBuildOfTheSameVersion {
            running: running.chars().take(64).collect(),
            requested: requested.chars().take(64).collect(),
        });
    }
    Err(DowngradeError::NotApprovedRollback {
        running: running.chars().take(64).collect(),
        requested: requested.chars().take(64).collect(),
        marked_from: rollback_from.map(|m| m.chars().take(64).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ReleaseVersion {
        ReleaseVersion::parse(s).expect(s)
    }

    #[test]
    fn versions_order_as_semver() {
        let ordered = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "v1.0.1",
            "1.10.0",
            "3.4.23",
            "3.4.99-test",
        ];
        for pair in ordered.windows(2) {
            if let [a, b] = pair {
                assert!(v(a) < v(b), "{a} < {b}");
            }
        }
        assert_eq!(v("v1.2.3+build.5"), v("1.2.3"));
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.x",
            "1.2.3-",
            "1.2.3-a..b",
            "-1.2.3",
        ] {
            assert!(ReleaseVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn downgrade_needs_a_rollback_mark_from_the_running_version() {
        assert!(check_upgrade("3.5.17", "3.5.18", None).is_ok());
        assert!(check_upgrade("3.5.17", "3.5.17", None).is_ok());
        assert!(matches!(
            check_upgrade("3.5.17", "3.5.16", None),
            Err(DowngradeError::NotApprovedRollback { .. })
        ));
        assert!(check_upgrade("3.5.17", "3.5.16", Some("3.5.17")).is_ok());
        // Another build of the same version is a switch the reviewers must approve.
        for other in ["3.5.17+b", "v3.5.17"] {
            assert!(matches!(
                check_upgrade("3.5.17+a", other, None),
                Err(DowngradeError::OtherBuildOfTheSameVersion { .. })
            ));
            assert!(check_upgrade("3.5.17+a", other, Some("3.5.17+a")).is_ok());
        }
        assert!(check_upgrade("3.5.17+a", "3.5.17+a", None).is_ok());
        assert!(matches!(
            check_upgrade("3.5.17", "3.5.16", Some("3.5.20")),
            Err(DowngradeError::NotApprovedRollback { .. })
        ));
        assert!(matches!(
            check_upgrade("latest", "3.5.16", None),
            Err(DowngradeError::Unparsable(_))
        ));
    }
}
