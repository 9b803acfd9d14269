//! Sliding-window counters for one key: two half-window buckets.
//!
//! The window of length W is kept as the current and the previous half (W/2 each); a read sums
//! both, so it covers between W/2 and W of history with constant memory (two sketches and a few
//! counters, ≈ 180 bytes) instead of a queue of every query. Time comes from the injected clock.

use std::time::Duration;

use super::sketch::Hll;

/// Counts for one half-window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Distinct subdomains.
    pub unique: Hll,
    /// Queries.
    pub queries: u32,
    /// Sum of subdomain-part lengths over all queries.
    pub sub_bytes: u32,
    /// Sum of per-query scores.
    pub score_sum: u32,
    /// Queries whose own score was high (see `score::HIGH_QUERY_SCORE`).
    pub high: u32,
    /// Subdomain bytes of those high-scoring queries: a tunnel's data queries are its long
    /// ones, while its short polls and acks dilute a per-query share.
    pub high_bytes: u32,
    /// Sum of score × subdomain length, for a byte-weighted mean score.
    pub score_bytes: u64,
    /// Answers reported back through `observe_rcode`.
    pub answers: u32,
    /// Of those, NXDOMAIN.
    pub nxdomain: u32,
    /// Queries whose name was not among the key's recent names ([`super::volume::RecentNames`]).
    pub novel_names: u32,
    /// Estimated information in those names, bits ([`super::volume::info_bits`]); names another
    /// client asked first add nothing.
    pub novel_bits: u32,
    /// Answer bytes returned upstream-fresh for carrier types (TXT, NULL, CNAME, MX, ...), and
    /// the counted share of new addresses and CNAME targets in other answers.
    pub down_bytes: u32,
    /// Answers that added to `down_bytes`: each one a distinct piece of downstream data, as a
    /// novel name is one upstream.
    pub down_answers: u32,
}

/// What a window read returns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    /// Queries.
    pub queries: u64,
    /// Estimated distinct subdomains (never above `queries`).
    pub unique: u64,
    /// Estimated query-name payload bytes: distinct subdomains × mean subdomain length.
    pub payload_bytes: u64,
    /// Mean per-query score.
    pub mean_score: f32,
    /// Share of queries with a high score of their own.
    pub high_share: f32,
    /// Share of subdomain bytes carried by high-scoring queries.
    pub high_byte_share: f32,
    /// Mean per-query score weighted by subdomain length.
    pub byte_mean_score: f32,
    /// Answers reported.
    pub answers: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// Estimated novel information carried upstream in query names, bytes: the information of
    /// names not seen recently, scaled down when the distinct-name sketch says some of those
    /// were repeats after all (a client cycling through more names than the recent-name filter
    /// holds).
    pub novel_bytes: u64,
    /// Distinct names behind `novel_bytes` (estimate).
    pub novel_names: u64,
    /// Answer bytes for carrier query types (the downstream half of a tunnel).
    pub down_bytes: u64,
    /// Answers that carried those bytes.
    pub down_answers: u64,
}

/// Two half-window buckets and the half-window they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Index of the current half-window (time / half).
    epoch: u64,
    /// The current half.
    current: Bucket,
    /// The half before it.
    previous: Bucket,
    /// Queries in both halves when the sketch was last read (0: not read since the buckets
    /// moved). Reading the sketch is the costliest step of a read, and its estimate moves
    /// slowly: it is read again only after the queries grew by an eighth.
    sketch_at: u32,
    /// That reading.
    sketch_estimate: u32,
}

impl SlidingWindow {
    /// The distinct-name estimate for both halves, re-read from the sketch only when the
    /// query count grew by more than an eighth since the last reading (so within ~12 % of
    /// the sketch's own answer, which is itself within ~13 %).
    fn unique(&mut self) -> u64 {
        let queries = self.current.queries.saturating_add(self.previous.queries);
        if self.sketch_at == 0 || queries > self.sketch_at.saturating_add(self.sketch_at / 8) {
            let estimate = self.current.unique.estimate_union(&self.previous.unique);
            self.sketch_at = queries.max(1);
            self.sketch_estimate = u32::try_from(estimate).unwrap_or(u32::MAX);
        }
        u64::from(self.sketch_estimate)
    }

