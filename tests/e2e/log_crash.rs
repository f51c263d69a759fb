//! Crash recovery of the log: `palisade log append` is killed with SIGKILL at random
//! moments, 25 times in a row on the same directory. After every kill:
//! - every entry acknowledged with `appended <index>` is in the log at that index;
//! - what the log holds is what was sent: the previous log unchanged, then lines of
//!   this run, each once (a crash loses only unacknowledged entries);
//! - the log opens cleanly again (an `append` with no input starts, recovers and exits 0
//!   at the same size).
//!
//! At the end the whole log verifies: the checkpoint is signed by the log key and its
//! root is recomputed from the entry bundles.
//!
//! Without crashes, `appended_lines_keep_their_input_order` checks that the log holds
//! the lines in the order they were read, so that after a crash the lines in the log
//! are exactly the first N sent and a caller knows where to resume.
//!
//! The kill delays come from a seeded PRNG; set `PALISADE_CRASH_SEED` to replay a run.

mod common;

use common::palisade;
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::hash::leaf_hash;
use palisade_tlog::note::SignerKey;
use palisade_tlog::tile::{parse_bundle, TileId, TILE_WIDTH};
use palisade_tlog::tree::Frontier;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ORIGIN: &str = "palisade.test/crash";
const RUNS: u64 = 25;
const DEFAULT_SEED: u64 = 0x5eed_c0ff_ee15_1065;

/// splitmix64: small, seedable, good enough to spread kill times.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A delay of 5 to 300 ms.
    fn kill_delay(&mut self) -> Duration {
        Duration::from_millis(5 + self.next() % 296)
    }
}

fn line(run: u64, n: u64) -> String {
    format!("entry-{run}-{n}")
}

/// What one killed run of `palisade log append` acknowledged.
struct Run {
    /// The indexes printed as `appended <index>`, in order: the k-th is line k+1.
    acks: Vec<u64>,
    lines_sent: u64,
}

/// Runs `palisade log append --print-acks`, feeding it lines `entry-<run>-<n>` as fast
/// as it reads them, and kills it with SIGKILL after `delay`.
fn append_until_killed(run: u64, dir: &Path, key_file: &Path, delay: Duration) -> Run {
    let stderr_file = dir.with_extension(format!("run-{run}.stderr"));
    let mut child = palisade()
        .args(["log", "append", "--origin", ORIGIN, "--print-acks", "--dir"])
        .arg(dir)
        .arg("--key-file")
        .arg(key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("start palisade log append");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");

    let writer = std::thread::spawn(move || {
        let mut sent = 0u64;
        // Bounded: the pipe blocks the writer while the log is slower than it.
        while sent < 1_000_000 {
            if writeln!(stdin, "{}", line(run, sent + 1)).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for text in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(index) = text.strip_prefix("appended ") {
                let index: u64 = index
                    .parse()
                    .unwrap_or_else(|_| panic!("run {run}: bad acknowledgement {text:?}"));
                acks.push(index);
            }
        }
        acks
    });

    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!(
            "run {run}: palisade log append exited ({status}) before it was killed:\n{}",
            std::fs::read_to_string(&stderr_file).unwrap_or_default()
        );
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "run {run}: killed process reported success"
    );
    let acks = reader.join().expect("reader thread");
    let lines_sent = writer.join().expect("writer thread");
    Run { acks, lines_sent }
}

/// Reads the whole log from `dir`: checks the checkpoint against the log key, reads
/// every entry bundle, and recomputes the root from the entries.
fn read_verified_log(dir: &Path, policy: &LogPolicy) -> Vec<String> {
    let signed = std::fs::read(dir.join("checkpoint")).expect("checkpoint file");
    let verified = policy
        .verify(&signed)
        .unwrap_or_else(|e| panic!("checkpoint does not verify: {e}"));
    let checkpoint = verified.checkpoint();
    let size = checkpoint.size();
    let mut entries = Vec::new();
    let mut frontier = Frontier::new();
    let bundles = size.div_ceil(u64::from(TILE_WIDTH));
    for index in 0..bundles {
        let tile = TileId::in_tree(0, index, size).expect("bundle of the tree");
        let path = dir.join(tile.entries_path());
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} (size {size}): {e}", path.display()));
        let parsed = parse_bundle(&data)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        assert_eq!(
            parsed.len(),
            usize::from(tile.width()),
            "entries in {}",
            path.display()
        );
        for e in parsed {
            frontier.append(leaf_hash(e)).expect("append");
            entries.push(String::from_utf8(e.to_vec()).expect("entries are text lines"));
        }
    }
    assert_eq!(
        frontier.root(),
        *checkpoint.root(),
        "the entry bundles do not recompute the checkpoint root at size {size}"
    );
    entries
}

