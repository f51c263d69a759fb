//! The sequencer: the one writer of a log.
//!
//! Appends are queued and integrated in batches (up to [`BatchConfig::max_entries`]
//! entries, or whatever arrived within [`BatchConfig::max_delay`] of the first). For
//! each batch, in this order:
//! 1. the new leaves go into the in-memory right edge of the tree ([`Frontier`] plus
//!    the partial tile of every level and the partial entry bundle);
//! 2. every tile and entry bundle the batch completed or changed is written;
//! 3. a checkpoint over the new size is signed and written — this is the commit point:
//!    a batch is part of the log once its checkpoint is stored. Without witnesses it
//!    is the public `checkpoint` object; with witnesses it is [`COMMIT_CHECKPOINT`]
//!    beside it, so that readers of the storage only ever see cosigned checkpoints;
//! 4. if witnesses are configured, their cosignatures are collected and the cosigned
//!    checkpoint is written as `checkpoint` while step 5 runs (each such write waits
//!    for the previous one, so the object never goes back to an older checkpoint);
//! 5. every entry of the batch is acknowledged with its index and a self-contained
//!    tlog-proof (inclusion proof + the checkpoint). An append that asked only for
//!    the commit point ([`Wait::Stored`]) is acknowledged before step 4 instead.
//!
//! On opening, the log continues from the newer of the two stored checkpoints, and
//! asks the witnesses again for one stored before they answered.
//!
//! If step 2 or 3 fails, the batch is refused and the in-memory state is reloaded
//! from storage, so the next batch starts again from the last stored checkpoint (tiles
//! written beyond it are simply overwritten). An acknowledged entry is therefore
//! always under a stored checkpoint; an entry that was never acknowledged may be lost.
//! If step 4 fails, the entries are in the log (under a log-signed checkpoint) but the
//! append is answered with an error, so a caller that requires witnesses fails closed.
//!
//! Memory is bounded by the right edge (at most 256 hashes per level and one partial
//! entry bundle), whatever the size of the log.

use crate::fetch::{MemoryTiles, StoreFetcher};
use crate::journal::{Journal, Record, JOURNAL};
use crate::log_keys::LogKeys;
use crate::store::TileStore;
use crate::witness_client::WitnessClient;
use bytes::Bytes;
use palisade_tlog::checkpoint::Checkpoint;
use palisade_tlog::hash::{leaf_hash, Hash};
use palisade_tlog::note::{Note, SignerKey};
use palisade_tlog::proof::TlogProof;
use palisade_tlog::tile::{
    encode_bundle, level_hashes, new_tiles, parse_bundle, run_root, TileHashReader, TileId,
    TilePath, MAX_ENTRY_LEN, TILE_HEIGHT, TILE_WIDTH,
};
use palisade_tlog::tree::Frontier;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

const WIDTH: usize = TILE_WIDTH as usize;

/// The largest batch: 16 full tiles. A batch may span several tiles and entry
/// bundles; its cost is dominated by the objects it writes (a few partial tiles, the
/// bundles, the checkpoint), so larger batches amortise them over more entries.
pub const MAX_BATCH_ENTRIES: usize = 16 * WIDTH;
/// Receipts of a batch up to this many are built on the sequencer's own task; a
/// larger batch's are built with the worker handed to another thread.
const RECEIPTS_ON_TASK: usize = 64;

/// How appends are grouped.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// At most this many entries per batch (1..=[`MAX_BATCH_ENTRIES`]).
    pub max_entries: usize,
    /// How long the first entry of a batch waits for others beyond those already
    /// queued (zero: group commit only, no waiting).
    pub max_delay: Duration,
    /// With storage on a local directory and a non-zero interval, each batch is made
    /// durable in the log's [journal](crate::journal), and its tiles, bundles and
    /// checkpoint are written to storage at most this often (and when the log
    /// closes). Zero: every batch writes them before it is acknowledged.
    pub publish_interval: Duration,
    /// With witnesses: the checkpoint is cosigned again when this long passed since
    /// its newest cosignatures, appends or not (C2SP cosignatures carry their time),
    /// so that a frozen log cannot pass for an idle one.
    pub max_checkpoint_interval: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_delay: Duration::from_millis(5),
            publish_interval: Duration::ZERO,
            max_checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("entry is empty")]
    Empty,
    #[error("entry is {0} bytes; a log entry is at most {MAX_ENTRY_LEN} bytes")]
    TooLarge(usize),
    #[error("the log {origin} is not accepting appends: {reason}")]
    Unavailable { origin: String, reason: String },
    #[error("storage failed, the entry was not logged: {0}")]
    Storage(String),
    #[error(
        "the entry is in the log at index {index}, but only {got} of {need} required witness \
         cosignatures were obtained ({detail})"
    )]
    Unwitnessed {
        index: u64,
        got: usize,
        need: usize,
        detail: String,
    },
}

/// What an acknowledged append returns.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub index: u64,
    /// A C2SP tlog-proof: the inclusion proof and the (cosigned) checkpoint.
    pub proof: Bytes,
    /// When asked ([`AppendOptions::consistency_from`]) and that size is not larger
    /// than the proof's checkpoint: the RFC 6962 consistency proof from it.
    pub consistency: Option<(u64, Vec<Hash>)>,
}

/// The latest published checkpoint of a log.
#[derive(Debug, Clone)]
pub struct Published {
    pub size: u64,
    pub note: Bytes,
}

struct Pending {
    entry: Bytes,
    options: AppendOptions,
    reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

/// What an append asks for besides the entry's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOptions {
    pub wait: Wait,
    /// A consistency proof from this size (the size a verifier saw last) to the
    /// answer's checkpoint, built from the sequencer's memory with the inclusion
    /// proof, so that the caller need not fetch tiles for it.
    pub consistency_from: Option<u64>,
}

/// When an append is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Once its checkpoint carries the witness quorum (what a write-ahead intent
    /// needs before anything is dispatched).
    #[default]
    Witnessed,
    /// Once its checkpoint is stored, signed by the log: the commit point. The
    /// witnesses are asked right after, as for every batch, but the answer does not
    /// wait for them, and its proof carries the log's signature only.
    Stored,
}

/// A handle to a running sequencer; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    origin: Arc<str>,
    tx: mpsc::Sender<Pending>,
    published: watch::Receiver<Published>,
    unpublished: Arc<RwLock<Unpublished>>,
}

