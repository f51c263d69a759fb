//! The single-machine deployment that `palisade up` runs: which files it needs and
//! which processes it starts. Every step only creates what is missing, so a second
//! run reuses the directory as it is.

use anyhow::Context;
use palisade_core::inventory::{demo_tenant, Inventory};
use palisade_pki::{CaPaths, CertName, IssuedPaths, Role};
use palisade_tlog::note::KeyType;
use palisade_tlog_service::keyfile::{file_stem, write_key_pair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One process of the stack.
pub struct ProcessSpec {
    pub name: String,
    pub what: String,
    /// Arguments after `palisade`.
    pub args: Vec<String>,
    pub addr: SocketAddr,
    /// Serves on this Unix socket instead of `addr` (the KMS plugin).
    pub unix_socket: Option<PathBuf>,
    /// A warning printed in `up`'s summary.
    pub warning: Option<&'static str>,
}

pub struct Stack {
    pub dir: PathBuf,
    pub pki_dir: PathBuf,
    pub inventory: PathBuf,
    pub processes: Vec<ProcessSpec>,
    pub next_steps: Vec<String>,
    /// The demo tenant's signed witness statement, registered once the gateway runs.
    pub tenant_statement: PathBuf,
    pub gateway_url: String,
    /// The demo cluster's instances.
    pub instances: Vec<String>,
    /// What the demo tenant's console login link carries after its one-time code:
    /// the keys of the demo log (`&trust=…`), which the page pins.
    pub console_trust: String,
}

/// The certificates the stack needs besides one agent certificate per instance:
/// (role, name).
const CERTS: &[(Role, &str)] = &[
    (Role::Log, "log"),
    (Role::Witness, "witness"),
    (Role::Witness, "tenant-demo-witness"),
    (Role::Gateway, "gateway"),
    (Role::Operator, SCHEDULER),
];

/// What `palisade up` was asked for.
pub struct Options {
    pub base_port: u16,
    /// On the first run: the demo tenant requires customer approval.
    pub approvals: bool,
    /// The demo cluster's instances (each an agent and an etcd member); `None`: as
    /// the directory has them, else one.
    pub instances: Option<u16>,
    /// On the first run: etcd's `--quota-backend-bytes` for the demo members.
    pub etcd_quota_bytes: Option<u64>,
}

/// The most instances `palisade up` runs.
pub const MAX_INSTANCES: u16 = 5;

/// Where instance `i` of the demo cluster listens.
#[derive(Debug, Clone, Copy)]
struct InstancePorts {
    agent: SocketAddr,
    etcd_client: SocketAddr,
    etcd_peer: SocketAddr,
    metrics: SocketAddr,
}

/// Instance `i`'s name, `demo-<i>`.
pub fn instance_name(i: u16) -> String {
    format!("demo-{i}")
}

/// Instance `i`'s agent directory: `agent` for the first (as before there were
/// several), `agent-demo-<i>` for the others.
pub fn agent_dir(dir: &Path, i: u16) -> PathBuf {
    if i == 0 {
        dir.join("agent")
    } else {
        dir.join(format!("agent-{}", instance_name(i)))
    }
}

/// Instance `i`'s etcd data directory.
pub fn etcd_data_dir(dir: &Path, i: u16) -> PathBuf {
    if i == 0 {
        dir.join("etcd")
    } else {
        dir.join(format!("etcd-{}", instance_name(i)))
    }
}

/// How many instances the directory's inventory gives the demo cluster.
fn existing_instances(inventory: &Path) -> anyhow::Result<Option<u16>> {
    if !inventory.exists() {
        return Ok(None);
    }
    let inv = palisade_core::config::load::<Inventory>(inventory)?;
    let n = inv.clusters.first().map_or(0, |c| c.instances.len());
    Ok(Some(u16::try_from(n).unwrap_or(u16::MAX)))
}

/// The demo's automation identity: a `[[service]]` of the gateway that may take
/// backups, authenticated by its pinned operator certificate.
pub const SCHEDULER: &str = "scheduler";

pub fn prepare(dir: &Path, options: &Options) -> anyhow::Result<Stack> {
    let (base_port, approvals) = (options.base_port, options.approvals);
    let given = dir;
    // Configuration files resolve relative paths against their own directory, so
    // every path written into them is absolute.
    let absolute =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let dir = absolute.as_path();
    create_private_dir(dir)?;
    let pki_dir = dir.join("pki");
    if !CaPaths::in_dir(&pki_dir).cert.exists() {
        palisade_pki::init_ca(&pki_dir, false)?;
    }
    let inventory = dir.join("inventory.toml");
    let instances = match (existing_instances(&inventory)?, options.instances) {
        (Some(had), Some(asked)) if had != asked => anyhow::bail!(
            "{} was created with {had} instance(s), not {asked}: use another --dir for a cluster of {asked}",
            given.display()
        ),
        (Some(had), _) => had,
        (None, asked) => asked.unwrap_or(1),
    };
    if instances == 0 || instances > MAX_INSTANCES || instances % 2 == 0 {
        anyhow::bail!(
            "--instances must be 1, 3 or 5 (an etcd cluster of an odd size up to {MAX_INSTANCES}), not {instances}"
        );
    }
    let agent_certs: Vec<(Role, String)> = (0..instances)
        .map(|i| (Role::Agent, instance_name(i)))
        .collect();
    for (role, name) in CERTS
        .iter()
        .map(|(r, n)| (*r, (*n).to_string()))
        .chain(agent_certs)
    {
        let (role, name) = (&role, CertName::new(&name)?);
        if !IssuedPaths::in_dir(&pki_dir, *role, &name).cert.exists() {
            palisade_pki::issue(
                &pki_dir,
                *role,
                &name,
                &[],
                palisade_pki::DEFAULT_LEAF_DAYS,
                false,
            )?;
        }
    }
    let port = |offset: u16| -> anyhow::Result<SocketAddr> {
        let p = base_port
            .checked_add(offset)
            .context("--base-port is too high")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], p)))
    };

    let ports = (0..instances)
        .map(|i| {
            if i == 0 {
                return Ok(InstancePorts {
                    agent: port(3)?,
                    etcd_client: port(4)?,
                    etcd_peer: port(5)?,
                    metrics: port(7)?,
                });
            }
            let first = palisade_core::ports::UP_PORTS
                + palisade_core::ports::PORTS_PER_EXTRA_INSTANCE * (i - 1);
            Ok(InstancePorts {
                agent: port(first)?,
                etcd_client: port(first + 1)?,
                etcd_peer: port(first + 2)?,
                metrics: port(first + 3)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !inventory.exists() {
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("https://{}", p.agent))
            .collect();
        let demo = Inventory::demo_instances(&urls);
        write_new(&inventory, &toml_text(&demo)?)?;
    }
    palisade_core::config::load::<Inventory>(&inventory)?;

    let witness = prepare_witness(dir, &pki_dir, port(2)?, port(9)?)?;
    let tenant_witness = prepare_tenant(dir, &pki_dir, port(6)?, approvals)?;
    let log = prepare_log(
        dir,
        &pki_dir,
        &inventory,
        port(1)?,
        port(2)?,
        port(6)?,
        port(8)?,
    )?;
    let trust = prepare_trust(dir)?;
    let kms = prepare_kms(dir, port(10)?)?;
    let agents = (0..instances)
        .map(|i| prepare_agent(dir, &pki_dir, &trust, i, &ports, options.etcd_quota_bytes))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (gateway, operator) = prepare_gateway(
        dir,
        &pki_dir,
        &inventory,
        &trust,
        port(0)?,
        port(1)?,
        instances,
    )?;
    let credentials_flag = if given == Path::new(".palisade") {
        String::new()
    } else {
        format!(" --credentials {}/op/credentials.json", dir.display())
    };

    Ok(Stack {
        dir: dir.to_path_buf(),
        pki_dir,
        inventory,
        tenant_statement: dir.join(demo_tenant::TRUST_STATEMENT),
        gateway_url: format!("https://{}", port(0)?),
        console_trust: console_trust(dir)?,
        instances: (0..instances).map(instance_name).collect(),
        processes: [witness, tenant_witness, log, kms]
            .into_iter()
            .chain(agents)
            .chain([gateway])
            .collect(),
        next_steps: vec![
            format!(
                "palisade op{credentials_flag} run etcd.status --cluster demo --ticket DEMO-1 --reason \"first look\"\n     \
                 (you are on call as {operator:?} in the demo rota; `palisade op whoami` shows it)"
            ),
            format!(
            "palisade audit verify --url https://{log}/logs/demo --token @{d}/tenant-demo.token --ca {d}/pki/ca.crt \\\n       \
             --origin {BASE_ORIGIN}/demo --log-key @{d}/log/keys/{stem}.pub \\\n       \
             --witness-key @{d}/witness/keys/{wstem}.pub --witness-key @{d}/{twitness} --max-age 5m",
            log = port(1)?,
            d = dir.display(),
            stem = file_stem(BASE_ORIGIN),
            wstem = file_stem(WITNESS_NAME),
            twitness = demo_tenant::WITNESS_PUBLIC_KEY,
        ),
            format!(
            "palisade customer trust --gateway https://{gw} --ca {d}/pki/ca.crt --token @{d}/tenant-demo.token \\\n       \
             --tenant demo --cluster demo\n     \
             (the demo tenant's own witness, key under {d}/{tdir}/, which the agent requires beside the provider's)",
            gw = port(0)?,
            d = dir.display(),
            tdir = demo_tenant::DIR,
        ),
            format!(
            "palisade audit watch --url https://{log}/logs/demo --token @{d}/tenant-demo.token --ca {d}/pki/ca.crt \\\n       \
             --origin {BASE_ORIGIN}/demo --log-key @{d}/log/keys/{stem}.pub \\\n       \
             --witness-key @{d}/witness/keys/{wstem}.pub --witness-key @{d}/{twitness} --state {d}/tenant-demo.watch.state\n     \
             (keeps checking that the log only grows and stays freshly cosigned by both witnesses; `audit events` with the same options and --tenant-key {d}/{tkey} prints it)",
            log = port(1)?,
            d = dir.display(),
            stem = file_stem(BASE_ORIGIN),
            wstem = file_stem(WITNESS_NAME),
            twitness = demo_tenant::WITNESS_PUBLIC_KEY,
            tkey = demo_tenant::PUBLIC_KEY,
        )]
        .into_iter()
        .chain(demo_requires_approval(dir).then(|| {
            format!(
                "palisade customer requests --gateway https://{gw} --ca {d}/pki/ca.crt --token @{d}/tenant-demo.token \\\n       \
                 --tenant demo --cluster demo\n     \
                 (disruptive actions wait for the demo tenant's approval: `palisade customer approve ID --key {d}/{tdir}/approvers/ana.key` with the same options)",
                gw = port(0).map(|p| p.to_string()).unwrap_or_default(),
                d = dir.display(),
                tdir = demo_tenant::DIR,
            )
        }))
        .collect(),
    })
}

/// The keys the demo log must be signed and cosigned with (the log's, the provider
/// witness's and the tenant's own witness's), as the console's login link carries
/// them (`&trust=<base64url JSON>`) for the page to pin.
fn console_trust(dir: &Path) -> anyhow::Result<String> {
    crate::customer_cmd::console_trust(
        &format!("{BASE_ORIGIN}/demo"),
        &format!(
            "@{}",
            dir.join("log/keys")
                .join(format!("{}.pub", file_stem(BASE_ORIGIN)))
                .display()
        ),
        &[
            format!(
                "@{}",
                dir.join("witness/keys")
                    .join(format!("{}.pub", file_stem(WITNESS_NAME)))
                    .display()
            ),
            format!("@{}", dir.join(demo_tenant::WITNESS_PUBLIC_KEY).display()),
        ],
        Some(&dir.join(demo_tenant::PUBLIC_KEY)),
    )
}

/// Whether the demo tenant's statement requires customer approval for anything.
fn demo_requires_approval(dir: &Path) -> bool {
    std::fs::read(dir.join(demo_tenant::TRUST_STATEMENT))
        .ok()
        .and_then(|b| serde_json::from_slice::<palisade_policy::dsse::Envelope>(&b).ok())
        .and_then(|env| palisade_policy::tenant::TenantTrust::decode(&env).ok())
        .is_some_and(|(t, _)| t.approval.is_some())
}

/// The operator name the demo rota puts on call: the current user, if that is a
/// valid operator name.
fn demo_operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
    if valid {
        user
    } else {
        "operator".to_string()
    }
}

/// The gateway: its pseudonym secret, the development issuer, a demo rota that
/// puts the current user on call, the configuration, and the operator's credentials
/// (a development token) so `palisade op` works right away.
fn prepare_gateway(
    dir: &Path,
    pki: &Path,
    inventory: &Path,
    trust: &Trust,
    addr: SocketAddr,
    log: SocketAddr,
    instances: u16,
) -> anyhow::Result<(ProcessSpec, String)> {
    let gdir = dir.join("gateway");
    let keys = gdir.join("keys");
    let scheduler = IssuedPaths::in_dir(pki, Role::Operator, &CertName::new(SCHEDULER)?);
    let pseudonym = keys.join("pseudonym.key");
    if !pseudonym.exists() {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw)
            .map_err(|e| anyhow::anyhow!("no randomness for the pseudonym key: {e}"))?;
        write_private(&pseudonym, &hex::encode(raw))?;
    }
    let dev_key = keys.join("dev-issuer.key");
    let issuer = if dev_key.exists() {
        palisade_authn::DevIssuer::load(&dev_key)?
    } else {
        palisade_authn::DevIssuer::create(&dev_key)?
    };
    let operator = demo_operator();
    let rota = gdir.join("rota.yaml");
    if !rota.exists() {
        write_new(
            &rota,
            &format!(
                "# Written by `palisade up`: the demo schedule puts {operator} on call all the time.\n\
                 # A real rota hands off between people (docs/configuration.md).\n\
                 apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: demo\n    timeZone: UTC\n    \
                 rotation: always\n    participants: [{operator:?}]\n"
            ),
        )?;
    }
    let token = std::fs::read_to_string(dir.join("tenant-demo.token"))?
        .trim()
        .to_string();
    let token_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let config = gdir.join("gateway.toml");
    if !config.exists() {
        let log_key = std::fs::read_to_string(ensure_log_key(dir)?)?;
        let witness_key = std::fs::read_to_string(
            dir.join("witness/keys")
                .join(format!("{}.pub", file_stem(WITNESS_NAME))),
        )?;
        let text = format!(
            "listen = \"{addr}\"\nsigning_key = \"keys/gateway.key\"\npseudonym_key = \"keys/pseudonym.key\"\n\
             inventory = \"{inventory}\"\nstate = \"state.redb\"\nrotas = [\"rota.yaml\"]\n\
             # Operator certificates from the demo CA (`palisade pki issue --kind operator`):\n\
             # whoever holds that CA key can log in as anyone, so only for the demo.\n\
             operator_certificates = true\noperator_ca = \"{ca}\"\n\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [log]\nurl = \"https://{log}\"\nbase_origin = \"{BASE_ORIGIN}\"\nkey = \"{log_key}\"\n\
             witnesses = [\"{wkey}\"]\nwitness_quorum = 1\n\n\
             [trust]\nrepo = \"{repo}\"\nroot = \"{root}\"\ndatastore = \"tuf-datastore\"\n\n\
             # Development logins (`palisade op login --dev NAME`): never on a real deployment.\n\
             [dev_issuer]\nkey = \"keys/dev-issuer.key\"\n\n\
             [[grant]]\nschedule = \"demo\"\nroles = [\"operator\", \"senior-operator\"]\nclusters = [\"*\"]\n\n\
             {agents}\
             [[reader]]\ntenant = \"demo\"\ntoken_sha256 = \"{token_sha256}\"\n\n\
             # The demo tenant's statement key: only statements it signed are recorded.\n\
             [[tenant_key]]\ntenant = \"demo\"\nkey = \"{tenant_pub}\"\n\n\
             # A larger budget than the default 10: verify-claims' attacks refuse many requests\n\
             # of one operator in a minute, and each must be in the log.\n\
             [refusal_log]\nmax = 100\nper_secs = 60\n\n\
             # Automation: the scheduler takes backups (palisade op --credentials scheduler/credentials.json),\n\
             # with its own certificate, logged as automation.\n\
             [[service]]\nname = \"{SCHEDULER}\"\ncertificates = [\"{scheduler_sha256}\"]\nrole = \"operator\"\n\
             actions = [\"etcd.backup\"]\nclusters = [\"*\"]\n",
            scheduler_sha256 = certificate_sha256(&scheduler.cert)?,
            inventory = inventory.display(),
            ca = pki.join("ca.crt").display(),
            cert = pki.join("gateway-gateway.crt").display(),
            key = pki.join("gateway-gateway.key").display(),
            log_key = log_key.trim(),
            wkey = witness_key.trim(),
            repo = trust.repo.display(),
            root = trust.root.display(),
            agents = (0..instances)
                .map(|i| format!(
                    "[[agent]]\ninstance = \"{}\"\nkey = \"{}\"\n\n",
                    instance_name(i),
                    agent_dir(dir, i).join("keys/agent.pub").display()
                ))
                .collect::<String>(),
            tenant_pub = dir.join(demo_tenant::PUBLIC_KEY).display(),
        );
        write_new(&config, &header(&text))?;
    }
    // A fresh development token for the demo operator at every start.
    let now = palisade_core::time::Timestamp::now().unix_seconds();
    let ttl = 12 * 3600;
    let op_token = issuer.issue(
        &palisade_gateway::server::dev_issuer_url(&addr.to_string()),
        palisade_gateway::auth::DEV_AUDIENCE,
        &operator,
        &[],
        ttl,
        now,
    )?;
    // The scheduler's credentials: its certificate, no token.
    let scheduler_credentials = dir.join("scheduler/credentials.json");
    if !scheduler_credentials.exists() {
        std::fs::create_dir_all(dir.join("scheduler"))?;
        write_private(
            &scheduler_credentials,
            &serde_json::to_string_pretty(&serde_json::json!({
                "gateway": format!("https://{addr}"),
                "ca": std::fs::canonicalize(pki.join("ca.crt"))?,
                "cert": std::fs::canonicalize(&scheduler.cert)?,
                "key": std::fs::canonicalize(&scheduler.key)?,
            }))?,
        )?;
    }
    let credentials = dir.join("op/credentials.json");
    if credentials.exists() {
        std::fs::remove_file(&credentials)
            .with_context(|| format!("cannot replace {}", credentials.display()))?;
    }
    std::fs::create_dir_all(dir.join("op"))?;
    let ca = std::fs::canonicalize(pki.join("ca.crt"))?;
    write_private(
        &credentials,
        &serde_json::to_string_pretty(&serde_json::json!({
            "gateway": format!("https://{addr}"),
            "ca": ca,
            "token": op_token,
            "expires_at": palisade_core::time::Timestamp::from_unix_seconds(now + ttl as i64).to_string(),
        }))?,
    )?;
    Ok((
        ProcessSpec {
            name: "gateway".into(),
            what: "the administrative API: on-call operators run approved, logged actions".into(),
            args: vec![
                "gateway".into(),
                "serve".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            addr,
            unix_socket: None,
            warning: None,
        },
        operator,
    ))
}

/// The SHA-256 (hex) of the DER of the first certificate in `path`, as a gateway
/// `[[service]]` pins it.
fn certificate_sha256(path: &Path) -> anyhow::Result<String> {
    let certs = palisade_pki::load_certs(path, "certificate")?;
    let first = certs
        .first()
        .with_context(|| format!("no certificate in {}", path.display()))?;
    Ok(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        first.as_ref(),
    )))
}

