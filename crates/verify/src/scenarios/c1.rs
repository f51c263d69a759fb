//! C1: no interactive access. The agent is the only door and has two routes
//! (dispatch, health); only gateway certificates get in; no shell-like action exists.

use super::{push, push_with, short};
use crate::{BoxFut, Claim::C1, Ctx, Scenario, Scope};
use anyhow::{bail, Context as _};
use palisade_agent::dispatch::RefusalCode;
use palisade_core::ActionName;
use palisade_pki::{CertName, Role};
use std::collections::{BTreeSet, HashMap};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

pub fn add(v: &mut Vec<Scenario>) {
    push(
        v,
        C1,
        Scope::Any,
        "c1-agent-refuses-anonymous-tls",
        "The agent refuses a TLS client without a certificate",
        anonymous,
    );
    push(
        v,
        C1,
        Scope::Any,
        "c1-agent-refuses-foreign-ca",
        "The agent refuses a gateway-named certificate from another CA",
        foreign_ca,
    );
    push(
        v,
        C1,
        Scope::Local,
        "c1-agent-refuses-operator-cert",
        "The agent refuses an operator's certificate from the deployment's own CA",
        operator_cert,
    );
    push(
        v,
        C1,
        Scope::Local,
        "c1-agent-refuses-agent-cert",
        "The agent refuses another component's (its own role's) certificate",
        agent_cert,
    );
    let groups: [(&str, &str, &[&str]); 6] = [
        (
            "c1-no-shell-routes",
            "No shell, exec or command route answers (every method)",
            &[
                "/",
                "/exec",
                "/v1/exec",
                "/shell",
                "/v1/shell",
                "/run",
                "/v1/run",
                "/v1/command",
                "/v1/component/exec",
            ],
        ),
        (
            "c1-no-file-routes",
            "No file read, upload or download route answers",
            &[
                "/files/etc/passwd",
                "/v1/files",
                "/upload",
                "/download",
                "/v1/files/var/lib/etcd",
            ],
        ),
        (
            "c1-no-log-debug-routes",
            "No log streaming, debug or metrics route answers",
            &[
                "/logs",
                "/v1/logs",
                "/v1/logs/etcd",
                "/debug/pprof",
                "/metrics",
            ],
        ),
        (
            "c1-no-port-forward-routes",
            "No port-forward or proxy route answers",
            &[
                "/portforward",
                "/port-forward",
                "/v1/portforward",
                "/proxy",
                "/v1/proxy",
                "/api/v1/namespaces/x/pods/y/exec",
                "/api/v1/nodes/n/proxy",
            ],
        ),
        (
            "c1-no-etcd-routes",
            "No etcd read, snapshot or backup route answers",
            &[
                "/v1/etcd/get",
                "/v1/etcd/snapshot",
                "/v1/backup",
                "/v2/dispatch",
            ],
        ),
        (
            "c1-no-route-variants",
            "Case, suffix and traversal variants of the agent's routes do not answer",
            &[
                "/V1/DISPATCH",
                "/v1/dispatch/extra",
                "/v1/dispatch/../exec",
                "/v1/results",
                "/V1/RESULTS/0123456789abcdef0123456789abcdef",
                "/v1/results/0123456789abcdef0123456789abcdef/exec",
                "/healthz/x",
                "/v1/healthz",
                "/.well-known/openid-configuration",
            ],
        ),
    ];
    for (id, title, paths) in groups {
        push_with(v, C1, Scope::Any, id, title, paths, probe_paths);
    }
    push(
        v,
        C1,
        Scope::Any,
        "c1-two-routes-only-right-methods",
        "Dispatch answers POST only (and refuses a malformed body); results and health answer GET only",
        route_methods,
    );
    push(
        v,
        C1,
        Scope::Any,
        "c1-gateway-refuses-shell-actions",
        "The gateway refuses shell-like action names, and logs each refusal",
        gateway_shell_actions,
    );
    push(v, C1, Scope::Local, "c1-agent-refuses-shell-actions", "A compromised gateway's signed, logged dispatch of a shell-like action is refused by the agent", agent_shell_actions);
    push(
        v,
        C1,
        Scope::Local,
        "c1-instance-listeners",
        "On the instance only the agent (mTLS), its loopback metrics (GET /metrics only) and etcd listen",
        listeners,
    );
    push(
        v,
        C1,
        Scope::Any,
        "c1-policy-offers-no-interactive-action",
        "The approved policy offers no exec, shell, file, log or port-forward action",
        policy_actions,
    );
}

