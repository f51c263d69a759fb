//! `palisade policy`: reviewer keys, the TUF repository, and the multi-party flow
//! propose → approve → publish → verify for the action policy (claim C4).

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_policy::keys::{self, PublicKey, SigningKey};
use palisade_policy::trusted_policy::{self, Publication, VerifiedPolicy};
use palisade_policy::tuf::{self, Lifetimes, OnlineKeys, RepoDir, TrustConfig};
use palisade_policy::{review, Policy};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Create a reviewer key pair: DIR/NAME.key (0600) and DIR/NAME.pub.
    Keygen {
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing key pair of that name.
        #[arg(long)]
        force: bool,
    },
    /// Lint a policy file (line and column for every error).
    Lint {
        #[arg(long)]
        file: PathBuf,
    },
    /// Create the TUF repository: root, targets, snapshot, timestamp, roles `policy` and `components`.
    Init {
        #[arg(long)]
        repo: PathBuf,
        /// Approvals needed (M of the N reviewers).
        #[arg(long)]
        threshold: Option<u64>,
        /// A reviewer's public key file (repeatable).
        #[arg(long = "reviewer")]
        reviewers: Vec<PathBuf>,
        /// A CI key trusted for test attestations (repeatable).
        #[arg(long = "ci-key")]
        ci_keys: Vec<PathBuf>,
        /// The public key of someone who may propose changes without being a reviewer
        /// (repeatable). Reviewers may always propose.
        #[arg(long = "proposer")]
        proposers: Vec<PathBuf>,
        /// Where root, online and pipeline keys go (default: REPO/../keys), apart from reviewers.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Development: also generate reviewers alice, bob, carol (threshold 2) and a CI key.
        #[arg(long)]
        dev: bool,
    },
    /// Stage a policy change, signed by its author, and print its diff against the
    /// published policy.
    Propose {
        #[arg(long)]
        repo: PathBuf,
        /// The author's private key file (a reviewer's or a registered proposer's);
        /// the author recorded is that key's name in the repository.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        file: PathBuf,
    },
    /// Show a proposal's diff and add one reviewer's approval (never the author's).
    /// The proposal and the published policy it is diffed against are verified from
    /// the root you trust (`--root`), not from the repository's files as served.
    Approve {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        proposal: String,
        /// The reviewer's private key file.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        trusted: TrustedRootArgs,
    },
    /// Publish a proposal that has M distinct, current, non-author approvals.
    Publish {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        proposal: String,
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Write the governance-log entry (canonical JSON) to this file.
        #[arg(long)]
        log_entry: Option<PathBuf>,
    },
    /// Verify the published policy as gateway and agent do; prints version and digest.
    Verify(VerifyArgs),
    /// Verify, then summarise the policy: version, digest, author, approvers, actions.
    Show(VerifyArgs),
    /// Verify, then validate one action request against the policy.
    Check {
        #[command(flatten)]
        verify: VerifyArgs,
        #[arg(long)]
        action: String,
        /// A parameter NAME=VALUE (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Change who approves, or the root keys themselves: writes root version N+1,
    /// signed by a threshold of the current root keys (and by the new root keys when
    /// they change), then re-signs the `policy` delegation to match. The online key
    /// alone can never change reviewers. Options left out keep their current value.
    #[command(visible_alias = "rotate-reviewers")]
    UpdateRoot {
        #[arg(long)]
        repo: PathBuf,
        /// Where the online keys are (default: REPO/../keys).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// A private key of the current root (repeatable; at least the root's threshold
        /// of them). Default: KEYS/root.key.
        #[arg(long = "root-key")]
        root_keys: Vec<PathBuf>,
        /// The new reviewers' public key files (repeatable; replaces the list).
        #[arg(long = "reviewer", requires = "threshold")]
        reviewers: Vec<PathBuf>,
        /// The new approval threshold (M of the reviewers).
        #[arg(long)]
        threshold: Option<u64>,
        /// The CI keys trusted for test attestations (repeatable; replaces the list).
        #[arg(long = "ci-key")]
        ci_keys: Vec<PathBuf>,
        /// The proposers' public keys (repeatable; replaces the list).
        #[arg(long = "proposer")]
        proposers: Vec<PathBuf>,
        /// Remove every registered proposer.
        #[arg(long, conflicts_with = "proposers")]
        no_proposers: bool,
        /// A private key of the NEW root (repeatable): replaces the root keys. Each new
        /// key signs the new root too.
        #[arg(long = "new-root-key", requires = "root_threshold")]
        new_root_keys: Vec<PathBuf>,
        /// The new root's threshold (with --new-root-key).
        #[arg(long, requires = "new_root_keys")]
        root_threshold: Option<u64>,
        /// A new online key (private, `palisade policy keygen`) for targets, snapshot
        /// and timestamp: the new root names it, the metadata is re-signed with it at
        /// once, and it replaces KEYS/online.key (the old one is kept as
        /// online.key.retired).
        #[arg(long)]
        new_online_key: Option<PathBuf>,
        /// A new pipeline key (private, `palisade policy keygen`) for the `components`
        /// role: the new root pins it alone, the role is re-signed with it at once
        /// (the same releases), and it replaces KEYS/pipeline.key (the old one is
        /// kept as pipeline.key.retired).
        #[arg(long)]
        new_pipeline_key: Option<PathBuf>,
    },
    /// Re-sign targets, snapshot and timestamp so the repository does not expire
    /// (deploy/systemd/palisade-policy-refresh.timer runs it daily).
    Refresh {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        keys: Option<PathBuf>,
        /// How long the new timestamp stays valid, in seconds (default 7 days).
        /// Verifiers refuse new actions once it lapses, and warn 48 h before.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        timestamp_lifetime_secs: Option<u64>,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    repo: PathBuf,
    /// The trusted root.json, obtained out of band.
    #[arg(long)]
    root: PathBuf,
    /// Persistent TUF datastore (rollback protection); default under ~/.local/state/palisade.
    #[arg(long)]
    datastore: Option<PathBuf>,
}

pub fn keys_dir(repo: &Path, keys: Option<PathBuf>) -> PathBuf {
    keys.unwrap_or_else(|| {
        std::path::absolute(repo)
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("keys")))
            .unwrap_or_else(|| PathBuf::from("keys"))
    })
}

