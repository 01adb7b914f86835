//! Ctrl-C while something long runs: the first SIGINT runs an action of
//! our choosing (cancel a remote command, abort a transfer) instead of
//! killing skiff; a second one, or any while nothing is armed, takes the
//! default action, so Ctrl-C keeps working as before everywhere else.
//!
//! SIGINT is handled by `signal-hook` (installed once, on first use): a
//! thread waits for the signal with no unsafe code of ours, and its
//! conditional default keeps Ctrl-C's usual effect while disarmed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

/// What the first Ctrl-C does while armed.
type Action = Box<dyn FnOnce() + Send>;

/// The process's SIGINT handling.
struct Interrupts {
    /// True when Ctrl-C should act as if we had no handler: nothing is
    /// armed, or the armed action already ran.
    default: Arc<AtomicBool>,
    /// The armed action; taken by the first Ctrl-C.
    action: Arc<Mutex<Option<Action>>>,
}

/// The process's [`Interrupts`]; `None` if they could not be installed
/// (then Ctrl-C simply kills skiff, which loses nothing on the server:
/// a command is ended and a partial upload kept when the connection drops).
fn interrupts() -> Option<&'static Interrupts> {
    static CELL: OnceLock<Option<Interrupts>> = OnceLock::new();
    CELL.get_or_init(|| {
        use signal_hook::consts::SIGINT;
        let default = Arc::new(AtomicBool::new(true));
        let action: Arc<Mutex<Option<Action>>> = Arc::default();
        // Order matters: the default action must be registered first, so
        // a disarmed Ctrl-C ends us before the iterator sees it.
        signal_hook::flag::register_conditional_default(SIGINT, Arc::clone(&default)).ok()?;
        let mut signals = signal_hook::iterator::Signals::new([SIGINT]).ok()?;
        let (flag, slot) = (Arc::clone(&default), Arc::clone(&action));
        thread::Builder::new()
            .name("sigint".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let armed = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(run) = armed {
                        // The next Ctrl-C is not ours to soften.
                        flag.store(true, Ordering::SeqCst);
                        run();
                    }
                }
            })
            .ok()?;
        Some(Interrupts { default, action })
    })
    .as_ref()
}

/// While alive, the first Ctrl-C runs the action given to [`OnInterrupt::arm`].
pub struct OnInterrupt(Option<&'static Interrupts>);

impl OnInterrupt {
    /// Arms `action` until the guard is dropped.
    pub fn arm(action: impl FnOnce() + Send + 'static) -> OnInterrupt {
        let ints = interrupts();
        if let Some(i) = ints {
            *i.action.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(action));
            i.default.store(false, Ordering::SeqCst);
        }
        OnInterrupt(ints)
    }
}

impl Drop for OnInterrupt {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            i.default.store(true, Ordering::SeqCst);
            i.action.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}