async fn handshake(cx: &Ctx, client: reqwest::Client) -> Result<u16, String> {
    client
        .get(format!("{}/healthz", cx.agent_url))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| root_cause(&e))
}

/// The innermost cause of an error (for a TLS refusal: the alert or the reset).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn anonymous(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let refused = handshake(cx, cx.agent_client(None)?).await;
        let Err(e) = refused else {
            bail!("the agent served a client without a certificate: {refused:?}");
        };
        let ok = handshake(cx, cx.gateway_agent_client()?).await;
        if ok != Ok(200) {
            bail!("the gateway certificate was not served either: {ok:?}");
        }
        Ok(vec![
            format!("no client certificate: handshake refused ({})", short(&e)),
            "gateway certificate: GET /healthz 200".into(),
        ])
    })
}

fn foreign_ca(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let dir = super::scratch(cx, "foreign-ca")?;
        palisade_pki::init_ca(&dir, false)?;
        let issued = palisade_pki::issue(
            &dir,
            Role::Gateway,
            &CertName::new("gateway")?,
            &[],
            30,
            false,
        )?;
        let client = cx.agent_client(Some((&issued.cert, &issued.key)))?;
        match handshake(cx, client).await {
            Err(e) => Ok(vec![format!(
                "gateway certificate of a foreign CA: refused ({})",
                short(&e)
            )]),
            Ok(s) => bail!("the agent served a certificate of another CA: HTTP {s}"),
        }
    })
}

fn operator_cert(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pki = l.dir.join("pki");
        let name = CertName::new("mallory")?;
        let issued = match palisade_pki::issue(&pki, Role::Operator, &name, &[], 30, false) {
            Ok(i) => i,
            Err(_) => palisade_pki::IssuedPaths::in_dir(&pki, Role::Operator, &name),
        };
        let client = cx.agent_client(Some((&issued.cert, &issued.key)))?;
        match handshake(cx, client).await {
            Err(e) => Ok(vec![format!(
                "operator certificate (same CA): refused ({})",
                short(&e)
            )]),
            Ok(s) => bail!("the agent served an operator certificate: HTTP {s}"),
        }
    })
}

fn agent_cert(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pki = l.dir.join("pki");
        let client = cx.agent_client(Some((
            &pki.join("agent-demo-0.crt"),
            &pki.join("agent-demo-0.key"),
        )))?;
        match handshake(cx, client).await {
            Err(e) => Ok(vec![format!(
                "agent-role certificate: refused ({})",
                short(&e)
            )]),
            Ok(s) => bail!("the agent served an agent-role client: HTTP {s}"),
        }
    })
}

fn probe_paths<'a>(cx: &'a Ctx, paths: &'static [&'static str]) -> BoxFut<'a> {
    Box::pin(async move {
        let client = cx.gateway_agent_client()?;
        let mut answered = Vec::new();
        let mut statuses: BTreeSet<u16> = BTreeSet::new();
        for path in paths {
            for method in METHODS {
                let m = reqwest::Method::from_bytes(method.as_bytes())?;
                let s = client
                    .request(m, format!("{}{path}", cx.agent_url))
                    .body("{}")
                    .send()
                    .await
                    .with_context(|| format!("{method} {path}"))?
                    .status()
                    .as_u16();
                statuses.insert(s);
                if s != 404 && s != 405 {
                    answered.push(format!("{method} {path} -> {s}"));
                }
            }
        }
        if !answered.is_empty() {
            bail!("routes beyond dispatch and health answered: {answered:?}");
        }
        Ok(vec![
            format!(
                "{} requests with a gateway certificate ({} paths x {} methods)",
                paths.len() * METHODS.len(),
                paths.len(),
                METHODS.len()
            ),
            format!("statuses seen: {statuses:?} (404/405 only)"),
        ])
    })
}

