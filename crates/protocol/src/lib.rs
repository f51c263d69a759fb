//! What passes between Palisade's gateway and its agents: the dispatch and result
//! wire types ([`dispatch`]), the gateway's side of sending them ([`client`]), and
//! how both verify the action policy they act under ([`trust`]). The agent's
//! acceptance rules and handlers are not here: a gateway depends on this crate only.
#![forbid(unsafe_code)]

pub mod client;
pub mod dispatch;
pub mod trust;
