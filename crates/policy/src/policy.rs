//! A linted, compiled policy: what the gateway and the agent load and validate against.

use crate::lint::{self, LintError};
use crate::model::{ActionSpec, PolicyDocument};
use crate::validate::{self, CompiledAction, ValidatedAction, ValidationError};
use palisade_core::event::{Justification, PolicyRef};
use palisade_core::{ActionName, Sha256Digest};
use std::collections::HashMap;

/// An action policy that passed the linter. The only way to get one is
/// [`Policy::parse_yaml`], so every `Policy` obeys the narrowing rules.
#[derive(Debug, Clone)]
pub struct Policy {
    doc: PolicyDocument,
    digest: Sha256Digest,
    canonical: Vec<u8>,
    /// Parallel to `doc.actions`.
    compiled: Vec<CompiledAction>,
    index: HashMap<String, usize>,
}

impl Policy {
    /// Lints and compiles policy YAML; see [`crate::lint`].
    pub fn parse_yaml(text: &str) -> Result<Self, Vec<LintError>> {
        lint::lint(text)
    }

    pub(crate) fn assemble(
        doc: PolicyDocument,
        compiled: Vec<CompiledAction>,
    ) -> Result<Self, String> {
        if compiled.len() != doc.actions.len() {
            return Err("internal error: actions and their checks differ".into());
        }
        let canonical = palisade_core::to_canonical_vec(&doc)
            .map_err(|e| format!("cannot encode the policy canonically: {e}"))?;
        let digest = Sha256Digest::of(&canonical);
        let index = doc
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str().to_string(), i))
            .collect();
        Ok(Self {
            doc,
            digest,
            canonical,
            compiled,
            index,
        })
    }

    /// SHA-256 over [`Policy::canonical_json`]: what dispatches and events reference.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// The canonical JSON of the parsed policy (RFC 8785 rules, see
    /// `palisade_core::canonical`): comments, key order and YAML spelling do not
    /// change it.
    pub fn canonical_json(&self) -> &[u8] {
        &self.canonical
    }

    /// `metadata.version`.
    pub fn version(&self) -> u64 {
        self.doc.metadata.version
    }

    /// Version and digest, as events carry them.
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            version: self.version(),
            digest: self.digest,
        }
    }

    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    pub fn actions(&self) -> impl Iterator<Item = &ActionSpec> {
        self.doc.actions.iter()
    }

    pub fn action(&self, name: &ActionName) -> Option<&ActionSpec> {
        self.action_named(name.as_str())
    }

    pub fn action_named(&self, name: &str) -> Option<&ActionSpec> {
        self.index.get(name).and_then(|i| self.doc.actions.get(*i))
    }

    pub(crate) fn compiled(&self, name: &str) -> Option<(usize, &CompiledAction)> {
        let i = *self.index.get(name)?;
        Some((i, self.compiled.get(i)?))
    }

    pub(crate) fn spec_at(&self, i: usize) -> Option<&ActionSpec> {
        self.doc.actions.get(i)
    }

    /// See [`validate::validate`].
    pub fn validate(
        &self,
        action: &str,
        params_json: &[u8],
    ) -> Result<ValidatedAction, ValidationError> {
        validate::validate(self, action, params_json)
    }

    /// See [`validate::validate_args`].
    pub fn validate_args(
        &self,
        action: &str,
        args: &[(String, String)],
    ) -> Result<ValidatedAction, ValidationError> {
        validate::validate_args(self, action, args)
    }

    /// Checks a request's justification against the action's `justification` rules:
    /// the ticket id matches `ticketPattern` (and is printable ASCII, at most 64 bytes,
    /// not starting with '-'); the reason has at least `minReasonLength` characters,
    /// at most 1024 bytes, no control or invisible characters, and is NFC.
    pub fn check_justification(
        &self,
        action: &str,
        ticket: &str,
        reason: &str,
    ) -> Result<Justification, ValidationError> {
        let (i, compiled) =
            self.compiled(action)
                .ok_or_else(|| ValidationError::UnknownAction {
                    action: action.chars().take(64).collect(),
                })?;
        let min = self
            .spec_at(i)
            .map_or(u32::MAX, |s| s.justification.min_reason_length);
        validate::check_justification(compiled, min, ticket, reason)
    }
}
