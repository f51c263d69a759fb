//! The customer's checks of a cluster's log, in Rust that builds both for the
//! machine and for the browser (`wasm32-unknown-unknown`, no I/O, no randomness).
//!
//! Two readers share it: `palisade audit events`, which reads the log's tiles
//! itself, and the console's verifier in the browser ([`console`]), which is
//! handed the checkpoint and the entry bundles its page fetched and trusts nothing
//! else the server says. The cryptography and the tree are `palisade-tlog`'s; the
//! events are `palisade-core`'s.
//!
//! - [`log`]: which entry bundles a checkpoint covers, and the entries they hold,
//!   hashed into the tree again against the checkpoint's root.
//! - [`events`]: the checks of one entry in log order: an intent logged once, a
//!   result naming an earlier intent (once), a logged output matching its digest,
//!   an agent's view being a tree of this log, an agent's word carried only with
//!   the agent's signature.
//! - [`agent`]: the agent's signature over a logged result or refusal.
//! - [`approval`]: what an approver signs, for the console to sign in the browser.
//! - [`console`]: the whole verification the console shows, as one report.
#![forbid(unsafe_code)]

pub mod agent;
pub mod approval;
pub mod console;
pub mod events;
pub mod log;
