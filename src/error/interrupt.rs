//! The stop request: one process-wide cell holding the number of the signal that asked the run to
//! stop (0: none). The library never installs a signal handler — the command line (`main.rs`)
//! points SIGINT and SIGTERM at [`flag`], and an embedding (the Python package) may call
//! [`request`] from its own handling. Long loops (stream batches, generator bands, training steps,
//! fine-tuning and PINN evaluations) and every atomic commit call [`check`], which turns a request
//! into [`Error::Interrupted`]; that error unwinds the stack, and each unfinished
//! [`AtomicFile`](crate::io::atomic::AtomicFile) removes its temporary file as it is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// SIGINT and SIGTERM, as POSIX and Windows' C runtime number them.
pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

static STOP: AtomicUsize = AtomicUsize::new(0);

/// The cell a signal handler stores the signal's number into (async-signal-safe: a plain
/// atomic store).
pub fn flag() -> &'static AtomicUsize {
    &STOP
}

/// Ask the running work to stop at its next check, as if `signal` had arrived.
pub fn request(signal: i32) {
    STOP.store(signal.max(1) as usize, Ordering::SeqCst);
}

/// Forget a request (an embedding that caught one and goes on).
pub fn clear() {
    STOP.store(0, Ordering::SeqCst);
}

/// `Err(Error::Interrupted)` once a stop was requested.
pub fn check() -> Result<()> {
    check_cell(&STOP)
}

fn check_cell(cell: &AtomicUsize) -> Result<()> {
    match cell.load(Ordering::Relaxed) {
        0 => Ok(()),
        signal => Err(Error::Interrupted { signal: i32::try_from(signal).unwrap_or(i32::MAX) }),
    }
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".into(),
        SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_signal_becomes_the_interrupted_error_with_its_exit_code() {
        // A cell of its own: the process-wide one is shared by every test running in parallel.
        let cell = AtomicUsize::new(0);
        assert!(check_cell(&cell).is_ok());
        for (signal, code, name) in [(SIGINT, 130, "SIGINT"), (SIGTERM, 143, "SIGTERM")] {
            cell.store(signal as usize, Ordering::SeqCst);
            let e = check_cell(&cell).unwrap_err();
            assert!(matches!(e, Error::Interrupted { signal: s } if s == signal), "{e:?}");
            assert_eq!(e.exit_code(), code);
            assert!(e.to_string().starts_with(&format!("interrupted by {name}")), "{e}");
        }
        assert_eq!(Error::Invalid("x".into()).exit_code(), 2);
    }
}