impl LogWriter {
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends one entry and waits until it is under a stored (and, if configured,
    /// witnessed) checkpoint.
    pub async fn append(&self, entry: Bytes) -> Result<Receipt, AppendError> {
        self.submit(entry).await?.await
    }

    /// Appends one entry, with `options`.
    pub async fn append_with(
        &self,
        entry: Bytes,
        options: AppendOptions,
    ) -> Result<Receipt, AppendError> {
        self.submit_with(entry, options).await?.await
    }

    /// Queues one entry now (see [`LogWriter::submit_with`]), answered once witnessed.
    pub async fn submit(
        &self,
        entry: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<Receipt, AppendError>>, AppendError> {
        self.submit_with(entry, AppendOptions::default()).await
    }

    /// Queues one entry now — entries submitted one after another keep that order in
    /// the log — and returns the future of its acknowledgement.
    pub async fn submit_with(
        &self,
        entry: Bytes,
        options: AppendOptions,
    ) -> Result<impl std::future::Future<Output = Result<Receipt, AppendError>>, AppendError> {
        if entry.is_empty() {
            return Err(AppendError::Empty);
        }
        if entry.len() > MAX_ENTRY_LEN {
            return Err(AppendError::TooLarge(entry.len()));
        }
        let (reply, rx) = oneshot::channel();
        let origin = self.origin.clone();
        let unavailable = move |reason: &str| AppendError::Unavailable {
            origin: origin.to_string(),
            reason: reason.into(),
        };
        self.tx
            .send(Pending {
                entry,
                options,
                reply,
            })
            .await
            .map_err(|_| unavailable("the sequencer stopped"))?;
        Ok(async move {
            rx.await
                .map_err(|_| unavailable("the sequencer stopped before answering"))?
        })
    }

    /// Gives up this handle and waits until the sequencer has stopped: once every
    /// handle is gone, it answers what was queued, stores its last cosigned checkpoint
    /// and ends.
    pub async fn close(self) {
        let mut published = self.published.clone();
        drop(self);
        // The sequencer holds the sender: `changed` fails once it has ended.
        while published.changed().await.is_ok() {}
    }

    /// The latest checkpoint: stored as the commit point, and witnessed if the log
    /// has witnesses and they answered.
    pub fn published(&self) -> Published {
        self.published.borrow().clone()
    }

    /// A tile or entry bundle the log holds in its journal but has not yet written to
    /// storage (see [`Unpublished::read`]).
    pub fn unpublished(&self, path: &TilePath) -> Option<Bytes> {
        self.unpublished.read().ok()?.read(path, false)
    }

    /// The same, only if it is not yet written to storage.
    pub fn unwritten(&self, path: &TilePath) -> Option<Bytes> {
        self.unpublished.read().ok()?.read(path, true)
    }
}

/// The tiles and entry bundles of a log that are in its journal but not yet in
/// storage (and the partial ones already written): the widest of each, by kind, level
/// and index.
#[derive(Debug, Default)]
pub struct Unpublished {
    /// (is a bundle, level, index) to (id, contents, not yet written).
    objects: BTreeMap<(bool, u8, u64), (TileId, Bytes, bool)>,
}

impl Unpublished {
    fn insert(&mut self, bundle: bool, id: TileId, data: Bytes) {
        self.objects
            .insert((bundle, id.level(), id.index()), (id, data, true));
    }

    /// The hash tiles, for proofs.
    fn tiles(&self) -> MemoryTiles {
        self.objects
            .iter()
            .filter(|((bundle, _, _), _)| !bundle)
            .map(|(_, (id, data, _))| (*id, data.clone()))
            .collect()
    }

    /// What is to be written, as (path, contents).
    fn writes(&self) -> Vec<(String, Bytes)> {
        self.objects
            .iter()
            .filter(|(_, (_, _, unwritten))| *unwritten)
            .map(|((bundle, _, _), (id, data, _))| {
                let path = if *bundle {
                    id.entries_path()
                } else {
                    id.path()
                };
                (path, data.clone())
            })
            .collect()
    }

    /// Once written, full tiles and bundles are read from storage; the partial ones
    /// stay, so that narrower widths can still be cut from them.
    fn written(&mut self) {
        self.objects.retain(|_, (id, _, _)| !id.is_full());
        for (_, _, unwritten) in self.objects.values_mut() {
            *unwritten = false;
        }
    }

    /// The object at `path`: the one held, or, for a narrower partial width than the
    /// one held, its first entries or hashes (a tile or bundle of a smaller tree is a
    /// prefix of the same one of a larger tree).
    /// Only what is not yet written, if `unwritten`.
    pub fn read(&self, path: &TilePath, unwritten: bool) -> Option<Bytes> {
        let (bundle, want) = match path {
            TilePath::Hashes(id) => (false, *id),
            TilePath::Entries(id) => (true, *id),
        };
        let level = if bundle { 0 } else { want.level() };
        let (have, data, pending) = self.objects.get(&(bundle, level, want.index()))?;
        if unwritten && !pending {
            return None;
        }
        cut(bundle, want, *have, data)
    }
}

/// `want` from `have`, the same tile at a width at least as large.
pub fn cut(bundle: bool, want: TileId, have: TileId, data: &Bytes) -> Option<Bytes> {
    if have.width() < want.width() {
        return None;
    }
    if have.width() == want.width() {
        return Some(data.clone());
    }
    let width = usize::from(want.width());
    if bundle {
        let entries = parse_bundle(data).ok()?;
        encode_bundle(entries.get(..width)?).ok().map(Bytes::from)
    } else {
        data.get(..want.byte_len())
            .map(|_| data.slice(..want.byte_len()))
    }
}

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log {origin}: {reason}")]
    Corrupt { origin: String, reason: String },
    #[error("log {origin}: storage: {0}", origin = .1)]
    Storage(String, String),
}

/// Where a log with witnesses stores its log-signed checkpoint, the commit point of
/// each batch, before the witnesses are asked: the public `checkpoint` object then only
/// ever holds a cosigned checkpoint. Not part of the tlog-tiles layout; readers ignore
/// it.
pub const COMMIT_CHECKPOINT: &str = "checkpoint.commit";

/// The witnesses a log asks for cosignatures, and how many it needs.
#[derive(Clone, Default)]
pub struct WitnessSet {
    pub clients: Vec<WitnessClient>,
    pub quorum: usize,
}

impl WitnessSet {
    /// Signatures a fully witnessed note carries: the log's (one per key), the
    /// quorum's and every required witness's.
    fn witnessed_signatures(&self, log_keys: usize) -> usize {
        log_keys + self.quorum + self.clients.iter().filter(|w| w.is_required()).count()
    }

