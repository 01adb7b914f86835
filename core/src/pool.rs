//! A small, fixed pool of worker threads for what the loop must not wait
//! on: opening, stat-ing, listing, removing, renaming and fsyncing users'
//! files, hashing them, walking a home to measure it, and argon2.
//!
//! epoll can wait on sockets and pipes, not on a disk or on a CPU-bound
//! function, so such work would stall every client at once. libuv's
//! thread pool, Redis's bio threads and nginx's `thread_pool` solve it the
//! same way, and so does this module:
//!
//! ```text
//!   loop thread                         worker threads
//!   ───────────                         ──────────────
//!   handler returns a Job ──submit──▶  [quick queue] ─▶ quick-0, quick-1
//!   (conn waits, unread)               [bulk queue]  ─▶ bulk-0,  bulk-1
//!                                      [hash queue]  ─▶ hash-0,  hash-1
//!                                              │ runs `work` on owned inputs
//!   Waker event ◀──── wake ────────────────────┤
//!   finished(): results ◀── channel ───────────┘
//!   conn.handle_job_done(result) runs `then` on the loop thread
//! ```
//!
//! The rules that keep it safe and fair:
//!
//! - **Owned in, owned out.** A job's `work` closure owns everything it
//!   touches (a `File`, an `Arc<Dir>`, a password) and returns an owned
//!   result. Sockets, timers and connection state never leave the loop
//!   thread, so nothing here needs a lock on them.
//! - **One job per connection.** A connection with a job in flight is not
//!   read, as if its output were full: a pipeline of 3,000 logins is
//!   served one at a time, interleaved with everyone else's jobs.
//! - **Three lanes.** Short jobs (a stat, argon2, an unlink), the long steps
//!   of requests under way (upload batches, fsync, a first login's walk of
//!   200,000 files) and hashing files for `get` (as long as the file is
//!   big, and anyone can ask) have their own queues and threads, so a few
//!   clients fetching huge files hold up neither logins nor uploads.
//! - **Bounded queues.** A lane holds at most [`QUEUE_LIMIT`] jobs, queued
//!   or running; beyond that `submit` refuses and the request is answered
//!   `too_busy`. The count lives on the loop thread (a job is counted from
//!   `submit` until its result is taken back), so the channels themselves
//!   can be the growable kind that costs nothing while idle.

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::debug;

/// What a worker runs: owned inputs in, an owned result out.
pub type Work = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Short work: a few syscalls on one file, or one password check.
    Quick,
    /// Work that grows with a file or a tree, for a request under way:
    /// upload batches, fsync and rename, a first login's walk of a home.
    Bulk,
    /// Hashing a stored file for `get`: as long as the file is big, and
    /// any client can ask for it, so it gets threads of its own: two
    /// clients fetching 8 GiB files must not hold up every upload.
    Hash,
}

/// Worker threads per lane: three lanes of two on a small host.
pub const THREADS_PER_LANE: usize = 2;
/// Jobs one lane may hold, queued or running.
pub const QUEUE_LIMIT: usize = 4096;
/// How long a worker without work waits before running the idle hook:
/// serial logins a few hundred ms apart then reuse one KDF area instead
/// of mapping 19 MiB afresh each (about 4,900 page faults a login).
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// What the server runs in every worker thread, besides jobs.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// When the thread has found no job for [`IDLE_GRACE`], before it
    /// sleeps (the server frees per-thread caches, such as argon2's
    /// working area).
    pub idle: fn(),
}

#[cfg(test)]
impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks { idle: || {} };
}

/// A job on its way to a worker.
struct Task {
    conn: usize,
    name: &'static str,
    lane: Lane,
    work: Work,
}

/// A job's result on its way back to the loop.
pub struct Finished {
    /// Slab key of the connection that asked for it.
    pub conn: usize,
    /// The lane it ran in.
    lane: Lane,
    /// What the job's `work` returned.
    pub result: Box<dyn Any + Send>,
}

