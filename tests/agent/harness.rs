//! A running single-machine stack (`palisade up`: witness, log, and the agent with a
//! TUF repository holding the approved default policy and an approved etcd release,
//! which the agent runs), and a gateway's
//! side of dispatching built from the files `up` wrote: the gateway certificate and
//! signing key, the log's and witness's public keys, the verified policy.
//!
//! Test files include it with
//! `#[path = "../e2e/common.rs"] mod common;` and `#[path = "../agent/harness.rs"] mod harness;`.
#![allow(dead_code)]

use crate::common::{free_port_block, palisade, Running};
use palisade_agent::client::{prepare, CallError, Dispatcher, Executed, Prepared, Request};
use palisade_agent::dispatch::AgentStatement;
use palisade_agent::dispatch::{AgentResult, DispatchRequest, Refusal};
use palisade_core::event::{Actor, Event, GrantRef, Justification};
use palisade_core::time::Timestamp;
use palisade_core::{ActionName, ClusterId, InstanceId, OperatorId, TenantId};
use palisade_policy::dsse::Envelope;
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_policy::Policy;
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::{SignerKey, VerifierKey};
use palisade_tlog_service::server::AppendResponse;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const LOG_KEY_STEM: &str = "palisade.local_log";
pub const WITNESS_KEY_STEM: &str = "palisade.local_witness";

