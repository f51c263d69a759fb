//! Palisade agent: the only door into a control-plane instance.
//!
//! The agent accepts exactly one kind of remote input — a *dispatch* signed by a
//! gateway — over mTLS from gateway-role certificates, and executes it only if every
//! acceptance check in [`accept`] holds (read that module top to bottom: it is the
//! whole rule). Actions are typed handlers ([`handlers`]): fixed argv when a process
//! must run, never a shell, never a path or flag taken from input; their output is
//! reduced to the action's output schema and capped before it leaves. The agent also
//! supervises the control-plane components ([`supervisor`]), started only from
//! releases verified in the TUF repository.
#![forbid(unsafe_code)]

pub use palisade_protocol::{client, dispatch};

pub mod accept;
pub mod backup;
pub mod config;
pub mod etcd;
pub mod handlers;
pub mod host;
pub mod kube;
pub mod leftover;
pub mod metrics;
pub mod node_conditions;
pub mod prom;
pub mod renew;
pub mod restore;
pub mod server;
pub mod supervisor;
pub mod view;