/// The base origin of the demo logs; cluster `demo` logs to `palisade.local/log/demo`.
pub const BASE_ORIGIN: &str = "palisade.local/log";
const WITNESS_NAME: &str = "palisade.local/witness";

/// The witness: its key, its state file and its configuration.
fn prepare_witness(
    dir: &Path,
    pki: &Path,
    addr: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<ProcessSpec> {
    let wdir = dir.join("witness");
    let keys = wdir.join("keys");
    let stem = file_stem(WITNESS_NAME);
    if !keys.join(format!("{stem}.key")).exists() {
        write_key_pair(WITNESS_NAME, KeyType::Cosignature, &keys, false)?;
    }
    witness_process(
        dir,
        pki,
        addr,
        &wdir,
        &format!("keys/{stem}.key"),
        "witness",
        Witnessed::EveryLog,
        Some(metrics),
        ("witness", "cosigns checkpoints after checking consistency"),
    )
}

/// A witness's configuration (written once) and its process: it cosigns with
/// `key_file`, serves TLS as the witness certificate `cert_name`, for `logs`.
/// The logs a witness of `up` cosigns for.
enum Witnessed {
    /// Every log of the log service (an origin prefix).
    EveryLog,
    /// These clusters' logs only (the tenant's witness).
    Clusters(Vec<String>),
}

#[allow(clippy::too_many_arguments)]
fn witness_process(
    dir: &Path,
    pki: &Path,
    addr: SocketAddr,
    wdir: &Path,
    key_file: &str,
    cert_name: &str,
    logs: Witnessed,
    metrics: Option<SocketAddr>,
    (name, what): (&'static str, &'static str),
) -> anyhow::Result<ProcessSpec> {
    let config = wdir.join("witness.toml");
    if !config.exists() {
        let log_key = std::fs::read_to_string(ensure_log_key(dir)?)?;
        let metrics = metrics
            .map(|m| format!("metrics_listen = \"{m}\"\n"))
            .unwrap_or_default();
        let mut text = format!(
            "listen = \"{addr}\"\nkey_file = \"{key_file}\"\nstate_file = \"state.redb\"\n{metrics}\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            ca = pki.join("ca.crt").display(),
            cert = pki.join(format!("witness-{cert_name}.crt")).display(),
            key = pki.join(format!("witness-{cert_name}.key")).display(),
        );
        match logs {
            // The provider's witness: every log of the service, those of clusters
            // added later included.
            Witnessed::EveryLog => text.push_str(&format!(
                "\n[[log]]\norigin_prefix = \"{BASE_ORIGIN}/\"\nkey = \"{}\"\n",
                log_key.trim()
            )),
            Witnessed::Clusters(clusters) => {
                for log in clusters {
                    text.push_str(&format!(
                        "\n[[log]]\norigin = \"{BASE_ORIGIN}/{log}\"\nkey = \"{}\"\n",
                        log_key.trim()
                    ));
                }
            }
        }
        write_new(&config, &header(&text))?;
    }
    Ok(ProcessSpec {
        name: name.into(),
        what: what.into(),
        args: vec![
            "witness".into(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        addr,
        unix_socket: None,
        warning: None,
    })
}

/// The demo tenant's side, apart from everything the provider holds: its statement
/// key, its own witness (a process of its own, its key under `tenant-demo/`), and
/// the statement, signed once, that makes the demo cluster's agent require that
/// witness. (Its TLS certificate comes from the demo CA: transport only.)
/// The demo tenant's two approvers (keys under `tenant-demo/approvers/`).
pub const DEMO_APPROVERS: [&str; 2] = ["ana", "ben"];

fn prepare_tenant(
    dir: &Path,
    pki: &Path,
    addr: SocketAddr,
    approvals: bool,
) -> anyhow::Result<ProcessSpec> {
    use palisade_policy::keys;
    let tdir = dir.join(demo_tenant::DIR);
    create_private_dir(&tdir)?;
    if !dir.join(demo_tenant::KEY).exists() {
        keys::generate("tenant", &tdir, false)?;
    }
    let wdir = tdir.join("witness");
    let wkeys = wdir.join("keys");
    if !dir.join(demo_tenant::WITNESS_KEY).exists() {
        write_key_pair(
            demo_tenant::WITNESS_NAME,
            KeyType::Cosignature,
            &wkeys,
            false,
        )?;
    }
    let spec = witness_process(
        dir,
        pki,
        addr,
        &wdir,
        &dir.join(demo_tenant::WITNESS_KEY).display().to_string(),
        "tenant-demo-witness",
        Witnessed::Clusters(demo_tenant_clusters(dir)?),
        None,
        (
            "tenant-witness",
            "the demo tenant's own witness: the agent requires its cosignature too",
        ),
    )?;
    let statement = dir.join(demo_tenant::TRUST_STATEMENT);
    if !statement.exists() {
        let witness = std::fs::read_to_string(dir.join(demo_tenant::WITNESS_PUBLIC_KEY))?;
        let trust = palisade_policy::tenant::TenantTrust {
            schema: palisade_policy::tenant::TENANT_TRUST_SCHEMA.into(),
            tenant: palisade_core::TenantId::parse("demo")?,
            cluster: palisade_core::ClusterId::parse("demo")?,
            seq: 1,
            issued_at: palisade_core::time::Timestamp::now(),
            witnesses: vec![witness.trim().to_string()],
            quorum: 1,
            approval: if approvals {
                Some(demo_approval_policy(dir)?)
            } else {
                None
            },
        };
        let signed = trust
            .sign(&keys::SigningKey::read(&dir.join(demo_tenant::KEY))?)
            .map_err(|e| anyhow::anyhow!("the demo tenant's statement: {e}"))?;
        write_new(&statement, &serde_json::to_string_pretty(&signed)?)?;
    }
    Ok(spec)
}

/// The clusters of the demo tenant in the inventory (its witness covers their logs).
/// The demo tenant's approval policy: one approval by either demo approver for
/// every disruptive action; the approvers' keys are made here.
fn demo_approval_policy(
    dir: &Path,
) -> anyhow::Result<palisade_policy::customer_approval::ApprovalPolicy> {
    use palisade_policy::customer_approval as ca;
    let adir = dir.join(demo_tenant::DIR).join("approvers");
    let mut approvers = Vec::new();
    for name in DEMO_APPROVERS {
        let public = adir.join(format!("{name}.pub"));
        if !public.exists() {
            palisade_policy::keys::generate(name, &adir, false)?;
        }
        approvers.push(
            ca::Approver::of(&palisade_policy::keys::PublicKey::read(&public)?)
                .map_err(anyhow::Error::msg)?,
        );
    }
    Ok(ca::ApprovalPolicy {
        all: false,
        risks: vec![palisade_policy::model::Risk::Disruptive],
        actions: vec![],
        approvers,
        threshold: 1,
        approval_ttl_secs: ca::DEFAULT_APPROVAL_TTL_SECS,
        request_ttl_secs: ca::DEFAULT_REQUEST_TTL_SECS,
    })
}

fn demo_tenant_clusters(dir: &Path) -> anyhow::Result<Vec<String>> {
    let inventory: Inventory = palisade_core::config::load(&dir.join("inventory.toml"))?;
    Ok(inventory
        .clusters
        .iter()
        .filter(|c| c.tenant.as_str() == "demo")
        .map(|c| c.id.to_string())
        .collect())
}

fn ensure_log_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let keys = dir.join("log").join("keys");
    let stem = file_stem(BASE_ORIGIN);
    if !keys.join(format!("{stem}.key")).exists() {
        write_key_pair(BASE_ORIGIN, KeyType::Ed25519, &keys, false)?;
    }
    Ok(keys.join(format!("{stem}.pub")))
}

/// The log service: its key, the demo tenant's read token, and its configuration.
fn prepare_log(
    dir: &Path,
    pki: &Path,
    inventory: &Path,
    addr: SocketAddr,
    witness: SocketAddr,
    tenant_witness: SocketAddr,
    metrics: SocketAddr,
) -> anyhow::Result<ProcessSpec> {
    let ldir = dir.join("log");
    ensure_log_key(dir)?;
    let token_file = dir.join("tenant-demo.token");
    if !token_file.exists() {
        let mut raw = [0u8; 24];
        getrandom::getrandom(&mut raw)
            .map_err(|e| anyhow::anyhow!("no randomness for the demo token: {e}"))?;
        write_private(&token_file, &format!("{}\n", hex::encode(raw)))?;
    }
    let token = std::fs::read_to_string(&token_file)?.trim().to_string();
    let token_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let config = ldir.join("log.toml");
    if !config.exists() {
        let witness_key = std::fs::read_to_string(
            dir.join("witness/keys")
                .join(format!("{}.pub", file_stem(WITNESS_NAME))),
        )?;
        let text = format!(
            "listen = \"{addr}\"\nbase_origin = \"{BASE_ORIGIN}\"\nkey_file = \"keys/{stem}.key\"\n\
             inventory = \"{inventory}\"\nwitness_quorum = 1\nmetrics_listen = \"{metrics}\"\n\n\
             [storage]\nkind = \"local\"\ndir = \"tiles\"\n\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [[reader]]\ntenant = \"demo\"\ntoken_sha256 = \"{token_sha256}\"\n\n\
             [[witness]]\nname = \"{WITNESS_NAME}\"\nurl = \"https://{witness}\"\nkey = \"{wkey}\"\n\n\
             # The demo tenant's own witness: the demo cluster's agent requires it, so\n\
             # every append to that log waits for it too.\n\
             [[witness]]\nname = \"{twname}\"\nurl = \"https://{tenant_witness}\"\nkey = \"{twkey}\"\n\
             clusters = [{tclusters}]\nrequired = true\n",
            tclusters = demo_tenant_clusters(dir)?
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            twname = demo_tenant::WITNESS_NAME,
            twkey = std::fs::read_to_string(dir.join(demo_tenant::WITNESS_PUBLIC_KEY))?.trim(),
            stem = file_stem(BASE_ORIGIN),
            inventory = inventory.display(),
            ca = pki.join("ca.crt").display(),
            cert = pki.join("log-log.crt").display(),
            key = pki.join("log-log.key").display(),
            wkey = witness_key.trim(),
        );
        write_new(&config, &header(&text))?;
    }
    Ok(ProcessSpec {
        name: "log".into(),
        what: "per-cluster tamper-evident logs (append: gateway/agent; read: tenants)".into(),
        args: vec![
            "log".into(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        addr,
        unix_socket: None,
        warning: None,
    })
}

/// The demo cluster's TUF repository: root, online and CI keys, three reviewers
/// (alice, bob, carol; threshold 2), and the default action policy proposed by alice
/// and approved by bob and carol. Every key stays on this machine: a demo only.
pub struct Trust {
    pub repo: PathBuf,
    pub root: PathBuf,
}

/// The policy `palisade up` publishes (deploy/policy/default.yaml).
pub const DEFAULT_POLICY: &str = include_str!("../../../deploy/policy/default.yaml");

fn prepare_trust(dir: &Path) -> anyhow::Result<Trust> {
    use palisade_policy::keys::{self, PublicKey, SigningKey};
    use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustConfig};
    let tdir = dir.join("trust");
    let keys_dir = tdir.join("keys");
    let repo = RepoDir::new(tdir.join("repo"));
    let trust = Trust {
        repo: tdir.join("repo"),
        root: tdir.join("root.json"),
    };
    if trust.root.exists() {
        return Ok(trust);
    }
    let life = Lifetimes::default();
    let rdir = keys_dir.join("reviewers");
    let mut reviewers = Vec::new();
    for n in ["alice", "bob", "carol"] {
        if !rdir.join(format!("{n}.key")).exists() {
            keys::generate(n, &rdir, false)?;
        }
        reviewers.push(PublicKey::read(&rdir.join(format!("{n}.pub")))?);
    }
    let cdir = keys_dir.join("ci");
    if !cdir.join("ci.key").exists() {
        keys::generate("ci", &cdir, false)?;
    }
    let ci = PublicKey::read(&cdir.join("ci.pub"))?;
    let config = TrustConfig {
        threshold: 2,
        reviewers,
        ci_keys: vec![ci],
        proposers: vec![],
    };
    let report =
        tuf::init(&repo, &keys_dir, &config, &life).context("cannot create the TUF repository")?;
    let proposal = palisade_policy::trusted_policy::propose_policy(
        &repo,
        &SigningKey::read(&rdir.join("alice.key"))?,
        DEFAULT_POLICY.as_bytes(),
        &life,
    )?;
    for reviewer in ["bob", "carol"] {
        let key = SigningKey::read(&rdir.join(format!("{reviewer}.key")))?;
        palisade_policy::approval::approve(&repo, &proposal.id, &key)?;
    }
    let online = OnlineKeys::load(&keys_dir)?;
    palisade_policy::trusted_policy::publish_policy(&repo, &online, &proposal.id, &life)?;
    if let Some(etcd) = find_etcd() {
        publish_etcd_release(
            &repo,
            &keys_dir,
            &online,
            "etcd",
            &etcd,
            &etcd_version(&etcd)?,
        )?;
    }
    if let Some(etcdctl) = find_binary("etcdctl") {
        let version = etcdctl_version(&etcdctl)?;
        publish_etcd_release(&repo, &keys_dir, &online, "etcdctl", &etcdctl, &version)?;
    }
    // The root agents and gateways trust, handed to them out of band (here: a copy).
    std::fs::copy(&report.root_json, &trust.root)
        .with_context(|| format!("cannot copy {}", report.root_json.display()))?;
    Ok(trust)
}

/// The etcd binary `up` has the agent supervise, if one is installed.
pub fn find_etcd() -> Option<PathBuf> {
    find_binary("etcd")
}

/// `name` on the PATH.
fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The installed etcdctl's version, from `etcdctl version` (`etcdctl version: 3.4.23`).
fn etcdctl_version(etcdctl: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(etcdctl)
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .with_context(|| format!("cannot run {} version", etcdctl.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcdctl version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} version printed no version", etcdctl.display()))
}

/// The installed etcd's version, from `etcd --version` (`etcd Version: 3.4.23`).
fn etcd_version(etcd: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", etcd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{} --version printed no version", etcd.display()))
}

/// Publishes an installed etcd binary (`etcd`, or the `etcdctl` tool) as an
/// approved release, the way the pipeline would: the (demo) CI key attests that its
/// tests passed, alice proposes, bob and carol approve, the pipeline key publishes.
fn publish_etcd_release(
    repo: &palisade_policy::tuf::RepoDir,
    keys_dir: &Path,
    online: &palisade_policy::tuf::OnlineKeys,
    name: &str,
    etcd: &Path,
    version: &str,
) -> anyhow::Result<()> {
    use palisade_policy::keys::SigningKey;
    use palisade_policy::release::{self, TestOutcome, TestResult};
    let artifact =
        std::fs::read(etcd).with_context(|| format!("cannot read {}", etcd.display()))?;
    let ci = SigningKey::read(&keys_dir.join("ci/ci.key"))?;
    let result = TestResult {
        result: TestOutcome::Passed,
        configuration: vec![],
        url: format!("file://{}", etcd.display()),
        passed_tests: vec!["palisade-up-demo".into()],
        warned_tests: vec![],
        failed_tests: vec![],
    };
    let attestation = release::attest(name, &artifact, result, &ci)?;
    let id = release::propose_release(
        repo,
        &SigningKey::read(&keys_dir.join("reviewers/alice.key"))?,
        name,
        version,
        name,
        &artifact,
        attestation,
        &[],
    )?;
    for reviewer in ["bob", "carol"] {
        let key = SigningKey::read(&keys_dir.join(format!("reviewers/{reviewer}.key")))?;
        palisade_policy::approval::approve(repo, &id, &key)?;
    }
    release::publish_release(
        repo,
        online,
        &id,
        &[],
        &palisade_policy::tuf::Lifetimes::default(),
    )?;
    Ok(())
}

/// The `[[component]]` section that has instance `i`'s agent run its etcd member,
/// one of a cluster of `ports.len()`.
fn etcd_component(
    dir: &Path,
    i: u16,
    ports: &[InstancePorts],
    quota: Option<u64>,
) -> anyhow::Result<Option<String>> {
    let Some(binary) = find_etcd() else {
        return Ok(None);
    };
    let version = etcd_version(&binary)?;
    let me = ports
        .get(usize::from(i))
        .context("no ports for this instance")?;
    let client = format!("http://{}", me.etcd_client);
    let peer = format!("http://{}", me.etcd_peer);
    let initial = (0..ports.len())
        .zip(ports)
        .map(|(n, p)| {
            let n = u16::try_from(n).unwrap_or(u16::MAX);
            format!("{}=http://{}", instance_name(n), p.etcd_peer)
        })
        .collect::<Vec<_>>()
        .join(",");
    let data = etcd_data_dir(dir, i);
    let mut args = vec![
        "--name".to_string(),
        instance_name(i),
        "--data-dir".into(),
        data.display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client.clone(),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--initial-advertise-peer-urls".into(),
        peer.clone(),
        "--initial-cluster".into(),
        initial,
        "--initial-cluster-token".into(),
        "demo".into(),
        "--initial-cluster-state".into(),
        "new".into(),
    ];
    if let Some(q) = quota {
        args.extend(["--quota-backend-bytes".to_string(), q.to_string()]);
    }
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    Ok(Some(format!(
        "\n[[component]]\nname = \"etcd\"\nversion = \"{version}\"\n\
         health_url = \"{client}/health\"\ndata_dir = \"{data}\"\nargs = [{}]\n",
        args.join(", "),
        data = data.display(),
    )))
}

/// Instance `i`'s agent: its signing key, the gateway key it trusts, and its
/// configuration (the demo cluster's log trust, the TUF repository, its etcd
/// member and how to reach the others).
fn prepare_agent(
    dir: &Path,
    pki: &Path,
    trust: &Trust,
    i: u16,
    ports: &[InstancePorts],
    quota: Option<u64>,
) -> anyhow::Result<ProcessSpec> {
    use palisade_policy::keys;
    let adir = agent_dir(dir, i);
    let name = instance_name(i);
    let me = *ports
        .get(usize::from(i))
        .context("no ports for this instance")?;
    if !adir.join("keys/agent.key").exists() {
        keys::generate("agent", &adir.join("keys"), false)?;
    }
    let gdir = dir.join("gateway");
    if !gdir.join("keys/gateway.key").exists() {
        keys::generate("gateway", &gdir.join("keys"), false)?;
    }
    let config = adir.join("agent.toml");
    if !config.exists() {
        let log_key = std::fs::read_to_string(ensure_log_key(dir)?)?;
        let witness_key = std::fs::read_to_string(
            dir.join("witness/keys")
                .join(format!("{}.pub", file_stem(WITNESS_NAME))),
        )?;
        let peers = ports
            .iter()
            .filter(|p| p.agent != me.agent)
            .map(|p| format!("\"http://{}\"", p.etcd_client))
            .collect::<Vec<_>>();
        let cluster = if peers.is_empty() {
            String::new()
        } else {
            format!(
                "# A member seen unhealthy this long may be removed (etcd.member-remove);\n\
                 # short for the demo, 300 s by default.\n\
                 member_remove_after_secs = 20\npeers = [{}]\n\
                 member = {{ name = \"{name}\", peer_url = \"http://{}\" }}\n",
                peers.join(", "),
                me.etcd_peer
            )
        };
        let text = format!(
            "listen = \"{addr}\"\ntenant = \"demo\"\ncluster = \"demo\"\ninstance = \"{name}\"\n\
             state = \"state.redb\"\nwork_dir = \"work\"\nsigning_key = \"keys/agent.key\"\n\
             gateway_keys = [\"{gateway_pub}\"]\ndisks = [\"{data}\"]\n\
             # The demo tenant's key: the agent acts only under its newest witness statement.\n\
             tenant_key = \"{tenant_pub}\"\nmetrics_listen = \"{metrics}\"\n\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [log]\norigin = \"{BASE_ORIGIN}/demo\"\nkey = \"{log_key}\"\nwitnesses = [\"{wkey}\"]\nwitness_quorum = 1\n\n\
             [trust]\nrepo = \"{repo}\"\nroot = \"{root}\"\ndatastore = \"tuf-datastore\"\n\n\
             [etcd]\nendpoints = [\"http://{etcd}\"]\n{cluster}\n\
             [backup]\nstore = \"{backups}\"\nkms_socket = \"unix://{kms_socket}\"\n{trusted_keys}\n\
             [[cert]]\nname = \"agent-serving\"\npath = \"{cert}\"\n\n\
             [[cert]]\nname = \"palisade-ca\"\npath = \"{ca}\"\n",
            trusted_keys = if ports.len() > 1 {
                format!(
                    "# The other agents of the cluster: their backups list and restore here too.\n\
                     trusted_keys = [{}]\n",
                    (0..ports.len())
                        .filter_map(|n| u16::try_from(n).ok())
                        .filter(|n| *n != i)
                        .map(|n| format!("{:?}", agent_dir(dir, n).join("keys/agent.pub").display().to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            },
            addr = me.agent,
            etcd = me.etcd_client,
            metrics = me.metrics,
            gateway_pub = gdir.join("keys/gateway.pub").display(),
            tenant_pub = dir.join(demo_tenant::PUBLIC_KEY).display(),
            backups = dir.join("backups").display(),
            kms_socket = kms_socket(dir).display(),
            data = dir.display(),
            ca = pki.join("ca.crt").display(),
            cert = pki.join(format!("agent-{name}.crt")).display(),
            key = pki.join(format!("agent-{name}.key")).display(),
            log_key = log_key.trim(),
            wkey = witness_key.trim(),
            repo = trust.repo.display(),
            root = trust.root.display(),
        );
        let text = match etcd_component(dir, i, ports, quota)? {
            Some(component) => format!("{text}{component}"),
            None => text,
        };
        // etcd.restore runs the approved etcdctl release.
        let text = match find_binary("etcdctl").map(|p| etcdctl_version(&p)) {
            Some(Ok(version)) => {
                format!("{text}\n[[tool]]\nname = \"etcdctl\"\nversion = \"{version}\"\n")
            }
            _ => text,
        };
        write_new(&config, &header(&text))?;
    }
    Ok(ProcessSpec {
        name: if i == 0 {
            "agent".to_string()
        } else {
            format!("agent-{name}")
        },
        what: format!(
            "executes signed, logged dispatches on instance {name} (gateway certificates only)"
        ),
        args: vec![
            "agent".into(),
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        addr: me.agent,
        unix_socket: None,
        warning: None,
    })
}

/// The KMS plugin's socket: the customer's key service, which the agent asks to
/// wrap every backup's data key.
pub fn kms_socket(dir: &Path) -> PathBuf {
    dir.join("kms/kms.sock")
}

/// The KMS v2 plugin with a development file key. Insecure by design (the key sits
/// on this machine's disk, where an operator could read it) and labelled so: a real
/// deployment points the plugin at the customer's HSM or cloud KMS.
fn prepare_kms(dir: &Path, metrics: SocketAddr) -> anyhow::Result<ProcessSpec> {
    let kdir = dir.join("kms");
    create_private_dir(&kdir)?;
    let key = kdir.join("dev-kek.key");
    if !key.exists() {
        palisade_kms::file_key::FileKek::generate(&key)
            .with_context(|| format!("cannot create {}", key.display()))?;
    }
    let socket = kms_socket(dir);
    Ok(ProcessSpec {
        name: "kms".into(),
        what: "KMS v2 plugin wrapping backup keys".into(),
        args: vec![
            "kms".into(),
            "serve".into(),
            "--listen".into(),
            format!("unix://{}", socket.display()),
            "--backend".into(),
            "file".into(),
            "--key-file".into(),
            key.display().to_string(),
            "--allow-insecure-dev-key".into(),
            "--metrics-listen".into(),
            metrics.to_string(),
        ],
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        unix_socket: Some(socket),
        warning: Some(
            "INSECURE development key (kms/dev-kek.key on this disk): fine for trying \
             backups, never for customer data",
        ),
    })
}

fn header(body: &str) -> String {
    format!("# Written by `palisade up`; edit freely, it is not overwritten.\n{body}")
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn toml_text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    let body = toml::to_string(value).context("cannot encode TOML")?;
    Ok(format!(
        "# Written by `palisade up`; edit freely, it is not overwritten.\n{body}"
    ))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
