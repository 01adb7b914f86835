//! The budget of TLS handshake work per turn.
//!
//! Every other step of a connection costs about what its bytes cost, and
//! the read and write budgets bound those. A TLS handshake does not: the
//! step that takes a ClientHello signs the handshake with the
//! certificate's key and computes a key exchange, about half a
//! millisecond of the loop's CPU for a few hundred bytes read. A thousand
//! clients that connect at once would hold one turn for half a second, and
//! every other client with it.
//!
//! So a turn advances at most [`HANDSHAKES_PER_TURN`] handshakes. A TLS
//! client that is still handshaking takes one step from the turn's budget
//! before its socket is read (any read while handshaking counts: which
//! read is the expensive one is for rustls to know, and the cheap ones are
//! few). With the budget spent, the client is not read: its bytes stay in
//! the kernel's receive queue, it keeps its `readable` flag (no event is
//! needed to come back to it), and it joins the handshake queue. Each turn
//! serves that queue first, oldest first, before the new batch of events,
//! and the loop does not sleep while the queue is not empty.
//!
//! An FTP data connection under `PROT P` handshakes too, and takes its
//! steps from the same budget (`reactor/ftp.rs`, `read`): without one it
//! is not read, and its control connection's client joins the queue.
//!
//! Why not the signature on a worker thread: rustls 0.23 signs inside
//! `process_new_packets`, through a synchronous `Signer`, and has no way to
//! suspend a handshake until a signature comes back. Moving the whole
//! `ServerConnection` to a worker for that step would hand connection state
//! to another thread, which the loop's design rules out.

use super::{HANDSHAKES_PER_TURN, Reactor};

/// Whether a client whose TLS session is handshaking may be read in this
/// turn: takes one step from the turn's `left` if there is one. A client
/// that may not is queued by its caller (`drive_client`).
pub(super) fn take_step(left: &mut usize) -> bool {
    if *left == 0 {
        return false;
    }
    *left -= 1;
    true
}

impl Reactor {
    /// Gives the clients that waited for a handshake step their turn,
    /// oldest first, while this turn's budget lasts. Entries for clients
    /// that have gone (or were served since) are skipped.
    pub(super) fn serve_handshake_queue(&mut self) {
        debug_assert!(self.handshakes_left <= HANDSHAKES_PER_TURN);
        while self.handshakes_left > 0 {
            let Some(k) = self.handshake_queue.pop_front() else {
                break;
            };
            let Some(client) = self.clients.get_mut(k) else {
                continue;
            };
            if !client.awaits_handshake {
                continue;
            }
            client.awaits_handshake = false;
            self.drive(k);
        }
    }
}
