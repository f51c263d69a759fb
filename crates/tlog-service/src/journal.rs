//! A log's journal: where a log on a local directory makes each batch durable.
//!
//! Writing a batch's partial tiles, entry bundle and checkpoint as objects means
//! creating several files per batch, each created, synced and renamed into place.
//! With the journal, a batch is one record appended to one file that stays open, and
//! one `fdatasync`: the record holds the batch's entries and its log-signed checkpoint
//! (the commit point). The tiles, bundles and checkpoints of the tlog-tiles layout are
//! then written from memory at most once per publish interval, after which the
//! journal is emptied. Opening the log replays what the journal holds beyond the
//! stored checkpoint.
//!
//! A record is `u32` body length (big-endian), the first 8 bytes of SHA-256 over
//! that length and the body, then the body: `u64` index of the first entry, `u32`
//! entry count, each entry as `u32` length and bytes, and the checkpoint note as `u32`
//! length and bytes.
//! A record is acknowledged only after its `fdatasync`, so a torn or zeroed last
//! record (a crash while writing) was never acknowledged: it is cut off when the
//! journal is opened. A damaged record with more after it is not a crash but damage,
//! and the journal refuses to open rather than drop what follows.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of the journal in a log's directory. Not part of the tlog-tiles
/// layout; readers ignore it.
pub const JOURNAL: &str = "journal";

/// One batch: its entries, from index `first`, and the checkpoint that commits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub first: u64,
    pub entries: Vec<Bytes>,
    pub note: Bytes,
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {reason}")]
pub struct JournalError {
    pub path: String,
    pub reason: String,
}

/// The open journal of one log.
pub struct Journal {
    path: PathBuf,
    file: Arc<std::fs::File>,
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads its records. A torn tail is
    /// cut off, so that what is appended next follows the last whole record.
    pub fn open(path: &Path) -> Result<(Self, Vec<Record>), JournalError> {
        let err = |reason: String| JournalError {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        if created {
            // The new name itself is made durable, not only what is written to it.
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| err(e.to_string()))?;
        let (records, whole) = decode_all(&data).map_err(err)?;
        if whole < data.len() {
            tracing::warn!(
                path = %path.display(),
                kept = whole,
                cut = data.len() - whole,
                "journal ends with an incomplete record (never acknowledged); cutting it off"
            );
            file.set_len(whole as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Arc::new(file),
                len: whole as u64,
            },
            records,
        ))
    }

    /// Appends `record` and syncs it: once this returns, the batch survives a crash.
    pub async fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let bytes = encode(record);
        let file = self.file.clone();
        let at = self.len;
        let n = bytes.len() as u64;
        self.blocking(move || {
            let written = file
                .write_all_at(&bytes, at)
                .and_then(|()| file.sync_data());
            if written.is_err() {
                // Not acknowledged: cut it back off, so that it is neither replayed
                // nor followed by records with a hole before them.
                file.set_len(at)?;
                file.sync_all()?;
            }
            written
        })
        .await?;
        self.len += n;
        Ok(())
    }

    /// Empties the journal, once everything it held is in storage.
    pub async fn clear(&mut self) -> Result<(), JournalError> {
        if self.len == 0 {
            return Ok(());
        }
        let file = self.file.clone();
        let cleared = self
            .blocking(move || {
                file.set_len(0)?;
                file.sync_all()
            })
            .await;
        // Whatever happened, the file's length is now what to append after.
        self.len = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .unwrap_or(self.len);
        cleared
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    async fn blocking(
        &self,
        f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), JournalError> {
        let err = |reason: String| JournalError {
            path: self.path.display().to_string(),
            reason,
        };
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(|e| err(e.to_string()))
    }
}

fn checksum(len: &[u8], body: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(len)
        .chain_update(body)
        .finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// One record as written.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(
        16 + record.note.len() + record.entries.iter().map(|e| e.len() + 4).sum::<usize>(),
    );
    body.extend_from_slice(&record.first.to_be_bytes());
    body.extend_from_slice(&(record.entries.len() as u32).to_be_bytes());
    for e in &record.entries {
        body.extend_from_slice(&(e.len() as u32).to_be_bytes());
        body.extend_from_slice(e);
    }
    body.extend_from_slice(&(record.note.len() as u32).to_be_bytes());
    body.extend_from_slice(&record.note);
    let mut out = Vec::with_capacity(12 + body.len());
    let len = (body.len() as u32).to_be_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, &body));
    out.extend_from_slice(&body);
    out
}

