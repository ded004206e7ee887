//! Where a trial's seconds go (issue 27): the runtime's own commands
//! (create, start, exec, kill, delete, state; kcell's CLI runs whole),
//! the case's time (its containers' processes from start to exit, the
//! measurement windows among it), and the harness's (everything else:
//! requirements, fixtures, bundles, readings, clean-up). The agent runs
//! one trial at a time, so one set of counters serves it; `reset` starts a
//! trial's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static RUNTIME_NS: AtomicU64 = AtomicU64::new(0);
static CASE_NS: AtomicU64 = AtomicU64::new(0);

/// A trial's seconds, by whose they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    /// The runtime's commands.
    pub runtime_s: f64,
    /// The case's processes, from start to exit (measurement windows included).
    pub case_s: f64,
    /// The rest: the harness's own set-up, readings and clean-up.
    pub harness_s: f64,
}

/// Whose time a span was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// The runtime's.
    Runtime,
    /// The case's.
    Case,
}

/// Starts a trial's counters.
pub fn reset() {
    RUNTIME_NS.store(0, Ordering::Relaxed);
    CASE_NS.store(0, Ordering::Relaxed);
}

/// Adds `d` to whose it was.
pub fn add(spent: Spent, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match spent {
        Spent::Runtime => RUNTIME_NS.fetch_add(ns, Ordering::Relaxed),
        Spent::Case => CASE_NS.fetch_add(ns, Ordering::Relaxed),
    };
}

/// A span of someone's time: added to theirs when it is dropped, however
/// the code it covers returns.
pub struct Span {
    spent: Spent,
    began: std::time::Instant,
}

impl Span {
    /// Starts a span of `spent`'s time.
    pub fn begin(spent: Spent) -> Span {
        Span {
            spent,
            began: std::time::Instant::now(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        add(self.spent, self.began.elapsed());
    }
}

/// The trial's breakdown, given its whole time.
pub fn of_trial(total_s: f64) -> Timing {
    let s = |a: &AtomicU64| (a.load(Ordering::Relaxed) as f64 / 1e9 * 1000.0).round() / 1000.0;
    let (runtime_s, case_s) = (s(&RUNTIME_NS), s(&CASE_NS));
    Timing {
        runtime_s,
        case_s,
        harness_s: ((total_s - runtime_s - case_s).max(0.0) * 1000.0).round() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_gets_what_the_runtime_and_the_case_did_not() {
        reset();
        add(Spent::Runtime, Duration::from_millis(300));
        add(Spent::Case, Duration::from_millis(1500));
        add(Spent::Runtime, Duration::from_millis(200));
        let t = of_trial(2.25);
        assert_eq!((t.runtime_s, t.case_s, t.harness_s), (0.5, 1.5, 0.25));
        reset();
        assert_eq!(of_trial(1.0).harness_s, 1.0);
    }
}
