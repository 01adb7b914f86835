//! Random tests that can be replayed.
//!
//! A random test draws its seed from the system (or from `SKIFF_SEED`),
//! prints it before anything else, and runs on a generator made from that
//! seed alone. The test harness shows a failed test's output, so a failure
//! carries the line that replays it:
//!
//! ```text
//! random_splits_agree_with_whole: seed=1234 (replay: SKIFF_SEED=1234 cargo test random_splits_agree_with_whole)
//! ```

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The variable that fixes the seed of every random test.
pub const SEED_VAR: &str = "SKIFF_SEED";

/// A generator for the test `name`, seeded from `SKIFF_SEED` if it is set
/// (a u64), else from the system; the seed is printed first.
///
/// # Panics
/// If `SKIFF_SEED` is set but not a u64: a replay that silently ran on
/// another seed would prove nothing.
pub fn seeded_rng(name: &str) -> StdRng {
    let seed = match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => rand::rng().random(),
    };
    println!("{name}: seed={seed} (replay: {SEED_VAR}={seed} cargo test {name})");
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_sequence() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..8).map(|_| rng.random::<u64>()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
