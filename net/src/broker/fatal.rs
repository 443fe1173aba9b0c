//! Fail fast: a panic on a broker thread (a shard, the control thread, the admin
//! endpoint, the stall watchdog) ends the whole process.
//!
//! A broker that lost a thread is half alive: a dead shard's connections are never
//! answered while the process keeps its port open, and a service manager sees nothing
//! wrong. So the process-wide panic hook logs one ERROR line naming the thread and the
//! panic and exits with [`PANIC_EXIT_CODE`] before anything unwinds (glommio would
//! otherwise unwind the executor, or a task's `JoinHandle` would swallow it); the service
//! manager restarts the broker and recovery keeps everything acknowledged.
//!
//! Invariant: the hook exits only for threads marked with [`mark_broker_thread`] (or for
//! every thread with [`PanicScope::Process`], which `sluice serve` asks for); in a test
//! binary that runs brokers in process, a failing assertion on a test thread still
//! reports as a test failure.

use std::cell::Cell;
use std::sync::Once;

/// Exit status after a panic (EX_SOFTWARE: an internal software error).
pub const PANIC_EXIT_CODE: i32 = 70;

/// Which panics end the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicScope {
    /// A panic on any thread (the `sluice` binary: every thread is the broker's).
    Process,
    /// Panics on threads marked with [`mark_broker_thread`] only (in-process brokers
    /// in tests).
    BrokerThreads,
}

thread_local! {
    static BROKER_THREAD: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();
static PROCESS_WIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the calling thread as one of the broker's: a panic on it ends the process.
pub fn mark_broker_thread() {
    BROKER_THREAD.with(|b| b.set(true));
}

/// Installs the panic hook (once per process; a later call may widen the scope to the
/// whole process, never narrow it).
pub fn install_panic_exit(scope: PanicScope) {
    if scope == PanicScope::Process {
        PROCESS_WIDE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = PROCESS_WIDE.load(std::sync::atomic::Ordering::SeqCst)
                || BROKER_THREAD.with(|b| b.get());
            if !ours {
                previous(info);
                return;
            }
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            let message = panic_message(info.payload());
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if tracing::dispatcher::has_been_set() {
                tracing::error!(thread = name, panic = %message, at = %at, "a broker thread panicked: exiting");
            } else {
                eprintln!(
                    "ERROR a broker thread panicked: exiting thread={name} panic={message} at={at}"
                );
            }
            // No unwinding, no destructors: the state of the other threads is unknown,
            // and recovery at the next start is what keeps acknowledged data.
            std::process::exit(PANIC_EXIT_CODE);
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u8), "(a non-string panic payload)");
    }
}