fn route_methods(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let client = cx.gateway_agent_client()?;
        let mut ev = Vec::new();
        for method in ["POST", "PUT", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes())?;
            let s = client
                .request(m, format!("{}/healthz", cx.agent_url))
                .send()
                .await?
                .status()
                .as_u16();
            if s != 405 {
                bail!("{method} /healthz answered {s}");
            }
            ev.push(format!("{method} /healthz: {s}"));
        }
        let s = client
            .get(format!("{}/v1/dispatch", cx.agent_url))
            .send()
            .await?
            .status()
            .as_u16();
        if s != 405 {
            bail!("GET /v1/dispatch answered {s}");
        }
        ev.push(format!("GET /v1/dispatch: {s}"));
        let s = client
            .post(format!("{}/v1/dispatch", cx.agent_url))
            .body("{}")
            .send()
            .await?
            .status()
            .as_u16();
        if s != 400 {
            bail!("POST /v1/dispatch with an empty object answered {s}");
        }
        ev.push(format!(
            "POST /v1/dispatch {{}}: {s} (malformed, nothing ran)"
        ));
        // The results route reads the signed result of a dispatch the agent accepted,
        // by event id, and nothing else.
        let results = format!(
            "{}/v1/results/0123456789abcdef0123456789abcdef",
            cx.agent_url
        );
        for method in ["POST", "PUT", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes())?;
            let s = client.request(m, &results).send().await?.status().as_u16();
            if s != 405 {
                bail!("{method} /v1/results/<id> answered {s}");
            }
        }
        ev.push("POST, PUT, DELETE /v1/results/<id>: 405".into());
        let s = client.get(&results).send().await?.status().as_u16();
        if s != 404 {
            bail!("GET /v1/results/<an id never dispatched> answered {s}");
        }
        ev.push(format!("GET /v1/results/<an id never dispatched>: {s}"));
        for bad in ["etc%2Fpasswd", "x;id", "0123456789ABCDEF0123456789ABCDEF"] {
            let s = client
                .get(format!("{}/v1/results/{bad}", cx.agent_url))
                .send()
                .await?
                .status()
                .as_u16();
            if s != 400 {
                bail!("GET /v1/results/{bad} answered {s}");
            }
        }
        ev.push("GET /v1/results/<not an event id>: 400".into());
        Ok(ev)
    })
}

const SHELL_ACTIONS: &[&str] = &[
    "shell.run",
    "exec",
    "etcd.exec",
    "files.read",
    "kube.port-forward",
    "etcd.get",
    "component.exec",
    "debug.shell",
];

fn gateway_shell_actions(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ev = Vec::new();
        for action in SHELL_ACTIONS {
            let got = cx.op_run(action, &[]).await?;
            let mut e = cx
                .expect_refusal(&format!("action {action}"), got, 404, "validate")
                .await?;
            ev.append(&mut e);
        }
        Ok(ev)
    })
}

fn agent_shell_actions(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let mut ev = Vec::new();
        // Names the agent's action-name syntax admits (a bare "exec" cannot even be
        // named in a dispatch).
        for action in SHELL_ACTIONS.iter().filter(|a| a.contains('.')) {
            let mut p = l.prepare("etcd.status", &[])?;
            p.dispatch.action = ActionName::parse(action).map_err(|e| anyhow::anyhow!("{e}"))?;
            p.intent.action = p.dispatch.action.clone();
            p.intent.dispatch_digest = p.dispatch.digest().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (req, index) = l.logged_request(&p).await?;
            let r = l.refused(&req).await?;
            if r.code != RefusalCode::UnknownAction {
                bail!("{action}: refused as {:?}, not unknown_action: {r}", r.code);
            }
            ev.push(format!(
                "{action}: logged at {index}, agent refusal {:?}",
                r.code
            ));
        }
        Ok(ev)
    })
}

/// Listening TCP sockets of a process tree, from /proc.
fn listening_ports_of_tree(root_pid: u32) -> anyhow::Result<BTreeSet<(u32, String, u16)>> {
    // Parent links of every process.
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat
            .get(stat.find('(').map_or(0, |i| i + 1)..close)
            .unwrap_or("")
            .to_string();
        let rest: Vec<&str> = stat.get(close + 2..).unwrap_or("").split(' ').collect();
        let Some(ppid) = rest.get(1).and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        children.entry(ppid).or_default().push(pid);
        names.insert(pid, comm);
    }
    let mut tree = vec![root_pid];
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        if let Some(c) = children.get(&p) {
            tree.extend(c.iter().copied());
        }
        i += 1;
    }
    // Listening sockets by inode.
    let mut listening: HashMap<u64, u16> = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                continue;
            }
            let port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let inode = f.get(9).and_then(|s| s.parse::<u64>().ok());
            if let (Some(port), Some(inode)) = (port, inode) {
                listening.insert(inode, port);
            }
        }
    }
    let mut out = BTreeSet::new();
    for pid in tree {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            {
                if let Some(port) = listening.get(&inode) {
                    out.insert((pid, names.get(&pid).cloned().unwrap_or_default(), *port));
                }
            }
        }
    }
    Ok(out)
}