/// The pool: two queues of tasks, threads that serve them, and the
/// channel their results come back on.
pub struct Pool {
    quick: Sender<Task>,
    bulk: Sender<Task>,
    hash: Sender<Task>,
    finished: Receiver<Finished>,
    /// Jobs submitted and not yet taken back, per lane (quick, bulk, hash).
    held: [Cell<usize>; 3],
}

impl Pool {
    /// Starts the worker threads. `wake` is called after every finished
    /// job (a `mio::Waker`, so the loop's `poll` returns); `hooks` run in
    /// each worker whenever it runs out of work.
    pub fn start(wake: Arc<dyn Fn() + Send + Sync>, hooks: Hooks) -> io::Result<Pool> {
        let (done_tx, finished) = mpsc::channel();
        let quick = Self::lane("quick", &done_tx, &wake, hooks)?;
        let bulk = Self::lane("bulk", &done_tx, &wake, hooks)?;
        let hash = Self::lane("hash", &done_tx, &wake, hooks)?;
        Ok(Pool {
            quick,
            bulk,
            hash,
            finished,
            held: [Cell::new(0), Cell::new(0), Cell::new(0)],
        })
    }

    fn lane(
        name: &str,
        done: &Sender<Finished>,
        wake: &Arc<dyn Fn() + Send + Sync>,
        hooks: Hooks,
    ) -> io::Result<Sender<Task>> {
        let (tx, rx) = mpsc::channel::<Task>();
        // std's Receiver has one owner: the threads of a lane take turns
        // holding it while they wait, the classic shared-queue pool.
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS_PER_LANE {
            let rx = rx.clone();
            let done = done.clone();
            let wake = wake.clone();
            std::thread::Builder::new()
                .name(format!("skiffd-{name}-{i}"))
                .spawn(move || worker(&rx, &done, &*wake, hooks.idle))?;
        }
        Ok(tx)
    }

    /// Queues `work` for a worker of `lane`; it is refused (and given
    /// back unrun) when that lane's queue is full.
    pub fn submit(
        &self,
        conn: usize,
        name: &'static str,
        lane: Lane,
        work: Work,
        must_run: bool,
    ) -> Result<(), Work> {
        let (queue, held) = match lane {
            Lane::Quick => (&self.quick, &self.held[0]),
            Lane::Bulk => (&self.bulk, &self.held[1]),
            Lane::Hash => (&self.hash, &self.held[2]),
        };
        if held.get() >= QUEUE_LIMIT && !must_run {
            return Err(work);
        }
        debug!("conn {conn}: job {name} queued ({lane:?} lane)");
        let task = Task {
            conn,
            name,
            lane,
            work,
        };
        queue.send(task).map_err(|e| e.0.work)?;
        held.set(held.get() + 1);
        Ok(())
    }

    /// Results of jobs that finished since the last call.
    pub fn finished(&self) -> impl Iterator<Item = Finished> + '_ {
        self.finished.try_iter().inspect(|f| {
            let held = match f.lane {
                Lane::Quick => &self.held[0],
                Lane::Bulk => &self.held[1],
                Lane::Hash => &self.held[2],
            };
            held.set(held.get().saturating_sub(1));
        })
    }
}

/// A worker's life: take a task, run it, send the result back, wake the
/// loop. It ends when the pool (the sending side) is dropped.
fn worker(
    tasks: &Mutex<Receiver<Task>>,
    done: &Sender<Finished>,
    wake: &(dyn Fn() + Send + Sync),
    idle: fn(),
) {
    let mut next: Option<Task> = None;
    loop {
        let task = match next.take() {
            Some(task) => task,
            None => match next_task(tasks, idle) {
                Some(task) => task,
                None => return,
            },
        };
        let started = std::time::Instant::now();
        let result = (task.work)();
        debug!(
            "conn {}: job {} done in {:?}",
            task.conn,
            task.name,
            started.elapsed()
        );
        if done
            .send(Finished {
                conn: task.conn,
                lane: task.lane,
                result,
            })
            .is_err()
        {
            return;
        }
        wake();
        // More work already queued? Take it without going idle. If another
        // worker holds the lock, it is waiting: the queue is empty.
        next = tasks.try_lock().ok().and_then(|rx| rx.try_recv().ok());
    }
}

