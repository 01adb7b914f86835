//! The reactor's side of the worker pool: jobs the state machines asked
//! for go to the pool; finished jobs' results go back to the connections
//! that wait for them (see `skiffd_core::pool`).

use std::time::Instant;

use super::client::Env;
use super::{Reactor, Source};
use crate::ctx::Ctx;
use crate::ctx::Submission;
use crate::engine::Engine;

impl Reactor {
    /// Hands the jobs the state machines asked for to the pool; a job the
    /// pool refuses (its queue is full) is answered `too_busy`.
    pub(super) fn submit_jobs(&mut self) {
        while let Some(job) = self.jobs.pop() {
            let Submission {
                conn,
                name,
                lane,
                work,
                must_run,
            } = job;
            if self.pool.submit(conn, name, lane, work, must_run).is_err() {
                self.with_engine(conn, self.now, |e, ctx| e.handle_job_refused(ctx));
                if let Some(client) = self.clients.get_mut(conn)
                    && !client.queued
                {
                    client.queued = true;
                    self.ready.push_back(Source::Client(conn));
                }
            }
        }
    }

    /// Results of finished jobs go to the connections that wait for them,
    /// which then get a turn (to write the reply, to take the next request).
    pub(super) fn on_jobs_done(&mut self) {
        let finished: Vec<_> = self.pool.finished().collect();
        let now = self.now;
        for done in finished {
            // The client is there: one waiting for a job is never removed.
            self.with_engine(done.conn, now, |e, ctx| e.handle_job_done(done.result, ctx));
            self.drive(done.conn);
        }
    }

    /// Runs `f` on client `k`'s state machine, with the context borrowed
    /// from the reactor; nothing if there is no such client.
    pub(super) fn with_engine(
        &mut self,
        k: usize,
        now: Instant,
        f: impl FnOnce(&mut dyn Engine, &mut Ctx),
    ) {
        let Some(client) = self.clients.get_mut(k) else {
            return;
        };
        let mut env = Env {
            limits: &self.config.limits,
            stats: &mut self.stats,
            services: &mut self.services,
            actions: &mut self.actions,
            jobs: &mut self.jobs,
            children: &self.children,
            splice_works: &mut self.splice_works,
        };
        f(client.protocol.engine_mut(), &mut env.ctx(now));
    }
}