    /// Where the commit point goes: with witnesses, the public `checkpoint` is only
    /// ever a cosigned one, and the log-signed checkpoint goes beside it.
    fn commit_name(&self) -> &'static str {
        if self.clients.is_empty() {
            "checkpoint"
        } else {
            COMMIT_CHECKPOINT
        }
    }
}

/// The right edge of the tree: everything needed to append, in bounded memory.
#[derive(Clone)]
struct Edge {
    frontier: Frontier,
    /// Partial tile of each level (hashes at tree level 8·L).
    tiles: Vec<Vec<Hash>>,
    /// Entries of the partial entry bundle.
    entries: Vec<Bytes>,
}

impl Edge {
    /// Step 1: appends `entries` to the right edge. Returns every tile and entry
    /// bundle they completed or changed, as (is a bundle, id, contents).
    fn extend(&mut self, entries: &[Bytes]) -> Result<Vec<(bool, TileId, Bytes)>, String> {
        let old_size = self.frontier.size();
        let mut full_tiles = MemoryTiles::new();
        let mut out: Vec<(bool, TileId, Bytes)> = Vec::new();
        for entry in entries {
            let index = self.frontier.size();
            let stored = self
                .frontier
                .append(leaf_hash(entry))
                .map_err(|e| e.to_string())?;
            for (level, hash) in stored.iter().step_by(usize::from(TILE_HEIGHT)).enumerate() {
                let level = level as u8;
                if self.tiles.len() <= usize::from(level) {
                    self.tiles.push(Vec::new());
                }
                let Some(row) = self.tiles.get_mut(usize::from(level)) else {
                    continue;
                };
                row.push(*hash);
                if row.len() == WIDTH {
                    let tile_index =
                        (index >> (u32::from(level) * u32::from(TILE_HEIGHT))) / WIDTH as u64;
                    let id =
                        TileId::new(level, tile_index, TILE_WIDTH).map_err(|e| e.to_string())?;
                    full_tiles.insert(id, hashes_bytes(row));
                    row.clear();
                }
            }
            self.entries.push(entry.clone());
            if self.entries.len() == WIDTH {
                let id =
                    TileId::new(0, index / WIDTH as u64, TILE_WIDTH).map_err(|e| e.to_string())?;
                let bundle = encode_bundle(&self.entries).map_err(|e| e.to_string())?;
                out.push((true, id, Bytes::from(bundle)));
                self.entries.clear();
            }
        }
        let size = self.frontier.size();
        for id in new_tiles(old_size, size) {
            let data = if id.is_full() {
                full_tiles.get(&id).cloned()
            } else {
                self.tiles
                    .get(usize::from(id.level()))
                    .map(|row| hashes_bytes(row))
            }
            .ok_or_else(|| format!("internal: tile {} was not computed", id.path()))?;
            if data.len() != id.byte_len() {
                return Err(format!(
                    "internal: tile {} has {} bytes, want {}",
                    id.path(),
                    data.len(),
                    id.byte_len()
                ));
            }
            out.push((false, id, data));
        }
        if !self.entries.is_empty() {
            let width = u16::try_from(self.entries.len()).map_err(|e| e.to_string())?;
            let id = TileId::new(0, size / WIDTH as u64, width).map_err(|e| e.to_string())?;
            let bundle = encode_bundle(&self.entries).map_err(|e| e.to_string())?;
            out.push((true, id, Bytes::from(bundle)));
        }
        Ok(out)
    }
}

struct Sequencer {
    origin: String,
    keys: LogKeys,
    store: TileStore,
    edge: Edge,
    /// The current checkpoint, as stored (or, cosigned, being stored: `storing`).
    note: Note,
    /// Tiles written by the last batch, kept for proofs.
    recent: MemoryTiles,
    witnesses: WitnessSet,
    published: watch::Sender<Published>,
    /// The cosigned checkpoint being stored while the batch is acknowledged; every
    /// later checkpoint write (and a reload) waits for it first, so that storage never
    /// goes back to an older checkpoint.
    storing: Option<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>>,
    /// With a journal: what it holds that storage does not, and when storage was last
    /// brought up to date.
    journal: Option<Journaled>,
    /// When the witness quorum last cosigned the checkpoint.
    last_witnessed: tokio::time::Instant,
    /// The size of the tree whose witnessed `checkpoint` and commit point were last
    /// stored durably by [`Sequencer::publish`]: an idle refresh of that same tree
    /// rewrites only the public checkpoint, without fsync.
    durable_size: Option<u64>,
    /// Taken at the first cosigning: how much earlier than a full interval the next
    /// refresh comes, once.
    phase: Option<Duration>,
}

struct Journaled {
    journal: Journal,
    path: std::path::PathBuf,
    unpublished: Arc<RwLock<Unpublished>>,
    interval: Duration,
    last_publish: tokio::time::Instant,
}

/// The state a log opens with.
struct Opened {
    edge: Edge,
    note: Note,
    recent: MemoryTiles,
}

