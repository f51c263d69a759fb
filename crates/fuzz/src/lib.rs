//! The bodies of Palisade's fuzz targets: one function per parser that reads bytes
//! an attacker sends over the network or a storage insider can write.
//!
//! Each function takes arbitrary bytes, runs them through the same code the services
//! run, and asserts the properties that must hold whatever the input (no panic, no
//! unbounded allocation, a parse that succeeds re-encodes to the same bytes, a value
//! that opens under a key really was signed by it). The cargo-fuzz project in
//! `fuzz/` at the repository root wraps each in a `fuzz_target!`; this crate's tests
//! replay every kept corpus and regression input through the same functions, so a
//! crash found once stays a test. `scripts/fuzz.sh` runs the campaign.
#![forbid(unsafe_code)]

mod keys;
pub mod seeds;
pub mod targets;

/// One fuzz target: its name (the cargo-fuzz binary and corpus directory) and body.
pub struct Target {
    pub name: &'static str,
    /// What it feeds and to whom, for the campaign's report.
    pub reads: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order the campaign runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "dispatch_request",
        reads: "the agent's dispatch request (JSON), its DSSE envelope, the signed dispatch, the intent entry and its tlog-proof",
        run: targets::dispatch_request,
    },
    Target {
        name: "access_event",
        reads: "log entries (access events) as the customer's verifier and the agent decode them",
        run: targets::access_event,
    },
    Target {
        name: "append_query",
        reads: "the log's append query string",
        run: targets::append_query,
    },
    Target {
        name: "log_journal",
        reads: "the log's journal file, as a restarting log replays it",
        run: targets::log_journal,
    },
    Target {
        name: "add_checkpoint",
        reads: "the witness's add-checkpoint body (C2SP tlog-witness), through the cosigning decision",
        run: targets::add_checkpoint,
    },
    Target {
        name: "signed_note",
        reads: "signed notes, checkpoints, note signature lines and verifier keys",
        run: targets::signed_note,
    },
    Target {
        name: "tile",
        reads: "tile paths and entry bundles (C2SP tlog-tiles)",
        run: targets::tile,
    },
    Target {
        name: "tlog_proof",
        reads: "tlog-proof files (C2SP tlog-proof)",
        run: targets::tlog_proof,
    },
    Target {
        name: "backup_manifest",
        reads: "signed backup manifests from object storage",
        run: targets::backup_manifest,
    },
    Target {
        name: "backup_stream",
        reads: "the encrypted backup stream: its header, then its segments",
        run: targets::backup_stream,
    },
    Target {
        name: "kms_request",
        reads: "KMS v2 Encrypt/Decrypt/Status requests (protobuf) through the plugin's service on a file key",
        run: targets::kms_request,
    },
    Target {
        name: "oncall_feed",
        reads: "on-call feeds: iCalendar and the YAML rota",
        run: targets::oncall_feed,
    },
    Target {
        name: "policy_parse",
        reads: "policy YAML",
        run: targets::policy_parse,
    },
    Target {
        name: "validate_params",
        reads: "action parameters (JSON) against the default policy",
        run: targets::validate_params,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
