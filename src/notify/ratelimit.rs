//! A token bucket per routing key: PagerDuty accepts about 120 events a minute per
//! integration key over a sliding minute and drops the rest (429), so nightshift stays under
//! it on its own side (default 100 a minute). Time comes from the caller (the injectable
//! clock).
//!
//! The bucket holds a tenth of the limit as a burst and refills at the rest, so no window of
//! 60 s ever sees more than `per_minute` events: burst + refill over a minute = the limit.

use std::collections::HashMap;

use crate::clock::Millis;

#[derive(Debug, Clone)]
pub struct TokenBuckets {
    burst: f64,
    /// Tokens per millisecond.
    rate: f64,
    buckets: HashMap<String, (f64, Millis)>,
}

impl TokenBuckets {
    pub fn new(per_minute: u32) -> TokenBuckets {
        let per_minute = f64::from(per_minute.max(1));
        let burst = (per_minute / 10.0).floor().max(1.0);
        TokenBuckets {
            burst,
            rate: (per_minute - burst).max(0.0) / 60_000.0,
            buckets: HashMap::new(),
        }
    }

    /// Take a token for `key` at `now` if one is there.
    pub fn try_take(&mut self, key: &str, now: Millis) -> bool {
        let (tokens, last) = self
            .buckets
            .entry(key.to_owned())
            .or_insert((self.burst, now));
        let elapsed = now.saturating_sub(*last).max(0) as f64;
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token for `key` is there (now, if one is).
    pub fn next_at(&self, key: &str, now: Millis) -> Millis {
        match self.buckets.get(key) {
            Some((tokens, last)) => {
                let current =
                    (tokens + now.saturating_sub(*last).max(0) as f64 * self.rate).min(self.burst);
                if current >= 1.0 || self.rate <= 0.0 {
                    now
                } else {
                    now + ((1.0 - current) / self.rate).ceil() as Millis
                }
            }
            None => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_minute_ever_sees_more_than_the_limit() {
        let mut buckets = TokenBuckets::new(100);
        let start = 1_000_000;
        // Try every 10 ms for five minutes; record what went out.
        let mut sent = Vec::new();
        for ms in (0..300_000).step_by(10) {
            if buckets.try_take("key-a", start + ms) {
                sent.push(start + ms);
            }
        }
        let busiest = sent
            .iter()
            .map(|&at| sent.iter().filter(|&&t| t >= at && t < at + 60_000).count())
            .max()
            .unwrap();
        assert!(busiest <= 100, "{busiest} in one minute");
        // And the limit is used, not starved: about 90 a minute after the burst of 10.
        assert!(sent.len() >= 10 + 4 * 90, "{}", sent.len());
    }

    #[test]
    fn a_burst_is_a_tenth_and_keys_are_separate() {
        let mut buckets = TokenBuckets::new(100);
        let now = 1_000_000;
        let taken = (0..50).filter(|_| buckets.try_take("key-a", now)).count();
        assert_eq!(taken, 10);
        assert!(buckets.try_take("key-b", now));
        // 90 a minute: one token every 667 ms.
        assert!(!buckets.try_take("key-a", now + 500));
        assert_eq!(buckets.next_at("key-a", now + 500), now + 667);
        assert!(buckets.try_take("key-a", now + 667));
    }
}
