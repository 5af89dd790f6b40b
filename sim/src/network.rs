//! The simulated network: per-link latency, loss, duplication and
//! reordering, and partitions (symmetric, asymmetric, isolate one, random
//! split) that drop messages at delivery time.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_64;

/// How messages fare on every link.
#[derive(Debug, Clone)]
pub struct LinkModel {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency.
    pub latency_max: Duration,
    /// Whether each link has its own fixed base latency (WAN: distances
    /// differ) with ±10% jitter, or every message draws uniformly (LAN).
    pub per_link_base: bool,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplication: f64,
}

impl LinkModel {
    /// One-way 0.25–1 ms, 1% loss, 1% duplication; independent delays
    /// reorder messages.
    pub fn lan() -> LinkModel {
        LinkModel {
            latency_min: Duration::from_micros(250),
            latency_max: Duration::from_millis(1),
            per_link_base: false,
            loss: 0.01,
            duplication: 0.01,
        }
    }

    /// One-way 20–150 ms by link, 2% loss.
    pub fn wan() -> LinkModel {
        LinkModel {
            latency_min: Duration::from_millis(20),
            latency_max: Duration::from_millis(150),
            per_link_base: true,
            loss: 0.02,
            duplication: 0.0,
        }
    }

    /// The delay of one message from `from` to `to`.
    pub fn delay(&self, seed: u64, from: usize, to: usize, rng: &mut ChaCha8Rng) -> Duration {
        let span = self.latency_max - self.latency_min;
        if self.per_link_base {
            let mut key = [0u8; 24];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&(from as u64).to_le_bytes());
            key[16..].copy_from_slice(&(to as u64).to_le_bytes());
            let position = xxh3_64(&key) as f64 / u64::MAX as f64;
            let base = self.latency_min + span.mul_f64(position);
            let jittered = base.mul_f64(rng.random_range(0.9..1.1));
            jittered.clamp(self.latency_min, self.latency_max)
        } else {
            self.latency_min + span.mul_f64(rng.random::<f64>())
        }
    }
}

/// Which messages a partition drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    /// Everything gets through.
    None,
    /// Peers are on side `true` or `false`; messages between sides are
    /// dropped, or with `asymmetric` only those from the `true` side to
    /// the `false` side.
    Split {
        /// Each peer's side.
        side: Vec<bool>,
        /// One direction only.
        asymmetric: bool,
    },
}

impl Partition {
    /// Whether a message from `from` to `to` is dropped.
    pub fn blocks(&self, from: usize, to: usize) -> bool {
        match self {
            Partition::None => false,
            Partition::Split { side, asymmetric } => {
                side[from] != side[to] && (!*asymmetric || side[from])
            }
        }
    }

    /// A random partition of `peers`: a random split, a split into two
    /// contiguous groups (like 2|3), or one peer isolated; half of them one
    /// directional.
    pub fn random(peers: usize, rng: &mut ChaCha8Rng) -> (Partition, &'static str) {
        let (side, kind): (Vec<bool>, &str) = match rng.random_range(0..3) {
            0 => (
                (0..peers).map(|_| rng.random_bool(0.5)).collect(),
                "random split",
            ),
            1 => {
                let cut = rng.random_range(1..peers.max(2));
                ((0..peers).map(|i| i < cut).collect(), "two groups")
            }
            _ => {
                let lonely = rng.random_range(0..peers);
                ((0..peers).map(|i| i == lonely).collect(), "isolate one")
            }
        };
        let asymmetric = rng.random_bool(0.5);
        let kind = match (kind, asymmetric) {
            ("random split", false) => "random split",
            ("random split", true) => "random split, one way",
            ("two groups", false) => "two groups",
            ("two groups", true) => "two groups, one way",
            (_, false) => "isolate one",
            (_, true) => "isolate one, one way",
        };
        (Partition::Split { side, asymmetric }, kind)
    }
}
