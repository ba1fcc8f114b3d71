//! Latency summaries: every sample kept (nanoseconds), percentiles by nearest rank.

use serde::Serialize;

/// Samples in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: std::time::Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&mut self) -> Summary {
        self.0.sort_unstable();
        let n = self.0.len();
        let ms = |ns: u64| ns as f64 / 1e6;
        let at = |q: f64| -> u64 {
            if n == 0 {
                return 0;
            }
            // Nearest rank: the smallest sample with at least q of all samples at or below it.
            let rank = (q * n as f64).ceil() as usize;
            self.0[rank.clamp(1, n) - 1]
        };
        let sum: u128 = self.0.iter().map(|&v| u128::from(v)).sum();
        Summary {
            count: n as u64,
            mean_ms: if n == 0 {
                0.0
            } else {
                sum as f64 / n as f64 / 1e6
            },
            p50_ms: ms(at(0.50)),
            p90_ms: ms(at(0.90)),
            p99_ms: ms(at(0.99)),
            p999_ms: ms(at(0.999)),
            max_ms: ms(self.0.last().copied().unwrap_or(0)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=1000u64 {
            s.push(Duration::from_micros(i));
        }
        let sum = s.summary();
        assert_eq!(sum.count, 1000);
        assert!((sum.p50_ms - 0.5).abs() < 1e-9);
        assert!((sum.p99_ms - 0.99).abs() < 1e-9);
        assert!((sum.p999_ms - 0.999).abs() < 1e-9);
        assert!((sum.max_ms - 1.0).abs() < 1e-9);
    }
}
