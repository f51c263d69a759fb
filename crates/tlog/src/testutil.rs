//! Test-only reference implementations, written straight from the RFC text with no
//! stored-hash tricks, to check the real code against.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::hash::{empty_root, leaf_hash, node_hash, Hash};
use crate::tree::{stored_hashes_for_record, Frontier};

/// Deterministic, distinct leaf contents.
pub fn leaf_data(i: u64) -> Vec<u8> {
    format!("leaf {i}").into_bytes()
}

/// Naive RFC 6962 / RFC 9162 tree over leaves `leaf_data(0..)`, memoising subtree roots.
#[derive(Default)]
pub struct RefTree {
    cache: RefCell<HashMap<(u64, u64), Hash>>,
}

fn split(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl RefTree {
    /// RFC 6962 §2.1 `MTH(D[lo:hi])`.
    pub fn mth(&self, lo: u64, hi: u64) -> Hash {
        if let Some(h) = self.cache.borrow().get(&(lo, hi)) {
            return *h;
        }
        let h = match hi - lo {
            0 => empty_root(),
            1 => leaf_hash(&leaf_data(lo)),
            n => {
                let k = split(n);
                node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
            }
        };
        self.cache.borrow_mut().insert((lo, hi), h);
        h
    }

    /// RFC 9162 §2.1.3.1 `PATH(m, D[lo:hi])`.
    pub fn path(&self, m: u64, lo: u64, hi: u64) -> Vec<Hash> {
        if hi - lo <= 1 {
            return Vec::new();
        }
        let k = split(hi - lo);
        if m < lo + k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// RFC 9162 §2.1.4.1 `PROOF(m, D[0:n])`.
    pub fn proof(&self, m: u64, n: u64) -> Vec<Hash> {
        if m == 0 || m == n {
            return Vec::new();
        }
        self.subproof(m, 0, n, true)
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

/// A stored-hash array for the first `size` leaves, built by appending.
pub fn stored(size: u64) -> Vec<Hash> {
    let mut store = Vec::new();
    for n in 0..size {
        let new = stored_hashes_for_record(n, &leaf_data(n), &store).unwrap();
        store.extend(new);
    }
    store
}

/// The same, through a frontier (no reads).
pub fn stored_via_frontier(size: u64) -> (Vec<Hash>, Frontier) {
    let mut f = Frontier::new();
    let mut store = Vec::new();
    for n in 0..size {
        store.extend(f.append(leaf_hash(&leaf_data(n))).unwrap());
    }
    (store, f)
}

/// Small deterministic PRNG (xorshift64*), so tests need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
