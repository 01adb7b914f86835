//! The output buffer every connection owns: bytes waiting for the socket.
//!
//! It holds nothing while a connection is idle (the allocation is dropped
//! as soon as the last byte is written), so a hundred thousand quiet
//! clients cost no buffer memory at all.
//!
//! Besides its own bytes it can hold [`SharedFrame`]s: a `msg` frame that
//! a `say` to everyone sends to a thousand connections is built once and
//! written to each socket from that one copy. The buffer keeps a
//! reference and the place in its byte stream where the frame belongs.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

/// What a buffer starts with when a connection first has output.
const FIRST_CAPACITY: usize = 512;

/// A whole frame written to many connections from one copy. It counts in
/// the server's buffer budget once, through a counter shared by all such
/// frames, for as long as any connection still holds it.
#[derive(Debug)]
pub struct SharedFrame {
    bytes: Box<[u8]>,
    counter: Rc<Cell<usize>>,
}

impl SharedFrame {
    /// Wraps `bytes` and adds their size to `counter` until the last
    /// reference is dropped.
    pub fn new(bytes: Vec<u8>, counter: &Rc<Cell<usize>>) -> Rc<SharedFrame> {
        let bytes = bytes.into_boxed_slice();
        counter.set(counter.get() + bytes.len());
        Rc::new(SharedFrame {
            bytes,
            counter: Rc::clone(counter),
        })
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a real frame (it has at least a header).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        self.counter.set(self.counter.get() - self.bytes.len());
    }
}

/// A shared frame's place in the output.
#[derive(Debug)]
struct SharedPart {
    /// It goes out right before owned byte number `at` of the stream
    /// (see [`SharedParts::dropped`]).
    at: u64,
    frame: Rc<SharedFrame>,
    /// Bytes of the frame already written.
    sent: usize,
}

/// The shared frames in an output, boxed: most connections never have
/// one, and every connection pays for the fields of [`OutBuf`].
#[derive(Debug, Default)]
struct SharedParts {
    /// Frames not completely written, in order.
    parts: VecDeque<SharedPart>,
    /// Their bytes still to be written.
    len: usize,
    /// Owned bytes written and dropped from the front of the buffer since
    /// the first part was queued: `bytes[i]` is owned byte number
    /// `dropped + i`. Parts are placed by this numbering, so dropping
    /// written bytes never moves them.
    dropped: u64,
}

/// Bytes queued for a socket, written from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Queued bytes; `bytes[start..]` are still to be written.
    bytes: Vec<u8>,
    /// How many leading bytes of `bytes` are already written.
    start: usize,
    /// Shared frames among the queued bytes, if any.
    shared: Option<Box<SharedParts>>,
}

impl From<Vec<u8>> for OutBuf {
    fn from(bytes: Vec<u8>) -> OutBuf {
        OutBuf {
            bytes,
            ..OutBuf::default()
        }
    }
}

impl OutBuf {
    /// Bytes still to be written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start + self.shared.as_ref().map_or(0, |s| s.len)
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a shared frame is queued: then [`OutBuf::pending`] is only
    /// the first part of the output, not all of it.
    pub fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The next bytes to hand to `write`: the owned bytes up to the next
    /// shared frame, or the rest of that frame. With no shared frame
    /// queued, everything that waits.
    pub fn pending(&self) -> &[u8] {
        let Some(shared) = &self.shared else {
            return &self.bytes[self.start..];
        };
        let part = &shared.parts[0];
        if part.at == shared.dropped + self.start as u64 {
            &part.frame.bytes()[part.sent..]
        } else {
            &self.bytes[self.start..(part.at - shared.dropped) as usize]
        }
    }

    /// Marks `n` bytes of [`OutBuf::pending`] as written; frees the
    /// allocation once all owned bytes are.
    pub fn consume(&mut self, n: usize) {
        match &mut self.shared {
            Some(shared) if shared.parts[0].at == shared.dropped + self.start as u64 => {
                let part = &mut shared.parts[0];
                part.sent += n;
                shared.len -= n;
                debug_assert!(part.sent <= part.frame.len());
                if part.sent == part.frame.len() {
                    shared.parts.pop_front();
                    if shared.parts.is_empty() {
                        self.shared = None;
                    }
                }
            }
            _ => self.start += n,
        }
        debug_assert!(self.start <= self.bytes.len());
        if self.start == self.bytes.len() && self.bytes.capacity() > 0 {
            self.drop_written(self.bytes.len());
            self.bytes = Vec::new();
        }
    }

