//! The etcd snapshot as `Maintenance.Snapshot` streams it and `etcdctl snapshot
//! save` stores it: the bbolt database followed by 32 bytes, the SHA-256 of the
//! database (etcd server/etcdserver/api/v3rpc/maintenance.go). `etcdctl snapshot
//! restore` checks that trailer, so a backup keeps it, and both the agent (taking a
//! backup) and `palisade backup restore` (writing one out) check it too.

use sha2::{Digest, Sha256};

const TRAILER: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is {0} bytes, shorter than its 32-byte SHA-256 trailer")]
    Short(u64),
    #[error("the snapshot's trailing SHA-256 does not match its content (a corrupt or incomplete snapshot)")]
    Mismatch,
}

/// Hashes a snapshot as it streams past, holding back the last 32 bytes.
#[derive(Default)]
pub struct SnapshotCheck {
    hasher: Sha256,
    tail: Vec<u8>,
    total: u64,
}

impl SnapshotCheck {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.tail.extend_from_slice(data);
        if self.tail.len() > TRAILER {
            let cut = self.tail.len() - TRAILER;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    /// The total size (database and trailer), once the trailer matched.
    pub fn finish(self) -> Result<u64, SnapshotError> {
        if self.tail.len() < TRAILER {
            return Err(SnapshotError::Short(self.total));
        }
        let digest: [u8; 32] = self.hasher.finalize().into();
        if digest.as_slice() != self.tail.as_slice() {
            return Err(SnapshotError::Mismatch);
        }
        Ok(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(db: &[u8]) -> Vec<u8> {
        let mut v = db.to_vec();
        v.extend_from_slice(&Sha256::digest(db));
        v
    }

    #[test]
    fn accepts_the_etcd_layout_in_any_chunking() {
        let s = snapshot(&[5u8; 10_000]);
        for chunk in [1, 31, 32, 33, 4096, 20_000] {
            let mut c = SnapshotCheck::new();
            for part in s.chunks(chunk) {
                c.update(part);
            }
            assert_eq!(c.finish(), Ok(s.len() as u64));
        }
    }

    #[test]
    fn rejects_corrupt_or_short_snapshots() {
        let mut s = snapshot(b"database");
        s[0] ^= 1;
        let mut c = SnapshotCheck::new();
        c.update(&s);
        assert_eq!(c.finish(), Err(SnapshotError::Mismatch));
        let mut c = SnapshotCheck::new();
        c.update(&[0u8; 31]);
        assert_eq!(c.finish(), Err(SnapshotError::Short(31)));
    }
}
