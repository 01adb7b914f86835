//! The output buffer every connection owns: bytes waiting for the socket.
//!
//! It holds nothing while a connection is idle (the allocation is dropped
//! as soon as the last byte is written), so a hundred thousand quiet
//! clients cost no buffer memory at all.

/// What a buffer starts with when a connection first has output.
const FIRST_CAPACITY: usize = 512;

/// Bytes queued for a socket, written from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Queued bytes; `bytes[start..]` are still to be written.
    bytes: Vec<u8>,
    /// How many leading bytes of `bytes` are already written.
    start: usize,
}

impl From<Vec<u8>> for OutBuf {
    fn from(bytes: Vec<u8>) -> OutBuf {
        OutBuf { bytes, start: 0 }
    }
}

impl OutBuf {
    /// Bytes still to be written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to hand to `write`.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Marks `n` bytes as written; frees the allocation once all are.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.bytes.len());
        if self.start == self.bytes.len() {
            self.bytes = Vec::new();
            self.start = 0;
        }
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
            self.start = 0;
        }
        &mut self.bytes
    }

    /// Bytes of memory held (for the server's buffer budget).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
