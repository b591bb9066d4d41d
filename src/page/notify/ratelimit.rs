//! A token bucket per routing key: PagerDuty accepts about 120 events a minute per
//! integration key over a sliding minute and drops the rest (429), so nightshift stays under
//! it on its own side (default 100 a minute). Time comes from the caller (the injectable
//! clock).
//!
//! The bucket holds a tenth of the limit as a burst and refills at the rest, so no window of
//! 60 s ever sees more than `per_minute` events: burst + refill over a minute = the limit.
//!
//! - Half the burst (at least one token, when the burst has two) is kept for the most urgent
//!   events: a less urgent one takes a token only while more than that reserve remain, so a P1
//!   decided just after a burst of P2 pages still goes at once.
//! - A bucket started after a restart is seeded with what was sent in the minute before it
//!   (see [`TokenBuckets::seed`]), so a minute spanning the restart stays within the limit too.

use std::collections::HashMap;

use crate::clock::Millis;

/// The window the limit is counted over.
pub const WINDOW: Millis = 60_000;

#[derive(Debug, Clone)]
pub struct TokenBuckets {
    burst: f64,
    /// Tokens per millisecond.
    rate: f64,
    /// Tokens only urgent events may take.
    reserve: f64,
    buckets: HashMap<String, (f64, Millis)>,
}

impl TokenBuckets {
    pub fn new(per_minute: u32) -> TokenBuckets {
        let per_minute = f64::from(per_minute.max(1));
        let burst = (per_minute / 10.0).floor().max(1.0);
        TokenBuckets {
            burst,
            rate: (per_minute - burst).max(0.0) / WINDOW as f64,
            reserve: (burst / 2.0).floor().max(1.0).min(burst - 1.0),
            buckets: HashMap::new(),
        }
    }

    /// The most events that go at once.
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    /// Start `key`'s bucket at `now` as if it had run for the last minute and let through
    /// the events `sent` at those times (what the store recorded before a restart); older
    /// events no longer count.
    ///
    /// The replay starts full a minute ago and has no floor: events beyond what the bucket
    /// would have allowed leave it in debt, paid back before anything else goes. So any 60 s
    /// window that ends after `now` holds at most the limit, counting both sides.
    pub fn seed(&mut self, key: &str, sent: &[Millis], now: Millis) {
        let start = now - WINDOW;
        let mut times: Vec<Millis> = sent
            .iter()
            .map(|&at| at.min(now))
            .filter(|&at| at >= start)
            .collect();
        times.sort_unstable();
        let (mut tokens, mut last) = (self.burst, start);
        for at in times {
            tokens = self.refilled(tokens, last, at) - 1.0;
            last = at;
        }
        let tokens = self.refilled(tokens, last, now);
        self.buckets.insert(key.to_owned(), (tokens, now));
    }

    /// Take a token for `key` at `now` if one is there; an event that is not `urgent` takes
    /// one only while more than the reserve remain.
    pub fn try_take(&mut self, key: &str, now: Millis, urgent: bool) -> bool {
        let (tokens, last) = self.buckets.get(key).copied().unwrap_or((self.burst, now));
        let mut tokens = self.refilled(tokens, last, now);
        let needed = if urgent { 1.0 } else { 1.0 + self.reserve };
        let taken = tokens >= needed;
        if taken {
            tokens -= 1.0;
        }
        self.buckets.insert(key.to_owned(), (tokens, now));
        taken
    }

    /// When the next token for `key` is there for an urgent event (now, if one is).
    pub fn next_at(&self, key: &str, now: Millis) -> Millis {
        match self.buckets.get(key) {
            Some(&(tokens, last)) => {
                let current = self.refilled(tokens, last, now);
                if current >= 1.0 || self.rate <= 0.0 {
                    now
                } else {
                    now + ((1.0 - current) / self.rate).ceil() as Millis
                }
            }
            None => now,
        }
    }