    /// Marks `n` bytes written, as [`OutBuf::consume`] does; when that
    /// empties the buffer, hands its allocation back (emptied) instead of
    /// freeing it, for a caller that refills it at once: a file copied
    /// through the buffer reuses one allocation for every buffer-full
    /// rather than mapping fresh pages (and faulting them in) each time.
    pub fn consume_and_reclaim(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.shared.is_none() && self.start + n >= self.bytes.len() && self.bytes.capacity() > 0
        {
            let mut bytes = std::mem::take(&mut self.bytes);
            bytes.clear();
            self.start = 0;
            return Some(bytes);
        }
        self.consume(n);
        None
    }

    /// Notes that the first `n` bytes of `bytes` (all written) are about
    /// to be removed.
    fn drop_written(&mut self, n: usize) {
        if let Some(shared) = &mut self.shared {
            shared.dropped += n as u64;
        }
        self.start -= n;
    }

    /// The vector to append new output to. Written bytes at the front are
    /// dropped first when they are the larger part, so appending never
    /// grows the buffer past twice what is actually pending.
    pub fn writer(&mut self) -> &mut Vec<u8> {
        if self.bytes.capacity() == 0 {
            // One allocation that fits a typical reply, instead of a
            // malloc and a few reallocs as it grows from nothing.
            self.bytes.reserve(FIRST_CAPACITY);
        }
        if self.start > 0 && self.start >= self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            self.drop_written(self.start);
        }
        &mut self.bytes
    }

    /// Queues `frame` after everything queued so far, without copying it.
    pub fn push_shared(&mut self, frame: Rc<SharedFrame>) {
        let shared = self.shared.get_or_insert_default();
        shared.len += frame.len();
        shared.parts.push_back(SharedPart {
            at: shared.dropped + self.bytes.len() as u64,
            frame,
            sent: 0,
        });
    }

    /// Bytes of memory this buffer alone holds (for the server's budget):
    /// its own bytes and its references to shared frames, whose bytes
    /// are counted once for all holders.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
            + self.shared.as_ref().map_or(0, |s| {
                std::mem::size_of::<SharedParts>()
                    + s.parts.capacity() * std::mem::size_of::<SharedPart>()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_back_the_allocation_when_drained_if_asked() {
        let mut b = OutBuf::from(vec![1u8; 1000]);
        assert_eq!(b.consume_and_reclaim(400), None);
        assert_eq!(b.pending().len(), 600);
        let spare = b.consume_and_reclaim(600).expect("drained");
        assert!(spare.is_empty() && spare.capacity() >= 1000);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 0);
    }

    #[test]
    fn frees_memory_when_drained() {
        let mut b = OutBuf::default();
        b.writer().extend_from_slice(b"hello world");
        b.consume(6);
        assert_eq!(b.pending(), b"world");
        b.writer().extend_from_slice(b"!");
        assert_eq!(b.pending(), b"world!");
        b.consume(6);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 0);
    }

    /// Writes everything in `n`-byte steps, as a socket taking `n` at a time.
    fn drain(b: &mut OutBuf, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while !b.is_empty() {
            let part = b.pending();
            let take = part.len().min(n);
            assert!(take > 0, "pending is empty while {} bytes wait", b.len());
            got.extend_from_slice(&part[..take]);
            b.consume(take);
        }
        got
    }

    #[test]
    fn shared_frames_keep_their_place_and_count_once() {
        let counter = Rc::new(Cell::new(0));
        let frame = SharedFrame::new(b"<shared>".to_vec(), &counter);
        assert_eq!(counter.get(), 8);
        for step in [1, 3, 5, 100] {
            let mut a = OutBuf::default();
            let mut b = OutBuf::default();
            a.writer().extend_from_slice(b"one ");
            a.push_shared(Rc::clone(&frame));
            a.writer().extend_from_slice(b" two ");
            b.push_shared(Rc::clone(&frame));
            a.push_shared(Rc::clone(&frame));
            // Appending after a partial write may drop written bytes.
            a.consume(2);
            a.writer().extend_from_slice(b" three");
            let mut got = b"on".to_vec();
            got.extend(drain(&mut a, step));
            assert_eq!(got, b"one <shared> two <shared> three");
            assert_eq!(drain(&mut b, step), b"<shared>");
            assert_eq!(a.capacity() + b.capacity(), 0);
        }
        assert_eq!(counter.get(), 8);
        drop(frame);
        assert_eq!(counter.get(), 0);
    }
}
