//! Test support shared by the sequencer and audit suites: a `moto` S3 server on a
//! loopback port, and buckets on it.
//!
//! Without moto (PyPI `moto[server]`) the S3 tests fail, naming the install command;
//! they never skip.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use palisade_tlog_service::store::{S3Location, TileStore};

/// The region moto's buckets are created in.
pub const REGION: &str = "us-east-1";

/// A `moto` S3 server on a loopback port, killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        // reqwest and object_store use rustls without a built-in crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let candidates: [(&str, Vec<String>); 2] = [
            (
                "python3",
                vec![
                    "-m".into(),
                    "moto.server".into(),
                    "-p".into(),
                    port.to_string(),
                ],
            ),
            ("moto_server", vec!["-p".into(), port.to_string()]),
        ];
        let mut tried = Vec::new();
        for (program, args) in candidates {
            let mut child = match Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => {
                    tried.push(format!("{program}: {e}"));
                    continue;
                }
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    tried.push(format!("{program} {}: exited ({status})", args.join(" ")));
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    tried.push(format!("{program}: port {port} not open within 30 s"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "install moto: python3 -m pip install 'moto[server]' (tried: {})",
            tried.join("; ")
        );
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .expect("create the bucket on moto");
        assert!(
            created.status().is_success(),
            "creating the bucket: {}",
            created.status()
        );
    }

    /// Lets anyone read the objects of `bucket` with a plain, unsigned GET at
    /// `<endpoint>/<bucket>/<key>`: the bucket policy of a public static mirror.
    /// Without it moto, like S3, refuses anonymous reads of objects (403).
    pub async fn allow_public_reads(&self, bucket: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::{bucket}/*"]}}]}}"#
        );
        let set = reqwest::Client::new()
            .put(format!("{}/{bucket}?policy", self.endpoint))
            .header("content-type", "application/json")
            .body(policy)
            .send()
            .await
            .expect("set the bucket policy on moto");
        assert!(
            set.status().is_success(),
            "setting the bucket policy: {}",
            set.status()
        );
    }

    /// `bucket` as the log's tile storage.
    pub fn tile_store(&self, bucket: &str) -> TileStore {
        TileStore::s3(&S3Location {
            bucket: bucket.into(),
            region: REGION.into(),
            endpoint: Some(self.endpoint.clone()),
            credentials: palisade_aws::AwsCredentials::fixed("test", "test", None),
        })
        .expect("open the S3 tile store")
    }

    /// `bucket` opened directly with `object_store`, to list and change what is
    /// really there.
    pub fn objects(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let objects = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("open the bucket with object_store");
        Arc::new(objects)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}