    /// `tokens` as of `last`, refilled up to `now`.
    fn refilled(&self, tokens: f64, last: Millis, now: Millis) -> f64 {
        (tokens + now.saturating_sub(last).max(0) as f64 * self.rate).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most events within any 60 s window (half open).
    fn busiest_minute(sent: &[Millis]) -> usize {
        sent.iter()
            .map(|&at| sent.iter().filter(|&&t| t >= at && t < at + WINDOW).count())
            .max()
            .unwrap_or(0)
    }

    /// Try every 10 ms from `from` to `to`, as urgent; returns when events went.
    fn offer(buckets: &mut TokenBuckets, from: Millis, to: Millis) -> Vec<Millis> {
        (from..to)
            .step_by(10)
            .filter(|&at| buckets.try_take("key-a", at, true))
            .collect()
    }

    #[test]
    fn no_minute_ever_sees_more_than_the_limit() {
        let mut buckets = TokenBuckets::new(100);
        let start = 1_000_000;
        // Try every 10 ms for five minutes; record what went out.
        let sent = offer(&mut buckets, start, start + 300_000);
        let busiest = busiest_minute(&sent);
        assert!(busiest <= 100, "{busiest} in one minute");
        // And the limit is used, not starved: about 90 a minute after the burst of 10.
        assert!(sent.len() >= 10 + 4 * 90, "{}", sent.len());
    }

    #[test]
    fn a_burst_is_a_tenth_and_keys_are_separate() {
        let mut buckets = TokenBuckets::new(100);
        let now = 1_000_000;
        let taken = (0..50)
            .filter(|_| buckets.try_take("key-a", now, true))
            .count();
        assert_eq!(taken, 10);
        assert!(buckets.try_take("key-b", now, true));
        // 90 a minute: one token every 667 ms.
        assert!(!buckets.try_take("key-a", now + 500, true));
        assert_eq!(buckets.next_at("key-a", now + 500), now + 667);
        assert!(buckets.try_take("key-a", now + 667, true));
    }

    #[test]
    fn less_urgent_events_leave_half_the_burst_to_urgent_ones() {
        let mut buckets = TokenBuckets::new(100);
        let now = 1_000_000;
        let taken = (0..50)
            .filter(|_| buckets.try_take("key-a", now, false))
            .count();
        assert_eq!(taken, 5, "half the burst of 10");
        // A P1 a moment later still finds the other half.
        let urgent = (0..50)
            .filter(|_| buckets.try_take("key-a", now + 100, true))
            .count();
        assert_eq!(urgent, 5);
        // Refilled, the reserve comes first: a less urgent event waits for six tokens.
        assert!(!buckets.try_take("key-a", now + 100 + 3_000, false));
        assert!(buckets.try_take("key-a", now + 100 + 4_000, false));
        // The smallest limits keep no reserve they could not refill past: a burst of one is
        // anyone's, and a burst of two keeps one.
        let mut small = TokenBuckets::new(10);
        assert!(small.try_take("key-a", now, false));
        let mut two = TokenBuckets::new(20);
        assert!(two.try_take("key-a", now, false));
        assert!(!two.try_take("key-a", now, false));
        assert!(two.try_take("key-a", now, true));
    }

    #[test]
    fn a_bucket_seeded_after_a_restart_keeps_every_minute_within_the_limit() {
        let start = 1_000_000;
        // Events offered without a pause; the process restarts at 20 s and at 50 s.
        let run = |seeded: bool| {
            let mut buckets = TokenBuckets::new(100);
            let mut sent = offer(&mut buckets, start, start + 20_000);
            for (restart, end) in [
                (start + 20_000, start + 50_000),
                (start + 50_000, start + 150_000),
            ] {
                buckets = TokenBuckets::new(100);
                if seeded {
                    buckets.seed("key-a", &sent, restart);
                }
                sent.extend(offer(&mut buckets, restart, end));
            }
            sent
        };
        let unseeded = busiest_minute(&run(false));
        assert!(unseeded > 100, "a full bucket at each start: {unseeded}");
        let sent = run(true);
        let busiest = busiest_minute(&sent);
        assert!(busiest <= 100, "{busiest} in one minute");
        // Still the limit's worth over the 150 s: the burst of 10, then 90 a minute.
        assert!(sent.len() >= 10 + 90 * 140 / 60, "{}", sent.len());
    }

    #[test]
    fn a_seed_forgets_what_is_older_than_a_minute_and_pays_back_a_debt() {
        let now = 10_000_000;
        // Quiet for a minute: the bucket starts full.
        let mut buckets = TokenBuckets::new(100);
        buckets.seed("key-a", &[now - 61_000, now - 60_001], now);
        let taken = (0..50)
            .filter(|_| buckets.try_take("key-a", now, true))
            .count();
        assert_eq!(taken, 10);
        // 110 events in the last second (more than the limit allows, e.g. sent by an older
        // version): nothing more goes while a minute holds any of them, and then only what
        // the debt left allows.
        let mut buckets = TokenBuckets::new(100);
        let before: Vec<Millis> = (0..110).map(|i| now - 1_000 + i).collect();
        buckets.seed("key-a", &before, now);
        let after = offer(&mut buckets, now, now + 180_000);
        let last_before = *before.last().unwrap();
        assert!(after[0] >= last_before + WINDOW, "{}", after[0] - now);
        assert!(busiest_minute(&after) <= 100);
    }
}
