//! `DOSCache redis:…` / `memcache:…`: this server's client of the farm (`crate::farm`), made
//! in post_config by the parent (no thread, no connection), started in child_init by every
//! worker process after the fork (its connections and background threads are its own).
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::farm::{self, Event, Farm, FarmSpec};
use crate::log::Level;
use crate::policy::{Request, Shared, Started};
use crate::remote::Health;
use crate::store::{BlockInfo, Counter};

use super::lifecycle::{now, store};

static FARM: AtomicPtr<Farm> = AtomicPtr::new(std::ptr::null_mut());

/// The farm of this generation, if `DOSCache` names an engine.
pub fn farm() -> Option<&'static Farm> {
    // SAFETY: null or a leaked Box set by the parent in post_config before the workers fork,
    // never freed (a later generation's replaces it, the old one stays valid).
    unsafe { FARM.load(Ordering::Acquire).as_ref() }
}

/// The farm as the decisions take it.
pub fn shared() -> Option<&'static dyn Shared> {
    farm().map(|f| f as &dyn Shared)
}

/// post_config (parent): the farm of this configuration, or none.
pub fn configure(spec: Option<&FarmSpec>, health: &'static Health) {
    let new = spec.map_or(std::ptr::null_mut(), |spec| {
        Box::into_raw(Box::new(Farm::new(
            spec.clone(),
            health,
            origin(),
            super::log::global,
        )))
    });
    // The previous generation's farm is left allocated: nothing in the parent uses it, and a
    // worker of that generation still running has its own copy of the pointer.
    FARM.store(new, Ordering::Release);
}

/// A server's id in its events: random per configuration of the parent, shared by its workers.
fn origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// child_init: connect and listen, in this worker process's own threads.
pub fn child_init() {
    let Some(f) = farm() else {
        return;
    };
    if let Err(e) = f.start(Box::new(apply)) {
        super::log::global(
            Level::Err,
            &format!(
                "DOSCache {}: cannot start the farm's threads ({e}): this process counts alone",
                f.spec().label
            ),
        );
    }
}

/// An event from another server: its block (or unblock) into this server's store.
fn apply(ev: Event) {
    let Some(store) = store() else {
        return;
    };
    let now = now();
    match ev.op {
        farm::event::Op::Block => {
            let info = BlockInfo {
                // An event of another release with a rule this one does not know: a site block.
                rule: Counter::from_name(&ev.rule).unwrap_or(Counter::Site),
                score: ev.score,
                count: ev.count,
                interval: ev.interval,
                host: &ev.host,
                uri: &ev.uri,
            };
            let _ = store.adopt_block(
                ev.addr,
                ev.prefix,
                &info,
                (ev.started, ev.until),
                ev.generation,
                ev.memory_secs,
                now,
            );
        }
        farm::event::Op::Unblock => {
            let _ = store.end_block_net(ev.addr, ev.prefix, now, ev.forget);
        }
    }
}

/// A block this request started: into the engine, with the crossed counter restarted there,
/// and announced to every server of the farm.
pub fn announce_block(
    server: &crate::config::ServerSettings,
    request: &Request,
    started: &Started,
) {
    let Some(f) = farm() else {
        return;
    };
    let b = &started.block;
    let ev = Event {
        op: farm::event::Op::Block,
        addr: b.client,
        prefix: b.prefix,
        started: b.started,
        until: b.until,
        generation: b.generation,
        rule: b.rule.as_str().to_string(),
        count: b.count,
        interval: b.interval,
        score: b.score,
        host: b.host.clone(),
        uri: b.uri.clone(),
        memory_secs: server.block_memory_secs(),
        forget: false,
        origin: 0,
    };
    // The crossed counter: the client's, or the network's site count (under its name).
    let reset = if b.prefix == 0 {
        let name = farm::client_name(request.client, 0);
        vec![farm::counter_key(&name, b.rule, request.host, request.path)]
    } else {
        let name = farm::client_name(b.client, b.prefix);
        vec![farm::counter_key(&name, Counter::Site, request.host, "")]
    };
    f.announce(&ev, &reset);
}