pub fn default_datastore(repo: &Path) -> PathBuf {
    let abs = std::path::absolute(repo).unwrap_or_else(|_| repo.to_path_buf());
    let id = tuf::sha256_hex(abs.to_string_lossy().as_bytes());
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("palisade/tuf-datastore")
        .join(id.get(..16).unwrap_or("repo"))
}

pub fn read_pubs(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::read(p).map_err(anyhow::Error::from))
        .collect()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let life = Lifetimes::default();
    match args.command {
        PolicyCommand::Keygen { name, out, force } => {
            let k = keys::generate(&name, &out, force)?;
            println!(
                "private key: {} (mode 0600; only {name} should hold it)",
                k.private.display()
            );
            println!("public key:  {}", k.public.display());
            println!("key id:      {}", k.key_id);
        }
        PolicyCommand::Lint { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match Policy::parse_yaml(&text) {
                Ok(p) => println!(
                    "ok: version {}, digest {}, {} action(s)",
                    p.version(),
                    p.digest(),
                    p.actions().count()
                ),
                Err(errors) => {
                    for e in errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        PolicyCommand::Init {
            repo,
            threshold,
            reviewers,
            ci_keys,
            proposers,
            keys,
            dev,
        } => {
            let keys_dir = keys_dir(&repo, keys);
            let mut reviewers = read_pubs(&reviewers)?;
            let mut ci = read_pubs(&ci_keys)?;
            let mut threshold = threshold;
            if dev {
                eprintln!("warning: --dev keeps every key on this machine; never use it for a real deployment");
                let rdir = keys_dir.join("reviewers");
                for n in ["alice", "bob", "carol"] {
                    let k = keys::generate(n, &rdir, false)?;
                    reviewers.push(PublicKey::read(&k.public)?);
                }
                let k = keys::generate("ci", &keys_dir.join("ci"), false)?;
                ci.push(PublicKey::read(&k.public)?);
                threshold.get_or_insert(2);
            }
            let threshold = threshold.context("--threshold is required (or use --dev)")?;
            let trust = TrustConfig {
                threshold,
                reviewers,
                ci_keys: ci,
                proposers: read_pubs(&proposers)?,
            };
            let report = tuf::init(&RepoDir::new(&repo), &keys_dir, &trust, &life)?;
            println!("repository: {}", repo.display());
            println!(
                "trusted root (give it to gateways and agents out of band): {}",
                report.root_json.display()
            );
            println!(
                "root, online and pipeline keys: {} (keep root.key offline)",
                report.keys_dir.display()
            );
            println!(
                "reviewers: {} (threshold {threshold})",
                trust.reviewer_names()
            );
            if dev {
                println!(
                    "dev reviewer keys: {}",
                    keys_dir.join("reviewers").display()
                );
                println!("dev CI key: {}", keys_dir.join("ci/ci.key").display());
            }
        }
        PolicyCommand::Propose { repo, key, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let key = SigningKey::read(&key)?;
            let p = trusted_policy::propose_policy(&RepoDir::new(&repo), &key, &bytes, &life)?;
            print!("{}", p.diff);
            println!("proposal: {}", p.id);
            println!(
                "version {} (published: {}), digest {}, author {} (key {})",
                p.version,
                p.published_version.map_or("none".into(), |v| v.to_string()),
                p.digest,
                p.author,
                key.key_id()
            );
            println!("next: reviewers run `palisade policy approve --repo {} --proposal {} --key <their key> --root <the root.json they trust>`", repo.display(), p.id);
        }
        PolicyCommand::Approve {
            repo,
            proposal,
            key,
            trusted,
        } => approve(&RepoDir::new(&repo), &proposal, &key, &trusted, true)?,
        PolicyCommand::Publish {
            repo,
            proposal,
            keys,
            log_entry,
        } => {
            let online = OnlineKeys::load(&keys_dir(&repo, keys))?;
            let p =
                trusted_policy::publish_policy(&RepoDir::new(&repo), &online, &proposal, &life)?;
            report_publication(&p, log_entry.as_deref())?;
        }
        PolicyCommand::Verify(v) => {
            let vp = verify(&v)?;
            println!(
                "verified policy version {} digest {} (sha256:{})",
                vp.version, vp.digest, vp.sha256
            );
            println!(
                "author {}, approved by {}",
                vp.author,
                vp.approvers.join(", ")
            );
        }
        PolicyCommand::Show(v) => {
            let vp = verify(&v)?;
            println!("version:   {}", vp.version);
            println!("digest:    {}", vp.digest);
            println!("file:      sha256:{}", vp.sha256);
            println!("author:    {}", vp.author);
            println!("approvers: {}", vp.approvers.join(", "));
            println!("actions:");
            for a in vp.policy.actions() {
                println!(
                    "  {:<28} role {:<16} risk {:?}",
                    a.name.as_str(),
                    a.role,
                    a.risk
                );
            }
        }
        PolicyCommand::Check {
            verify: v,
            action,
            params,
        } => {
            let vp = verify(&v)?;
            let mut pairs = Vec::new();
            for p in params {
                let (k, val) = p
                    .split_once('=')
                    .with_context(|| format!("--param {p:?} is not NAME=VALUE"))?;
                pairs.push((k.to_string(), val.to_string()));
            }
            match vp.policy.validate_args(&action, &pairs) {
                Ok(va) => {
                    println!("allowed by policy version {} ({})", vp.version, vp.digest);
                    println!(
                        "action {} handler {} risk {:?}",
                        va.name().as_str(),
                        va.handler(),
                        va.risk()
                    );
                    for (k, val) in va.params() {
                        println!("  {k} = {val:?}");
                    }
                }
                Err(e) => {
                    eprintln!("refused by policy version {}: {e}", vp.version);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        PolicyCommand::UpdateRoot {
            repo,
            keys,
            root_keys,
            reviewers,
            threshold,
            ci_keys,
            proposers,
            no_proposers,
            new_root_keys,
            root_threshold,
            new_online_key,
            new_pipeline_key,
        } => {
            let keys_dir = keys_dir(&repo, keys);
            let mut online = OnlineKeys::load(&keys_dir)?;
            let online_key = match &new_online_key {
                Some(path) => {
                    online.online = SigningKey::read(path)?;
                    Some(online.online.public().clone())
                }
                None => None,
            };
            let pipeline_key = match &new_pipeline_key {
                Some(path) => {
                    online.pipeline = SigningKey::read(path)?;
                    Some(online.pipeline.public().clone())
                }
                None => None,
            };
            let root_keys = if root_keys.is_empty() {
                vec![keys_dir.join("root.key")]
            } else {
                root_keys
            };
            let signers = root_keys
                .iter()
                .map(|p| SigningKey::read(p).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let reviewers = match (reviewers.is_empty(), threshold) {
                (true, None) => None,
                (true, Some(t)) => {
                    let state = tuf::RepoState::read(&RepoDir::new(&repo))?;
                    Some((state.trust()?.reviewers, t))
                }
                (false, t) => Some((read_pubs(&reviewers)?, t.unwrap_or_default())),
            };
            let change = palisade_policy::root::RootChange {
                reviewers,
                ci_keys: (!ci_keys.is_empty())
                    .then(|| read_pubs(&ci_keys))
                    .transpose()?,
                proposers: if no_proposers {
                    Some(vec![])
                } else {
                    (!proposers.is_empty())
                        .then(|| read_pubs(&proposers))
                        .transpose()?
                },
                root_keys: match root_threshold {
                    Some(t) => Some((
                        new_root_keys
                            .iter()
                            .map(|p| SigningKey::read(p).map_err(anyhow::Error::from))
                            .collect::<anyhow::Result<Vec<_>>>()?,
                        t,
                    )),
                    None => None,
                },
                online_key,
                pipeline_key,
            };
            let done = palisade_policy::root::update_root(
                &RepoDir::new(&repo),
                &signers,
                &online,
                change,
                &life,
            )?;
            println!("root version {} written", done.version);
            for (role, new, key) in [
                ("online", &new_online_key, &online.online),
                ("pipeline", &new_pipeline_key, &online.pipeline),
            ] {
                let Some(path) = new else { continue };
                let current = keys_dir.join(format!("{role}.key"));
                let retired = keys_dir.join(format!("{role}.key.retired"));
                std::fs::rename(&current, &retired)
                    .with_context(|| format!("cannot move {} aside", current.display()))?;
                std::fs::copy(path, &current)
                    .with_context(|| format!("cannot install {}", current.display()))?;
                std::fs::set_permissions(
                    &current,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
                println!(
                    "{role} key: {} (installed as {}; the old one is {})",
                    key.key_id(),
                    current.display(),
                    retired.display()
                );
            }
            let list = |keys: &[PublicKey]| {
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.iter()
                        .map(|k| format!("{} ({})", k.name, k.key_id()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            println!(
                "reviewers: {} (threshold {})",
                list(&done.trust.reviewers),
                done.trust.threshold
            );
            println!("CI keys: {}", list(&done.trust.ci_keys));
            println!("proposers: {}", list(&done.trust.proposers));
            println!(
                "root keys: {} (threshold {})",
                done.root_key_ids.join(", "),
                done.root_threshold
            );
            println!("a published policy that no longer has {} valid approvals stops verifying until re-approved", done.trust.threshold);
        }
        PolicyCommand::Refresh {
            repo,
            keys,
            timestamp_lifetime_secs,
        } => {
            let online = OnlineKeys::load(&keys_dir(&repo, keys))?;
            let mut life = life;
            if let Some(secs) = timestamp_lifetime_secs {
                life.timestamp = jiff::SignedDuration::from_secs(secs as i64);
            }
            trusted_policy::refresh(&RepoDir::new(&repo), &online, &life)?;
            let expires = jiff::Timestamp::now()
                .checked_add(life.timestamp)
                .map(|t| t.to_string())
                .unwrap_or_default();
            println!(
                "targets, snapshot and timestamp re-signed; the timestamp expires at {expires}"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The root a reviewer trusts, and their own TUF datastore.
#[derive(Args, Debug)]
pub struct TrustedRootArgs {
    /// The trusted root.json you hold (not the repository's copy): what is shown and
    /// approved is verified from it.
    #[arg(long)]
    pub root: PathBuf,
    /// Persistent TUF datastore (rollback protection); default under ~/.local/state/palisade.
    #[arg(long)]
    pub datastore: Option<PathBuf>,
}

/// Shared by `policy approve` and `release approve`: the proposal is checked from the
/// reviewer's trusted root (`palisade_policy::review`), then exactly what was checked
/// and shown is signed.
pub fn approve(
    repo: &RepoDir,
    proposal: &str,
    key: &Path,
    trusted: &TrustedRootArgs,
    show_diff: bool,
) -> anyhow::Result<()> {
    let root = std::fs::read(&trusted.root)
        .with_context(|| format!("cannot read the trusted root {}", trusted.root.display()))?;
    let datastore = trusted
        .datastore
        .clone()
        .unwrap_or_else(|| default_datastore(&repo.root));
    let key = SigningKey::read(key)?;
    let reviewed = runtime()?.block_on(review::review(repo, &root, &datastore, proposal))?;
    if show_diff && reviewed.staged.proposal.staged_role.is_some() {
        match &reviewed.published {
            Some((v, _)) => println!(
                "diff against the published policy version {v} (verified from the trusted root):"
            ),
            None => println!(
                "no policy is published yet (verified from the trusted root); the whole proposal:"
            ),
        }
        print!("{}", reviewed.diff());
    }
    let st = &reviewed.staged.proposal.statement;
    println!(
        "approving {} version {} (sha256:{}, signed by its author {})",
        st.target, st.version, st.sha256, st.author
    );
    let a = review::approve(&reviewed, &key)?;
    println!("approved by {} (key {})", a.reviewer, a.key_id);
    Ok(())
}

pub fn report_publication(p: &Publication, log_entry: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "published {} version {} (sha256:{})",
        p.target, p.version, p.sha256
    );
    println!(
        "author {}, approved by {}",
        p.author,
        p.approvers.join(", ")
    );
    let entry = p.log_entry()?;
    if let Some(path) = log_entry {
        std::fs::write(path, &entry).with_context(|| format!("cannot write {}", path.display()))?;
        println!("governance log entry: {}", path.display());
    }
    Ok(())
}

fn verify(v: &VerifyArgs) -> anyhow::Result<VerifiedPolicy> {
    let root = std::fs::read(&v.root)
        .with_context(|| format!("cannot read the trusted root {}", v.root.display()))?;
    let datastore = v
        .datastore
        .clone()
        .unwrap_or_else(|| default_datastore(&v.repo));
    let repo = RepoDir::new(&v.repo);
    Ok(runtime()?.block_on(trusted_policy::verify_policy(&repo, &root, &datastore))?)
}

pub fn verify_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime()
}
