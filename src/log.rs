//! What the policy has to say, without httpd: a level and a line. The FFI layer implements
//! [`Log`] on top of httpd's error log (with the request's `[client …]` prefix); tests
//! implement it on a vector.
#![forbid(unsafe_code)]

/// Error-log levels the module uses (httpd's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// Somewhere to write log lines.
pub trait Log {
    fn log(&self, level: Level, msg: &str);
}

/// Collects lines (for tests, and anyone who wants to look before logging).
#[derive(Debug, Default)]
pub struct Lines(pub std::cell::RefCell<Vec<(Level, String)>>);

impl Log for Lines {
    fn log(&self, level: Level, msg: &str) {
        self.0.borrow_mut().push((level, msg.to_owned()));
    }
}

impl Lines {
    pub fn take(&self) -> Vec<(Level, String)> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}