/// Opens (or creates) the log at `store` and starts its sequencer.
pub async fn start(
    origin: &str,
    keys: impl Into<LogKeys>,
    store: TileStore,
    batch: BatchConfig,
    witnesses: WitnessSet,
) -> Result<LogWriter, OpenError> {
    let keys = keys.into();
    crate::metrics::METRICS.log_opened(origin);
    for w in &witnesses.clients {
        crate::metrics::METRICS.witness_known(w.name());
    }
    let unpublished = Arc::new(RwLock::new(Unpublished::default()));
    // A journal left by a run with a publish interval is replayed whatever this run's
    // interval: its records may have been acknowledged. With an interval of zero,
    // every batch is then published right after it is journaled.
    let journal_path = store
        .local_path(JOURNAL)
        .filter(|p| !batch.publish_interval.is_zero() || p.exists());
    let (opened, journal) = open(
        origin,
        &keys,
        &store,
        witnesses.commit_name(),
        journal_path.as_deref(),
        &unpublished,
    )
    .await?;
    let journal = match (journal, journal_path) {
        (Some(journal), Some(path)) => Some(Journaled {
            journal,
            path,
            unpublished: unpublished.clone(),
            interval: batch.publish_interval,
            last_publish: tokio::time::Instant::now(),
        }),
        _ => None,
    };
    let Opened {
        edge,
        mut note,
        recent,
    } = opened;
    // During a key rotation the newest checkpoint is signed by the next key too, and
    // (without a journal, which publishes it with its tiles) stored again at once, so
    // that the log still opens once the old key is gone.
    let completed = keys.complete(&note).map_err(|e| OpenError::Corrupt {
        origin: origin.to_string(),
        reason: e.to_string(),
    })?;
    if let Some(done) = completed {
        if journal.is_none() {
            store
                .write(witnesses.commit_name(), Bytes::from(done.to_bytes()))
                .await
                .map_err(|e| OpenError::Storage(e.to_string(), origin.to_string()))?;
        }
        tracing::info!(%origin, keys = keys.len(), "the stored checkpoint is signed by every log key now");
        note = done;
    }
    let mut witnesses = witnesses;
    if !witnesses.clients.is_empty() {
        // What each witness last cosigned, from the checkpoints storage holds, so
        // that the first request after a restart is not answered with a conflict.
        let stored = store.read("checkpoint").await.ok().flatten();
        let stored = stored.and_then(|b| Note::parse(&b).ok());
        for client in &mut witnesses.clients {
            client.learn_from(&note);
            if let Some(stored) = &stored {
                client.learn_from(stored);
            }
        }
    }
    let size = edge.frontier.size();
    let (published, published_rx) = watch::channel(Published {
        size,
        note: Bytes::from(note.to_bytes()),
    });
    let (tx, rx) = mpsc::channel(4096);
    let seq = Sequencer {
        origin: origin.to_string(),
        keys,
        store,
        edge,
        note,
        recent,
        witnesses,
        published,
        storing: None,
        journal,
        // The stored cosignatures' age is not known here: an idle log is cosigned
        // again right after it starts.
        last_witnessed: tokio::time::Instant::now()
            .checked_sub(batch.max_checkpoint_interval)
            .unwrap_or_else(tokio::time::Instant::now),
        durable_size: None,
        phase: Some(phase(origin, batch.max_checkpoint_interval)),
    };
    let batch = BatchConfig {
        max_entries: batch.max_entries.clamp(1, MAX_BATCH_ENTRIES),
        ..batch
    };
    tokio::spawn(seq.run(rx, batch));
    Ok(LogWriter {
        origin: origin.into(),
        tx,
        published: published_rx,
        unpublished,
    })
}

/// Where in `interval` a log's refreshes fall: a fixed function of its origin.
fn phase(origin: &str, interval: Duration) -> Duration {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(origin.as_bytes());
    let millis = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % millis)
}

/// Loads the log from storage and, with a journal, replays what the journal holds
/// beyond it; `unpublished` is set to what storage lacks.
async fn open(
    origin: &str,
    keys: &LogKeys,
    store: &TileStore,
    commit_name: &str,
    journal: Option<&std::path::Path>,
    unpublished: &RwLock<Unpublished>,
) -> Result<(Opened, Option<Journal>), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        origin: origin.to_string(),
        reason,
    };
    let (mut edge, mut note, mut recent) = recover(origin, keys, store, commit_name).await?;
    // The stored partial tiles and bundle, as written: narrower widths are cut from
    // them (storage holds partial ones only at the sizes it published).
    let mut held = Unpublished::default();
    for (id, data) in &recent {
        held.insert(false, *id, data.clone());
    }
    if !edge.entries.is_empty() {
        let size = edge.frontier.size();
        let width = u16::try_from(edge.entries.len()).map_err(|e| corrupt(e.to_string()))?;
        let id = TileId::new(0, size / WIDTH as u64, width).map_err(|e| corrupt(e.to_string()))?;
        let bundle = encode_bundle(&edge.entries).map_err(|e| corrupt(e.to_string()))?;
        held.insert(true, id, Bytes::from(bundle));
    }
    held.written();
    let journal = match journal {
        None => None,
        Some(path) => {
            let (journal, records) = Journal::open(path).map_err(|e| corrupt(e.to_string()))?;
            for record in records {
                let size = edge.frontier.size();
                let end = record.first + record.entries.len() as u64;
                if end <= size {
                    continue; // already in storage
                }
                if record.first != size {
                    return Err(corrupt(format!(
                        "the journal holds entries {}..{end}, which do not follow the \
                         stored checkpoint of size {size}",
                        record.first
                    )));
                }
                let (n, checkpoint) = opened_note(origin, keys, &record.note, "journal record")?;
                if checkpoint.size() != end {
                    return Err(corrupt(format!(
                        "a journal record for entries {}..{end} has a checkpoint of size {}",
                        record.first,
                        checkpoint.size()
                    )));
                }
                for (bundle, id, data) in edge.extend(&record.entries).map_err(corrupt)? {
                    held.insert(bundle, id, data);
                }
                if edge.frontier.root() != *checkpoint.root() {
                    return Err(corrupt(format!(
                        "the journal's entries up to {end} do not recompute the root of its \
                         checkpoint"
                    )));
                }
                note = n;
            }
            Some(journal)
        }
    };
    recent.extend(held.tiles());
    if let Ok(mut u) = unpublished.write() {
        *u = held;
    }
    Ok((Opened { edge, note, recent }, journal))
}