fn find_agent_pid(dir: &std::path::Path) -> Option<u32> {
    let config = dir.join("agent/agent.toml").display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "agent")
            && args.iter().any(|a| a == "serve")
            && args.contains(&config)
        {
            return Some(pid);
        }
    }
    None
}

fn listeners(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let pid =
            find_agent_pid(&l.dir).ok_or_else(|| anyhow::anyhow!("no agent process found"))?;
        let found = listening_ports_of_tree(pid)?;
        let metrics = l.base + 7;
        let allowed = [l.base + 3, l.base + 4, l.base + 5, metrics];
        let mut ev = Vec::new();
        for (p, name, port) in &found {
            if !allowed.contains(port) {
                bail!("{name} (pid {p}) under the agent listens on {port}: {found:?}");
            }
            ev.push(format!("{name} pid {p} listens on {port}"));
        }
        if !found.iter().any(|(_, _, port)| *port == l.base + 3) {
            bail!("the agent's own listener was not found: {found:?}");
        }
        // The metrics listener (loopback, plain HTTP) answers GET /metrics and
        // nothing else: no dispatch, no shell, no other method.
        if found.iter().any(|(_, _, port)| *port == metrics) {
            let http = reqwest::Client::builder()
                .tls_backend_preconfigured(
                    rustls::ClientConfig::builder_with_provider(palisade_pki::crypto_provider())
                        .with_safe_default_protocol_versions()?
                        .with_root_certificates(palisade_pki::load_roots(&cx.ca)?)
                        .with_no_client_auth(),
                )
                .timeout(std::time::Duration::from_secs(10))
                .build()?;
            let base = format!("http://127.0.0.1:{metrics}");
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            if !text.contains("palisade_agent_") {
                bail!("the agent's metrics listener does not serve its metrics: {text:.200}");
            }
            for path in [
                "/v1/dispatch",
                "/exec",
                "/shell",
                "/v1/results/x",
                "/healthz",
                "/",
            ] {
                let status = http.get(format!("{base}{path}")).send().await?.status();
                if status.as_u16() != 404 {
                    bail!("the metrics listener answers GET {path} with {status}");
                }
            }
            let status = http.post(format!("{base}/metrics")).send().await?.status();
            if status.as_u16() != 405 {
                bail!("the metrics listener answers POST /metrics with {status}");
            }
            ev.push(format!(
                "metrics listener {metrics}: GET /metrics only (other paths 404, POST 405)"
            ));
        }
        ev.push(format!(
            "allowed: agent mTLS {}, etcd client {} and peer {} (loopback), metrics {metrics} (loopback, GET /metrics only)",
            l.base + 3,
            l.base + 4,
            l.base + 5
        ));
        Ok(ev)
    })
}

fn policy_actions(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let (s, v) = cx
            .gw
            .call(
                "GET",
                &format!("/v1/clusters/{}/actions", cx.cluster),
                Some(&cx.op_token),
                None,
            )
            .await?;
        if s != 200 {
            bail!("GET actions answered {s}: {v}");
        }
        let list = v["actions"]
            .as_array()
            .or_else(|| v.as_array())
            .ok_or_else(|| anyhow::anyhow!("no action list: {v}"))?;
        let names: Vec<String> = list
            .iter()
            .filter_map(|a| a["name"].as_str().map(str::to_string))
            .collect();
        if names.is_empty() {
            bail!("the action list is empty: {v}");
        }
        let forbidden = [
            "exec",
            "shell",
            "file",
            "port-forward",
            "portforward",
            "proxy",
            "logs",
            "attach",
            "run",
            "command",
            "get",
            "copy",
        ];
        for n in &names {
            let lower = n.to_ascii_lowercase();
            if let Some(f) = forbidden
                .iter()
                .find(|f| lower.split(['.', '-']).any(|part| part == **f))
            {
                bail!("action {n} looks interactive ({f})");
            }
        }
        Ok(vec![
            format!("{} approved actions", names.len()),
            short(&names.join(", ")),
        ])
    })
}
