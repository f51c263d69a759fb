//! Key and certificate rotation on a live `palisade up` stack, with no refused action.
//!
//! Certificates: every Palisade TLS server and client reads its certificate and key
//! again when the files change (`palisade pki issue --force`), at the next
//! connection, with no restart.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use common::palisade;
use harness::{require_tool, Stack};
use palisade_agent::dispatch::ResultOutcome;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The SHA-256 of the leaf certificate the server on `port` presents (openssl).
fn presented(stack: &Stack, port: u16, role: &str, name: &str) -> String {
    let pki = stack.dir.join("pki");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -CAfile {ca} -cert {crt} -key {key} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            ca = pki.join("ca.crt").display(),
            crt = pki.join(format!("{role}-{name}.crt")).display(),
            key = pki.join(format!("{role}-{name}.key")).display(),
        ))
        .stderr(Stdio::null())
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (15 s at most) until the server on `port` presents the certificate with
/// fingerprint `expected`.
async fn wait_presented(stack: &Stack, port: u16, what: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = presented(stack, port, "gateway", "gateway");
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the {what} still presents {now}, not the renewed {expected}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The SHA-256 fingerprint of a certificate file, as openssl prints it.
fn fingerprint(path: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renewed_on_disk_are_presented_without_a_restart() {
    require_tool("openssl", "apt-get install openssl");
    let stack = Stack::start();
    let pki = stack.dir.join("pki");
    let agent_port = stack.base + 3;
    // The gateway's client certificate, as a client of the agent (and of the log).
    let agent_before = presented(&stack, agent_port, "gateway", "gateway");
    assert_eq!(
        agent_before,
        fingerprint(&pki.join("agent-demo-0.crt")),
        "the agent presents its certificate"
    );
    let executed = stack.execute("etcd.status", &[]).await.expect("before");
    assert_eq!(executed.result.outcome, ResultOutcome::Succeeded);

    // Renew the agent's, the gateway's and the log's certificates in place.
    for (kind, name) in [("agent", "demo-0"), ("gateway", "gateway"), ("log", "log")] {
        let out = palisade()
            .args([
                "pki", "issue", "--force", "--kind", kind, "--name", name, "--dir",
            ])
            .arg(&pki)
            .output()
            .expect("pki issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let renewed = fingerprint(&pki.join("agent-demo-0.crt"));
    assert_ne!(renewed, agent_before);

    // Within a few seconds the running agent and log present their new certificates
    // (each looks at its files at most once a second, at a handshake)...
    wait_presented(&stack, agent_port, "agent", &renewed).await;
    wait_presented(
        &stack,
        stack.base + 1,
        "log",
        &fingerprint(&pki.join("log-log.crt")),
    )
    .await;

    // ...and actions go on through the gateway, which presents its renewed client
    // certificate to the agent and the log: nothing is refused, nothing restarted.
    action_succeeds(&stack, "checking etcd after renewing the certificates").await;
    let executed = stack.execute("etcd.status", &[]).await.expect("after");
    assert_eq!(executed.result.outcome, ResultOutcome::Succeeded);
}

/// Runs etcd.status through the gateway as the on-call operator; asserts success.
async fn action_succeeds(stack: &Stack, why: &str) {
    let (status, body) = stack.etcd_status_via_gateway(why).await;
    assert_eq!(status, 200, "{why}: {body}");
    assert_eq!(body["status"], "succeeded", "{why}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_result_key_rotates_with_an_overlap_and_the_customer_sees_both_keys() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the agent's result key").await;
    let keys = stack.dir.join("agent/keys");
    keygen("policy", "agent-next", &keys);
    let gateway_toml = stack.dir.join("gateway/gateway.toml");
    let agent_toml = stack.dir.join("agent/agent.toml");
    let old_pub = keys.join("agent.pub");
    let new_pub = keys.join("agent-next.pub");

    // 1. The gateway trusts both keys; the agent signs with the new one.
    let text = std::fs::read_to_string(&gateway_toml).expect("gateway.toml");
    let old_entry = format!(
        "[[agent]]\ninstance = \"demo-0\"\nkey = \"{}\"\n",
        old_pub.display()
    );
    assert!(text.contains(&old_entry), "{text}");
    let new_entry = format!(
        "[[agent]]\ninstance = \"demo-0\"\nkey = \"{}\"\n",
        new_pub.display()
    );
    std::fs::write(&gateway_toml, format!("{text}\n{new_entry}")).expect("write");
    let agent = std::fs::read_to_string(&agent_toml).expect("agent.toml");
    assert!(
        agent.contains("signing_key = \"keys/agent.key\""),
        "{agent}"
    );
    std::fs::write(
        &agent_toml,
        agent.replace(
            "signing_key = \"keys/agent.key\"",
            "signing_key = \"keys/agent-next.key\"",
        ),
    )
    .expect("write");
    stack.restart();
    stack
        .agent_keys
        .push(palisade_policy::keys::PublicKey::read(&new_pub).expect("new key"));
    action_succeeds(&stack, "with the new key, both trusted").await;

    // 2. The old key goes.
    let text = std::fs::read_to_string(&gateway_toml).expect("gateway.toml");
    std::fs::write(&gateway_toml, text.replace(&old_entry, "")).expect("write");
    stack.restart();
    action_succeeds(&stack, "with the new key only").await;

    // The customer's log names both keys, the new one before any result it signed.
    let gw = stack.gateway();
    let (status, page) = gw
        .call(
            "GET",
            "/v1/tenants/demo/clusters/demo/events",
            Some(&stack.tenant_token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let events: Vec<&serde_json::Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["event"])
        .collect();
    let key_ids: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "agent_key")
        .map(|e| e["keyid"].as_str().unwrap_or_default().to_string())
        .collect();
    for k in [&old_pub, &new_pub] {
        let id = palisade_policy::keys::PublicKey::read(k)
            .expect("key")
            .key_id();
        assert!(key_ids.contains(&id), "{id} not recorded: {key_ids:?}");
    }
    let new_id = palisade_policy::keys::PublicKey::read(&new_pub)
        .expect("key")
        .key_id();
    let recorded_at = events
        .iter()
        .position(|e| e["kind"] == "agent_key" && e["keyid"] == new_id.as_str())
        .expect("the new key is recorded");
    let first_signed = events
        .iter()
        .position(|e| e["kind"] == "result" && e["agent"]["keyid"] == new_id.as_str())
        .expect("no result signed with the new key");
    assert!(
        recorded_at < first_signed,
        "a result signed with {new_id} precedes the key's record"
    );
}

/// `palisade <tool> keygen --name <name> --out <out>` (tool: policy, log or witness).
fn keygen(tool: &str, name: &str, out: &std::path::Path) {
    run_ok(&[
        std::ffi::OsStr::new(tool),
        std::ffi::OsStr::new("keygen"),
        std::ffi::OsStr::new("--name"),
        std::ffi::OsStr::new(name),
        std::ffi::OsStr::new("--out"),
        out.as_os_str(),
    ]);
}

/// `palisade …` with `args`; asserts success and returns standard output and error.
fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = palisade().args(args).output().expect("palisade");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "palisade {args:?}: {said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tuf_online_key_rotates_by_a_root_update_and_the_retired_key_signs_nothing_accepted() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the online key").await;
    let trust = stack.dir.join("trust");
    let repo = trust.join("repo");
    let keys = trust.join("keys");
    let fresh = stack.tmp.path().join("online-next");
    let os = |s: &str| std::ffi::OsString::from(s);
    keygen("policy", "online-2027", &fresh);
    // The root (its key is the demo's trust/keys/root.key) names the new online key.
    let said = run_ok(&[
        &os("policy"),
        &os("update-root"),
        &os("--repo"),
        repo.as_os_str(),
        &os("--new-online-key"),
        fresh.join("online-2027.key").as_os_str(),
    ]);
    assert!(said.contains("online key:"), "{said}");
    assert!(keys.join("online.key.retired").exists());
    action_succeeds(&stack, "right after the root update").await;

    // The agent verifies the new chain (root 1 → 2, metadata signed by the new key).
    let agent_toml = stack.dir.join("agent/agent.toml");
    run_ok(&[
        &os("agent"),
        &os("check"),
        &os("--config"),
        agent_toml.as_os_str(),
    ]);
    // A restart verifies everything again from the pinned root; actions go on.
    stack.restart();
    action_succeeds(&stack, "after a restart on the new online key").await;
    // The daily refresh signs with the new key.
    run_ok(&[
        &os("policy"),
        &os("refresh"),
        &os("--repo"),
        repo.as_os_str(),
    ]);
    action_succeeds(&stack, "after a refresh with the new online key").await;

    // Whoever kept the retired key re-signs the repository with it: nothing verifies.
    let stolen = stack.tmp.path().join("stolen-keys");
    std::fs::create_dir_all(&stolen).expect("dir");
    std::fs::copy(keys.join("online.key.retired"), stolen.join("online.key")).expect("copy");
    std::fs::copy(keys.join("pipeline.key"), stolen.join("pipeline.key")).expect("copy");
    run_ok(&[
        &os("policy"),
        &os("refresh"),
        &os("--repo"),
        repo.as_os_str(),
        &os("--keys"),
        stolen.as_os_str(),
    ]);
    let out = palisade()
        .args(["agent", "check", "--config"])
        .arg(&agent_toml)
        .output()
        .expect("agent check");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("signature"),
        "metadata signed with the retired online key was accepted: {said}"
    );
    // The holder of the new key restores it.
    run_ok(&[
        &os("policy"),
        &os("refresh"),
        &os("--repo"),
        repo.as_os_str(),
    ]);
    run_ok(&[
        &os("agent"),
        &os("check"),
        &os("--config"),
        agent_toml.as_os_str(),
    ]);
    action_succeeds(&stack, "after the new key re-signed").await;
}

/// `palisade release verify` of the demo's etcd release, as the agent verifies it
/// before starting it (from the demo's trusted root, with a datastore of its own).
fn verify_etcd_release(stack: &Stack, datastore: &std::path::Path) -> std::process::Output {
    let etcd = find_etcd();
    let version = Command::new(&etcd)
        .arg("--version")
        .output()
        .expect("etcd --version");
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .expect("etcd --version prints its version");
    let trust = stack.dir.join("trust");
    palisade()
        .args([
            "release",
            "verify",
            "--component",
            "etcd",
            "--version",
            &version,
        ])
        .arg("--repo")
        .arg(trust.join("repo"))
        .arg("--artifact")
        .arg(&etcd)
        .arg("--root")
        .arg(trust.join("root.json"))
        .arg("--datastore")
        .arg(datastore)
        .output()
        .expect("palisade release verify")
}

fn find_etcd() -> std::path::PathBuf {
    require_tool("etcd", "etcd-server");
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .expect("etcd on PATH")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_key_rotates_by_a_root_update_and_the_retired_key_publishes_nothing_accepted()
{
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the pipeline key").await;
    let trust = stack.dir.join("trust");
    let repo = trust.join("repo");
    let keys = trust.join("keys");
    let datastore = stack.tmp.path().join("verifier-datastore");
    let out = verify_etcd_release(&stack, &datastore);
    assert!(
        out.status.success(),
        "the demo's etcd release does not verify before the rotation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = stack.tmp.path().join("pipeline-next");
    let os = |s: &str| std::ffi::OsString::from(s);
    keygen("policy", "pipeline-2027", &fresh);
    let said = run_ok(&[
        &os("policy"),
        &os("update-root"),
        &os("--repo"),
        repo.as_os_str(),
        &os("--new-pipeline-key"),
        fresh.join("pipeline-2027.key").as_os_str(),
    ]);
    assert!(said.contains("pipeline key:"), "{said}");
    assert!(keys.join("pipeline.key.retired").exists());
    action_succeeds(&stack, "right after the root update").await;
    // The release, re-signed by the new key under the new root, verifies from the
    // root the agent was installed with (1 → 2).
    let out = verify_etcd_release(&stack, &datastore);
    assert!(
        out.status.success(),
        "the release does not verify after the rotation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent restarts and starts etcd from the repository, not from its cache.
    stack.restart();
    action_succeeds(&stack, "after a restart on the new pipeline key").await;
    let said = stack.agent_output().join("\n");
    assert!(
        said.contains("etcd") && !said.contains("starting the release this agent verified before"),
        "the agent did not verify etcd's release from the repository after the rotation:\n{said}"
    );

    // Whoever kept the retired pipeline key re-signs the releases with it (the online
    // key signing targets, snapshot and timestamp as usual): the release is refused.
    let stolen = stack.tmp.path().join("stolen-keys");
    std::fs::create_dir_all(&stolen).expect("dir");
    std::fs::copy(keys.join("online.key"), stolen.join("online.key")).expect("copy");
    std::fs::copy(
        keys.join("pipeline.key.retired"),
        stolen.join("pipeline.key"),
    )
    .expect("copy");
    run_ok(&[
        &os("release"),
        &os("resign"),
        &os("--repo"),
        repo.as_os_str(),
        &os("--keys"),
        stolen.as_os_str(),
    ]);
    let out = verify_etcd_release(&stack, &datastore);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("Signature threshold"),
        "a release signed with the retired pipeline key was accepted: {said}"
    );
    // The holder of the new key re-signs; the release verifies again.
    let said = run_ok(&[
        &os("release"),
        &os("resign"),
        &os("--repo"),
        repo.as_os_str(),
    ]);
    assert!(said.contains("signed by the pipeline key"), "{said}");
    let out = verify_etcd_release(&stack, &datastore);
    assert!(
        out.status.success(),
        "the release does not verify once re-signed with the new key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    action_succeeds(&stack, "after the new key re-signed").await;
}

/// Replaces `old` by `new` in every `.toml` file under `dir`; returns the files
/// changed.
fn replace_in_configs(dir: &std::path::Path, old: &str, new: &str) -> Vec<std::path::PathBuf> {
    let mut changed = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&path).expect("config");
                if text.contains(old) {
                    std::fs::write(&path, text.replace(old, new)).expect("write");
                    changed.push(path);
                }
            }
        }
    }
    changed
}