    /// Moves the buckets forward to `now`, dropping what fell out of the window.
    pub fn advance(&mut self, now: Duration, half: Duration) {
        self.advance_to(epoch_of(now, half));
    }

    /// [`Self::advance`] to a half-window index already computed ([`epoch_of`]).
    pub fn advance_to(&mut self, epoch: u64) {
        if epoch == self.epoch {
            return;
        }
        if epoch == self.epoch + 1 {
            self.previous = std::mem::take(&mut self.current);
        } else if epoch > self.epoch {
            self.previous = Bucket::default();
            self.current = Bucket::default();
        }
        // A clock that went backwards (it should not) keeps the buckets as they are.
        self.epoch = self.epoch.max(epoch);
        self.sketch_at = 0;
    }

    /// The bucket that new observations go to.
    pub fn current_mut(&mut self) -> &mut Bucket {
        &mut self.current
    }

    /// Distinct items in both halves' sketches, alone (cheaper than [`Self::stats`]).
    #[must_use]
    pub fn stats_unique(&mut self) -> u64 {
        self.unique()
    }

    /// Estimated novel bytes and distinct novel names over both halves; `unique` gives the
    /// distinct-name sketch's count, asked only when it can matter.
    fn novel(&self, unique: impl FnOnce() -> u64) -> (u64, u64) {
        let (c, p) = (&self.current, &self.previous);
        let novel_names = u64::from(c.novel_names) + u64::from(p.novel_names);
        let novel_bits = u64::from(c.novel_bits) + u64::from(p.novel_bits);
        // The filter can only over-count novelty (a name evicted from it and asked again); the
        // sketch caps that. The cap is the sketch's upper bound, not its estimate: 64
        // registers give a ~13 % standard error, so the estimate plus three of them (×1.39)
        // is, with near certainty, no lower than the true count, and the score never drops
        // below the evidence because of an unlucky hash seed (a name cycled back in after
        // being pushed out of the filter is still corrected to within 39 %). Up to 8 names
        // the filter (32 slots) is exact enough and the sketch is not read at all.
        let distinct_names = if novel_names <= 8 {
            novel_names
        } else {
            let cap = unique().saturating_mul(139) / 100;
            novel_names.min(cap.max(1))
        };
        let novel_bytes = novel_bits
            .saturating_mul(distinct_names)
            .checked_div(novel_names)
            .unwrap_or(0)
            / 8;
        (novel_bytes, distinct_names)
    }

    /// Novel information bits counted in both halves, before any correction: a cheap upper
    /// bound for deciding whether a full read is worth it.
    #[must_use]
    pub fn raw_novel_bits(&self) -> u64 {
        u64::from(self.current.novel_bits) + u64::from(self.previous.novel_bits)
    }

    /// Novel names counted in both halves, before any correction (the filter can over-count a
    /// name asked again after it was pushed out, never under-count).
    #[must_use]
    pub fn raw_novel_names(&self) -> u64 {
        u64::from(self.current.novel_names) + u64::from(self.previous.novel_names)
    }

    /// Queries in both halves.
    #[must_use]
    pub fn raw_queries(&self) -> u32 {
        self.current.queries.saturating_add(self.previous.queries)
    }

    /// Answers in both halves.
    #[must_use]
    pub fn raw_answers(&self) -> u32 {
        self.current.answers.saturating_add(self.previous.answers)
    }

    /// Carrier answer bytes in both halves, as counted.
    #[must_use]
    pub fn raw_down_bytes(&self) -> u64 {
        u64::from(self.current.down_bytes) + u64::from(self.previous.down_bytes)
    }

    /// Only what the volume term needs (queries, answers, novel bytes and names, answer
    /// bytes), without reading the sketch unless the novelty count needs checking.
    #[must_use]
    pub fn volume_stats(&mut self) -> WindowStats {
        let unique = self.unique_if_needed();
        let (c, p) = (&self.current, &self.previous);
        let (novel_bytes, novel_names) = self.novel(|| unique);
        WindowStats {
            queries: u64::from(c.queries) + u64::from(p.queries),
            answers: u64::from(c.answers) + u64::from(p.answers),
            nxdomain: u64::from(c.nxdomain) + u64::from(p.nxdomain),
            novel_bytes,
            novel_names,
            down_bytes: u64::from(c.down_bytes) + u64::from(p.down_bytes),
            down_answers: u64::from(c.down_answers) + u64::from(p.down_answers),
            ..WindowStats::default()
        }
    }

