//! Nearest-rank percentiles: one definition for the core's RTT estimate and
//! the simulator's reports.

/// The `percent`th percentile of `sorted` (ascending) by nearest rank: the
/// smallest sample with at least `percent`% of the samples at or below it.
/// `None` for no sample; `percent` is clamped to `1..=100`.
pub fn nearest_rank<T: Copy>(sorted: &[T], percent: u32) -> Option<T> {
    let n = sorted.len();
    let rank = (n * percent.clamp(1, 100) as usize).div_ceil(100).max(1);
    sorted.get(rank.min(n).checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_ranks() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50), Some(50));
        assert_eq!(nearest_rank(&v, 90), Some(90));
        assert_eq!(nearest_rank(&v, 99), Some(99));
        assert_eq!(nearest_rank(&v, 100), Some(100));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 75), Some(3));
        assert_eq!(nearest_rank(&[1, 2, 3, 4, 5], 75), Some(4));
        assert_eq!(nearest_rank(&[7], 1), Some(7));
        assert_eq!(nearest_rank::<u8>(&[], 50), None);
    }
}