/// Fails (never skips) when a tool the test needs is missing.
pub fn require_tool(tool: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` is not installed: {install}");
}

/// The etcd the agent supervises (started by the agent from the approved release
/// `palisade up` published), reached here with etcdctl as kube-apiserver would.
pub struct Etcd {
    pub client_port: u16,
}

impl Etcd {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn healthy(&self) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            assert!(
                Instant::now() < deadline,
                "the supervised etcd is not healthy within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts `mb` values of 1 MiB (through etcdctl's standard input), so that a
    /// backup lasts long enough to be interrupted.
    pub fn fill(&self, mb: usize) {
        use std::io::Write as _;
        let value = "x".repeat(1024 * 1024);
        for i in 0..mb {
            let mut put = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.endpoint(),
                    "put",
                    &format!("/fill/{i}"),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("etcdctl put");
            put.stdin
                .take()
                .expect("stdin")
                .write_all(value.as_bytes())
                .expect("value");
            assert!(put.wait().expect("etcdctl").success(), "etcdctl put failed");
        }
    }

    /// `etcdctl put` (the test's own access to etcd, standing in for kube-apiserver).
    pub fn put(&self, key: &str, value: &str) {
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "put", key, value])
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl put")
            .success();
        assert!(ok, "etcdctl put failed");
    }
}

/// `palisade up` in a temporary directory, plus etcd where the agent expects it.
pub struct Stack {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub base: u16,
    pub up: Option<Running>,
    pub etcd: Etcd,
    pub dispatcher: Dispatcher,
    pub policy: Policy,
    pub log_policy: LogPolicy,
    pub agent_keys: Vec<PublicKey>,
    pub agent_url: String,
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(|_, _| {})
    }

    /// Like [`Stack::start`], after `before(dir, base_port)` wrote files that
    /// `palisade up` then keeps (it only creates what is missing).
    pub fn start_with(before: impl FnOnce(&Path, u16)) -> Self {
        Self::start_wrapped(before, |_| Vec::new())
    }

    /// Like [`Stack::start_with`], with `palisade up` run by the command
    /// `wrapper(dir)` returns (program and arguments, before `palisade up …`), e.g.
    /// `unshare` to give it a mount namespace of its own.
    pub fn start_wrapped(
        before: impl FnOnce(&Path, u16),
        wrapper: impl FnOnce(&Path) -> Vec<String>,
    ) -> Self {
        Self::start_full(before, wrapper, false)
    }

    /// Like [`Stack::start`], with the demo tenant's customer approval policy (one
    /// approval by `ana` or `ben` for every disruptive action), as `palisade up`
    /// makes it by default.
    pub fn start_with_customer_approval() -> Self {
        Self::start_full(|_, _| {}, |_| Vec::new(), true)
    }

    fn start_full(
        before: impl FnOnce(&Path, u16),
        wrapper: impl FnOnce(&Path) -> Vec<String>,
        approvals: bool,
    ) -> Self {
        require_tool("etcd", "apt-get install etcd-server");
        require_tool("etcdctl", "apt-get install etcd-client");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let base = free_port_block();
        std::fs::create_dir_all(&dir).expect("state dir");
        before(&dir, base);
        let up = start_up_wrapped(&dir, base, &wrapper(&dir), approvals);
        let etcd = Etcd {
            client_port: base + 4,
        };
        etcd.wait_healthy();
        let dispatcher = Dispatcher::new(
            &dir.join("pki/ca.crt"),
            &dir.join("pki/gateway-gateway.crt"),
            &dir.join("pki/gateway-gateway.key"),
            SigningKey::read(&dir.join("gateway/keys/gateway.key")).expect("gateway key"),
            &format!("https://127.0.0.1:{}", base + 1),
        )
        .expect("dispatcher");
        dispatcher.set_tenant_trust("demo", tenant_trust(&dir));
        let policy = verified_policy(&dir, &tmp.path().join("gateway-datastore"));
        let log_policy = log_policy(&dir);
        let agent_keys =
            vec![PublicKey::read(&dir.join("agent/keys/agent.pub")).expect("agent pub")];
        Self {
            agent_url: format!("https://127.0.0.1:{}", base + 3),
            tmp,
            dir,
            base,
            up: Some(up),
            etcd,
            dispatcher,
            policy,
            log_policy,
            agent_keys,
        }
    }

    /// Stops `palisade up` (SIGTERM) and starts it again on the same directory.
    pub fn restart(&mut self) {
        if let Some(mut up) = self.up.take() {
            up.signal("TERM");
            let status = up.wait_exit(Duration::from_secs(20));
            assert!(
                status.success(),
                "palisade up did not stop cleanly: {status}"
            );
        }
        self.up = Some(start_up(&self.dir, self.base));
        self.etcd.wait_healthy();
    }

    /// What a gateway would send after authenticating and authorizing `operator`.
    pub fn request(&self, action: &str, params: &[(&str, &str)]) -> Request {
        let args: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let validated = self
            .policy
            .validate_args(action, &args)
            .unwrap_or_else(|e| panic!("{action} {params:?} does not validate: {e}"));
        Request {
            tenant: TenantId::parse("demo").expect("tenant"),
            cluster: ClusterId::parse("demo").expect("cluster"),
            instance: InstanceId::parse("demo-0").expect("instance"),
            actor: actor(),
            action: ActionName::parse(action).expect("action"),
            parameters: validated.params().clone(),
            justification: Justification {
                ticket: "INC-1234".into(),
                reason: "investigating etcd latency on demo".into(),
            },
            policy: self.policy.reference(),
        }
    }

    pub fn prepare(&self, action: &str, params: &[(&str, &str)]) -> Prepared {
        prepare(
            &self.request(action, params),
            Duration::from_secs(60),
            Timestamp::now(),
        )
        .expect("prepare")
    }

    /// The whole gateway path for one action: log, dispatch, open the result.
    pub async fn execute(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<Executed, CallError> {
        let p = self.prepare(action, params);
        self.dispatcher
            .execute(&self.agent_url, &p, &self.log_policy, &self.agent_keys)
            .await
    }

    /// Appends an intent event as is (a gateway logging first).
    pub async fn log_event(&self, event: &Event) -> (Vec<u8>, AppendResponse) {
        let entry = event.to_log_entry().expect("encode event");
        let appended = self
            .dispatcher
            .append("demo", &entry)
            .await
            .expect("append");
        (entry, appended)
    }

    /// Logs `p`'s intent and builds the request a correct gateway would send, with a
    /// consistency proof from whatever the agent has seen.
    pub async fn logged_request(&self, p: &Prepared) -> DispatchRequest {
        let (entry, appended) = self
            .log_event(&Event::Intent(Box::new(p.intent.clone())))
            .await;
        self.request_for(
            &p.dispatch.sign(self.gateway_key()).expect("sign"),
            &entry,
            appended.index,
        )
        .await
    }

    /// A request for an already logged entry, with proofs against the log's current
    /// checkpoint and a consistency proof from the agent's view.
    pub async fn request_for(
        &self,
        envelope: &Envelope,
        entry: &[u8],
        index: u64,
    ) -> DispatchRequest {
        let seen = self.seen().await;
        let (proof, consistency) = self
            .dispatcher
            .proofs("demo", &self.log_policy, index, seen)
            .await
            .expect("proofs");
        DispatchRequest {
            dispatch: envelope.clone(),
            event: DispatchRequest::encode_event(entry),
            proof,
            consistency: (seen > 0).then_some(consistency),
            tenant_trust: self.dispatcher.tenant_trust("demo"),
            approval: None,
        }
    }

    /// The checkpoint size the agent has seen.
    pub async fn seen(&self) -> u64 {
        self.dispatcher
            .health(&self.agent_url)
            .await
            .expect("agent health")
            .log_size_seen
    }

    pub fn gateway_key(&self) -> &SigningKey {
        self.dispatcher.signing_key()
    }

    pub async fn send(&self, req: &DispatchRequest) -> Result<AgentResult, CallError> {
        let env = self.dispatcher.send(&self.agent_url, req).await?;
        Ok(AgentResult::verify(&env, &self.agent_keys).expect("a signed result"))
    }

    /// Sends and expects a refusal.
    pub async fn refused(&self, req: &DispatchRequest) -> Refusal {
        match self.dispatcher.send(&self.agent_url, req).await {
            Err(CallError::Refused(r)) => r,
            Ok(env) => panic!(
                "the agent executed it: {:?}",
                AgentResult::verify(&env, &self.agent_keys)
            ),
            Err(e) => panic!("expected a refusal, got {e}"),
        }
    }

    /// The log's and witness's private keys (what an attacker who compromised both
    /// would hold).
    pub fn log_signer(&self) -> SignerKey {
        read_signer(&self.dir.join(format!("log/keys/{LOG_KEY_STEM}.key")))
    }

    /// The demo tenant's witness key (held apart from every provider key).
    pub fn tenant_witness_signer(&self) -> SignerKey {
        read_signer(
            &self
                .dir
                .join(palisade_core::inventory::demo_tenant::WITNESS_KEY),
        )
    }

    pub fn witness_signer(&self) -> SignerKey {
        read_signer(
            &self
                .dir
                .join(format!("witness/keys/{WITNESS_KEY_STEM}.key")),
        )
    }

    /// Lines the agent printed so far (through `up`'s prefixed output).
    pub fn agent_output(&mut self) -> Vec<String> {
        self.up
            .as_mut()
            .map(|u| {
                u.drain();
                u.seen.clone()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.starts_with("[agent]"))
            .collect()
    }
}

/// The tenant's witness statement `palisade up` registered (what a gateway sends).
pub fn tenant_trust(dir: &Path) -> Envelope {
    let path = dir.join(palisade_core::inventory::demo_tenant::TRUST_STATEMENT);
    serde_json::from_slice(&std::fs::read(&path).expect("the tenant's statement"))
        .expect("a DSSE envelope")
}

fn read_signer(path: &Path) -> SignerKey {
    SignerKey::parse(std::fs::read_to_string(path).expect("read key").trim()).expect("signer key")
}

fn start_up(dir: &Path, base: u16) -> Running {
    start_up_wrapped(dir, base, &[], false)
}

/// `palisade up`; without `approvals`, the demo tenant's first statement asks for
/// no customer approval (the tests of other claims run disruptive actions freely).
fn start_up_wrapped(dir: &Path, base: u16, wrapper: &[String], approvals: bool) -> Running {
    let mut up_args = vec![
        "up".to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--base-port".into(),
        base.to_string(),
    ];
    if !approvals {
        up_args.push("--no-customer-approval".into());
    }
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_palisade"));
            c
        }
        None => palisade(),
    };
    cmd.args(up_args);
    let mut up = Running::spawn(cmd);
    up.wait_for("ready", Duration::from_secs(60));
    up
}

pub fn actor() -> Actor {
    Actor {
        service: None,
        authn: None,
        id: OperatorId::parse("op-7f3a").expect("op"),
        groups: vec!["sre".into()],
        grant: Some(GrantRef {
            schedule: "primary".into(),
            role: "operator".into(),
            ends_at: Timestamp::from_unix_seconds(Timestamp::now().unix_seconds() + 3600),
        }),
    }
}

/// The policy as the gateway verifies it (its own datastore).
pub fn verified_policy(dir: &Path, datastore: &Path) -> Policy {
    let root = std::fs::read(dir.join("trust/root.json")).expect("trusted root");
    let repo = palisade_policy::tuf::RepoDir::new(dir.join("trust/repo"));
    // Its own thread and runtime: callers may be inside an async test.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(palisade_policy::trusted_policy::verify_policy(
                &repo, &root, datastore,
            ))
        })
        .join()
        .expect("verify thread")
    })
    .expect("the published policy verifies")
    .policy
}

/// The demo cluster's checkpoint policy: log key, witness key, quorum 1.
pub fn log_policy(dir: &Path) -> LogPolicy {
    let read = |p: PathBuf| {
        VerifierKey::parse(std::fs::read_to_string(&p).expect("read key").trim()).expect("key")
    };
    LogPolicy::new(
        "palisade.local/log/demo",
        read(dir.join(format!("log/keys/{LOG_KEY_STEM}.pub"))),
    )
    .expect("log policy")
    .with_witnesses(
        vec![read(
            dir.join(format!("witness/keys/{WITNESS_KEY_STEM}.pub")),
        )],
        1,
    )
    .expect("witnesses")
}

/// The installed etcd `palisade up` published as a release.
pub fn etcd_binary_path() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .expect("etcd is installed (apt-get install etcd-server)")
}

/// The gateway `palisade up` runs, called as an operator or a tenant would.
pub struct GatewayClient {
    pub url: String,
    http: reqwest::Client,
}

impl GatewayClient {
    pub fn new(url: &str, ca: &Path) -> Self {
        let roots = palisade_pki::load_roots(ca).expect("roots");
        let tls = rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        Self {
            url: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Its HTTPS client (trusting the stack's CA).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).expect("json"));
        }
        let resp = req.send().await.expect("gateway request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// Sends `body` as is (e.g. JSON with duplicated keys).
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("gateway request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// `POST` of `body` with an `Idempotency-Key`.
    pub async fn call_with_key(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
        key: &str,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(serde_json::to_vec(body).expect("json"))
            .send()
            .await
            .expect("gateway request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// A development token for `operator`.
    pub async fn dev_token(&self, operator: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/v1/dev/login",
                None,
                Some(serde_json::json!({ "operator": operator })),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// `POST /v1/clusters/{cluster}/actions/{action}` with text arguments.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        token: &str,
        cluster: &str,
        action: &str,
        instance: Option<&str>,
        args: &[(&str, &str)],
        ticket: &str,
        reason: &str,
    ) -> (u16, serde_json::Value) {
        let arguments: serde_json::Map<String, serde_json::Value> = args
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let mut body =
            serde_json::json!({ "arguments": arguments, "ticket": ticket, "reason": reason });
        if let Some(i) = instance {
            body["instance"] = serde_json::Value::String(i.to_string());
        }
        self.call(
            "POST",
            &format!("/v1/clusters/{cluster}/actions/{action}"),
            Some(token),
            Some(body),
        )
        .await
    }
}

impl Stack {
    pub fn gateway(&self) -> GatewayClient {
        GatewayClient::new(
            &format!("https://127.0.0.1:{}", self.base),
            &self.dir.join("pki/ca.crt"),
        )
    }

    /// `etcd.status` on demo-0 through the gateway, as the on-call operator, with
    /// `reason`: the answer's status and body.
    pub async fn etcd_status_via_gateway(&self, reason: &str) -> (u16, serde_json::Value) {
        let gw = self.gateway();
        let token = gw.dev_token(&self.operator()).await;
        gw.run(
            &token,
            "demo",
            "etcd.status",
            Some("demo-0"),
            &[],
            "INC-77",
            reason,
        )
        .await
    }

    /// The demo tenant's access-log token.
    pub fn tenant_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("tenant-demo.token"))
            .expect("tenant token")
            .trim()
            .to_string()
    }

    /// The operator `palisade up` put on call.
    pub fn operator(&self) -> String {
        let rota = std::fs::read_to_string(self.dir.join("gateway/rota.yaml")).expect("rota");
        rota.lines()
            .find_map(|l| l.trim().strip_prefix("participants: [\""))
            .and_then(|r| r.split('"').next())
            .expect("a participant")
            .to_string()
    }
}

/// A second gateway on the same stack, with its configuration changed by `edit`.
pub fn second_gateway(
    stack: &Stack,
    name: &str,
    edit: impl Fn(String) -> String,
) -> (Running, GatewayClient) {
    let port = free_port_block();
    let gdir = stack.dir.join("gateway");
    let text = std::fs::read_to_string(gdir.join("gateway.toml")).expect("config");
    let text = text
        .replace(
            &format!("listen = \"127.0.0.1:{}\"", stack.base),
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "state = \"state.redb\"",
            &format!("state = \"{name}-state.redb\""),
        );
    let config = gdir.join(format!("{name}.toml"));
    std::fs::write(&config, edit(text)).expect("write config");
    let mut cmd = palisade();
    cmd.args([
        "gateway",
        "serve",
        "--config",
        &config.display().to_string(),
    ]);
    let mut running = Running::spawn(cmd);
    running.wait_for("gateway listening", Duration::from_secs(60));
    let client = GatewayClient::new(
        &format!("https://127.0.0.1:{port}"),
        &stack.dir.join("pki/ca.crt"),
    );
    (running, client)
}

pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A separate etcd (not the cluster's) for state shared by gateway replicas; killed
/// on drop.
pub struct StateEtcd {
    child: std::process::Child,
    pub endpoint: String,
    _data: tempfile::TempDir,
}

impl StateEtcd {
    /// A gateway configuration `text` with its state in this etcd, under `prefix`.
    pub fn gateway_config(&self, text: &str, prefix: &str) -> String {
        let without = text
            .lines()
            .filter(|l| !l.starts_with("state = "))
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{without}\n\n[state]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n",
            self.endpoint
        )
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more etcd flags (e.g. `--max-request-bytes`).
    pub fn start_with(extra: &[&str]) -> Self {
        require_tool("etcd", "apt-get install etcd-server");
        let base = free_port_block();
        let data = tempfile::tempdir().expect("etcd data dir");
        let client = format!("http://127.0.0.1:{base}");
        let peer = format!("http://127.0.0.1:{}", base + 1);
        let child = Command::new("etcd")
            .args([
                "--name",
                "state",
                "--data-dir",
                &data.path().join("member").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("state={peer}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { client_port: base };
        etcd.wait_healthy();
        Self {
            child,
            endpoint: client,
            _data: data,
        }
    }
}

impl Drop for StateEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto` (an S3-compatible server) on a loopback port; PyPI `moto[server]`.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("install moto: python3 -m pip install 'moto[server]'");
        let mut m = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = m.child.try_wait() {
                panic!("moto exited ({s}): install it with python3 -m pip install 'moto[server]'");
            }
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// `PUT /<bucket>` (moto accepts it unsigned).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, answer) = self.raw("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "create bucket: {answer}");
    }

    /// An unsigned request; the status and the body.
    pub fn raw(&self, method: &str, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let port = self.port;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("moto");
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("answer");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
