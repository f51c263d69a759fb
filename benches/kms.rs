//! KMS plugin benchmarks (docs/performance.md records the figures):
//!
//! ```sh
//! cargo bench -p palisade-benches --bench kms                 # every backend
//! cargo bench -p palisade-benches --bench kms -- file pkcs11  # some backends
//! KMS_BENCH_OPS=5000 cargo bench -p palisade-benches --bench kms
//! KMS_BENCH_PKCS11_SESSIONS=1 cargo bench -p palisade-benches --bench kms -- pkcs11
//! ```
//!
//! For each backend (file key, PKCS#11 on SoftHSM2, AWS KMS on moto): Encrypt and
//! Decrypt of 32-byte seeds over the real Unix socket (gRPC, one connection per
//! caller) at concurrency 1, 16 and 64: operations per second, p50 and p99 latency.
//! Beside them, the same AES-256-GCM done in-process, and the overhead ratio (median
//! latency over the socket / in-process). SoftHSM2 and moto are started by the
//! benchmark; a missing tool fails it with an install hint. The PKCS#11 backend uses
//! the plugin's default session pool unless `KMS_BENCH_PKCS11_SESSIONS` sets its size
//! (1 = every HSM call on one session).
#![forbid(unsafe_code)]

#[path = "../crates/kms/tests/support/mod.rs"]
mod support;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use palisade_kms::file_key::FileKek;
use palisade_kms::kek::{Kek, KeyId};
use palisade_kms::keyring::KeyRing;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Moto, Plugin, SoftHsm};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
    lat.sort_unstable();
    let pick = |q: f64| {
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat.get(i).copied().unwrap_or_default()
    };
    Figures {
        ops_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Encrypt,
    Decrypt,
}

async fn over_socket(plugin: &Plugin, op: Op, concurrency: usize, total: u64) -> Figures {
    // One sample ciphertext per caller for Decrypt.
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..concurrency {
        let mut client = plugin.client().await;
        let (ct, key_id): (Vec<u8>, KeyId) = client.encrypt(&[42u8; 32]).await.expect("encrypt");
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                match op {
                    Op::Encrypt => {
                        client.encrypt(&[7u8; 32]).await.expect("encrypt");
                    }
                    Op::Decrypt => {
                        client.decrypt(&ct, &key_id).await.expect("decrypt");
                    }
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    summarize(all, start.elapsed())
}

fn in_process(op: Op, total: u64) -> Figures {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&[3u8; 32]));
    let nonce = [5u8; 12];
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), [7u8; 32].as_slice())
        .expect("seal");
    let mut lat = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for _ in 0..total {
        let t = Instant::now();
        match op {
            Op::Encrypt => {
                let mut iv = [0u8; 12];
                getrandom::getrandom(&mut iv).expect("random");
                std::hint::black_box(
                    cipher
                        .encrypt(Nonce::from_slice(&iv), [7u8; 32].as_slice())
                        .expect("seal"),
                );
            }
            Op::Decrypt => {
                std::hint::black_box(
                    cipher
                        .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
                        .expect("open"),
                );
            }
        }
        lat.push(t.elapsed());
    }
    summarize(lat, start.elapsed())
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

async fn bench_backend(name: &str, ring: KeyRing, total: u64) {
    let plugin = Plugin::start(ring).await;
    for op in [Op::Encrypt, Op::Decrypt] {
        let base = in_process(op, 20_000);
        let op_name = if op == Op::Encrypt {
            "Encrypt"
        } else {
            "Decrypt"
        };
        for c in CONCURRENCY {
            let f = over_socket(&plugin, op, c, total).await;
            println!(
                "| {name:<6} | {op_name} | {c:>3} | {:>9.0} | {:>9} | {:>9} | {:>9.0} | {:>8} | {:>7.0}× |",
                f.ops_per_sec,
                fmt_d(f.p50),
                fmt_d(f.p99),
                base.ops_per_sec,
                fmt_d(base.p50),
                f.p50.as_secs_f64() / base.p50.as_secs_f64().max(1e-9),
            );
        }
    }
    plugin.stop().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |b: &str| args.is_empty() || args.iter().any(|a| a == b);
    let ops = env_u64("KMS_BENCH_OPS", 3000);
    println!("32-byte plaintexts, {ops} operations per row; in-process = AES-256-GCM in this process, single thread");
    println!("| backend | op | callers | ops/s | p50 | p99 | in-process ops/s | in-process p50 | p50 overhead |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");

    if want("file") {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bench.key");
        FileKek::generate(&path).expect("key");
        let kek: Arc<dyn Kek> = Arc::new(FileKek::load(&path).expect("load"));
        bench_backend("file", KeyRing::new(vec![kek]).expect("ring"), ops).await;
    }
    if want("pkcs11") {
        let hsm = SoftHsm::new("bench");
        let mut config = hsm.token_config();
        if let Some(n) =
            std::num::NonZeroUsize::new(env_u64("KMS_BENCH_PKCS11_SESSIONS", 0) as usize)
        {
            config.sessions = n;
        }
        eprintln!("pkcs11: {} HSM sessions", config.sessions);
        let token = Token::new(config);
        token.generate_key("kek").expect("keygen");
        let kek: Arc<dyn Kek> = Arc::new(Pkcs11Kek::open(token, "kek").await.expect("open"));
        bench_backend("pkcs11", KeyRing::new(vec![kek]).expect("ring"), ops).await;
    }
    if want("aws") {
        let moto = Moto::start();
        let arn = moto.create_key();
        let kms = palisade_kms::aws::AwsKms::new(moto.aws_config()).expect("client");
        let kek: Arc<dyn Kek> = Arc::new(
            palisade_kms::aws::AwsKek::open(kms, &arn)
                .await
                .expect("open"),
        );
        // moto is a single-threaded Python server: fewer operations keep this short.
        bench_backend("aws", KeyRing::new(vec![kek]).expect("ring"), ops.min(1000)).await;
    }
}
