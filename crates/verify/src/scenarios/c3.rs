//! C3: the administrative API cannot reach customer content in the data plane. The
//! agent's Kubernetes guard refuses every request to content (checked with this
//! build's guard), operator input cannot smuggle a path (checked over the network at
//! the gateway and the agent), and the recording apiserver saw only node requests.

use super::{push, push_with, short};
use crate::{BoxFut, Claim::C3, Ctx, Scenario, Scope};
use anyhow::bail;
use palisade_agent::dispatch::RefusalCode;
use palisade_core::event::ParamValue;

type Paths = &'static [&'static str];

pub fn add(v: &mut Vec<Scenario>) {
    let groups: [(&str, &str, Paths); 7] = [
        (
            "c3-guard-refuses-secrets",
            "The Kubernetes guard refuses Secrets (list, get, watch)",
            &[
                "/api/v1/secrets",
                "/api/v1/namespaces/x/secrets/y",
                "/api/v1/watch/namespaces/x/secrets",
            ],
        ),
        (
            "c3-guard-refuses-configmaps",
            "The Kubernetes guard refuses ConfigMaps",
            &[
                "/api/v1/configmaps",
                "/api/v1/namespaces/kube-system/configmaps/cfg",
            ],
        ),
        (
            "c3-guard-refuses-pod-streams",
            "The Kubernetes guard refuses pods exec, attach, log, portforward, proxy",
            &[
                "/api/v1/namespaces/x/pods/p/exec",
                "/api/v1/namespaces/x/pods/p/attach",
                "/api/v1/namespaces/x/pods/p/log",
                "/api/v1/namespaces/x/pods/p/portforward",
                "/api/v1/namespaces/x/pods/p/proxy",
            ],
        ),
        (
            "c3-guard-refuses-proxies",
            "The Kubernetes guard refuses nodes/proxy, services/proxy and serviceaccount tokens",
            &[
                "/api/v1/nodes/node-a/proxy",
                "/api/v1/nodes/node-a/proxy/containerLogs/x/p/c",
                "/api/v1/namespaces/x/services/s/proxy",
                "/api/v1/namespaces/x/serviceaccounts/sa/token",
            ],
        ),
        (
            "c3-guard-refuses-custom-resources",
            "The Kubernetes guard refuses custom resources and other API groups",
            &[
                "/apis/example.com/v1/widgets",
                "/apis/example.com/v1/namespaces/x/widgets/w",
                "/apis/apps/v1/deployments",
                "/apis/example.com",
            ],
        ),
        (
            "c3-guard-refuses-traversal",
            "The Kubernetes guard refuses traversal and encoding tricks",
            &[
                "/api/v1/nodes/../secrets",
                "/api/v1/nodes/node-a/../../namespaces/x/secrets/y",
                "/api/v1/nodes/%2e%2e/secrets",
                "/api/v1/nodes/%2E%2E/configmaps",
                "/api/v1/nodes/%252e%252e/secrets",
                "/api/v1/nodes%2f..%2fsecrets",
                "/api/v1/nodes/../../../apis/example.com/v1/widgets",
            ],
        ),
        (
            "c3-guard-refuses-off-allowlist",
            "The Kubernetes guard refuses queries, watches, subresources and non-resource URLs",
            &[
                "/api/v1/nodes?watch=true",
                "/api/v1/nodes/node-a?dryRun=All",
                "/api/v1/nodes/node-a/status",
                "/api/v1/namespaces/x/pods",
                "/logs",
                "/version",
                "api/v1/nodes",
            ],
        ),
    ];
    for (id, title, paths) in groups {
        push_with(v, C3, Scope::Local, id, title, paths, guard);
    }
    push(
        v,
        C3,
        Scope::Local,
        "c3-guard-allows-only-nodes",
        "The guard allows exactly GET nodes, GET node, PATCH node",
        allowlist,
    );
    push(
        v,
        C3,
        Scope::Any,
        "c3-gateway-refuses-smuggled-node",
        "A node name smuggling a path to Secrets is refused by the gateway and logged",
        gateway_smuggle,
    );
    push(v, C3, Scope::Local, "c3-agent-refuses-smuggled-node", "A compromised gateway's logged dispatch smuggling a path is refused by the agent; nothing reaches the apiserver", agent_smuggle);
    push(
        v,
        C3,
        Scope::Any,
        "c3-policy-kube-actions-are-allowlisted",
        "The approved policy's Kubernetes actions are node and admission-webhook actions only, and the webhook change needs the customer's approval",
        policy_kube,
    );
    push(v, C3, Scope::Local, "c3-nodes-output-drops-data-plane-detail", "kube.nodes reduces Nodes to name, version, conditions: labels, annotations, addresses, images dropped", nodes_output);
}

