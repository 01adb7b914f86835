//! Receiving an upload on the data connection: bytes are admitted by the
//! quota ([`Store::take`](super::store::Store::take)), collected, and
//! handed to a worker a batch at a time (the next batch is received while
//! a worker appends one, then the data connection waits); the end lands
//! the file; a break keeps the partial.
//!
//! ```text
//!   bytes ─▶ take (quota) ─▶ batch full / turn over ─▶ [bulk] append (+ MD5) ─▶ ...
//!   (spliced into a pipe: admitted by the quota before they move)
//!   EOF ─▶ [bulk] last batch, (MD5,) fsync, rename ─▶ CloseData ─▶ 226
//!   quota reached ─▶ [bulk] what fit ─▶ CloseData ─▶ 552 (partial kept)
//!   connection lost ─▶ 426 (partial kept)      disk full ─▶ [quick] delete partial ─▶ 452
//! ```

use log::info;

use super::session::{FtpSession, job};
use super::store;
use super::transfer::{Flow, Transfer};
use crate::ctx::Ctx;
use crate::pool::Lane;

impl FtpSession {
    /// The turn is over: received bytes go to a worker, unless they wait
    /// in a pipe that is not full yet (they cost no memory here, and each
    /// hand-off costs two wake-ups: a pipe goes when full, at the end of
    /// the upload, or when it breaks off).
    pub(super) fn flush_upload(&mut self, ctx: &mut Ctx) {
        if self.job_out() {
            return;
        }
        if let Transfer::Running(Flow::Receive(store)) = &self.data.transfer
            && store.has_pending()
            && !store.filling_pipe()
        {
            self.write_batch(ctx);
        }
    }

    /// Decides an upload's next step once no job is out.
    pub(super) fn settle_upload(&mut self, ctx: &mut Ctx) {
        if self.job_out() {
            return;
        }
        let Transfer::Running(Flow::Receive(store)) = &self.data.transfer else {
            return;
        };
        let kept = store.received();
        if self.data.lost && !self.data.eof {
            // Reset mid-upload: what arrived goes to disk and stays there
            // for a resume (unless writing failed: then `failed` says so).
            if store.has_pending() && store.failed.is_none() {
                self.write_batch(ctx);
                return;
            }
            self.set_transfer(Transfer::Idle);
            self.data.lost = false;
            self.reply(
                426,
                &format!("Data connection lost; transfer aborted. {kept} bytes are kept: REST {kept} + STOR resumes."),
            );
            self.transfer_over(ctx);
            return;
        }
        if let Some(e) = &store.failed {
            let text = format!("Writing failed: {e}; transfer aborted.");
            if crate::handlers::upload::disk_full(e) {
                self.discard_partial(452, text, ctx);
            } else {
                self.end_transfer(451, &text);
            }
            return;
        }
        if store.blocked() {
            let want = store.shortfall();
            self.discard_for_room(want, ctx);
            return;
        }
        // What arrived goes to disk before the upload stops or ends.
        if (store.over_quota || store.batch_full() || self.data.eof) && store.has_pending() {
            self.write_batch(ctx);
            return;
        }
        if store.over_quota {
            let text = format!(
                "Quota exceeded: {kept} bytes are kept; REST {kept} + STOR resumes once there is room."
            );
            self.end_transfer(552, &text);
            return;
        }
        if self.data.eof {
            self.finish_upload(ctx);
        }
    }

    /// Hands the received bytes to a worker to append (and hash, with
    /// `--ftp-hash-uploads`).
    pub(super) fn write_batch(&mut self, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(store)) = &mut self.data.transfer else {
            return;
        };
        let Some((mut disk, mut batch)) = store.take_batch() else {
            return;
        };
        let holds = batch.holds();
        let mut write = job(
            "write",
            Lane::Bulk,
            move || {
                let written = batch.write_to(&mut disk);
                (disk, batch, written)
            },
            |(disk, batch, written), s: &mut FtpSession, _ctx| {
                if let Transfer::Running(Flow::Receive(store)) = &mut s.data.transfer {
                    store.put_back(disk, batch, written);
                }
            },
        );
        write.holds = holds;
        self.start_job(write, ctx);
    }

    /// The client closed the data connection after the last byte: land
    /// the file, then `226`.
    fn finish_upload(&mut self, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(mut store)) = self.set_transfer(Transfer::Finishing)
        else {
            return;
        };
        let Some(batch) = store.take_batch() else {
            self.set_transfer(Transfer::Idle);
            self.reply(451, "The upload lost its file.");
            return;
        };
        let (home, partial, name) = store.dirs();
        let path = store.path.clone();
        let finish = job(
            "stor-finish",
            Lane::Bulk,
            move || store::finish(batch, &home, &partial, &name, &path),
            move |finished, s: &mut FtpSession, ctx| {
                let store::Finished { disk, result } = finished;
                let length = disk.written;
                let mut store = store;
                store.put_back(disk, store::Received::default(), Ok(()));
                s.data.lost = false;
                match result {
                    Ok((digest, replaced, key)) => {
                        store.landed(replaced, length);
                        if let Some(digest) = digest {
                            ctx.services.digests.remember(key, digest);
                            info!(
                                "ftp {}: stored {} ({length} bytes, md5 {})",
                                s.key,
                                store.path,
                                crate::services::digests::hex(&digest)
                            );
                        } else {
                            info!("ftp {}: stored {} ({length} bytes)", s.key, store.path);
                        }
                        drop(store);
                        s.end_transfer(226, "Transfer complete.");
                    }
                    Err(e) => {
                        store.failed = Some(e);
                        s.set_transfer(Transfer::Running(Flow::Receive(store)));
                        s.data.eof = true;
                        s.settle_upload(ctx);
                    }
                }
            },
        );
        self.start_job(finish, ctx);
    }

    /// A full disk: the partial goes (keeping it would keep the disk full
    /// for everyone), then this reply.
    fn discard_partial(&mut self, code: u16, text: String, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(mut store)) = self.set_transfer(Transfer::Finishing)
        else {
            return;
        };
        store.discarded();
        let (_, partial, name) = store.dirs();
        let gone = job(
            "discard",
            Lane::Quick,
            move || partial.remove_file(&name),
            move |_removed, s: &mut FtpSession, _ctx| {
                drop(store);
                s.end_transfer(
                    code,
                    &format!("{text} The partial upload was discarded to give the space back."),
                );
            },
        );
        self.start_job(gone, ctx);
    }

    /// Discards parked partials of other uploads (oldest first) for the
    /// chunk held back, then takes it again.
    fn discard_for_room(&mut self, want: u64, ctx: &mut Ctx) {
        let Transfer::Running(Flow::Receive(store)) = &self.data.transfer else {
            return;
        };
        let account = store.account();
        self.discard_parked(&account, want, ctx, |freed, s, _ctx| {
            if let Transfer::Running(Flow::Receive(store)) = &mut s.data.transfer {
                store.unblock(freed);
            }
        });
    }
}
