//! Counters that each thread adds to on a cache line of its own: an increment is a plain
//! load and store, no read-modify-write, and still exact, because only the line's owner ever
//! writes it.
//!
//! The first [`own_lines`] threads that count get a line each (given back when the thread
//! exits, and passed on to a later thread with the counts on it, which only ever grow);
//! threads beyond them share one line with atomic increments. A read sums every line: it
//! is exact once the counting threads have synchronised with the reader (a join, a channel,
//! an awaited reply), and a moment behind otherwise, as any relaxed counter is.
//!
//! Used where a count is the only thing a call writes for itself: rejections, route
//! attempts. (The counts a shutdown pairs with its flag, and the epoch-tagged successes the
//! actor takes, need a read-modify-write and stay in `provider::counters`.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};

/// How many threads get a line of their own: twice the CPUs plus two (a runtime's workers,
/// and the threads that call from outside them), at most 32. Each line is 128 bytes per
/// tally, and a provider has one tally and one per route it is in, so the count is kept to
/// what can run at once (on 2 CPUs: 6 lines, 896 bytes a tally).
pub(crate) fn own_lines() -> usize {
    static LINES: OnceLock<usize> = OnceLock::new();
    *LINES.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        cpus.saturating_mul(2).saturating_add(2).min(32)
    })
}

/// No line yet (the thread has not counted).
const UNASSIGNED: usize = usize::MAX;
/// The shared line: every own line was taken, or the thread is exiting.
const SHARED: usize = usize::MAX - 1;

thread_local! {
    /// This thread's line. A `const` initialiser: reading it is one thread-local load.
    static LINE: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// Gives the line back when the thread exits.
    static OWNER: Owner = const { Owner(Cell::new(None)) };
}

/// The lines no thread owns.
fn free() -> &'static Mutex<Vec<usize>> {
    static FREE: OnceLock<Mutex<Vec<usize>>> = OnceLock::new();
    FREE.get_or_init(|| Mutex::new((0..own_lines()).rev().collect()))
}

struct Owner(Cell<Option<usize>>);

impl Drop for Owner {
    fn drop(&mut self) {
        // Counting after this (from another thread-local's destructor) uses the shared
        // line.
        LINE.set(SHARED);
        if let Some(line) = self.0.take() {
            // The lock orders this thread's last increments before the next owner's first.
            free()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    }
}

/// This thread's line: below [`own_lines`] for a line of its own, [`SHARED`] otherwise.
#[inline(always)]
fn line() -> usize {
    let line = LINE.get();
    if line != UNASSIGNED {
        return line;
    }
    assign()
}

#[cold]
fn assign() -> usize {
    let taken = free().lock().unwrap_or_else(PoisonError::into_inner).pop();
    let line = match taken {
        // Registered for its destructor; a thread already tearing down its thread-locals
        // cannot register one, and gives the line straight back.
        Some(line) => match OWNER.try_with(|owner| owner.0.set(Some(line))) {
            Ok(()) => line,
            Err(_) => {
                free()
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                SHARED
            }
        },
        None => SHARED,
    };
    LINE.set(line);
    line
}

#[derive(Debug)]
#[repr(align(128))]
struct Line<const N: usize>([AtomicU64; N]);

impl<const N: usize> Line<N> {
    fn new() -> Self {
        Line(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` counters, each thread adding on a line of its own.
#[derive(Debug)]
pub(crate) struct Tally<const N: usize> {
    own: Box<[Line<N>]>,
    shared: Line<N>,
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally {
            own: (0..own_lines()).map(|_| Line::new()).collect(),
            shared: Line::new(),
        }
    }
}

impl<const N: usize> Tally<N> {
    /// Adds `n` to counter `i`: a load and a store on this thread's own line, or an atomic
    /// increment on the shared one.
    #[inline(always)]
    pub(crate) fn add(&self, i: usize, n: u64) {
        match self.own.get(line()) {
            Some(own) => {
                let count = &own.0[i];
                count.store(count.load(Relaxed).wrapping_add(n), Relaxed);
            }
            None => {
                self.shared.0[i].fetch_add(n, Relaxed);
            }
        }
    }

    /// Counter `i`, summed over every line.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.own
            .iter()
            .chain(std::iter::once(&self.shared))
            .map(|line| line.0[i].load(Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_more_threads_than_lines_add_up() {
        let tally = std::sync::Arc::new(Tally::<3>::default());
        // More threads than own lines, some exiting before others start (their lines are
        // passed on with their counts).
        for round in 0..3 {
            let threads: Vec<_> = (0..own_lines() + 8)
                .map(|_| {
                    let tally = tally.clone();
                    std::thread::spawn(move || {
                        for _ in 0..1_000 {
                            tally.add(0, 1);
                        }
                        tally.add(2, round + 1);
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("thread");
            }
        }
        let threads = 3 * (own_lines() as u64 + 8);
        assert_eq!(tally.get(0), threads * 1_000);
        assert_eq!(tally.get(1), 0);
        assert_eq!(tally.get(2), (own_lines() as u64 + 8) * (1 + 2 + 3));
    }
}
