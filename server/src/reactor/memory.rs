//! The server-wide buffer budget: evicting the connections that hold the
//! most when all together pass `--out-total`, and giving freed heap memory
//! back to the kernel after a burst.

use std::collections::BinaryHeap;
use std::time::Instant;

use log::info;

use super::Reactor;

/// Free heap memory is given back to the kernel (`malloc_trim`) once the
/// server's buffers have fallen this far below their peak since the last
/// time: rarely, and only after a burst worth giving back.
const TRIM_AFTER_FALL: usize = 16 << 20;

impl Reactor {
    /// The hard bound on client buffers: while all connections together
    /// hold more than `--out-total`, the ones holding the most are closed
    /// without flushing (Redis's `maxmemory-clients` does the same). Below
    /// half of it nothing happens; in between, connections pause early
    /// (see `water_marks` in `skiffd_core::conn`) and `say` is refused, which is logged as
    /// it starts and ends.
    pub(super) fn evict_over_budget(&mut self) {
        let limit = self.config.limits.out_total;
        // The peak before evictions: their memory is freed too.
        self.buffered_peak = self.buffered_peak.max(self.stats.buffered_total());
        let pressure = self
            .config
            .limits
            .under_pressure(self.stats.buffered_total());
        if pressure != self.stats.pressure {
            self.stats.pressure = pressure;
            info!(
                "buffer pressure {}: connections hold {} bytes (budget {limit}); they pause at {}",
                if pressure { "on" } else { "off" },
                self.stats.buffered_total(),
                if pressure {
                    "16 KiB"
                } else {
                    "their high-water mark"
                }
            );
        }
        if self.stats.buffered_total() <= limit {
            return;
        }
        // Usually a few connections must go, out of many: a heap built in
        // linear time and popped a few times, rather than a sort of all.
        let mut holders: BinaryHeap<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.broken.is_none() && c.buffered > 0)
            .map(|(k, c)| (c.buffered, k))
            .collect();
        while let Some((held, k)) = holders.pop() {
            if self.stats.buffered_total() <= limit {
                break;
            }
            info!(
                "conn {k}: closed: connections hold {} buffer bytes, over --out-total {limit}; it held {held}",
                self.stats.buffered_total()
            );
            let client = &mut self.clients[k];
            client.fail("over the server's buffer budget".into());
            self.stats.buffered -= held;
            client.buffered = 0;
            self.stats.evicted += 1;
            self.to_close.push(k);
        }
    }

    /// glibc keeps freed memory on its heap for reuse, and gives back to
    /// the kernel only what lies at the top of it: after a burst, the
    /// buffers of many closed connections would stay resident for good.
    /// So once buffers have fallen [`TRIM_AFTER_FALL`] below their peak,
    /// and to half of it, free heap pages are returned (`malloc_trim`).
    /// Each call needs another rise and fall of that size, so it runs
    /// rarely; it costs a walk over the heap's free blocks.
    pub(super) fn give_back_memory(&mut self) {
        let held = self.stats.buffered_total();
        if self.buffered_peak - held < TRIM_AFTER_FALL || held > self.buffered_peak / 2 {
            return;
        }
        let started = Instant::now();
        crate::sys::release_free_heap();
        info!(
            "buffers fell from {} to {held} bytes: free heap memory given back in {:?} (RSS now {} bytes)",
            self.buffered_peak,
            started.elapsed(),
            skiff::os::rss_bytes()
        );
        self.buffered_peak = held;
    }
}
