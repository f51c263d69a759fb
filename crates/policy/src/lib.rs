//! Palisade's action policy: the language operators' requests are checked against.
//!
//! An action policy (YAML, `apiVersion: palisade.dev/v1`, `kind: ActionPolicy`; the
//! format is in docs/policy.md) lists the actions operators may request. Each action
//! names a built-in handler from the [`catalogue`], declares typed parameters, a
//! target kind, the role it needs, its risk, its output schema, a rate limit and what
//! a justification must look like. A policy may only **narrow** what its handler
//! accepts; the [`lint`] module enforces that, with line and column for every error.
//!
//! The [`validate`] module turns an untrusted request (raw JSON bytes, or CLI
//! `name=value` pairs) into a [`ValidatedAction`], the only type handlers accept, or a
//! [`ValidationError`] naming the parameter and the reason. It resists the attack
//! classes listed in docs/threat-model.md: option injection, shell metacharacters, globs,
//! path traversal, control characters, Unicode look-alikes, oversize input, integer
//! overflow, duplicated keys and type confusion (tests/claims/c4_validator.rs).
//!
//! What this crate does **not** do: decide who may act (the gateway's on-call
//! authorization), enforce rate limits (the gateway counts; the policy only states the
//! limit), or decide whether a policy is trusted (the TUF and approval modules do).
//! A policy's [`Policy::digest`] is what dispatches and events name.
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod lint;
pub mod model;
pub mod policy;
pub mod validate;
pub mod yaml;

pub use lint::{lint, LintError};
pub use model::{ActionSpec, Duration, ParamSpec, ParamType, Risk, Target};
pub use policy::Policy;
pub use validate::{validate, validate_args, ValidatedAction, ValidationError};

// Trust: keys, DSSE, the TUF repository, multi-party approval, trusted releases.
pub mod approval;
pub mod customer_approval;
pub mod dsse;
pub mod keys;
pub mod release;
pub mod review;
pub mod rollback;
pub mod root;
mod root_chain;
pub mod tenant;
pub mod trusted_policy;
pub mod tuf;