/// Opens the log and closes it again: `append` with no input recovers the log and
/// prints its checkpoint. Returns the size it printed.
fn reopen_cleanly(dir: &Path, key_file: &Path) -> u64 {
    let out = palisade()
        .args(["log", "append", "--origin", ORIGIN, "--dir"])
        .arg(dir)
        .arg("--key-file")
        .arg(key_file)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade log append");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the log does not reopen after a crash ({}):\n{}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The checkpoint text: origin line, then the size.
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(ORIGIN), "printed checkpoint:\n{stdout}");
    lines
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in the printed checkpoint:\n{stdout}"))
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let keys = tmp.path().join("keys");
    let keygen = palisade()
        .args(["log", "keygen", "--name", ORIGIN, "--out"])
        .arg(&keys)
        .output()
        .expect("run keygen");
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let key_file = keys.join("palisade.test_crash.key");
    let key_text = std::fs::read_to_string(&key_file).expect("key file");
    let key = SignerKey::parse(key_text.trim()).expect("log key");
    let policy = LogPolicy::new(ORIGIN, key.verifier()).expect("policy");

    let seed = std::env::var("PALISADE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("kill delays from seed {seed} (PALISADE_CRASH_SEED)");
    let mut rng = Prng(seed);

    let mut log: Vec<String> = Vec::new();
    let mut total_acks = 0usize;
    for run in 0..RUNS {
        let delay = rng.kill_delay();
        let outcome = append_until_killed(run, &dir, &key_file, delay);
        let entries = if dir.join("checkpoint").exists() {
            read_verified_log(&dir, &policy)
        } else {
            // Killed before the new log's first checkpoint: nothing was acknowledged.
            assert!(outcome.acks.is_empty(), "run {run}: acks without a log");
            Vec::new()
        };

        // The log before this run is still there, unchanged...
        assert!(
            entries.len() >= log.len() && entries[..log.len()] == log[..],
            "run {run}: the log lost or changed entries it held before (size {} → {})",
            log.len(),
            entries.len()
        );
        // ...followed only by lines of this run, each at most once. (That they are a
        // prefix of the lines, in order, is `appended_lines_keep_their_input_order`.)
        let mut seen = std::collections::BTreeSet::new();
        for (k, e) in entries[log.len()..].iter().enumerate() {
            let n = e
                .strip_prefix(&format!("entry-{run}-"))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| (1..=outcome.lines_sent).contains(n));
            let Some(n) = n else {
                panic!(
                    "run {run}: entry {} is {e:?}, not a line of this run",
                    log.len() + k
                );
            };
            assert!(seen.insert(n), "run {run}: {e} is in the log twice");
        }
        // Every acknowledgement names the index where its line is.
        for (k, &index) in outcome.acks.iter().enumerate() {
            let want = line(run, k as u64 + 1);
            assert_eq!(
                entries.get(index as usize),
                Some(&want),
                "run {run}: {want} was acknowledged at index {index} (log size {})",
                entries.len()
            );
        }
        assert!(
            outcome.acks.len() as u64 <= outcome.lines_sent,
            "run {run}: more acks than lines"
        );

        let reopened = reopen_cleanly(&dir, &key_file);
        assert_eq!(
            reopened,
            entries.len() as u64,
            "run {run}: reopened size differs from the stored log"
        );
        eprintln!(
            "run {run:2}: killed after {:3} ms; {:5} lines sent, {:5} acknowledged, log size {}",
            delay.as_millis(),
            outcome.lines_sent,
            outcome.acks.len(),
            entries.len()
        );
        total_acks += outcome.acks.len();
        log = entries;
    }
    assert!(
        total_acks > 0,
        "no run acknowledged anything: the test proved nothing"
    );

    // A clean run after all the crashes appends and exits normally.
    let mut child = palisade()
        .args(["log", "append", "--origin", ORIGIN, "--print-acks", "--dir"])
        .arg(&dir)
        .arg("--key-file")
        .arg(&key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start palisade log append");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for n in 1..=3 {
            writeln!(stdin, "{}", line(RUNS, n)).expect("write a line");
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("appended "))
        .map(str::to_string)
        .collect();
    let size = log.len();
    assert_eq!(
        acks,
        (size..size + 3)
            .map(|i| format!("appended {i}"))
            .collect::<Vec<_>>()
    );
    let final_log = read_verified_log(&dir, &policy);
    assert_eq!(final_log.len(), size + 3);
    assert_eq!(final_log[..size], log[..]);

    // `palisade log show` agrees with what the bundles hold.
    let show = palisade()
        .args(["log", "show", "--origin", ORIGIN, "--entries", "2", "--dir"])
        .arg(&dir)
        .output()
        .expect("run palisade log show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}");
    assert!(
        text.contains(&format!("size:   {}", size + 3)),
        "log show:\n{text}"
    );
    assert!(
        text.contains(&format!("{}: {}", size + 2, line(RUNS, 3))),
        "log show:\n{text}"
    );
    eprintln!(
        "{RUNS} crashes, {total_acks} acknowledged entries, final size {}, in {:?}",
        size + 3,
        started.elapsed()
    );
}

/// `palisade log append` appends the lines of its input in order: entry i is line i+1,
/// and the i-th acknowledgement names index i. Only then does the log's size after a
/// crash tell which lines are in and where to resume.
#[test]
fn appended_lines_keep_their_input_order() {
    const LINES: u64 = 3000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let keys = tmp.path().join("keys");
    let keygen = palisade()
        .args(["log", "keygen", "--name", ORIGIN, "--out"])
        .arg(&keys)
        .output()
        .expect("run keygen");
    assert!(keygen.status.success());
    let key_file = keys.join("palisade.test_crash.key");
    let key =
        SignerKey::parse(std::fs::read_to_string(&key_file).expect("key").trim()).expect("log key");
    let policy = LogPolicy::new(ORIGIN, key.verifier()).expect("policy");

    let mut child = palisade()
        .args(["log", "append", "--origin", ORIGIN, "--print-acks", "--dir"])
        .arg(&dir)
        .arg("--key-file")
        .arg(&key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start palisade log append");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for n in 1..=LINES {
            writeln!(stdin, "{}", line(0, n)).expect("write a line");
        }
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let entries = read_verified_log(&dir, &policy);
    assert_eq!(entries.len() as u64, LINES);
    let misplaced: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| **e != line(0, *i as u64 + 1))
        .map(|(i, e)| format!("index {i}: {e}"))
        .collect();
    assert!(
        misplaced.is_empty(),
        "{} of {LINES} lines are not at the index of their input position, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(5)]
    );
    let acks: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("appended "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        acks,
        (0..LINES)
            .map(|i| format!("appended {i}"))
            .collect::<Vec<_>>()
    );
}