/// Loads the right edge from the last stored checkpoint and checks the stored tiles
/// and entries against it. A log with no checkpoint is new and gets one of size 0.
async fn recover(
    origin: &str,
    keys: &LogKeys,
    store: &TileStore,
    commit_name: &str,
) -> Result<(Edge, Note, MemoryTiles), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        origin: origin.to_string(),
        reason,
    };
    let storage =
        |e: crate::store::StoreError| OpenError::Storage(e.to_string(), origin.to_string());
    let commit = stored_note(origin, keys, store, COMMIT_CHECKPOINT).await?;
    let public = match stored_note(origin, keys, store, "checkpoint").await {
        // An idle refresh rewrites the public checkpoint without fsync: after a power
        // loss it may be empty or torn. The commit point, stored durably and never
        // behind it, stands for it; the start cosigns and publishes it again.
        Err(OpenError::Corrupt { reason, .. }) if commit.is_some() => {
            tracing::warn!(%origin, %reason, "the public checkpoint is damaged; continuing from the commit point");
            None
        }
        other => other?,
    };
    // The newer of the two; the cosigned one when they are of the same size, which
    // must then be the same tree.
    if let (Some((_, p)), Some((_, c))) = (&public, &commit) {
        if p.size() == c.size() && p.root() != c.root() {
            return Err(corrupt(format!(
                "checkpoint and {COMMIT_CHECKPOINT} both have size {} but different roots: \
                 two histories of this log were written here",
                p.size()
            )));
        }
    }
    let newest = match (public, commit) {
        (Some(p), Some(c)) if c.1.size() > p.1.size() => Some(c),
        (Some(p), _) => Some(p),
        (None, c) => c,
    };
    let Some((note, checkpoint)) = newest else {
        // Tiles without a checkpoint are a log that lost its commit point (a partial
        // restore, a wrong prefix, a deleted object), never a new one: a new log's
        // checkpoint is written before any tile. Starting afresh would overwrite those
        // tiles and sign checkpoints that contradict the ones already published.
        if store.any_below("tile").await.map_err(storage)? {
            return Err(corrupt(format!(
                "there is no checkpoint in {}, but there are tiles: refusing to start a \
                 new log over them; restore the checkpoint, or use an empty location",
                store.describe()
            )));
        }
        let note = Checkpoint::new(origin, 0, Frontier::new().root())
            .and_then(|c| keys.sign(&c))
            .map_err(|e| corrupt(e.to_string()))?;
        store
            .write(commit_name, Bytes::from(note.to_bytes()))
            .await
            .map_err(storage)?;
        let edge = Edge {
            frontier: Frontier::new(),
            tiles: Vec::new(),
            entries: Vec::new(),
        };
        return Ok((edge, note, MemoryTiles::new()));
    };
    let size = checkpoint.size();

    // The partial tile of every level, and the partial entry bundle.
    let mut recent = MemoryTiles::new();
    let mut tiles = Vec::new();
    for level in 0u8.. {
        let hashes = level_hashes(level, size);
        if hashes == 0 {
            break;
        }
        let width = (hashes % WIDTH as u64) as u16;
        let mut row = Vec::new();
        if width > 0 {
            let id = TileId::new(level, hashes / WIDTH as u64, width)
                .map_err(|e| corrupt(e.to_string()))?;
            let data = store
                .read(&id.path())
                .await
                .map_err(storage)?
                .ok_or_else(|| {
                    corrupt(format!(
                        "tile {} covered by the checkpoint of size {size} is missing",
                        id.path()
                    ))
                })?;
            if data.len() != id.byte_len() {
                return Err(corrupt(format!(
                    "tile {} has {} bytes, want {}",
                    id.path(),
                    data.len(),
                    id.byte_len()
                )));
            }
            row = data.chunks_exact(32).filter_map(Hash::from_slice).collect();
            recent.insert(id, data);
        }
        tiles.push(row);
    }
    let frontier = {
        let fetcher = StoreFetcher::new(store, &recent);
        let reader = TileHashReader::new(size, *checkpoint.root(), &fetcher);
        tokio::task::block_in_place(|| Frontier::from_stored(size, &reader)).map_err(|e| {
            corrupt(format!(
                "stored tiles do not match the checkpoint of size {size}: {e}"
            ))
        })?
    };
    if frontier.root() != *checkpoint.root() {
        return Err(corrupt(format!(
            "stored tiles do not recompute the root of the checkpoint of size {size}"
        )));
    }
    let mut entries = Vec::new();
    let in_bundle = (size % WIDTH as u64) as u16;
    if in_bundle > 0 {
        let id =
            TileId::new(0, size / WIDTH as u64, in_bundle).map_err(|e| corrupt(e.to_string()))?;
        let data = store
            .read(&id.entries_path())
            .await
            .map_err(storage)?
            .ok_or_else(|| corrupt(format!("entry bundle {} is missing", id.entries_path())))?;
        let parsed = parse_bundle(&data)
            .map_err(|e| corrupt(format!("entry bundle {}: {e}", id.entries_path())))?;
        let row = tiles.first().map(Vec::as_slice).unwrap_or_default();
        if parsed.len() != row.len() || parsed.iter().zip(row).any(|(e, h)| leaf_hash(e) != *h) {
            return Err(corrupt(format!(
                "entry bundle {} does not match its tile",
                id.entries_path()
            )));
        }
        entries = parsed.into_iter().map(Bytes::copy_from_slice).collect();
    }
    Ok((
        Edge {
            frontier,
            tiles,
            entries,
        },
        note,
        recent,
    ))
}

/// A stored checkpoint (`checkpoint` or [`COMMIT_CHECKPOINT`]), checked against the
/// log's key and origin; `None` if there is none.
async fn stored_note(
    origin: &str,
    keys: &LogKeys,
    store: &TileStore,
    name: &str,
) -> Result<Option<(Note, Checkpoint)>, OpenError> {
    let Some(bytes) = store
        .read(name)
        .await
        .map_err(|e| OpenError::Storage(e.to_string(), origin.to_string()))?
    else {
        return Ok(None);
    };
    opened_note(origin, keys, &bytes, &format!("stored {name}")).map(Some)
}

/// A checkpoint note (`what` says where it is from) checked against the log's key and
/// origin.
fn opened_note(
    origin: &str,
    keys: &LogKeys,
    bytes: &[u8],
    what: &str,
) -> Result<(Note, Checkpoint), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        origin: origin.to_string(),
        reason,
    };
    let note = Note::parse(bytes).map_err(|e| corrupt(format!("{what} is malformed: {e}")))?;
    note.clone().open(&keys.verifiers()).map_err(|e| {
        corrupt(format!(
            "{what} is not signed by this log's key: {e} (if the key was just rotated, \
                 start once more with the old key as key_file and the new one as \
                 next_key_file, until a checkpoint signed by both is stored)"
        ))
    })?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(|e| corrupt(format!("{what}: {e}")))?;
    if checkpoint.origin() != origin {
        return Err(corrupt(format!(
            "{what} is for origin {:?}",
            checkpoint.origin()
        )));
    }
    Ok((note, checkpoint))
}

