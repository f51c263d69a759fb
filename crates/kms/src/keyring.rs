//! The configured keys: the first is the primary (Encrypt), every one decrypts what it
//! wrapped, looked up by key_id. An unknown key_id is an error, never a fallback to
//! another key — that is what makes rotation safe (docs/kms.md, "Rotation without
//! downtime").

use crate::kek::{Kek, KeyId};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a set of keys cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("no key configured")]
    Empty,
    #[error("key {0} is configured twice")]
    Duplicate(KeyId),
}

/// The primary key and the older keys that still decrypt.
pub struct KeyRing {
    primary: Arc<dyn Kek>,
    keys: Vec<Arc<dyn Kek>>,
    by_id: HashMap<KeyId, usize>,
}

impl KeyRing {
    /// `keys[0]` becomes the primary.
    pub fn new(keys: Vec<Arc<dyn Kek>>) -> Result<Self, KeyRingError> {
        let primary = keys.first().cloned().ok_or(KeyRingError::Empty)?;
        let mut by_id = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if by_id.insert(k.key_id().clone(), i).is_some() {
                return Err(KeyRingError::Duplicate(k.key_id().clone()));
            }
        }
        Ok(Self {
            primary,
            keys,
            by_id,
        })
    }

    /// The key Encrypt uses, whose key_id Status reports.
    pub fn primary(&self) -> &Arc<dyn Kek> {
        &self.primary
    }

    /// The key named by `key_id`, if it is configured.
    pub fn get(&self, key_id: &KeyId) -> Option<&Arc<dyn Kek>> {
        self.by_id.get(key_id).and_then(|&i| self.keys.get(i))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<dyn Kek>> {
        self.keys.iter()
    }
}