/// The whole records at the start of `data`, and how many bytes they take; what
/// follows them is a torn last record. An error if a damaged record has more after it.
/// Looking for a whole record at every byte after a damaged one costs up to O(n²)
/// hashing for a damaged journal of n bytes before the log refuses to open.
pub fn decode_all(data: &[u8]) -> Result<(Vec<Record>, usize), String> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(rest) = data.get(at..).filter(|r| !r.is_empty()) {
        match decode_one(rest) {
            Some((record, used)) => {
                records.push(record);
                at += used;
            }
            None => {
                // A crash tears only the last record: a whole record anywhere after
                // this one means damage, not a crash.
                if let Some(next) =
                    (1..rest.len()).find(|&p| rest.get(p..).and_then(decode_one).is_some())
                {
                    return Err(format!(
                        "the record at byte {at} is damaged and a whole record follows it \
                         at byte {}: refusing to drop entries that may have been acknowledged",
                        at + next
                    ));
                }
                break;
            }
        }
    }
    Ok((records, at))
}

fn decode_one(data: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let sum = data.get(4..12)?;
    let body = data.get(12..12usize.checked_add(len)?)?;
    if len == 0 || sum != checksum(data.get(..4)?, body) {
        return None;
    }
    let mut r = Reader(body);
    let first = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let count = r.u32()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let n = r.u32()? as usize;
        entries.push(Bytes::copy_from_slice(r.take(n)?));
    }
    let n = r.u32()? as usize;
    let note = Bytes::copy_from_slice(r.take(n)?);
    if !r.0.is_empty() || entries.is_empty() {
        return None;
    }
    Some((
        Record {
            first,
            entries,
            note,
        },
        12 + len,
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first: u64, n: usize) -> Record {
        Record {
            first,
            entries: (0..n)
                .map(|i| Bytes::from(format!("entry {}", first + i as u64)))
                .collect(),
            note: Bytes::from_static(b"example.com/log\n3\nAAAA\n\n- sig\n"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn records_survive_reopening_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log").join(JOURNAL);
        let (mut j, none) = Journal::open(&path).expect("open");
        assert!(none.is_empty());
        j.append(&record(0, 2)).await.expect("append");
        j.append(&record(2, 1)).await.expect("append");
        let whole = j.len();
        drop(j);

        // A crash in the middle of the third record: its start is on disk.
        let third = encode(&record(3, 4));
        let mut data = std::fs::read(&path).expect("read");
        data.extend_from_slice(&third[..third.len() / 2]);
        std::fs::write(&path, &data).expect("write");
        let (mut j, records) = Journal::open(&path).expect("reopen");
        assert_eq!(records, vec![record(0, 2), record(2, 1)]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole);

        // What comes next follows the last whole record.
        j.append(&record(3, 1)).await.expect("append");
        drop(j);
        let (mut j, records) = Journal::open(&path).expect("reopen");
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], record(3, 1));

        j.clear().await.expect("clear");
        drop(j);
        let (_, records) = Journal::open(&path).expect("reopen");
        assert!(records.is_empty());
    }

    #[test]
    fn a_zeroed_or_altered_record_ends_the_journal() {
        let mut data = encode(&record(0, 1));
        let first = data.len();
        data.extend_from_slice(&encode(&record(1, 1)));
        // A tail of zeros, as a file extended by a crash can show.
        let mut zeroed = data.clone();
        zeroed.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            decode_all(&zeroed),
            Ok((vec![record(0, 1), record(1, 1)], data.len()))
        );
        // One byte changed in the last record's body: it is cut, as torn.
        let mut altered = data.clone();
        let last = altered.len() - 3;
        altered[last] ^= 1;
        assert_eq!(decode_all(&altered), Ok((vec![record(0, 1)], first)));
        // The same in the first record, with the second after it: damage, refused.
        let mut damaged = data.clone();
        damaged[first - 3] ^= 1;
        let e = decode_all(&damaged).expect_err("damage in the middle");
        assert!(e.contains("record at byte 0 is damaged"), "{e}");
    }
}
