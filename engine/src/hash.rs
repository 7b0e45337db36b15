//! The hash of the engine's hot maps: those keyed by subjects and tokens (route caches,
//! the matcher's trie and result cache, the direct exchange) and by ids (a shard's
//! subscriptions and connections, its shard-local state by type). Seeded `xxh3`, one
//! call over a key's bytes; an integer goes through one multiply.
//!
//! Owns: `FastHash`, a `BuildHasher`, and `FastMap`, the `HashMap` that uses it. Never:
//! hashes without a seed (clients pick subjects, so a fixed hash would let them choose
//! colliding ones), or lets a run of consecutive ids share their top bits (the map's
//! probe uses them).
//!
//! Why not the standard library's SipHash: a publish looks its subject up in a route
//! cache, and SipHash took 7% of a NATS publish on this path (`perf`, `nats bench pub`,
//! 16 B); `xxh3` over a short subject is a few nanoseconds. Each delivery looks its
//! subscription up by id, where SipHash took 1-2% of the server's CPU (`nats bench`
//! pub/sub 256 B).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A `HashMap` on a hot path: keyed by subjects, tokens or ids.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;

/// Builds `FastHasher`s with this process's random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHash {
    seed: u64,
}

impl Default for FastHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        // `RandomState` is the standard library's source of per-process random keys.
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x5eed_u64));
        Self { seed }
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher { state: self.seed }
    }
}

/// One key's hash: each write folds into the state through `xxh3` seeded with it.
#[derive(Debug, Clone)]
pub(crate) struct FastHasher {
    state: u64,
}

/// An odd 64-bit constant (from `xxh3`'s primes) that spreads a small integer's bits.
const SPREAD: u64 = 0x9E37_79B1_85EB_CA87;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }

    // `str` keys end with a `write_u8(0xff)`: fold it in without another `xxh3` call.
    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    // A folded multiply: the 128-bit product's halves xor-ed, so every bit of `n`
    // reaches both the low bits (the map's bucket index) and the top ones (its tag).
    fn write_u64(&mut self, n: u64) {
        let product = u128::from(self.state ^ n) * u128::from(SPREAD);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_different_keys_differ() {
        let hash = FastHash::default();
        assert_eq!(hash.hash_one("orders.eu"), hash.hash_one("orders.eu"));
        assert_ne!(hash.hash_one("orders.eu"), hash.hash_one("orders.us"));
        // The `str` terminator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(hash.hash_one(("ab", "c")), hash.hash_one(("a", "bc")));
    }

    #[test]
    fn the_seed_is_in_the_hash() {
        let a = FastHash { seed: 1 }.hash_one("orders.eu");
        let b = FastHash { seed: 2 }.hash_one("orders.eu");
        assert_ne!(a, b);
    }

    #[test]
    fn consecutive_ids_spread_over_the_top_bits() {
        // hashbrown keeps the top 7 bits of a hash beside each slot and compares them
        // first: ids 0, 1, 2, ... must not all land on a few of their 128 values.
        let hash = FastHash::default();
        let tops: std::collections::HashSet<u64> =
            (0..1024u64).map(|id| hash.hash_one(id) >> 57).collect();
        assert!(tops.len() > 100, "{} of 128 top-bit values", tops.len());
        let lows: std::collections::HashSet<u64> =
            (0..1024u64).map(|id| hash.hash_one(id) & 1023).collect();
        assert!(lows.len() > 500, "{} of 1024 bucket indexes", lows.len());
    }

    #[test]
    fn a_map_of_many_ids_finds_each() {
        let mut map: FastMap<u64, u64> = FastMap::default();
        for id in 0..100_000u64 {
            map.insert(id << 3, id);
        }
        for id in 0..100_000u64 {
            assert_eq!(map.get(&(id << 3)), Some(&id));
        }
        assert_eq!(map.get(&1), None);
    }

    #[test]
    fn a_map_of_many_subjects_finds_each() {
        let mut map: FastMap<Box<str>, usize> = FastMap::default();
        for i in 0..10_000 {
            map.insert(format!("orders.{i}.shipped").into(), i);
        }
        for i in 0..10_000 {
            assert_eq!(map.get(format!("orders.{i}.shipped").as_str()), Some(&i));
        }
        assert_eq!(map.get("orders.10000.shipped"), None);
    }
}
