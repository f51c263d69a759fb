//! `palisade log`: run or administer a cluster's tamper-evident log.

use crate::lifecycle::{runtime, shutdown_signal, ServeLifecycle};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::note::{KeyType, Note};
use palisade_tlog::tile::{parse_bundle, TileId, TILE_WIDTH};
use palisade_tlog_service::config::LogConfig;
use palisade_tlog_service::keyfile::{read_signer, write_key_pair};
use palisade_tlog_service::sequencer::{self, BatchConfig, WitnessSet};
use palisade_tlog_service::store::TileStore;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Generate a log key pair: <out>/<name>.key (private, 0600) and <out>/<name>.pub.
    Keygen {
        /// The key name: the log's origin (for the service, its base origin).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Run the log service (append API for gateway/agent, tlog-tiles read API for tenants).
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        lifecycle: ServeLifecycle,
    },
    /// Append each line of standard input as one entry to the log stored in DIR, offline.
    Append {
        /// The log's directory (the one holding `checkpoint`).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        origin: String,
        #[arg(long)]
        key_file: PathBuf,
        /// Print `appended <index>` for every entry as soon as it is durable.
        #[arg(long)]
        print_acks: bool,
    },
    /// Show a log stored in DIR: its checkpoint and, optionally, its last entries.
    Show {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        origin: String,
        /// Print this many of the last entries.
        #[arg(long, default_value_t = 0)]
        entries: u64,
    },
}

pub fn run(args: LogArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LogCommand::Keygen { name, out, force } => {
            let (private, public, verifier) = write_key_pair(&name, KeyType::Ed25519, &out, force)?;
            println!("private key: {} (mode 0600)", private.display());
            println!("verifier key: {}", public.display());
            println!("{verifier}");
        }
        LogCommand::Serve { config, lifecycle } => {
            let config: LogConfig = palisade_core::config::load(&config)?;
            runtime()?.block_on(palisade_tlog_service::server::run(
                config,
                shutdown_signal(lifecycle),
            ))?;
        }
        LogCommand::Append {
            dir,
            origin,
            key_file,
            print_acks,
        } => {
            let key = read_signer(&key_file)?;
            runtime()?.block_on(append(dir, origin, key, print_acks))?;
        }
        LogCommand::Show {
            dir,
            origin,
            entries,
        } => runtime()?.block_on(show(dir, origin, entries))?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn append(
    dir: PathBuf,
    origin: String,
    key: palisade_tlog::note::SignerKey,
    print_acks: bool,
) -> anyhow::Result<()> {
    let store = TileStore::local(&dir)?;
    let writer = sequencer::start(
        &origin,
        key,
        store,
        BatchConfig::default(),
        WitnessSet::default(),
    )
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    // Lines are read on a thread of their own so that stdin never blocks the runtime.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(Bytes::from(line.into_bytes())).is_err() {
                break;
            }
        }
    });
    // Keep many appends in flight so that they share batches.
    type Ack = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = (u64, Result<sequencer::Receipt, sequencer::AppendError>),
                > + Send,
        >,
    >;
    let mut in_flight: futures::stream::FuturesOrdered<Ack> =
        futures::stream::FuturesOrdered::new();
    let mut line_no = 0u64;
    let mut failed = None;
    loop {
        use futures::StreamExt;
        tokio::select! {
            line = rx.recv(), if in_flight.len() < 1024 => match line {
                Some(entry) => {
                    line_no += 1;
                    let n = line_no;
                    // Queued in input order; only the acknowledgement is awaited later.
                    match writer.submit(entry).await {
                        Ok(ack) => in_flight.push_back(Box::pin(async move { (n, ack.await) }) as Ack),
                        Err(e) => { failed = Some(format!("line {n}: {e}")); break; }
                    }
                }
                None => break,
            },
            Some((n, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(r) if print_acks => ack(r.index),
                    Ok(_) => {}
                    Err(e) => { failed = Some(format!("line {n}: {e}")); break; }
                }
            }
        }
    }
    use futures::StreamExt;
    while let Some((n, result)) = in_flight.next().await {
        match result {
            Ok(r) if print_acks => ack(r.index),
            Ok(_) => {}
            Err(e) => failed = failed.or(Some(format!("line {n}: {e}"))),
        }
    }
    if let Some(f) = failed {
        bail!("append stopped at {f}; every entry acknowledged before it is in the log");
    }
    print!("{}", String::from_utf8_lossy(&writer.published().note));
    Ok(())
}

/// Prints one acknowledgement; a closed stdout (e.g. `| head`) is not an error.
fn ack(index: u64) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "appended {index}");
}

async fn show(dir: PathBuf, origin: String, last: u64) -> anyhow::Result<()> {
    let store = TileStore::local(&dir)?;
    let bytes = store
        .read("checkpoint")
        .await?
        .with_context(|| format!("{} holds no log (no checkpoint file)", dir.display()))?;
    let note = Note::parse(&bytes)?;
    let checkpoint = Checkpoint::parse(note.text())?;
    if checkpoint.origin() != origin {
        bail!(
            "{} holds the log {:?}, not {origin:?}",
            dir.display(),
            checkpoint.origin()
        );
    }
    println!("origin: {}", checkpoint.origin());
    println!("size:   {}", checkpoint.size());
    println!("root:   {}", checkpoint.root().to_base64());
    for sig in note.signatures() {
        println!("signed: {} ({:08x})", sig.name(), sig.key_id());
    }
    let size = checkpoint.size();
    let width = u64::from(TILE_WIDTH);
    let mut index = size.saturating_sub(last);
    while index < size {
        let tile = index / width;
        let w = (size - tile * width).min(width);
        let id = TileId::new(0, tile, u16::try_from(w)?)?;
        let data = store
            .read(&id.entries_path())
            .await?
            .with_context(|| format!("{} is missing", id.entries_path()))?;
        let entries = parse_bundle(&data)?;
        for (i, e) in entries.iter().enumerate() {
            let at = tile * width + i as u64;
            if at >= index {
                println!("{at}: {}", String::from_utf8_lossy(e));
            }
        }
        index = (tile + 1) * width;
    }
    Ok(())
}
