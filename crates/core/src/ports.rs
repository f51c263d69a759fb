//! Free loopback ports for a local deployment (`palisade verify-claims`, tests).

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// The start of the kernel's ephemeral port range (Linux's
/// `net.ipv4.ip_local_port_range`, 32768 by default).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// How many consecutive ports `palisade up` listens on, from its base port: gateway,
/// log, witness, agent, etcd (client, peer), tenant witness, and the metrics of the
/// agent, log, witness and KMS plugin.
pub const UP_PORTS: u16 = 11;

/// How many more ports each instance after the first takes: its agent, its etcd
/// member (client, peer) and the agent's metrics.
pub const PORTS_PER_EXTRA_INSTANCE: u16 = 4;

/// How many consecutive ports `palisade up --instances n` listens on.
pub fn up_ports(instances: u16) -> u16 {
    UP_PORTS + PORTS_PER_EXTRA_INSTANCE * instances.saturating_sub(1)
}

/// The first of `n` consecutive loopback ports that are free now, or `None`.
///
/// The block is taken at random **below** the ephemeral range, so that no outgoing
/// connection (whose local port the kernel picks from that range) can take one of
/// these ports between this check and the moment a server binds it; randomness keeps
/// parallel callers apart. If the range starts too low to leave room, ports are taken
/// from anywhere the kernel offers.
pub fn free_loopback_block(n: u16) -> Option<u16> {
    let n = n.max(1);
    let low: u16 = 10_000;
    let high = ephemeral_start().saturating_sub(n);
    let all_free = |base: u16| {
        (0..n).all(|i| {
            base.checked_add(i)
                .is_some_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
    };
    for attempt in 0..500u64 {
        let base = if high > low + n {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(attempt);
            let span = u64::from(high - low);
            low + u16::try_from(h.finish() % span).unwrap_or(0)
        } else {
            let probe = TcpListener::bind("127.0.0.1:0").ok()?;
            probe.local_addr().ok()?.port()
        };
        if all_free(base) {
            return Some(base);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_free_and_below_the_ephemeral_range() {
        let base = free_loopback_block(10).expect("a free block");
        assert!(base >= 10_000);
        if ephemeral_start() > 10_020 {
            assert!(base + 10 <= ephemeral_start(), "{base}");
        }
        for p in base..base + 10 {
            TcpListener::bind(("127.0.0.1", p)).expect("still free");
        }
    }
}
