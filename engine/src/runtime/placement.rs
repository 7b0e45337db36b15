//! Deterministic placement: which shard owns a named thing.
//!
//! Owns: the hash-to-shard rule. Every node, binding and client computes the same owner
//! from the same name, so no lookup service is needed. Never: looks at load; placement
//! is a pure function of the name (and key) and the shard count.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The shard that owns `name`: `xxh3_64(name) mod shards`. `shards` must be non-zero.
#[inline]
pub fn shard_for(name: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "shard count must be positive");
    (xxh3_64(name) % shards as u64) as usize
}

/// The shard that owns the part of `name` selected by `key` (a record key of a
/// partitioned stream): `xxh3_64_with_seed(key, xxh3_64(name)) mod shards`, so two
/// streams spread the same keys differently.
#[inline]
pub fn shard_for_key(name: &[u8], key: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "shard count must be positive");
    (xxh3_64_with_seed(key, xxh3_64(name)) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_deterministic_and_in_range() {
        for shards in 1..=16 {
            for i in 0..200u32 {
                let name = format!("orders.{i}");
                let s = shard_for(name.as_bytes(), shards);
                assert!(s < shards);
                assert_eq!(s, shard_for(name.as_bytes(), shards));
                assert!(shard_for_key(name.as_bytes(), b"customer-3", shards) < shards);
            }
        }
    }

    #[test]
    fn placement_spreads_names_evenly() {
        let shards = 4;
        let mut counts = [0usize; 4];
        for i in 0..40_000u32 {
            counts[shard_for(format!("queue-{i}").as_bytes(), shards)] += 1;
        }
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn placement_matches_the_documented_formula() {
        // docs/architecture.md states the rule; this pins it so it cannot drift.
        assert_eq!(shard_for(b"orders", 7), (xxh3_64(b"orders") % 7) as usize);
    }
}
