//! Dominant shares and the ordered sets that keep roles and frameworks
//! sorted by them.
//!
//! A share is `max over scalar resources r of allocation[r] / total[r]`
//! (DRF, Ghodsi et al. 2011). Shares are non-negative finite `f64`s, whose
//! IEEE bit patterns sort like the numbers, so a [`BTreeSet`] of
//! `(bits, tie-breaker, index)` is the sorter: the first element is the
//! client furthest below its fair share. Updating one client is a remove
//! plus an insert, `O(log n)`; nothing is recomputed for the others.

use std::collections::BTreeSet;

/// Quantities per interned scalar name, in thousandths (index = name id).
pub type Quantities = Vec<i64>;

/// `q[i] += d[i]` (growing `q` when `d` names a newer resource).
pub fn add_quantities(q: &mut Quantities, d: &[i64]) {
    if q.len() < d.len() {
        q.resize(d.len(), 0);
    }
    for (a, b) in q.iter_mut().zip(d) {
        *a += b;
    }
}

/// `q[i] -= d[i]`, never below zero.
pub fn sub_quantities(q: &mut Quantities, d: &[i64]) {
    for (a, b) in q.iter_mut().zip(d) {
        *a = (*a - b).max(0);
    }
}

/// DRF dominant share of `alloc` against `total` (resources the cluster
/// has none of are ignored). Always finite and `>= 0`.
pub fn dominant_share(alloc: &[i64], total: &[i64]) -> f64 {
    let mut share: f64 = 0.0;
    for (a, t) in alloc.iter().zip(total) {
        if *t > 0 && *a > 0 {
            share = share.max(*a as f64 / *t as f64);
        }
    }
    share
}

/// Sort key of a non-negative finite share.
pub fn share_key(share: f64) -> u64 {
    if share.is_finite() && share > 0.0 {
        share.to_bits()
    } else {
        0
    }
}

/// Clients (roles or frameworks, by index) ordered by share, then by how
/// many allocations they received (fewer first, as Mesos' DRF sorter
/// does), then by index so the order is total and deterministic.
#[derive(Debug, Default, Clone)]
pub struct Sorter {
    set: BTreeSet<(u64, u64, u32)>,
}

impl Sorter {
    /// Insert a client; the caller must remember the key to remove it.
    pub fn insert(&mut self, key: (u64, u64), idx: u32) {
        self.set.insert((key.0, key.1, idx));
    }

    /// Remove a client inserted with `key`.
    pub fn remove(&mut self, key: (u64, u64), idx: u32) {
        self.set.remove(&(key.0, key.1, idx));
    }

    /// Clients, lowest share first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.iter().map(|&(_, _, i)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn clear(&mut self) {
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn share_keys_sort_like_shares(a in 0.0f64..1e6, b in 0.0f64..1e6) {
            prop_assert_eq!(a.partial_cmp(&b), Some(share_key(a).cmp(&share_key(b))));
        }

        #[test]
        fn sorter_yields_lowest_share_first(shares in prop::collection::vec(0u32..1000, 1..50)) {
            let mut s = Sorter::default();
            for (i, sh) in shares.iter().enumerate() {
                s.insert((share_key(*sh as f64 / 7.0), 0), i as u32);
            }
            let order: Vec<u32> = s.iter().collect();
            for w in order.windows(2) {
                prop_assert!(shares[w[0] as usize] <= shares[w[1] as usize]);
            }
        }
    }

    #[test]
    fn dominant_share_is_the_max_ratio() {
        assert_eq!(dominant_share(&[1000, 4000], &[9000, 18000]), 4.0 / 18.0);
        assert_eq!(dominant_share(&[3000, 1000], &[9000, 18000]), 3.0 / 9.0);
        assert_eq!(dominant_share(&[5, 0], &[0, 0]), 0.0);
    }
}