/// Adds `line` right after the `[table]` header of the TOML file at `path`.
fn add_to_table(path: &std::path::Path, table: &str, line: &str) {
    let text = std::fs::read_to_string(path).expect("config");
    let header = format!("[{table}]\n");
    assert!(text.contains(&header), "no [{table}] in {}", path.display());
    std::fs::write(
        path,
        text.replacen(&header, &format!("{header}{line}\n"), 1),
    )
    .expect("write");
}

/// Adds `line` at the top of the TOML file at `path` (before any table).
fn add_top_level(path: &std::path::Path, line: &str) {
    let text = std::fs::read_to_string(path).expect("config");
    std::fs::write(path, format!("{line}\n{text}")).expect("write");
}

/// `palisade audit verify` of the demo log through its read API, as the customer
/// runs it, trusting the log key in `log_key_file`.
fn customer_verifies(stack: &Stack, log_key_file: &std::path::Path) -> std::process::Output {
    let d = &stack.dir;
    palisade()
        .args(["audit", "verify", "--url"])
        .arg(format!("https://127.0.0.1:{}/logs/demo", stack.base + 1))
        .arg("--token")
        .arg(format!("@{}", d.join("tenant-demo.token").display()))
        .arg("--ca")
        .arg(d.join("pki/ca.crt"))
        .args(["--origin", "palisade.local/log/demo", "--log-key"])
        .arg(format!("@{}", log_key_file.display()))
        .output()
        .expect("palisade audit verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_key_rotates_with_one_origin_through_checkpoints_signed_by_both_keys() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the log key").await;
    let keys = stack.dir.join("log/keys");
    let old_pub = keys.join("palisade.local_log.pub");
    let old_text = std::fs::read_to_string(&old_pub)
        .expect("old key")
        .trim()
        .to_string();
    let next_dir = stack.dir.join("log/next-key");
    keygen("log", "palisade.local/log", &next_dir);
    let new_key = next_dir.join("palisade.local_log.key");
    let new_pub = next_dir.join("palisade.local_log.pub");
    let new_text = std::fs::read_to_string(&new_pub)
        .expect("new key")
        .trim()
        .to_string();
    assert_ne!(old_text, new_text);
    let log_toml = stack.dir.join("log/log.toml");

    // 1. The log signs with both keys; nothing else changes. (No action runs here,
    // so the agent's stored view stays signed by the old key alone: step 2 then needs
    // `retired_keys` to open it.)
    add_top_level(
        &log_toml,
        &format!("next_key_file = {:?}", new_key.display().to_string()),
    );
    stack.restart();
    for k in [&old_pub, &new_pub] {
        let out = customer_verifies(&stack, k);
        assert!(
            out.status.success(),
            "the customer's verifier of {} refused the log during the overlap: {}",
            k.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 2. Every verifier trusts the new key instead: gateway, agent, witnesses (the
    // provider's and the tenant's). The agent keeps the old one for its stored view.
    let changed = replace_in_configs(&stack.dir, &old_text, &new_text);
    let names: Vec<String> = changed
        .iter()
        .filter_map(|p| p.strip_prefix(&stack.dir).ok())
        .map(|p| p.display().to_string())
        .collect();
    for expected in ["gateway/gateway.toml", "agent/agent.toml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not among {names:?}"
        );
    }
    assert!(
        names.iter().filter(|n| n.contains("witness")).count() >= 2,
        "both witnesses' configs name the log key: {names:?}"
    );
    add_to_table(
        &stack.dir.join("agent/agent.toml"),
        "log",
        &format!("retired_keys = [{old_text:?}]"),
    );
    stack.restart();
    stack.log_policy = harness::log_policy(&stack.dir);
    action_succeeds(&stack, "with every verifier on the new key").await;

    // 3. The log drops the old key.
    let text = std::fs::read_to_string(&log_toml).expect("log.toml");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("next_key_file"))
        .map(|l| {
            if l.starts_with("key_file") {
                format!("key_file = {:?}", new_key.display().to_string())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&log_toml, text + "\n").expect("write log.toml");
    stack.restart();
    action_succeeds(&stack, "with the log on the new key alone").await;
    let out = customer_verifies(&stack, &new_pub);
    assert!(
        out.status.success(),
        "the customer's verifier of the new key refused the log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A verifier still holding the retired key alone sees nothing it trusts.
    let out = customer_verifies(&stack, &old_pub);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("signature"),
        "a checkpoint signed after the rotation verified with the retired key: {said}"
    );
}

/// Replaces the `witnesses = [...]` line of a `[log]` table with `keys`.
fn set_witnesses(path: &std::path::Path, keys: &[&str]) {
    let text = std::fs::read_to_string(path).expect("config");
    let list = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("witnesses = ") {
                found = true;
                format!("witnesses = [{list}]")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no witnesses line in {}", path.display());
    std::fs::write(path, out.join("\n") + "\n").expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_key_rotates_with_an_overlap_through_a_second_witness() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the witness key").await;
    let os = |s: &str| std::ffi::OsString::from(s);
    let wdir = stack.dir.join("witness-2027");
    let pki = stack.dir.join("pki");
    // The new key, its witness (a certificate of its own), cosigning the same logs.
    keygen("witness", "palisade.local/witness-2027", &wdir.join("keys"));
    run_ok(&[
        &os("pki"),
        &os("issue"),
        &os("--kind"),
        &os("witness"),
        &os("--name"),
        &os("witness-2027"),
        &os("--dir"),
        pki.as_os_str(),
    ]);
    let new_key = std::fs::read_to_string(wdir.join("keys/palisade.local_witness-2027.pub"))
        .expect("new key")
        .trim()
        .to_string();
    let old_witness =
        std::fs::read_to_string(stack.dir.join("witness/witness.toml")).expect("witness.toml");
    let logs = &old_witness[old_witness.find("[[log]]").expect("logs")..];
    let port = common::free_port_block();
    std::fs::write(
        wdir.join("witness.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nkey_file = \"keys/palisade.local_witness-2027.key\"\n\
             state_file = \"state.redb\"\n\n[tls]\nca = \"{ca}\"\ncert = \"{crt}\"\nkey = \"{key}\"\n\n{logs}",
            ca = pki.join("ca.crt").display(),
            crt = pki.join("witness-witness-2027.crt").display(),
            key = pki.join("witness-witness-2027.key").display(),
        ),
    )
    .expect("witness.toml");
    let mut cmd = palisade();
    cmd.args(["witness", "serve", "--config"])
        .arg(wdir.join("witness.toml"));
    let mut new_witness = common::Running::spawn(cmd);
    new_witness.wait_for("witness listening", Duration::from_secs(30));

    // 1. The log asks both; gateway and agent accept either (quorum 1 of 2).
    let log_toml = stack.dir.join("log/log.toml");
    let log = std::fs::read_to_string(&log_toml).expect("log.toml");
    let old_key = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("key = \"palisade.local/witness+")
                .map(|rest| format!("palisade.local/witness+{}", rest.trim_end_matches('"')))
        })
        .expect("the old witness key");
    std::fs::write(
        &log_toml,
        format!(
            "{log}\n[[witness]]\nname = \"palisade.local/witness-2027\"\nurl = \"https://127.0.0.1:{port}\"\nkey = \"{new_key}\"\n"
        ),
    )
    .expect("log.toml");
    let gateway_toml = stack.dir.join("gateway/gateway.toml");
    let agent_toml = stack.dir.join("agent/agent.toml");
    for f in [&gateway_toml, &agent_toml] {
        set_witnesses(f, &[&old_key, &new_key]);
    }
    stack.restart();
    action_succeeds(&stack, "with both witnesses").await;

    // 2. The old witness is dropped: only the new key's cosignature is required now.
    let log = std::fs::read_to_string(&log_toml).expect("log.toml");
    let old_block = format!(
        "[[witness]]\nname = \"palisade.local/witness\"\nurl = \"https://127.0.0.1:{}\"\nkey = \"{old_key}\"\n",
        stack.base + 2
    );
    assert!(log.contains(&old_block), "{log}");
    std::fs::write(&log_toml, log.replace(&old_block, "")).expect("log.toml");
    for f in [&gateway_toml, &agent_toml] {
        set_witnesses(f, &[&new_key]);
    }
    stack.restart();
    action_succeeds(&stack, "with the new witness key only").await;
    new_witness.drain();
    assert!(
        new_witness.seen.iter().any(|l| l.contains("cosigned")),
        "the new witness cosigned nothing: {:?}",
        new_witness.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_signing_key_rotates_with_an_overlap() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the gateway key").await;
    let keys = stack.dir.join("gateway/keys");
    keygen("policy", "gateway-2027", &keys);
    let agent_toml = stack.dir.join("agent/agent.toml");
    let gateway_toml = stack.dir.join("gateway/gateway.toml");
    let old = format!(
        "gateway_keys = [\"{}\"]",
        keys.join("gateway.pub").display()
    );
    let both = format!(
        "gateway_keys = [\"{}\", \"{}\"]",
        keys.join("gateway.pub").display(),
        keys.join("gateway-2027.pub").display()
    );
    let new = format!(
        "gateway_keys = [\"{}\"]",
        keys.join("gateway-2027.pub").display()
    );
    let edit = |path: &std::path::Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(path).expect("config");
        assert!(text.contains(from), "{from} not in {}", path.display());
        std::fs::write(path, text.replace(from, to)).expect("write");
    };
    // 1. Agents accept both keys.
    edit(&agent_toml, &old, &both);
    stack.restart();
    action_succeeds(&stack, "agents accept both gateway keys").await;
    // 2. The gateway signs with the new key.
    edit(
        &gateway_toml,
        "signing_key = \"keys/gateway.key\"",
        "signing_key = \"keys/gateway-2027.key\"",
    );
    stack.restart();
    action_succeeds(&stack, "the gateway signs with the new key").await;
    // 3. Agents drop the old key: a dispatch signed with it is refused from now on.
    edit(&agent_toml, &both, &new);
    stack.restart();
    action_succeeds(&stack, "agents accept the new key only").await;
    let refused = stack
        .refused(
            &stack
                .logged_request(&stack.prepare("etcd.status", &[]))
                .await,
        )
        .await;
    assert_eq!(
        refused.code,
        palisade_agent::dispatch::RefusalCode::BadSignature,
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_rotates_through_a_bundle_and_certificates_renewed_in_place() {
    let mut stack = Stack::start();
    action_succeeds(&stack, "before rotating the CA").await;
    let os = |s: &str| std::ffi::OsString::from(s);
    let pki = stack.dir.join("pki");
    let next = stack.tmp.path().join("ca-2027");
    run_ok(&[&os("pki"), &os("init"), &os("--dir"), next.as_os_str()]);
    let old_ca = std::fs::read_to_string(pki.join("ca.crt")).expect("ca");
    let new_ca = std::fs::read_to_string(next.join("ca.crt")).expect("new ca");

    // 1. Every process trusts both CAs (the bundle every configuration names).
    std::fs::write(pki.join("ca.crt"), format!("{old_ca}{new_ca}")).expect("bundle");
    stack.restart();
    action_succeeds(&stack, "with both CAs trusted").await;

    // 2. Every certificate is renewed under the new CA, in place: no restart.
    for (kind, name) in [
        ("log", "log"),
        ("witness", "witness"),
        ("witness", "tenant-demo-witness"),
        ("gateway", "gateway"),
        ("agent", "demo-0"),
    ] {
        run_ok(&[
            &os("pki"),
            &os("issue"),
            &os("--kind"),
            &os(kind),
            &os("--name"),
            &os(name),
            &os("--dir"),
            next.as_os_str(),
        ]);
        for ext in ["crt", "key"] {
            let file = format!("{kind}-{name}.{ext}");
            // Key first, then certificate: a reader between the two keeps the old pair.
            std::fs::copy(next.join(&file), pki.join(format!("{file}.new"))).expect("copy");
        }
        for ext in ["key", "crt"] {
            let file = format!("{kind}-{name}.{ext}");
            std::fs::rename(pki.join(format!("{file}.new")), pki.join(&file)).expect("rename");
        }
    }
    // Each process looks at its files at most once a second: the agent and the log
    // now present certificates of the new CA, with no restart.
    require_tool("openssl", "apt-get install openssl");
    for (port, what, file) in [
        (stack.base + 3, "agent", "agent-demo-0.crt"),
        (stack.base + 1, "log", "log-log.crt"),
    ] {
        wait_presented(&stack, port, what, &fingerprint(&pki.join(file))).await;
    }
    action_succeeds(&stack, "with every certificate from the new CA").await;

    // 3. The old CA goes.
    std::fs::write(pki.join("ca.crt"), &new_ca).expect("new CA only");
    stack.restart();
    action_succeeds(&stack, "trusting the new CA only").await;
}
