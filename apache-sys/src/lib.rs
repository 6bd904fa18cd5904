//! Raw bindings to the installed httpd 2.4 and APR headers (allowlisted, see build.rs),
//! plus the few macros of those headers re-done as functions. No logic lives here.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// `apr_time_sec` (a macro): microseconds to whole seconds.
pub const fn apr_time_sec(t: apr_time_t) -> i64 {
    t / 1_000_000
}