    /// The sketch's estimate when [`Self::novel`] will ask for it (more than 8 novel names).
    fn unique_if_needed(&mut self) -> u64 {
        let novel_names =
            u64::from(self.current.novel_names) + u64::from(self.previous.novel_names);
        if novel_names > 8 { self.unique() } else { 0 }
    }

    /// Sums both halves.
    #[must_use]
    pub fn stats(&mut self) -> WindowStats {
        let queries = u64::from(self.current.queries) + u64::from(self.previous.queries);
        let unique = self.unique().min(queries);
        let (c, p) = (&self.current, &self.previous);
        let sub_bytes = u64::from(c.sub_bytes) + u64::from(p.sub_bytes);
        let score_sum = u64::from(c.score_sum) + u64::from(p.score_sum);
        let high = u64::from(c.high) + u64::from(p.high);
        let high_bytes = u64::from(c.high_bytes) + u64::from(p.high_bytes);
        let score_bytes = c.score_bytes.saturating_add(p.score_bytes);
        #[allow(clippy::cast_precision_loss)]
        let (high_byte_share, byte_mean_score) = if sub_bytes == 0 {
            (0.0, 0.0)
        } else {
            (
                high_bytes as f32 / sub_bytes as f32,
                score_bytes as f32 / sub_bytes as f32,
            )
        };
        let (mean_score, high_share, payload_bytes) = if queries == 0 {
            (0.0, 0.0, 0)
        } else {
            #[allow(clippy::cast_precision_loss)]
            let q = queries as f32;
            #[allow(clippy::cast_precision_loss)]
            let r = (score_sum as f32 / q, high as f32 / q);
            (r.0, r.1, unique.saturating_mul(sub_bytes) / queries)
        };
        let (novel_bytes, distinct_names) = self.novel(|| unique);
        WindowStats {
            novel_bytes,
            novel_names: distinct_names,
            down_bytes: u64::from(c.down_bytes) + u64::from(p.down_bytes),
            down_answers: u64::from(c.down_answers) + u64::from(p.down_answers),
            queries,
            unique,
            payload_bytes,
            mean_score,
            high_share,
            high_byte_share,
            byte_mean_score,
            answers: u64::from(c.answers) + u64::from(p.answers),
            nxdomain: u64::from(c.nxdomain) + u64::from(p.nxdomain),
        }
    }
}

/// The half-window index of `now`.
pub(super) fn epoch_of(now: Duration, half: Duration) -> u64 {
    // In u64 milliseconds: `as_millis` is a u128, and a u128 division is a library call on
    // every window of every query (a monotonic clock needs 584 million years to overflow).
    millis(now) / millis(half).max(1)
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(w: &mut SlidingWindow, now: Duration, half: Duration, hash: u64) {
        w.advance(now, half);
        let b = w.current_mut();
        b.unique.insert(hash);
        b.queries += 1;
        b.sub_bytes += 10;
        b.score_sum += 50;
        b.high += 1;
    }

    #[test]
    fn counts_expire_as_the_clock_moves() {
        let half = Duration::from_secs(300);
        let mut w = SlidingWindow::default();
        for i in 0..10u64 {
            add(
                &mut w,
                Duration::from_secs(i),
                half,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
        }
        let s = w.stats();
        assert_eq!(s.queries, 10);
        assert!((9..=10).contains(&s.unique));
        assert!((90..=100).contains(&s.payload_bytes));
        assert!((s.mean_score - 50.0).abs() < 1e-3);
        // Next half: still counted.
        w.advance(Duration::from_secs(400), half);
        assert_eq!(w.stats().queries, 10);
        // Two halves later: gone.
        w.advance(Duration::from_secs(650), half);
        assert_eq!(w.stats().queries, 0);
        // A long gap clears both.
        add(&mut w, Duration::from_secs(700), half, 1);
        w.advance(Duration::from_secs(5000), half);
        assert_eq!(w.stats(), WindowStats::default());
    }
}
