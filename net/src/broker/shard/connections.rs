//! Connection balancing and bounds: open client connections per shard and per client
//! address, and the slot a connection holds in them.

use std::collections::HashMap;
use std::sync::Arc;

/// Open client connections per shard, so a new connection goes to the least loaded
/// shard instead of wherever SO_REUSEPORT's hash put it: a Kafka client sends all its
/// requests to a broker over one connection, and the shard that reads a connection does
/// its receive copies and parsing, so two producers hashed onto one shard left the other
/// mostly idle (perf, 1 KiB produce: one shard thread at 40% of the machine, the other 17%).
///
/// Slot `i` counts the connections shard `i` serves or is about to be handed. The shard
/// that routes a connection (the one that accepted it) takes a [`ConnectionSlot`] within
/// the [`ConnectionLimits`] (per shard, in all, per client address); dropping the slot
/// gives it back, wherever the connection ended (on the serving shard, or on the router
/// when the hand-off fails).
#[derive(Debug)]
pub struct ConnectionCounts {
    per_shard: Vec<std::sync::atomic::AtomicUsize>,
    /// Open connections per client address; an address leaves the map at zero. Touched
    /// once per accept and once per close, never on the request path.
    per_ip: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// The connection bounds a new connection must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `network.connections_max_per_shard`.
    pub per_shard_max: usize,
    /// `network.connections_max` (Kafka's `max.connections`).
    pub total_max: usize,
    /// `network.connections_max_per_ip` (Kafka's `max.connections.per.ip`).
    pub per_ip_max: usize,
}

/// Which bound refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    Shard,
    Total,
    PerIp,
}

impl ConnectionRefusal {
    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Shard => "per_shard",
            ConnectionRefusal::Total => "total",
            ConnectionRefusal::PerIp => "per_ip",
        }
    }
}

/// One connection's place in the counts; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    shard: usize,
    ip: std::net::IpAddr,
}

impl ConnectionSlot {
    /// The shard the connection is counted on.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.per_shard[self.shard].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let mut per_ip = self.counts.lock_per_ip();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCounts {
    pub fn new(shards: usize) -> Self {
        ConnectionCounts {
            per_shard: (0..shards.max(1)).map(|_| Default::default()).collect(),
            per_ip: Default::default(),
        }
    }

    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, shard: usize) -> usize {
        self.per_shard[shard].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open connections on every shard.
    pub fn total(&self) -> usize {
        (0..self.per_shard.len()).map(|i| self.get(i)).sum()
    }

    /// Where a connection accepted by `shard` is served: the shard with the fewest
    /// connections if that is fewer than `shard` has, else `shard` itself.
    pub fn target_for(&self, shard: usize) -> usize {
        let (least, count) = (0..self.per_shard.len())
            .map(|i| (i, self.get(i)))
            .min_by_key(|&(i, c)| (c, i != shard))
            .unwrap_or((shard, 0));
        if count < self.get(shard) {
            least
        } else {
            shard
        }
    }

    /// Takes a place on `shard` for a connection from `ip`, unless that would pass one of
    /// `limits`. The per-address lock is held across the checks, so concurrent accepts on
    /// several shards cannot together pass the total or per-address bound.
    pub fn reserve(
        self: &Arc<Self>,
        shard: usize,
        ip: std::net::IpAddr,
        limits: ConnectionLimits,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut per_ip = self.lock_per_ip();
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.per_ip_max {
            return Err(ConnectionRefusal::PerIp);
        }
        if self.total() >= limits.total_max {
            return Err(ConnectionRefusal::Total);
        }
        self.per_shard[shard]
            .fetch_update(Relaxed, Relaxed, |c| {
                (c < limits.per_shard_max).then_some(c + 1)
            })
            .map_err(|_| ConnectionRefusal::Shard)?;
        per_ip.insert(ip, from_ip + 1);
        Ok(ConnectionSlot {
            counts: self.clone(),
            shard,
            ip,
        })
    }
}
