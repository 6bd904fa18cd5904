//! Raw bindings to the installed httpd 2.4 and APR headers (allowlisted, see build.rs). No logic
//! lives here.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
