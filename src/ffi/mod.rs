//! The httpd-facing layer: everything that touches `apache-sys` lives under here, and it
//! only translates between httpd's structures and the plain-Rust policy modules.
//!
//! - `module`: the exported `shield_module` record and hook registration.
//! - `directives`: the `command_rec` table built from `config::DIRECTIVES`.
//! - `server`: per-server and per-directory config objects in httpd's pools.
//! - `lifecycle`: pre_config / post_config / child_init; the shared store across restarts.
//! - `retained`: the shared mappings the parent keeps across passes (one owner at a time).
//! - `req`: `Req<'r>`, the request of a hook behind safe methods (the one unsafe step).
//! - `hooks`: post_read_request, fixups, map_to_storage (TRACE), insert_filter (quick-handler
//!   answers), insert_error_filter, log_transaction.
//! - `quick`: the filter that refuses an answer mod_cache's quick handler is serving.
//! - `challenge`: `DOSChallenge` in post_read_request (pass, page, submitted solutions).
//! - `scoreboard`: the busy share of httpd's workers, for `DOSUnderAttackThreshold`.
//! - `farm`: `DOSCache redis:…` / `memcache:…`: this server's client of the farm.
//! - `handler`: `SetHandler shield-handler` (the status page).
//! - `metrics`: the request counters' mapping across restarts.
//! - `log`, `guard`: logging into the error log, and the panic barrier around every entry.

mod challenge;
mod directives;
mod farm;
mod guard;
mod handler;
mod hooks;
mod lifecycle;
mod log;
mod metrics;
mod module;
mod quick;
mod req;
mod retained;
mod scoreboard;
mod server;