fn hashes_bytes(row: &[Hash]) -> Bytes {
    Bytes::from(row.iter().flat_map(|h| h.0).collect::<Vec<u8>>())
}

impl Sequencer {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, batch: BatchConfig) {
        // A checkpoint stored before the witnesses answered (or the first one of a new
        // log) is cosigned now, so that readers requiring witnesses can verify it.
        if !self.witnesses.clients.is_empty()
            && self.note.signatures().len() < self.witnesses.witnessed_signatures(self.keys.len())
        {
            if let Err((got, need, detail)) = self.collect_cosignatures().await {
                tracing::warn!(origin = %self.origin, got, need, %detail, "checkpoint not yet witnessed");
            }
            let size = self.edge.frontier.size();
            let _ = self.published.send(Published {
                size,
                note: Bytes::from(self.note.to_bytes()),
            });
        }
        // With a journal, storage gets what it replayed and the cosigned checkpoint.
        self.publish(true).await;
        loop {
            // With a journal holding what storage lacks, storage is brought up to date
            // when the interval is over, appends or not.
            let due = self
                .journal
                .as_ref()
                .filter(|j| !j.journal.is_empty())
                .map(|j| j.last_publish + j.interval);
            // With witnesses, the checkpoint is cosigned again once it is due.
            let refresh = (!self.witnesses.clients.is_empty())
                .then(|| self.last_witnessed + batch.max_checkpoint_interval);
            let first = tokio::select! {
                p = rx.recv() => p,
                () = sleep_until_or_never(due) => {
                    self.publish(false).await;
                    continue;
                }
                () = sleep_until_or_never(refresh) => {
                    self.refresh_cosignatures().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut pending = vec![first];
            // Group commit: everything that queued up while the previous batch was
            // being written joins this one, without waiting...
            while pending.len() < batch.max_entries {
                match rx.try_recv() {
                    Ok(p) => pending.push(p),
                    Err(_) => break,
                }
            }
            // ...and, if a linger is configured, whatever arrives within it.
            if !batch.max_delay.is_zero() {
                let deadline = tokio::time::Instant::now() + batch.max_delay;
                while pending.len() < batch.max_entries {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(p)) => pending.push(p),
                        _ => break,
                    }
                }
            }
            self.integrate(pending).await;
            if self
                .journal
                .as_ref()
                .is_some_and(|j| j.last_publish.elapsed() >= j.interval)
            {
                self.publish(false).await;
            }
        }
        self.publish(false).await;
        self.settle().await;
    }

    /// With a journal: writes the tiles, bundles and checkpoint it holds to storage
    /// (`always`: the checkpoint even if the journal is empty), then empties it. On
    /// failure the journal keeps everything, and the next interval tries again.
    async fn publish(&mut self, always: bool) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.last_publish = tokio::time::Instant::now();
        if j.journal.is_empty() && !always {
            return;
        }
        let writes = match j.unpublished.read() {
            Ok(u) => u.writes(),
            Err(_) => return,
        };
        // The commit point, and the public checkpoint if it has the witness quorum:
        // storage only ever shows witnessed checkpoints as `checkpoint`, and a log
        // whose public checkpoint was put back continues from its commit point.
        let witnessed = self.witnesses.clients.is_empty()
            || self.note.signatures().len() >= self.witnesses.witnessed_signatures(self.keys.len());
        let mut names = vec![self.witnesses.commit_name()];
        if witnessed && !names.contains(&"checkpoint") {
            names.push("checkpoint");
        }
        let note = Bytes::from(self.note.to_bytes());
        let notes = names
            .into_iter()
            .map(|name| (name.to_string(), note.clone()))
            .collect();
        let done = match self.store.write_all(writes).await {
            Ok(()) => self.store.write_all(notes).await,
            Err(e) => Err(e),
        };
        let problem = match done {
            Ok(()) => match j.journal.clear().await {
                Ok(()) => {
                    if let Ok(mut u) = j.unpublished.write() {
                        u.written();
                        self.recent = u.tiles();
                    }
                    self.durable_size = witnessed.then(|| self.edge.frontier.size());
                    return;
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(origin = %self.origin, %problem, "storage not brought up to date; the journal keeps the entries until the next try");
    }

    /// Waits for the cosigned checkpoint being stored, if any.
    async fn settle(&mut self) {
        let Some(write) = self.storing.take() else {
            return;
        };
        let problem = match write.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(origin = %self.origin, %problem, "the cosigned checkpoint was not stored; the previous one stays until the next");
    }

    async fn integrate(&mut self, pending: Vec<Pending>) {
        let old_size = self.edge.frontier.size();
        match self.write_batch(&pending).await {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(origin = %self.origin, error = %e, "batch not logged; reloading from storage");
                for p in pending {
                    let _ = p.reply.send(Err(AppendError::Storage(e.clone())));
                }
                self.settle().await;
                let name = self.witnesses.commit_name();
                let journal = self.journal.as_ref().map(|j| j.path.clone());
                let unpublished = self
                    .journal
                    .as_ref()
                    .map(|j| j.unpublished.clone())
                    .unwrap_or_default();
                match open(
                    &self.origin,
                    &self.keys,
                    &self.store,
                    name,
                    journal.as_deref(),
                    &unpublished,
                )
                .await
                {
                    Ok((opened, reopened)) => {
                        self.edge = opened.edge;
                        self.note = opened.note;
                        self.recent = opened.recent;
                        if let (Some(j), Some(reopened)) = (self.journal.as_mut(), reopened) {
                            j.journal = reopened;
                        }
                    }
                    Err(e) => {
                        tracing::error!(origin = %self.origin, error = %e, "reload failed; appends will keep failing")
                    }
                }
                return;
            }
        }
        crate::metrics::METRICS.batch(&self.origin, pending.len());
        let mut pending: Vec<(u64, Pending)> = (old_size..).zip(pending).collect();
        // Appends that asked only for the commit point are answered now; the
        // witnesses are asked right after, as for every batch.
        let stored = |p: &Pending| p.options.wait == Wait::Stored;
        if !self.witnesses.clients.is_empty() && pending.iter().any(|(_, p)| stored(p)) {
            let (now, later) = pending
                .into_iter()
                .partition::<Vec<_>, _>(|(_, p)| stored(p));
            let asked: Vec<(u64, Option<u64>)> = now
                .iter()
                .map(|(i, p)| (*i, p.options.consistency_from))
                .collect();
            for ((_, p), answer) in now.into_iter().zip(self.receipts(&asked)) {
                let _ = p.reply.send(answer);
            }
            pending = later;
        }
        let witnessed = self.collect_cosignatures().await;
        let size = self.edge.frontier.size();
        let _ = self.published.send(Published {
            size,
            note: Bytes::from(self.note.to_bytes()),
        });
        let asked: Vec<(u64, Option<u64>)> = pending
            .iter()
            .map(|(i, p)| (*i, p.options.consistency_from))
            .collect();
        let answers: Vec<Result<Receipt, AppendError>> = match &witnessed {
            Err((got, need, detail)) => asked
                .iter()
                .map(|&(index, _)| {
                    Err(AppendError::Unwitnessed {
                        index,
                        got: *got,
                        need: *need,
                        detail: detail.clone(),
                    })
                })
                .collect(),
            Ok(()) => self.receipts(&asked),
        };
        for ((_, p), answer) in pending.into_iter().zip(answers) {
            let _ = p.reply.send(answer);
        }
    }

    /// Steps 1–3: tiles, bundles, checkpoint (or, with a journal, one record). On
    /// error nothing is acknowledged.
    async fn write_batch(&mut self, pending: &[Pending]) -> Result<(), String> {
        let old_size = self.edge.frontier.size();
        let entries: Vec<Bytes> = pending.iter().map(|p| p.entry.clone()).collect();
        // On a copy, kept only once the batch is stored: a refused batch leaves no
        // trace in memory, even if reloading from storage then fails too.
        let mut edge = self.edge.clone();
        let objects = edge.extend(&entries)?;
        let size = edge.frontier.size();
        let note = Checkpoint::new(&self.origin, size, edge.frontier.root())
            .and_then(|c| self.keys.sign(&c))
            .map_err(|e| e.to_string())?;

        if let Some(j) = self.journal.as_mut() {
            let record = Record {
                first: old_size,
                entries,
                note: Bytes::from(note.to_bytes()),
            };
            j.journal.append(&record).await.map_err(|e| e.to_string())?;
            let mut u = j.unpublished.write().unwrap_or_else(|p| p.into_inner());
            for (bundle, id, data) in objects {
                u.insert(bundle, id, data);
            }
            self.recent = u.tiles();
            self.note = note;
            self.edge = edge;
            return Ok(());
        }

        let mut recent = MemoryTiles::new();
        let mut writes = Vec::new();
        for (bundle, id, data) in objects {
            if bundle {
                writes.push((id.entries_path(), data));
            } else {
                writes.push((id.path(), data.clone()));
                recent.insert(id, data);
            }
        }
        self.store
            .write_all(writes)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .write(self.witnesses.commit_name(), Bytes::from(note.to_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        self.note = note;
        self.recent = recent;
        self.edge = edge;
        Ok(())
    }

    /// An idle log's checkpoint, cosigned again: the same tree, fresh cosignature
    /// timestamps, stored and published like a batch's.
    async fn refresh_cosignatures(&mut self) {
        match self.collect_cosignatures().await {
            Ok(()) => {
                let _ = self.published.send(Published {
                    size: self.edge.frontier.size(),
                    note: Bytes::from(self.note.to_bytes()),
                });
                // With a journal, the checkpoint reaches storage with the next
                // publication; here, at once. When storage already holds this tree,
                // witnessed, and the journal nothing more, only the new cosignatures
                // are new: the public checkpoint alone is rewritten, without fsync
                // (lost in a crash, it is the previous cosigning of the same tree, and
                // a restarted log cosigns and publishes again at once).
                let size = self.edge.frontier.size();
                let refresh_only = self.durable_size == Some(size)
                    && self.journal.as_ref().is_some_and(|j| j.journal.is_empty());
                if refresh_only {
                    let note = Bytes::from(self.note.to_bytes());
                    if let Err(e) = self.store.write_unsynced("checkpoint", note).await {
                        tracing::warn!(origin = %self.origin, error = %e, "the refreshed checkpoint was not stored; the previous one stays");
                    }
                } else {
                    self.publish(true).await;
                }
            }
            Err((got, need, detail)) => {
                // Tried again after the interval: a witness outage must not turn
                // into a busy loop.
                self.last_witnessed = tokio::time::Instant::now();
                tracing::warn!(origin = %self.origin, got, need, %detail, "the idle checkpoint could not be cosigned again");
            }
        }
    }

    /// Step 4: asks every witness to cosign; stores the cosigned checkpoint.
    async fn collect_cosignatures(&mut self) -> Result<(), (usize, usize, String)> {
        if self.witnesses.clients.is_empty() {
            crate::metrics::METRICS.quorum(&self.origin);
            return Ok(());
        }
        let checkpoint = match Checkpoint::parse(self.note.text()) {
            Ok(c) => c,
            Err(e) => return Err((0, self.witnesses.quorum, e.to_string())),
        };
        let mut note = self.note.clone();
        let mut got = 0;
        let mut added = false;
        let mut missing_required = 0;
        let mut problems = Vec::new();
        let store = self.store.clone();
        let recent = self.recent.clone();
        // All witnesses at once: one round trip, not one per witness.
        let current = &self.note;
        let answers = futures::future::join_all(self.witnesses.clients.iter_mut().map(|w| async {
            let asked = std::time::Instant::now();
            let answer = w
                .add_checkpoint(current, &checkpoint, &store, &recent)
                .await;
            crate::metrics::METRICS.witness_answer(w.name(), asked.elapsed(), answer.is_ok());
            answer
        }))
        .await;
        for (w, answer) in self.witnesses.clients.iter().zip(answers) {
            match answer {
                Ok(sig) => {
                    if note.add_signature(sig).is_ok() {
                        added = true;
                        if !w.is_required() {
                            got += 1;
                        }
                    } else if w.is_required() {
                        missing_required += 1;
                    }
                }
                Err(e) => {
                    if w.is_required() {
                        missing_required += 1;
                    }
                    problems.push(format!("{}: {e}", w.name()));
                }
            }
        }
        let need = self.witnesses.quorum;
        // A required witness that did not cosign holds the append back like a
        // missing quorum member: its cluster's agents would refuse the checkpoint.
        let met = got >= need && missing_required == 0;
        if missing_required > 0 {
            problems.push(format!(
                "{missing_required} required witness(es) did not cosign"
            ));
        }
        // The log-signed checkpoint of this size is already stored (the commit point);
        // with the quorum, the cosigned one is stored as `checkpoint` while the batch
        // is acknowledged. Should that write fail, the next one supersedes it, and a
        // log restarted meanwhile asks the witnesses again. Below the quorum, storage
        // keeps the last checkpoint that met it.
        if met && self.journal.is_none() {
            self.settle().await;
            let store = self.store.clone();
            let bytes = Bytes::from(note.to_bytes());
            self.storing = Some(tokio::spawn(async move {
                store.write("checkpoint", bytes).await
            }));
        }
        if added {
            self.note = note;
        }
        if met {
            let now = tokio::time::Instant::now();
            // The logs of a service start together: after its first cosigning, each
            // refreshes at its own phase of the interval (from its origin), so that
            // thousands of idle logs ask the witnesses evenly, not in the same second.
            self.last_witnessed = match self.phase.take() {
                Some(p) => now.checked_sub(p).unwrap_or(now),
                None => now,
            };
            crate::metrics::METRICS.quorum(&self.origin);
            Ok(())
        } else {
            Err((got, need, problems.join("; ")))
        }
    }

    /// The receipts of entries of the batch just committed, against the current note,
    /// each with the consistency proof from the size it asked for, if any.
    fn receipts(&self, asked: &[(u64, Option<u64>)]) -> Vec<Result<Receipt, AppendError>> {
        // The sequencer computed every hash it needs itself, so it reads them from
        // its own memory instead of re-authenticating tiles for each receipt. The
        // proofs of one batch share most of their hashes: each is computed once.
        let fetcher = StoreFetcher::new(&self.store, &self.recent);
        let reader = EdgeReader {
            edge: &self.edge,
            recent: &self.recent,
            fetcher: &fetcher,
            computed: std::cell::RefCell::new(std::collections::HashMap::new()),
        };
        let size = self.edge.frontier.size();
        // A few receipts are computed on this task: the hashes are in memory, and the
        // fetcher blocks (in place) only for a tile it must read from storage; handing
        // the worker to another thread cost more than their proofs. A large batch's
        // proofs take milliseconds of hashing: the worker is handed over for them, so
        // that the other logs' tasks on it keep running.
        let build = || {
            asked
                .iter()
                .map(|&(index, from)| {
                    let proof = TlogProof::produce(index, self.note.clone(), None, &reader)
                        .map_err(|e| {
                            AppendError::Storage(format!("cannot build the inclusion proof: {e}"))
                        })?;
                    // The entry is logged whatever happens here: a consistency proof
                    // that cannot be built (an older tile unreadable) is left out, and
                    // the caller reads one from the tiles instead.
                    let consistency = from.filter(|f| *f <= size).and_then(|from| {
                        match palisade_tlog::tree::consistency_proof(from, size, &reader) {
                            Ok(hashes) => Some((from, hashes)),
                            Err(e) => {
                                tracing::warn!(origin = %self.origin, from, error = %e, "consistency proof left out of a receipt");
                                None
                            }
                        }
                    });
                    Ok(Receipt {
                        index,
                        proof: Bytes::from(proof.to_bytes()),
                        consistency,
                    })
                })
                .collect()
        };
        if asked.len() > RECEIPTS_ON_TASK {
            tokio::task::block_in_place(build)
        } else {
            build()
        }
    }
}

/// The verifier key text for a log key, as customers and agents configure it.
/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub fn verifier_text(key: &SignerKey) -> String {
    key.verifier().to_string()
}

/// Stored hashes from the sequencer's own memory: the partial tile of every level and
/// the tiles written by the last batch; anything older comes from storage (full
/// tiles only, which never change). Trusted because the sequencer computed them.
struct EdgeReader<'a> {
    edge: &'a Edge,
    recent: &'a MemoryTiles,
    fetcher: &'a StoreFetcher<'a>,
    /// Hashes already computed, by stored-hash index (valid for this edge only).
    computed: std::cell::RefCell<std::collections::HashMap<u64, Hash>>,
}

impl EdgeReader<'_> {
    /// The hashes of the run `[start, start + count)` of tile (`level`, `index`).
    fn run(&self, level: u8, index: u64, start: usize, count: usize) -> Result<Hash, String> {
        let size = self.edge.frontier.size();
        let edge_index = level_hashes(level, size) / WIDTH as u64;
        let missing = || {
            format!(
                "tile {level}/{index} has no hashes {start}..{}",
                start + count
            )
        };
        if index == edge_index {
            let row = self
                .edge
                .tiles
                .get(usize::from(level))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let run = row.get(start..start + count).ok_or_else(missing)?;
            return run_root(&hashes_bytes(run), 0, count).ok_or_else(missing);
        }
        let id = TileId::new(level, index, TILE_WIDTH).map_err(|e| e.to_string())?;
        let data = match self.recent.get(&id) {
            Some(b) => b.to_vec(),
            None => palisade_tlog::tile::TileFetcher::fetch_tiles(self.fetcher, &[id])
                .map_err(|e| e.to_string())?
                .pop()
                .unwrap_or_default(),
        };
        run_root(&data, start, count).ok_or_else(missing)
    }
}

impl palisade_tlog::tree::HashReader for EdgeReader<'_> {
    type Error = String;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, String> {
        let mut computed = self.computed.borrow_mut();
        indexes
            .iter()
            .map(|&i| {
                if let Some(h) = computed.get(&i) {
                    return Ok(*h);
                }
                let (level, n) = palisade_tlog::tree::split_stored_hash_index(i);
                let tile_level = level / TILE_HEIGHT;
                let within = u32::from(level % TILE_HEIGHT);
                let first = n << within;
                let start = usize::try_from(first % WIDTH as u64).map_err(|e| e.to_string())?;
                let h = self.run(tile_level, first / WIDTH as u64, start, 1usize << within)?;
                computed.insert(i, h);
                Ok(h)
            })
            .collect()
    }
}
