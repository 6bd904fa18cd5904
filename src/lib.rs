//! mod_shield: an Apache httpd 2.4 module that refuses abusive clients early.
//!
//! Layout (policy first, FFI last):
//! - [`config`]: directives, typed settings, validation and merging (plain Rust).
//! - [`client`]: who the client is (IPv4-mapped normalisation, IPv6 grouping, whitelist).
//! - [`store`]: the shared-memory tables (site, page, block areas); layout invariants live there.
//! - [`prefix`]: the wider networks a client belongs to (IPv6 /56 and /48, IPv4 /24).
//! - [`policy`]: the decisions: count a hit, refuse, start a block, apply penalties.
//! - [`stage`]: one request's counting life: what each event httpd shows owes (counted once).
//! - [`notify`]: what a block start tells the world: log line, block file, command, mail.
//! - [`challenge`]: `DOSChallenge`: the proof-of-work page, the nonce and the signed pass.
//! - [`spawn`]: starting those commands and mails without waiting, a few at once per process.
//! - [`farm`]: several servers counting as one through Redis or memcached, with local leases.
//! - [`remote`]: the farm engine's health, shared by every worker of a server.
//! - [`metrics`]: request counters in shared memory (totals and the last hour, per minute).
//! - [`pressure`]: the store's once-a-minute warning when a flood evicts live records.
//! - [`render`]: the status page (HTML, `?auto`, `?json`, `?metrics`).
//! - [`cli`]: shieldctl's command line (shared with shieldctl-gen: man page, completions).
//! - `ffi`: the only httpd-facing code: module symbol, directive table, hooks, handler.
//!
//! Everything but `ffi` is testable without httpd.

pub mod attack;
pub mod challenge;
pub mod cli;
pub mod client;
pub mod config;
pub mod farm;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod policy;
pub mod prefix;
pub mod pressure;
pub mod remote;
pub mod render;
pub mod spawn;
pub mod stage;
pub mod store;

mod ffi;
