//! server::peers: the cap on connections one peer may hold open without having made a request,
//! probation beyond it, and the once-a-minute log of refusals.

use std::sync::Arc;
use std::time::Duration;

use crate::telemetry::Metrics;

/// Connections from one peer address that may wait for their first request (idle, trickling
/// their headers, in the TLS handshake) as long as `server.header_read_timeout`. Beyond it, a
/// new connection from that peer is on probation: closed unless its first request begins
/// within `PROBATION`. Without it, one client could take every `max_connections` slot with
/// connections that never authenticate; with probation rather than refusal, a burst of fresh
/// connections that each send their request at once (Alertmanager flushing many groups
/// together, perhaps through one load balancer) still gets in.
pub(super) const MAX_UNAUTHENTICATED_PER_PEER: usize = 64;

/// How long a connection on probation has for its TLS handshake and its first request. Far
/// more than a client that sends its request at once needs; a peer would have to open some
/// 2,000 connections a second to hold the slots of a 1,024 cap this way, which is a flood for
/// the firewall.
pub(super) const PROBATION: Duration = Duration::from_millis(500);

/// Connections waiting for their first request, per peer (see `MAX_UNAUTHENTICATED_PER_PEER`).
pub(super) struct PeerGate {
    limit: usize,
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    metrics: Arc<Metrics>,
    refusals: std::sync::Mutex<EveryMinute>,
}

impl PeerGate {
    pub(super) fn new(limit: usize, metrics: Arc<Metrics>) -> PeerGate {
        PeerGate {
            limit,
            counts: std::sync::Mutex::new(std::collections::HashMap::new()),
            metrics,
            refusals: std::sync::Mutex::new(EveryMinute::default()),
        }
    }

    /// Count a new connection from `address`; on probation if its peer was at the limit.
    pub(super) fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Unauthenticated {
        let peer = peer_key(address);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(peer).or_insert(0);
        let on_probation = *count >= self.limit;
        *count += 1;
        Unauthenticated {
            gate: self.clone(),
            peer,
            on_probation,
        }
    }

    /// A connection from `peer` closed for being over the limit: counted, and logged at most
    /// once a minute.
    fn refused(&self, peer: std::net::IpAddr) {
        self.metrics
            .http_connections_refused_total
            .with_label_values(&["unauthenticated_per_peer"])
            .inc();
        let due = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count();
        if let Some(refused) = due {
            tracing::warn!(
                %peer,
                refused,
                limit = self.limit,
                "connections closed: the peer holds too many connections waiting for a first request"
            );
        }
    }

    #[cfg(test)]
    fn count(&self, address: std::net::IpAddr) -> usize {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.get(&peer_key(address)).copied().unwrap_or(0)
    }
}

/// The address a connection is counted under: IPv4 (also mapped into IPv6) as is, IPv6 by its
/// /64, which one host usually holds whole.
fn peer_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// A connection's place in its peer's count; given up when its first request begins or when it
/// closes.
pub(super) struct Unauthenticated {
    gate: Arc<PeerGate>,
    peer: std::net::IpAddr,
    /// Admitted over the limit: closed rather than waited on.
    pub(super) on_probation: bool,
}

impl Unauthenticated {
    /// Closed for being over its peer's limit: counted, and logged by the gate.
    pub(super) fn refuse(&self) {
        self.gate.refused(self.peer);
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut counts = self
            .gate
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// A refusal that is logged the first time at once, then at most once a minute with how many
/// there were since: enough to see who is knocking, never a log flood.
#[derive(Default)]
pub(super) struct EveryMinute {
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl EveryMinute {
    const INTERVAL: Duration = Duration::from_secs(60);

    /// Count one; `Some(count since the last line)` when a line is due now.
    pub(super) fn count(&mut self) -> Option<u64> {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_64() {
        let cases = [
            ("127.0.0.1", "127.0.0.1"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("::1", "::"),
        ];
        for (address, key) in cases {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(
                peer_key(address),
                key.parse::<IpAddr>().unwrap(),
                "{address}"
            );
        }
    }

    #[test]
    fn a_peer_gets_its_limit_then_probation_and_each_place_comes_back() {
        let gate = Arc::new(PeerGate::new(2, Arc::new(Metrics::new())));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(one);
        let second = gate.admit(one);
        let third = gate.admit(one);
        assert_eq!(
            [first.on_probation, second.on_probation, third.on_probation],
            [false, false, true]
        );
        let from_other = gate.admit(other);
        assert!(!from_other.on_probation, "another peer is not affected");
        drop((first, third));
        let fourth = gate.admit(one);
        assert!(!fourth.on_probation, "places came back");
        drop((second, fourth, from_other));
        assert_eq!(gate.count(one), 0);
        assert!(
            gate.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
