//! The single-machine deployment that `palisade up` runs: which files it needs and
//! which processes it starts. Every step only creates what is missing, so a second
//! run reuses the directory as it is.

use anyhow::Context;
use palisade_core::inventory::Inventory;
use palisade_pki::{CaPaths, CertName, IssuedPaths, Role};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One process of the stack.
pub struct ProcessSpec {
    pub name: &'static str,
    pub what: &'static str,
    /// Arguments after `palisade`.
    pub args: Vec<String>,
    pub addr: SocketAddr,
}

pub struct Stack {
    pub dir: PathBuf,
    pub pki_dir: PathBuf,
    pub inventory: PathBuf,
    pub processes: Vec<ProcessSpec>,
    pub next_steps: Vec<String>,
}

/// The certificates the stack needs: (role, name).
const CERTS: &[(Role, &str)] = &[
    (Role::Log, "log"),
    (Role::Witness, "witness"),
    (Role::Gateway, "gateway"),
    (Role::Agent, "demo-0"),
];

pub fn prepare(dir: &Path, base_port: u16) -> anyhow::Result<Stack> {
    create_private_dir(dir)?;
    let pki_dir = dir.join("pki");
    if !CaPaths::in_dir(&pki_dir).cert.exists() {
        palisade_pki::init_ca(&pki_dir, false)?;
    }
    for (role, name) in CERTS {
        let name = CertName::new(name)?;
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

    let inventory = dir.join("inventory.toml");
    if !inventory.exists() {
        let demo = Inventory::demo(&format!("https://{}", port(3)?));
        write_new(&inventory, &toml_text(&demo)?)?;
    }
    palisade_core::config::load::<Inventory>(&inventory)?;

    Ok(Stack {
        dir: dir.to_path_buf(),
        pki_dir,
        inventory,
        processes: Vec::new(),
        next_steps: vec![format!(
            "palisade pki issue --dir {} --kind operator --name alice",
            dir.join("pki").display()
        )],
    })
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
