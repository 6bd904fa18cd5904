//! mod_shield: an Apache httpd 2.4 module that refuses abusive clients early.
//!
//! Layout (policy first, FFI last):
//! - [`config`]: directives, typed settings, validation and merging (plain Rust).
//! - [`client`]: who the client is (IPv4-mapped normalisation, IPv6 grouping, whitelist).
//! - [`store`]: the shared-memory tables (site, page, block areas); layout invariants live there.
//! - [`policy`]: the decisions: count a hit, refuse, start a block, apply penalties.
//! - [`block`]: what a block start does outside the tables: block file, command, mail, headers.
//! - [`spawn`]: starting those commands and mails without waiting, a few at once per process.
//! - [`remote`]: the record several servers share through a socache provider (memcache, redis).
//! - [`render`]: the status page (HTML, `?auto`, `?json`).
//! - `ffi`: the only httpd-facing code: module symbol, directive table, hooks, handler.
//!
//! Everything but `ffi` is testable without httpd.

pub mod block;
pub mod client;
pub mod config;
pub mod keys;
pub mod monitor;
pub mod policy;
pub mod remote;
pub mod render;
pub mod spawn;
pub mod store;

mod ffi;
