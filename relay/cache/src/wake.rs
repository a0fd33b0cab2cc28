//! Waking a worker parked on something another thread completes (a fill's bytes, a head
//! fetch's outcome, a pass-through's answer, another connection's disk read).
//!
//! A worker (an io_uring loop) cannot block on a condition variable: it parks the connection,
//! notes its worker number in the thing's [`Watchers`], and sleeps in its ring until its
//! eventfd is signalled. The completer publishes, then signals every worker noted, through
//! the [`Wakers`] it was handed (the eventfd write itself is the server's business).
//!
//! The ordering, stated once. Both sides are a store followed by a load of the other side's
//! store, with a `SeqCst` fence between them:
//!
//! - the waiter registers (sets its bit) → fence → checks the outcome ([`Watchers::watch`],
//!   then the caller's check);
//! - the completer publishes the outcome → fence → reads the registrations
//!   ([`Wakers::wake`]).
//!
//! `SeqCst` fences are totally ordered. If the waiter's fence comes first, everything
//! before it (the bit) is visible to loads after the completer's fence, so the completer
//! sees the bit and signals the worker. If the completer's fence comes first, the outcome is
//! visible to the waiter's check, so the waiter does not park. Either way no wake-up is lost;
//! at worst a worker is woken with nothing new (it re-checks and parks again). `Acquire` /
//! `Release` alone would not do: they order a load after a store only when the load reads
//! that store, and here each side's load must see the *other* side's store.
//!
//! Registrations stay until the watched thing is dropped: a worker that watched once is
//! woken by every later publication (its connections re-check; spurious wake-ups are
//! harmless, lost ones are not).
//!
//! Any number of workers: bits are kept in 64-bit words, the first inline and the next ones
//! added on first use by a worker numbered past them, so a worker's bit never collides with
//! another's.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};

/// The workers waiting on one thing: a set of worker numbers, any number of them.
#[derive(Default)]
pub struct Watchers {
    /// Workers `0..64` of this word (bit `w % 64`).
    bits: AtomicU64,
    /// The next 64 workers, added by the first of them to watch.
    more: OnceLock<Box<Watchers>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut set = f.debug_set();
        self.each(|w| {
            set.entry(&w);
        });
        set.finish()
    }
}

impl Watchers {
    /// Registers `worker` as waiting, then fences: on return, check the outcome; if it is
    /// not there yet, park. A completer that publishes after this check wakes `worker`.
    pub fn watch(&self, worker: usize) {
        let mut word = self;
        for _ in 0..worker / 64 {
            word = word.more.get_or_init(Box::default);
        }
        // Relaxed: the fence below orders it before the caller's check (module docs).
        word.bits.fetch_or(1 << (worker % 64), Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Whether `worker` is registered (tests and diagnostics; no ordering implied).
    pub fn contains(&self, worker: usize) -> bool {
        let mut word = self;
        for _ in 0..worker / 64 {
            match word.more.get() {
                Some(next) => word = next,
                None => return false,
            }
        }
        word.bits.load(Ordering::Relaxed) & (1 << (worker % 64)) != 0
    }

    /// Calls `f` with each registered worker, lowest first. Without a fence: the
    /// completer's side is [`Wakers::wake`].
    fn each(&self, mut f: impl FnMut(usize)) {
        Watchers::each_of(&[self], &mut f);
    }

    /// Calls `f` once with each worker registered in any of `sets`, lowest first.
    fn each_of(sets: &[&Watchers], f: &mut impl FnMut(usize)) {
        let mut words: [Option<&Watchers>; 4] = [None; 4];
        assert!(sets.len() <= words.len(), "at most 4 sets at once");
        for (w, s) in words.iter_mut().zip(sets) {
            *w = Some(s);
        }
        let mut base = 0;
        loop {
            let mut mask = 0u64;
            let mut any = false;
            for w in words.iter_mut() {
                if let Some(word) = *w {
                    any = true;
                    // Relaxed: after the completer's fence (module docs). The link is read
                    // with OnceLock's own Acquire, so a word a waiter added is seen whole.
                    mask |= word.bits.load(Ordering::Relaxed);
                    *w = word.more.get().map(|b| &**b);
                }
            }
            if !any {
                return;
            }
            while mask != 0 {
                let bit = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                f(base + bit);
            }
            base += 64;
        }
    }
}

/// How a completer reaches the workers: signals worker `w` (the server writes its eventfd).
/// Cheap to clone; handed to whoever completes things workers watch.
#[derive(Clone)]
pub struct Wakers {
    signal: Arc<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wakers")
    }
}

impl Wakers {
    /// Wakers that call `signal(w)` to wake worker `w`.
    pub fn new(signal: impl Fn(usize) + Send + Sync + 'static) -> Wakers {
        Wakers {
            signal: Arc::new(signal),
        }
    }

    /// Wakers that wake nobody (nothing watches: tests, tools).
    pub fn none() -> Wakers {
        Wakers::new(|_| {})
    }

    /// Call after publishing an outcome: fences, then signals every worker registered in
    /// `watchers` (each once).
    pub fn wake(&self, watchers: &Watchers) {
        self.wake_any(&[watchers]);
    }

    /// Like [`Wakers::wake`] for the workers registered in any of `sets` (at most 4), each
    /// signalled once however many sets it is in.
    /// Wakes every worker noted in `watchers` and forgets them: for a thing that lives on
    /// (the arena's room), where a registration would otherwise wake its worker at every
    /// later publication. A waiter notes itself again each time it parks.
    pub fn wake_once(&self, watchers: &Watchers) {
        // Pairs with the fence in `Watchers::watch` (module docs).
        fence(Ordering::SeqCst);
        let mut word = Some(watchers);
        let mut base = 0;
        while let Some(w) = word {
            let mut mask = w.bits.swap(0, Ordering::Relaxed);
            while mask != 0 {
                let bit = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                (self.signal)(base + bit);
            }
            word = w.more.get().map(|b| &**b);
            base += 64;
        }
    }

