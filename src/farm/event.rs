//! What servers tell each other through the engine: a block started, a block lifted. Encoded as
//! JSON; what comes back from the engine is untrusted and checked when decoded.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Block,
    Unblock,
}

/// One event of the farm: a block (with what the status page shows of it), or an unblock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub op: Op,
    /// The client, or the network's address.
    pub addr: IpAddr,
    /// 0 for a client, else the network's prefix length.
    #[serde(default)]
    pub prefix: u8,
    /// Unix microseconds (the servers' clocks are assumed in step, as for any farm).
    #[serde(default)]
    pub started: i64,
    #[serde(default)]
    pub until: i64,
    #[serde(default)]
    pub generation: u32,
    /// `site` or `page`; empty for an administrator's block.
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub interval: u32,
    #[serde(default)]
    pub score: i64,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub uri: String,
    /// The generation is remembered this long after the block ends.
    #[serde(default)]
    pub memory_secs: u32,
    /// Unblock: forget the generation too.
    #[serde(default)]
    pub forget: bool,
    /// The announcing server (its own events are skipped when they come back); 0: a tool.
    #[serde(default)]
    pub origin: u64,
}

/// The longest text field kept (a record holds less anyway).
const TEXT_MAX: usize = 256;

impl Event {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for anything that is not a well-formed event.
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let ev: Event = serde_json::from_slice(bytes).ok()?;
        let width = if ev.addr.is_ipv4() { 32 } else { 128 };
        let sane = ev.prefix < width
            && ev.host.len() <= TEXT_MAX
            && ev.uri.len() <= TEXT_MAX
            && (ev.op == Op::Unblock || (ev.until > ev.started && ev.generation > 0));
        sane.then_some(ev)
    }

    /// The engine key of the block record of this event's client or network.
    pub fn block_key(&self) -> String {
        format!(
            "shield:{{{}}}:b",
            super::client_name(self.addr, self.prefix)
        )
    }

    /// The engine key of the remembered generation.
    pub fn generation_key(&self) -> String {
        format!(
            "shield:{{{}}}:g",
            super::client_name(self.addr, self.prefix)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Event {
        Event {
            op: Op::Block,
            addr: "192.0.2.7".parse().unwrap(),
            prefix: 0,
            started: 1_000,
            until: 2_000,
            generation: 1,
            rule: "page".into(),
            count: 10,
            interval: 60,
            score: 11,
            host: "h:80".into(),
            uri: "/a".into(),
            memory_secs: 600,
            forget: false,
            origin: 7,
        }
    }

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        let ev = block();
        assert_eq!(Event::decode(ev.encode().as_bytes()), Some(ev.clone()));
        assert_eq!(Event::decode(b"nonsense"), None);
        assert_eq!(Event::decode(b"{}"), None);
        let mut bad = ev.clone();
        bad.until = bad.started;
        assert_eq!(Event::decode(bad.encode().as_bytes()), None);
        let mut bad = ev;
        bad.prefix = 32;
        assert_eq!(Event::decode(bad.encode().as_bytes()), None);
        assert_eq!(block().block_key(), "shield:{192.0.2.7}:b");
    }
}
