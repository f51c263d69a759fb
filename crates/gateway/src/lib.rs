//! Palisade gateway: the administrative API, the single path operators have to the
//! control planes. The pipeline is in [`pipeline`] (read it top to bottom);
//! [`api`] maps it to HTTP; [`auth`] and [`oncall`] are its first two steps;
//! [`customer`] serves tenants their access log.
#![forbid(unsafe_code)]

pub mod api;
pub mod approvals;
pub mod auth;
pub mod config;
pub mod console;
pub mod customer;
pub mod feed_age;
pub mod limits;
pub mod metrics;
pub mod oncall;
pub mod operator_certs;
pub mod ops;
pub mod pipeline;
pub mod problem;
pub mod redact;
pub mod refusals;
pub mod results;
pub mod server;
pub mod tenant;
pub mod webhooks;
