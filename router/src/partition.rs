//! Users to partitions, partitions to shards.

use wire::Phone;

/// The partition of a phone number. A fixed mix (splitmix64), not a seeded hash: every
/// process of every version must agree.
pub fn partition_of(phone: Phone, partitions: u32) -> u32 {
    let mut z = phone.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % partitions as u64) as u32
}

/// Which shard owns each partition. Every partition is owned exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    owner: Vec<u16>,
}

impl PartitionMap {
    /// Partitions dealt round-robin to `shards` shards.
    pub fn even(partitions: u32, shards: u16) -> PartitionMap {
        assert!(shards > 0 && partitions > 0);
        PartitionMap {
            owner: (0..partitions)
                .map(|p| (p % shards as u32) as u16)
                .collect(),
        }
    }

    /// A map from the owner of each partition (index = partition).
    pub fn from_owners(owner: Vec<u16>) -> PartitionMap {
        assert!(!owner.is_empty());
        PartitionMap { owner }
    }

    pub fn partitions(&self) -> u32 {
        self.owner.len() as u32
    }

    pub fn shard_of_partition(&self, p: u32) -> u16 {
        self.owner[p as usize]
    }

    /// The shard that owns a user.
    pub fn shard_of(&self, phone: Phone) -> u16 {
        self.owner[partition_of(phone, self.partitions()) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        let p = Phone::new(15551234567).unwrap();
        assert_eq!(partition_of(p, 1024), partition_of(p, 1024));
        let mut counts = vec![0u32; 16];
        for n in 0..16_000u64 {
            counts[partition_of(Phone::new(15550000000 + n).unwrap(), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn even_map_owns_every_partition_once() {
        let m = PartitionMap::even(1024, 3);
        let per: Vec<usize> = (0..3)
            .map(|s| (0..1024).filter(|&p| m.shard_of_partition(p) == s).count())
            .collect();
        assert_eq!(per.iter().sum::<usize>(), 1024);
        assert!(per.iter().all(|&n| n == 341 || n == 342));
    }
}
