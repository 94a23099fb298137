//! Retry policy: exponential backoff with full jitter, capped.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// When and how often a failed step is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before the job goes `dead`.
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles with each attempt.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// The longest backoff.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, initial_delay: Duration::from_secs(2), max_delay: Duration::from_secs(600) }
    }
}

impl RetryPolicy {
    /// The backoff before the next attempt after `attempts_made` attempts failed, or `None` when the
    /// budget is spent. Full jitter: uniform in `[0, min(max_delay, initial_delay * 2^(n-1))]`.
    pub fn backoff(&self, attempts_made: u32, rng: &mut impl Rng) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let cap = self.cap(attempts_made);
        let ms = cap.as_millis() as u64;
        Some(Duration::from_millis(if ms == 0 { 0 } else { rng.random_range(0..=ms) }))
    }

    /// The upper bound of the jittered backoff after `attempts_made` failures.
    pub fn cap(&self, attempts_made: u32) -> Duration {
        let exp = attempts_made.saturating_sub(1).min(30);
        self.initial_delay.saturating_mul(1u32 << exp).min(self.max_delay)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max-attempts must be at least 1".into());
        }
        if self.initial_delay > self.max_delay {
            return Err("initial-delay must not exceed max-delay".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_is_capped_jittered_and_bounded_by_attempts() {
        let p =
            RetryPolicy { max_attempts: 4, initial_delay: Duration::from_secs(1), max_delay: Duration::from_secs(3) };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(p.cap(1), Duration::from_secs(1));
        assert_eq!(p.cap(2), Duration::from_secs(2));
        assert_eq!(p.cap(3), Duration::from_secs(3), "capped by max-delay");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = p.backoff(3, &mut rng).unwrap();
            assert!(d <= Duration::from_secs(3));
            seen.insert(d.as_millis() / 500);
        }
        assert!(seen.len() >= 5, "full jitter spreads over the whole range: {seen:?}");
        assert_eq!(p.backoff(4, &mut rng), None, "budget spent");
        assert_eq!(RetryPolicy { max_attempts: 100, ..p }.cap(99), Duration::from_secs(3), "no overflow");
    }
}
