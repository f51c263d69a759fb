//! Writes every target's seed inputs into `<dir>/<target>/seed-<n>` (the campaign's
//! starting corpora): `fuzz-seeds fuzz/corpus`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds <corpus directory>");
        return std::process::ExitCode::from(2);
    };
    let seeds = match palisade_fuzz::seeds::all() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fuzz-seeds: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for (name, bytes) in seeds {
        let n = counts.entry(name).or_default();
        let path = dir.join(name).join(format!("seed-{n}"));
        *n += 1;
        if let Err(e) =
            std::fs::create_dir_all(dir.join(name)).and_then(|()| std::fs::write(&path, bytes))
        {
            eprintln!("fuzz-seeds: {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    for (name, n) in counts {
        println!("{name}: {n} seed(s)");
    }
    std::process::ExitCode::SUCCESS
}
