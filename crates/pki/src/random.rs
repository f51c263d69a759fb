//! Randomness from the same source rustls uses (ring's system RNG), so the crate needs no
//! other random number generator.

use crate::error::{Error, Result};

/// Fills `buf` with cryptographically secure random bytes.
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| Error::Random)
}
