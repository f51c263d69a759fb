//! Every kept fuzz input is a regression test: the seeds, the minimised corpus of the
//! last campaign (`fuzz/corpus/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) run through the target bodies here, on every test run.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_seeds_and_they_run_clean() {
    let seeds = palisade_fuzz::seeds::all().expect("seeds are made");
    for t in palisade_fuzz::TARGETS {
        let mine: Vec<&Vec<u8>> = seeds
            .iter()
            .filter(|(n, _)| *n == t.name)
            .map(|(_, b)| b)
            .collect();
        assert!(!mine.is_empty(), "target {} has no seed", t.name);
        for s in mine {
            (t.run)(s);
        }
    }
    for (name, _) in &seeds {
        assert!(
            palisade_fuzz::target(name).is_some(),
            "seed for unknown target {name}"
        );
    }
}

#[test]
fn kept_corpora_and_crash_inputs_run_clean() {
    let root = repo().join("fuzz");
    let mut ran = 0;
    for t in palisade_fuzz::TARGETS {
        for kind in ["corpus", "regressions"] {
            for (path, bytes) in inputs(&root.join(kind).join(t.name)) {
                let result = std::panic::catch_unwind(|| (t.run)(&bytes));
                assert!(result.is_ok(), "{} panics on {}", t.name, path.display());
                ran += 1;
            }
        }
    }
    assert!(
        ran > 0,
        "no kept fuzz input under {}: run scripts/fuzz.sh",
        root.display()
    );
}

#[test]
fn the_cargo_fuzz_project_has_a_binary_for_every_target() {
    let manifest =
        std::fs::read_to_string(repo().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    for t in palisade_fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/Cargo.toml has no [[bin]] for {}",
            t.name
        );
        assert!(
            repo()
                .join(format!("fuzz/fuzz_targets/{}.rs", t.name))
                .is_file(),
            "fuzz/fuzz_targets/{}.rs is missing",
            t.name
        );
    }
}

/// The seeds are only useful if they are valid: each must get past its parser.
#[test]
fn seeds_are_valid_inputs_of_their_parsers() {
    use palisade_agent::dispatch::{Dispatch, DispatchRequest, DISPATCH_PAYLOAD_TYPE};
    let seeds = palisade_fuzz::seeds::all().expect("seeds are made");
    let of = |name: &str| -> Vec<Vec<u8>> {
        seeds
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .collect()
    };
    for e in of("access_event") {
        palisade_core::event::Event::from_log_entry(&e).expect("an event seed decodes");
    }
    for d in of("dispatch_request") {
        let req: DispatchRequest =
            serde_json::from_slice(&d).expect("a dispatch request seed parses");
        let payload = req
            .dispatch
            .payload_bytes(DISPATCH_PAYLOAD_TYPE)
            .expect("its payload");
        Dispatch::from_bytes(&payload).expect("its dispatch parses");
        let entry = req.event_bytes().expect("its event");
        palisade_core::event::Event::from_log_entry(&entry).expect("its intent decodes");
        palisade_tlog::proof::TlogProof::parse(req.proof.as_bytes()).expect("its proof parses");
    }
    for p in of("tlog_proof") {
        palisade_tlog::proof::TlogProof::parse(&p).expect("a proof seed parses");
    }
    for b in of("add_checkpoint") {
        palisade_tlog::witness::AddCheckpointRequest::parse(&b)
            .expect("an add-checkpoint seed parses");
    }
    for m in of("backup_manifest") {
        assert!(
            palisade_backup::Manifest::unverified(&m).is_some(),
            "a manifest seed decodes"
        );
    }
    for s in of("backup_stream") {
        palisade_backup::format::Header::parse(&s).expect("a stream seed has a header");
    }
    for j in of("log_journal") {
        let (records, _) =
            palisade_tlog_service::journal::decode_all(&j).expect("a journal seed decodes");
        assert_eq!(records.len(), 2);
    }
    for f in of("oncall_feed") {
        let text = std::str::from_utf8(&f).expect("UTF-8");
        assert!(
            palisade_oncall::parse_ical(text, "seed").is_ok()
                || palisade_oncall::parse_rota(text).is_ok(),
            "an on-call seed parses as a feed or a rota"
        );
    }
}
