//! A token bucket per routing key: PagerDuty accepts about 120 events a minute per
//! integration key and drops the rest (429), so nightshift stays under it on its own side
//! (default 100 a minute). Time comes from the caller (the injectable clock).

use std::collections::HashMap;

use crate::clock::Millis;

#[derive(Debug, Clone)]
pub struct TokenBuckets {
    per_minute: u32,
    buckets: HashMap<String, (f64, Millis)>,
}

impl TokenBuckets {
    pub fn new(per_minute: u32) -> TokenBuckets {
        TokenBuckets {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Take a token for `key` at `now` if one is there; the bucket holds at most a minute's
    /// worth and refills continuously.
    pub fn try_take(&mut self, key: &str, now: Millis) -> bool {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60_000.0;
        let (tokens, last) = self
            .buckets
            .entry(key.to_owned())
            .or_insert((capacity, now));
        let elapsed = now.saturating_sub(*last).max(0) as f64;
        *tokens = (*tokens + elapsed * rate).min(capacity);
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
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60_000.0;
        match self.buckets.get(key) {
            Some((tokens, last)) => {
                let current =
                    (tokens + now.saturating_sub(*last).max(0) as f64 * rate).min(capacity);
                if current >= 1.0 {
                    now
                } else {
                    now + ((1.0 - current) / rate).ceil() as Millis
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
    fn a_burst_is_capped_and_refills_at_the_rate() {
        let mut buckets = TokenBuckets::new(100);
        let now = 1_000_000;
        let taken = (0..150).filter(|_| buckets.try_take("key-a", now)).count();
        assert_eq!(taken, 100, "a minute's worth at once, no more");
        // Another key has its own bucket.
        assert!(buckets.try_take("key-b", now));
        // 0.6 s later one more token is there (100 per 60 s).
        assert!(!buckets.try_take("key-a", now + 500));
        assert_eq!(buckets.next_at("key-a", now + 500), now + 600);
        assert!(buckets.try_take("key-a", now + 600));
        // Over a minute at most ~100 more go out.
        let mut sent = 0;
        for ms in (601..60_601).step_by(10) {
            if buckets.try_take("key-a", now + ms) {
                sent += 1;
            }
        }
        assert!((99..=101).contains(&sent), "{sent}");
    }
}