fn guard(_cx: &Ctx, paths: Paths) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ev = Vec::new();
        for path in paths {
            let mut resource = String::new();
            for method in ["GET", "PATCH", "POST", "PUT", "DELETE"] {
                match palisade_agent::kube::check_request(method, path) {
                    Err(palisade_agent::kube::KubeError::Denied { resource: r, .. }) => {
                        resource = r
                    }
                    other => bail!("{method} {path} was not denied: {other:?}"),
                }
            }
            ev.push(format!(
                "{path}: denied for 5 methods (resource {resource})"
            ));
        }
        Ok(ev)
    })
}

fn allowlist(_cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        use palisade_agent::kube::check_request;
        if check_request("GET", "/api/v1/nodes").is_err()
            || check_request("GET", "/api/v1/nodes/node-a").is_err()
            || check_request("PATCH", "/api/v1/nodes/node-a").is_err()
        {
            bail!("the three node requests are not allowed");
        }
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            if check_request(method, "/api/v1/nodes/node-a").is_ok() {
                bail!("{method} on a node is allowed");
            }
        }
        for method in ["PATCH", "POST", "DELETE", "PUT"] {
            if check_request(method, "/api/v1/nodes").is_ok() {
                bail!("{method} on the node list is allowed");
            }
        }
        Ok(vec![
            "allowed: GET /api/v1/nodes, GET and PATCH /api/v1/nodes/{name}".into(),
            "8 other method/path pairs denied".into(),
        ])
    })
}

const SMUGGLED: &[&str] = &[
    "../secrets",
    "../namespaces/x/secrets/y",
    "node-a/../../configmaps",
    "%2e%2e/secrets",
    "node-a/proxy",
];

fn gateway_smuggle(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let mut ev = Vec::new();
        for node in &SMUGGLED[..2] {
            let got = cx.op_run("kube.uncordon", &[("node", node)]).await?;
            ev.extend(
                cx.expect_refusal(&format!("kube.uncordon node={node}"), got, 422, "validate")
                    .await?,
            );
        }
        Ok(ev)
    })
}

fn agent_smuggle(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let l = cx.local()?;
        let before = l.kube.requests().len();
        let mut ev = Vec::new();
        for node in SMUGGLED {
            let mut p = l.prepare("kube.cordon", &[("node", "worker-1")])?;
            p.dispatch
                .parameters
                .insert("node".into(), ParamValue::Str((*node).into()));
            p.intent.parameters = p.dispatch.parameters.clone();
            p.intent.dispatch_digest = p.dispatch.digest().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (req, index) = l.logged_request(&p).await?;
            let r = l.refused(&req).await?;
            if r.code != RefusalCode::InvalidParameters {
                bail!("node {node}: refused as {:?}: {r}", r.code);
            }
            ev.push(format!(
                "node={node}: logged at {index}, agent refusal {:?}",
                r.code
            ));
        }
        let after = l.kube.requests();
        if after.len() != before {
            bail!("the apiserver received {} requests", after.len() - before);
        }
        ev.push("the recording apiserver received no request".into());
        Ok(ev)
    })
}

fn policy_kube(cx: &Ctx) -> BoxFut<'_> {
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
            bail!("GET actions answered {s}");
        }
        let list = v["actions"]
            .as_array()
            .or_else(|| v.as_array())
            .cloned()
            .unwrap_or_default();
        let kube: Vec<String> = list
            .iter()
            .filter_map(|a| a["name"].as_str())
            .filter(|n| n.starts_with("kube."))
            .map(str::to_string)
            .collect();
        for n in &kube {
            if ![
                "kube.nodes",
                "kube.cordon",
                "kube.uncordon",
                "kube.webhooks",
                "kube.webhook-bypass",
            ]
            .contains(&n.as_str())
            {
                bail!("Kubernetes action beyond nodes and admission webhooks: {n}");
            }
        }
        if !palisade_policy::catalogue::needs_customer_approval("kube.webhook-bypass") {
            bail!("kube.webhook-bypass runs without the customer's approval");
        }
        if kube.is_empty() {
            bail!("no Kubernetes action listed: {}", short(&v.to_string()));
        }
        Ok(vec![format!("Kubernetes actions: {}", kube.join(", "))])
    })
}

fn nodes_output(cx: &Ctx) -> BoxFut<'_> {
    Box::pin(async move {
        let (s, op) = cx.op_run("kube.nodes", &[]).await?;
        if s != 200 || op["status"] != "succeeded" {
            bail!("kube.nodes failed (HTTP {s}): {}", short(&op.to_string()));
        }
        let out = op["output"].to_string();
        for leak in [
            cx.canary.as_str(),
            "10.0.3.17",
            "registry.example.com",
            "containerd",
            "aws:///",
            "labels",
            "annotations",
        ] {
            if out.contains(leak) {
                bail!("{leak} left the agent: {}", short(&out));
            }
        }
        let names: Vec<String> = op["output"]["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if names.len() != 2 {
            bail!("expected the 2 nodes of the apiserver: {}", short(&out));
        }
        Ok(vec![
            format!("kube.nodes: HTTP {s}, nodes {}", names.join(",")),
            "no canary, address, image, label or annotation in the output".into(),
        ])
    })
}