    pub fn wake_any(&self, sets: &[&Watchers]) {
        // Pairs with the fence in `Watchers::watch` (module docs).
        fence(Ordering::SeqCst);
        Watchers::each_of(sets, &mut |w| (self.signal)(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Wakers that record whom they signalled.
    fn recording() -> (Wakers, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Wakers::new(move |w| s.lock().unwrap().push(w)), seen)
    }

    #[test]
    fn only_registered_workers_are_woken_once_each() {
        let w = Watchers::default();
        let (wakers, seen) = recording();
        wakers.wake(&w);
        assert!(seen.lock().unwrap().is_empty(), "nobody watches yet");
        w.watch(3);
        w.watch(3);
        w.watch(0);
        wakers.wake(&w);
        assert_eq!(*seen.lock().unwrap(), [0, 3]);
        assert!(w.contains(3) && !w.contains(1) && !w.contains(64 + 3));
    }

    #[test]
    fn waking_once_forgets_the_watchers() {
        let w = Watchers::default();
        let (wakers, seen) = recording();
        w.watch(1);
        w.watch(70);
        wakers.wake_once(&w);
        assert_eq!(*seen.lock().unwrap(), [1, 70]);
        assert!(!w.contains(1) && !w.contains(70));
        wakers.wake_once(&w);
        assert_eq!(seen.lock().unwrap().len(), 2, "forgotten: not woken again");
    }

    #[test]
    fn workers_past_64_do_not_collide() {
        let w = Watchers::default();
        let (wakers, seen) = recording();
        // 2, 66, 130 and 194 share a bit position in their words.
        w.watch(130);
        wakers.wake(&w);
        assert_eq!(*seen.lock().unwrap(), [130]);
        assert!(!w.contains(2) && !w.contains(66) && w.contains(130));
        seen.lock().unwrap().clear();
        for id in [2, 66, 63, 64, 1000] {
            w.watch(id);
        }
        wakers.wake(&w);
        assert_eq!(*seen.lock().unwrap(), [2, 63, 64, 66, 130, 1000]);
        assert_eq!(format!("{w:?}"), "{2, 63, 64, 66, 130, 1000}");
    }

    #[test]
    fn a_union_wakes_each_worker_once() {
        let (a, b) = (Watchers::default(), Watchers::default());
        a.watch(1);
        a.watch(70);
        b.watch(1);
        b.watch(200);
        let (wakers, seen) = recording();
        wakers.wake_any(&[&a, &b]);
        assert_eq!(*seen.lock().unwrap(), [1, 70, 200]);
    }

    /// Waiters on many threads (worker numbers up to past 128) race one completer, round
    /// after round: every waiter that found nothing published was woken in that round.
    /// Bounded: a fixed number of rounds, and a deadline.
    #[test]
    fn no_wake_up_is_lost_under_contention() {
        const ROUNDS: u64 = 2_000;
        const IDS: [usize; 8] = [0, 5, 63, 64, 65, 127, 128, 190];
        struct Round {
            n: u64,
            done: AtomicBool,
            watchers: Watchers,
        }
        let round = |n| {
            Arc::new(Round {
                n,
                done: AtomicBool::new(false),
                watchers: Watchers::default(),
            })
        };
        let current: Arc<Mutex<Arc<Round>>> = Arc::new(Mutex::new(round(0)));
        // The round (+1) each worker was last signalled in, and whether each waiter found
        // the outcome published this round.
        let woken: Arc<Vec<AtomicU64>> = Arc::new((0..256).map(|_| AtomicU64::new(0)).collect());
        let found: Arc<Vec<AtomicBool>> =
            Arc::new(IDS.iter().map(|_| AtomicBool::new(false)).collect());
        let barrier = Arc::new(std::sync::Barrier::new(IDS.len() + 1));
        let waiters: Vec<_> = IDS
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let (current, barrier, found) = (current.clone(), barrier.clone(), found.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        barrier.wait();
                        let r = current.lock().unwrap().clone();
                        r.watchers.watch(id);
                        found[i].store(r.done.load(Ordering::Relaxed), Ordering::Relaxed);
                        barrier.wait();
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Waits that found the outcome, and that were signalled, across all rounds.
        let (mut saw_it, mut signalled_n) = (0, 0);
        for n in 0..ROUNDS {
            assert!(Instant::now() < deadline, "stuck at round {n}");
            let r = round(n);
            *current.lock().unwrap() = r.clone();
            let wakers = {
                let (woken, r) = (woken.clone(), r.clone());
                Wakers::new(move |w| woken[w].store(r.n + 1, Ordering::Relaxed))
            };
            barrier.wait();
            // Let the waiters get going, by a different amount each round.
            for _ in 0..(n % 7) * 40 {
                std::hint::spin_loop();
            }
            r.done.store(true, Ordering::Relaxed);
            wakers.wake(&r.watchers);
            barrier.wait();
            for (i, &id) in IDS.iter().enumerate() {
                let saw = found[i].load(Ordering::Relaxed);
                let signalled = woken[id].load(Ordering::Relaxed) == n + 1;
                assert!(saw || signalled, "round {n}: worker {id} lost its wake-up");
                saw_it += usize::from(saw);
                signalled_n += usize::from(signalled);
            }
        }
        for t in waiters {
            t.join().unwrap();
        }
        // Not asserted (it depends on the scheduler): how often each side came first.
        eprintln!(
            "{} waits: {saw_it} found the outcome, {signalled_n} were signalled",
            ROUNDS as usize * IDS.len()
        );
    }
}
