//! The hash of the maps keyed by subjects and tokens (route caches, the matcher's trie
//! and result cache): seeded `xxh3`, one call over the key's bytes.
//!
//! Owns: `SubjectHash`, a `BuildHasher` for `HashMap`s whose keys are strings a client
//! chose. Never: hashes without a seed (clients pick the keys, so a fixed hash would let
//! them choose colliding ones), or serves keys other than strings and bytes well (each
//! `write` is one `xxh3` call; integers go through a multiply).
//!
//! Why not the standard library's SipHash: a publish looks its subject up in a route
//! cache, and SipHash took 7% of a NATS publish on this path (`perf`, `nats bench pub`,
//! 16 B); `xxh3` over a short subject is a few nanoseconds.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A `HashMap` keyed by subjects or tokens.
pub(crate) type SubjectMap<K, V> = std::collections::HashMap<K, V, SubjectHash>;

/// Builds `SubjectHasher`s with this process's random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubjectHash {
    seed: u64,
}

impl Default for SubjectHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        // `RandomState` is the standard library's source of per-process random keys.
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x5eed_u64));
        Self { seed }
    }
}

impl BuildHasher for SubjectHash {
    type Hasher = SubjectHasher;

    fn build_hasher(&self) -> SubjectHasher {
        SubjectHasher { state: self.seed }
    }
}

/// One key's hash: each write folds into the state through `xxh3` seeded with it.
#[derive(Debug, Clone)]
pub(crate) struct SubjectHasher {
    state: u64,
}

/// An odd 64-bit constant (from `xxh3`'s primes) that spreads a small integer's bits.
const SPREAD: u64 = 0x9E37_79B1_85EB_CA87;

impl Hasher for SubjectHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }

    // `str` keys end with a `write_u8(0xff)`: fold it in without another `xxh3` call.
    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    fn write_u64(&mut self, n: u64) {
        self.state = (self.state ^ n).wrapping_mul(SPREAD).rotate_left(29);
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
        let hash = SubjectHash::default();
        assert_eq!(hash.hash_one("orders.eu"), hash.hash_one("orders.eu"));
        assert_ne!(hash.hash_one("orders.eu"), hash.hash_one("orders.us"));
        // The `str` terminator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(hash.hash_one(("ab", "c")), hash.hash_one(("a", "bc")));
    }

    #[test]
    fn the_seed_is_in_the_hash() {
        let a = SubjectHash { seed: 1 }.hash_one("orders.eu");
        let b = SubjectHash { seed: 2 }.hash_one("orders.eu");
        assert_ne!(a, b);
    }

    #[test]
    fn a_map_of_many_subjects_finds_each() {
        let mut map: SubjectMap<Box<str>, usize> = SubjectMap::default();
        for i in 0..10_000 {
            map.insert(format!("orders.{i}.shipped").into(), i);
        }
        for i in 0..10_000 {
            assert_eq!(map.get(format!("orders.{i}.shipped").as_str()), Some(&i));
        }
        assert_eq!(map.get("orders.10000.shipped"), None);
    }
}
