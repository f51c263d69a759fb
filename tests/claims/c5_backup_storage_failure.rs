//! Claim C5 for backups, when storage fails: a backup whose object storage is
//! unavailable, or dies in the middle of the upload, is reported failed (and the
//! failure is logged like every result), leaves no object, and is never listed as a
//! good backup. Also: backups on an S3-compatible store (`moto` on loopback; PyPI
//! `moto[server]`, the tests fail without it) restore like local ones.

#[path = "backup_support.rs"]
mod backup_support;
#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use backup_support::*;
use harness::Stack;
use palisade_agent::dispatch::ResultOutcome;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "palisade-backups";

/// Runs `action` through the gateway and waits for its end; returns the operation.
async fn via_gateway(stack: &Stack, action: &str) -> Value {
    let gw = stack.gateway();
    let token = gw.dev_token(&stack.operator()).await;
    let (_, mut op) = gw
        .run(
            &token,
            "demo",
            action,
            Some("demo-0"),
            &[],
            "INC-9",
            "quarterly backup failure drill",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(240);
    while op["status"] == "running" {
        assert!(Instant::now() < deadline, "{action} did not finish: {op}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = op["id"].as_str().expect("id").to_string();
        op = gw
            .call("GET", &format!("/v1/operations/{id}"), Some(&token), None)
            .await
            .1;
    }
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_an_unavailable_store_fails_is_logged_and_is_never_listed() {
    let stack = Stack::start();
    // The cluster's directory in the store is not a directory: nothing can be
    // written there.
    let demo = store_dir(&stack).join("demo");
    std::fs::create_dir_all(store_dir(&stack)).expect("store");
    std::fs::write(&demo, b"not a directory").expect("block the store");

    let op = via_gateway(&stack, "etcd.backup").await;
    assert_eq!(op["status"], "failed", "{op}");
    assert!(
        op["result_index"].as_u64().is_some(),
        "the failure is logged: {op}"
    );
    eprintln!("reported: {}", op["error"]);

    std::fs::remove_file(&demo).expect("unblock");
    let listed = output(&stack.execute("etcd.backups", &[]).await.expect("list"));
    assert_eq!(listed["backups"], Value::Array(vec![]), "{listed}");
    assert_eq!(listed["invalid"], Value::Array(vec![]), "{listed}");
    assert!(
        files_below(&store_dir(&stack)).is_empty(),
        "nothing was stored"
    );
}

/// A TCP proxy in front of moto that can be made to die after a number of bytes
/// sent upstream (connections cut, new ones closed at once) and to recover.
struct Proxy {
    port: u16,
    budget: Arc<AtomicI64>,
}

const PLENTY: i64 = i64::MAX / 2;

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let budget = Arc::new(AtomicI64::new(PLENTY));
        let b = budget.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) <= 0 {
                    drop(client);
                    continue;
                }
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let b = b.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let to_server = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if b.fetch_sub(n as i64, Ordering::SeqCst) < n as i64 {
                                return Err(std::io::Error::other("the endpoint died"));
                            }
                            uw.write_all(&buf[..n]).await?;
                        }
                    };
                    let to_client = tokio::io::copy(&mut ur, &mut cw);
                    tokio::select! {
                        _ = to_server => {}
                        _ = to_client => {}
                    }
                });
            }
        });
        Proxy { port, budget }
    }

    fn die_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    fn recover(&self) {
        self.budget.store(PLENTY, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_to_s3_restores_and_an_endpoint_dying_mid_upload_fails_cleanly() {
    let moto = harness::Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = Proxy::start(moto.port).await;

    let mut stack = Stack::start();
    let creds = stack.dir.join("s3.credentials");
    std::fs::write(&creds, "testing:testing\n").expect("credentials");
    let config = stack.dir.join("agent/agent.toml");
    let text = std::fs::read_to_string(&config).expect("agent.toml");
    let local = format!("store = \"{}\"", store_dir(&stack).display());
    assert!(text.contains(&local), "up wrote a [backup] table: {text}");
    let s3 = format!(
        "store = \"s3://{BUCKET}/prod\"\nregion = \"us-east-1\"\n\
         endpoint = \"http://127.0.0.1:{}\"\ncredentials_file = \"{}\"\npart_size_mib = 5",
        proxy.port,
        creds.display()
    );
    std::fs::write(&config, text.replace(&local, &s3)).expect("rewrite agent.toml");
    stack.restart();
    stack
        .etcd
        .put("/registry/configmaps/default/app", "customer-config-s3");
    load_bulk(&stack, 12, 1024 * 1024);

    // A good backup on S3, restored from S3 by the customer.
    let good = output(&stack.execute("etcd.backup", &[]).await.expect("backup"));
    assert!(
        good["object_bytes"]
            .as_u64()
            .is_some_and(|b| b > 10 * 1024 * 1024),
        "{good}"
    );
    let work = tempfile::tempdir().expect("tempdir");
    // Named as in the store (`<id>.manifest.json`): restore checks the signed
    // manifest is the backup its name asks for.
    let manifest = work.path().join(format!(
        "{}.manifest.json",
        good["backup_id"].as_str().expect("backup_id")
    ));
    let store = palisade_backup::BackupStore::open(
        &format!("s3://{BUCKET}/prod").parse().expect("url"),
        &palisade_backup::S3Options {
            region: Some("us-east-1".into()),
            endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
            credentials_file: Some(creds.clone()),
        },
    )
    .expect("open s3");
    let bytes = store
        .read_small(good["manifest"].as_str().expect("m"), 65536)
        .await
        .expect("read manifest");
    std::fs::write(&manifest, bytes).expect("write manifest");
    let snap = work.path().join("s3.db");
    let r = palisade_cmd(&[
        "backup",
        "restore",
        "--manifest",
        &manifest.display().to_string(),
        "--store",
        &format!("s3://{BUCKET}/prod"),
        "--s3-region",
        "us-east-1",
        "--s3-endpoint",
        &format!("http://127.0.0.1:{}", moto.port),
        "--s3-credentials-file",
        &creds.display().to_string(),
        "--kms-socket",
        &kms_socket(&stack),
        "--out",
        &snap.display().to_string(),
        "--agent-key",
        &agent_pub(&stack).display().to_string(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        etcd_from_snapshot(&snap, work.path(), "/registry/configmaps/default/app").as_deref(),
        Some("customer-config-s3")
    );

    // The endpoint dies 3 MiB into the next upload.
    proxy.die_after(3 * 1024 * 1024);
    let failed = stack.execute("etcd.backup", &[]).await.expect("dispatch");
    assert_eq!(
        failed.result.outcome,
        ResultOutcome::Failed,
        "{:?}",
        failed.result
    );
    eprintln!("reported: {:?}", failed.result.error);
    proxy.recover();

    // Only the good backup is listed; nothing else is in the bucket.
    let listed = output(&stack.execute("etcd.backups", &[]).await.expect("list"));
    let ids: Vec<&Value> = listed["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| &b["backup_id"])
        .collect();
    assert_eq!(ids, vec![&good["backup_id"]], "{listed}");
    assert_eq!(listed["invalid"], Value::Array(vec![]), "{listed}");
    let names: Vec<String> = store
        .list("demo")
        .await
        .expect("list bucket")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 2, "one object and one manifest: {names:?}");
}
