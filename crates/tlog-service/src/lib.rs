//! Palisade's log and witness services and the customer's verifier.
#![forbid(unsafe_code)]

pub mod store;
