//! The panic barrier. A panic must never unwind into httpd (Rust aborts the whole child when it
//! tries), so every `extern "C"` entry runs its body through [`guard`], which catches the panic,
//! logs it and returns the entry's fail-open value (DECLINED for request hooks).
#![forbid(unsafe_code)]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use super::log;

/// Run `body`; on panic log `what` and return `fallback`.
pub fn guard<R>(what: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::global(
                log::Level::Err,
                &format!("internal error in {what}: {msg}; request passed unchanged (fail open)"),
            );
            fallback
        }
    }
}

/// Replace the default panic hook (which prints to stderr without timestamp or pid) once per
/// process: the message is logged by [`guard`] instead.
pub fn quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}
