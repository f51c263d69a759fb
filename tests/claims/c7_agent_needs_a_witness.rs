//! Claim C7 at the agent: a checkpoint is trusted only with the cosignatures of
//! witnesses, so an agent configured to need none (no witness listed, or a quorum of
//! 0) would accept a fork only the log's key signed. Such a configuration does not
//! start, and `palisade agent check` says why — as does `palisade-agent`, the agent
//! binary built for instances.

#[path = "../e2e/common.rs"]
mod common;

use common::palisade;

const EXAMPLE: &str = include_str!("../../deploy/agent/agent.example.toml");

fn variant(edit: impl Fn(&str) -> Option<String>) -> String {
    EXAMPLE.lines().filter_map(edit).map(|l| l + "\n").collect()
}

/// `palisade agent <sub> --config <text>` (or `palisade-agent <sub> …` when
/// `dedicated`): its exit status and standard error.
fn agent_with(dedicated: bool, sub: &str, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    let mut cmd = if dedicated {
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
    } else {
        let mut c = palisade();
        c.arg("agent");
        c
    };
    let out = cmd
        .args([sub, "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run palisade agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn agent(sub: &str, text: &str) -> (bool, String) {
    agent_with(false, sub, text)
}

#[test]
fn an_agent_without_witnesses_or_with_quorum_zero_does_not_start() {
    // The example itself passes this check (it fails later, on keys this machine
    // does not have): the refusals below are about the witnesses alone.
    let (_, err) = agent("check", EXAMPLE);
    assert!(!err.contains("log.witness"), "{err}");

    let in_witness_list = std::cell::Cell::new(false);
    let no_witness = variant(|l| {
        if l.starts_with("witnesses = [") {
            in_witness_list.set(!l.contains(']'));
            return None;
        }
        if in_witness_list.get() {
            if l.starts_with(']') {
                in_witness_list.set(false);
            }
            return None;
        }
        (!l.starts_with("witness_quorum")).then(|| l.to_string())
    });
    assert!(
        !no_witness.contains("witnesses =")
            && !no_witness.contains("witness_quorum")
            && !no_witness.contains("BD5Z7lkP"),
        "{no_witness}"
    );
    let quorum_zero = variant(|l| {
        Some(if l.starts_with("witness_quorum") {
            "witness_quorum = 0".to_string()
        } else {
            l.to_string()
        })
    });
    for (config, field, why) in [
        (
            &no_witness,
            "log.witnesses",
            "at least one witness is needed",
        ),
        (&quorum_zero, "log.witness_quorum", "must be at least 1"),
    ] {
        for sub in ["check", "serve"] {
            for dedicated in [false, true] {
                let (ok, err) = agent_with(dedicated, sub, config);
                assert!(
                    !ok,
                    "agent {sub} (dedicated binary: {dedicated}) accepted a configuration with {field} unset"
                );
                assert!(err.contains(field) && err.contains(why), "{sub}: {err}");
            }
        }
    }
}
