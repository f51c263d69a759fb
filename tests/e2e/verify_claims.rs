//! `palisade verify-claims` end to end: it starts its own deployment, attacks every
//! claim, and writes the three report files; all eight claims hold with at least ten
//! scenarios each and 120 in total, and the HTML report is self-contained.

#[path = "common.rs"]
mod common;

use common::palisade;
use serde_json::Value;
use std::collections::BTreeMap;

#[test]
fn verify_claims_attacks_every_claim_and_all_hold() {
    let out = tempfile::tempdir().expect("tempdir");
    let report_dir = out.path().join("report");
    let run = palisade()
        .args(["verify-claims", "--out"])
        .arg(&report_dir)
        .output()
        .expect("run palisade verify-claims");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "verify-claims failed:\n{stdout}\n{stderr}"
    );

    for f in ["report.json", "report.md", "report.html"] {
        assert!(report_dir.join(f).is_file(), "{f} is missing");
    }
    let report: Value = serde_json::from_slice(
        &std::fs::read(report_dir.join("report.json")).expect("read report.json"),
    )
    .expect("report.json is JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 120, "only {} scenarios", scenarios.len());
    let mut per_claim: BTreeMap<String, usize> = BTreeMap::new();
    for s in scenarios {
        assert_eq!(s["verdict"], "pass", "{s}");
        assert!(
            !s["evidence"].as_array().expect("evidence").is_empty(),
            "{} has no evidence",
            s["id"]
        );
        *per_claim
            .entry(s["claim"].as_str().expect("claim").to_string())
            .or_default() += 1;
    }
    for c in ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"] {
        let n = per_claim.get(c).copied().unwrap_or(0);
        assert!(n >= 10, "{c} has only {n} scenarios");
    }
    let claims = report["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), 8);
    assert!(claims.iter().all(|c| c["verdict"] == "pass"), "{claims:?}");
    assert!(report["versions"]["policy_digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));

    // One summary line per claim.
    for c in ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{c} PASS"))),
            "no summary line for {c}:\n{stdout}"
        );
    }

    // The HTML loads nothing from anywhere.
    let html = std::fs::read_to_string(report_dir.join("report.html")).expect("read html");
    for attr in ["src=", "href="] {
        for quote in ["\"", "'", ""] {
            for scheme in ["http://", "https://", "//"] {
                let needle = format!("{attr}{quote}{scheme}");
                assert!(!html.contains(&needle), "report.html references {needle}");
            }
        }
    }
    assert!(!html.contains("<script"), "report.html has a script");
    assert!(!html.contains("<link"), "report.html links an asset");
    assert!(html.contains("<details"), "evidence is not expandable");
}

/// The same attacks on a three-member etcd cluster (`palisade up --instances 3`):
/// every existing action and scenario holds with instance demo-0 one of three.
#[test]
fn verify_claims_hold_on_a_three_member_cluster() {
    let out = tempfile::tempdir().expect("tempdir");
    let report_dir = out.path().join("report");
    let run = palisade()
        .args(["verify-claims", "--instances", "3", "--out"])
        .arg(&report_dir)
        .output()
        .expect("run palisade verify-claims");
    let failed: Vec<String> = std::fs::read(report_dir.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|r| r["scenarios"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["verdict"] != "pass")
        .map(|s| format!("{}: {}", s["id"], s["evidence"]))
        .collect();
    assert!(
        run.status.success(),
        "verify-claims --instances 3 failed:\n{}\nfailed scenarios:\n{}",
        String::from_utf8_lossy(&run.stdout),
        failed.join("\n")
    );
    let report: Value = serde_json::from_slice(
        &std::fs::read(report_dir.join("report.json")).expect("read report.json"),
    )
    .expect("report.json is JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 120, "only {} scenarios", scenarios.len());
    assert!(scenarios.iter().all(|s| s["verdict"] == "pass"));
}
