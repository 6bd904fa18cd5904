//! Many identities, one attacker, against the real apache2 (mod_remoteip supplies the
//! addresses): prefixes that rotate through their /64s or addresses, and a challenge solver
//! that farms passes. The flood of one-shot clients against the store is `tests/flood.rs`, a
//! binary of its own: it runs alone.
//!
//! One module per attack family, so each can be read (and run) alone:
//! `cargo test --test identities prefixes::`.

mod common;

#[path = "identities/passes.rs"]
mod passes;
#[path = "identities/prefixes.rs"]
mod prefixes;