/// Waits for a task. Work that comes back within [`IDLE_GRACE`] finds the
/// thread's caches (such as argon2's 19 MiB) still there; after a quiet
/// spell the thread runs `idle` and then waits as long as it takes.
/// `None`: the pool is gone.
///
/// The lock is held only while waiting (a poisoned lock cannot happen:
/// nothing panics while holding it; it would only end this worker). The
/// caches `idle` frees must be shared by the lane's threads, not one
/// thread's own: while one thread waits, the others wait for the lock.
fn next_task(tasks: &Mutex<Receiver<Task>>, idle: fn()) -> Option<Task> {
    match tasks.lock().ok()?.recv_timeout(IDLE_GRACE) {
        Ok(task) => return Some(task),
        Err(RecvTimeoutError::Disconnected) => return None,
        Err(RecvTimeoutError::Timeout) => {}
    }
    idle();
    tasks.lock().ok()?.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn results_come_back_with_their_connection_and_wake_the_loop() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let pool = Pool::start(
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
            Hooks::NONE,
        )
        .unwrap();
        for conn in 0..20 {
            let lane = if conn % 2 == 0 {
                Lane::Quick
            } else {
                Lane::Bulk
            };
            let work: Work = Box::new(move || Box::new(conn * 10));
            assert!(pool.submit(conn, "test", lane, work, false).is_ok());
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 20 && Instant::now() < deadline {
            for f in pool.finished() {
                let value = *f.result.downcast::<usize>().unwrap();
                got.push((f.conn, value));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        got.sort();
        assert_eq!(got, (0..20).map(|c| (c, c * 10)).collect::<Vec<_>>());
        assert!(wakes.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn a_worker_keeps_its_caches_between_jobs_and_frees_them_after_a_quiet_spell() {
        static IDLE: AtomicUsize = AtomicUsize::new(0);
        let pool = Pool::start(
            Arc::new(|| {}),
            Hooks {
                idle: || {
                    IDLE.fetch_add(1, Ordering::SeqCst);
                },
            },
        )
        .unwrap();
        let run_one = |conn| {
            let work: Work = Box::new(|| Box::new(()));
            assert!(pool.submit(conn, "test", Lane::Hash, work, false).is_ok());
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.finished().count() == 0 {
                assert!(Instant::now() < deadline, "job {conn} never came back");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Jobs well within the grace of each other (and of the start, for
        // the threads of the other lanes): no idle hook anywhere.
        for conn in 0..5 {
            run_one(conn);
            std::thread::sleep(IDLE_GRACE / 20);
        }
        assert_eq!(IDLE.load(Ordering::SeqCst), 0);
        // A quiet spell: the hook runs.
        let deadline = Instant::now() + IDLE_GRACE * 10;
        while IDLE.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the idle hook never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_full_lane_refuses_instead_of_growing() {
        let pool = Pool::start(Arc::new(|| {}), Hooks::NONE).unwrap();
        // Block both quick workers, then fill the queue.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        for _ in 0..THREADS_PER_LANE {
            let g = gate.clone();
            let work: Work = Box::new(move || {
                drop(g.lock());
                Box::new(())
            });
            pool.submit(0, "block", Lane::Quick, work, false)
                .ok()
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut refused = 0;
        for _ in 0..QUEUE_LIMIT + 10 {
            if pool
                .submit(0, "fill", Lane::Quick, Box::new(|| Box::new(())), false)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused >= 10, "refused {refused}");
        // The bulk lane is not affected by a full quick lane.
        assert!(
            pool.submit(1, "other", Lane::Bulk, Box::new(|| Box::new(())), false)
                .is_ok()
        );
        // The next step of a request under way is taken even when full.
        assert!(
            pool.submit(2, "next", Lane::Quick, Box::new(|| Box::new(())), true)
                .is_ok()
        );
        drop(held);
    }
}
