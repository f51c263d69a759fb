//! tlog-tiles entry bundles: the leaf data of one level-0 tile, each entry prefixed
//! with its length as a big-endian `u16`.

use super::TILE_WIDTH;

/// Largest entry a bundle can carry (the `u16` length prefix).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Why a bundle could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("entry {position} is {len} bytes, more than the {MAX_ENTRY_LEN} a bundle can hold")]
    EntryTooLong { position: usize, len: usize },
    #[error("bundle has {count} entries, more than {TILE_WIDTH}")]
    TooManyEntries { count: usize },
    #[error("bundle has no entries")]
    Empty,
    #[error("bundle is truncated at byte {offset} of {len}")]
    Truncated { offset: usize, len: usize },
}

/// Encodes up to 256 entries as a bundle.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, BundleError> {
    check_count(entries.len())?;
    let mut out = Vec::with_capacity(entries.iter().map(|e| 2 + e.as_ref().len()).sum());
    for (position, entry) in entries.iter().enumerate() {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| BundleError::EntryTooLong {
            position,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Splits a bundle into its entries, borrowing from `bytes`. The caller checks the
/// count against the bundle's width and each entry against the level-0 tile.
pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let truncated = BundleError::Truncated {
            offset,
            len: bytes.len(),
        };
        let (prefix, tail) = rest.split_first_chunk::<2>().ok_or(truncated.clone())?;
        let len = usize::from(u16::from_be_bytes(*prefix));
        if tail.len() < len {
            return Err(truncated);
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
        if entries.len() > usize::from(TILE_WIDTH) {
            return Err(BundleError::TooManyEntries {
                count: entries.len(),
            });
        }
    }
    check_count(entries.len())?;
    Ok(entries)
}

fn check_count(count: usize) -> Result<(), BundleError> {
    if count == 0 {
        return Err(BundleError::Empty);
    }
    if count > usize::from(TILE_WIDTH) {
        return Err(BundleError::TooManyEntries { count });
    }
    Ok(())
}
