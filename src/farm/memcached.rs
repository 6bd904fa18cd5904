//! The farm on memcached: its atomic arithmetic is all an exact count needs.
//!
//! A grant is one meta arithmetic command, `ma KEY N<interval> J<g> D<g> t v`: created on its
//! first grant with the window's length as its TTL (so a window starts at the client's first
//! request, as in this server's own store and in Redis) and incremented by `g` otherwise,
//! atomically, answering the new value and the seconds left of the window. The increment
//! claims the range `[new - g, new)` of the window's units, and the part of it below the count
//! is granted. Concurrent grants claim disjoint ranges, so together they never pass the count.
//!
//! A counter's key carries the client's block generation, which a block raises: the block
//! restarts the client's counts by moving them to new keys, never by deleting the old ones (a
//! grant that read the generation just before the block still lands on the old, spent key, so
//! nothing is granted twice — memcached has no transaction to make the block and its restart
//! one step). The lease asked for is sized from what this server last saw left (memcached
//! cannot compute it in the engine). A grant costs two round trips: the client's block and
//! generation (one `get` of both), then the increments of all its counters (one write).
//!
//! memcached has no pub/sub: events go into a numbered log (`incr` of a sequence, then `set`
//! of the event under its number), which every server polls every [`POLL`].
//!
//! Written against the protocol rather than with a client crate: the few commands used here
//! need timeouts on every socket, pipelining and no threads of the client's own inside httpd.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use super::{grant_size, Ask, Conn, Event, FarmSpec, Grant};
use crate::farm::event::Op;

const SEQUENCE: &str = "shield:ev";
/// How often a server looks for new events.
const POLL: Duration = Duration::from_millis(10);
/// Events are kept this long (a server that is away longer misses them; their blocks still
/// refuse it through the grants, which see the block key).
const EVENT_SECS: u32 = 300;

/// One connection per memcached server; keys are spread over them by hash.
pub(super) struct Memcached {
    nodes: Vec<BufReader<TcpStream>>,
}

fn open(node: &str, spec: &FarmSpec) -> Result<BufReader<TcpStream>, String> {
    let addr = node
        .to_socket_addrs()
        .map_err(|e| format!("{node}: {e}"))?
        .next()
        .ok_or_else(|| format!("{node}: no address"))?;
    let ms = |v: u32| Duration::from_millis(u64::from(v.max(1)));
    let s = TcpStream::connect_timeout(&addr, ms(spec.connect_timeout_ms))
        .map_err(|e| format!("{node}: {e}"))?;
    s.set_read_timeout(Some(ms(spec.command_timeout_ms)))
        .and_then(|()| s.set_write_timeout(Some(ms(spec.command_timeout_ms))))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| format!("{node}: {e}"))?;
    Ok(BufReader::new(s))
}

pub(super) fn connect(spec: &FarmSpec) -> Result<Memcached, String> {
    let nodes = spec
        .nodes
        .iter()
        .map(|n| open(n, spec))
        .collect::<Result<Vec<_>, _>>()?;
    let mut m = Memcached { nodes };
    m.ping()?;
    Ok(m)
}

fn node_of(key: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h = SipHasher13::new_with_keys(0x6d63_6e6f_6465, 0x7368_6965_6c64);
    // A client's keys go to one server (the part up to the closing brace of its tag).
    let tag = key.find('}').map_or(key, |i| &key[..=i]);
    h.write(tag.as_bytes());
    (h.finish() % n as u64) as usize
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

impl Memcached {
    fn node(&mut self, key: &str) -> &mut BufReader<TcpStream> {
        let i = node_of(key, self.nodes.len());
        &mut self.nodes[i]
    }

    fn line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
        let mut l = String::new();
        if r.read_line(&mut l).map_err(io)? == 0 {
            return Err("memcached closed the connection".into());
        }
        if l.starts_with("ERROR") || l.starts_with("CLIENT_ERROR") || l.starts_with("SERVER_ERROR")
        {
            return Err(format!("memcached answered {}", l.trim_end()));
        }
        Ok(l.trim_end().to_string())
    }

    /// `get` of several keys (one server): the values found.
    fn get_values(r: &mut BufReader<TcpStream>) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut out = Vec::new();
        loop {
            let l = Self::line(r)?;
            if l == "END" {
                return Ok(out);
            }
            let mut parts = l.split(' ');
            let (Some("VALUE"), Some(key), Some(_flags), Some(len)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("memcached answered '{l}' to get"));
            };
            let len: usize = len.parse().map_err(|_| format!("bad length in '{l}'"))?;
            let mut data = vec![0u8; len + 2];
            std::io::Read::read_exact(r, &mut data).map_err(io)?;
            data.truncate(len);
            out.push((key.to_string(), data));
        }
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let r = self.node(key);
        write!(r.get_mut(), "get {key}\r\n").map_err(io)?;
        Ok(Self::get_values(r)?.into_iter().next().map(|(_, v)| v))
    }

    fn set(&mut self, key: &str, value: &[u8], secs: u32) -> Result<(), String> {
        let r = self.node(key);
        let mut cmd = format!("set {key} 0 {secs} {}\r\n", value.len()).into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        r.get_mut().write_all(&cmd).map_err(io)?;
        match Self::line(r)?.as_str() {
            "STORED" => Ok(()),
            other => Err(format!("memcached answered '{other}' to set")),
        }
    }

    fn delete(&mut self, key: &str) -> Result<(), String> {
        let r = self.node(key);
        write!(r.get_mut(), "delete {key}\r\n").map_err(io)?;
        match Self::line(r)?.as_str() {
            "DELETED" | "NOT_FOUND" => Ok(()),
            other => Err(format!("memcached answered '{other}' to delete")),
        }
    }

    /// `add key 0` then `incr key by` in one write: the value after the increment.
    fn add_incr(&mut self, key: &str, by: i64, secs: u32) -> Result<i64, String> {
        let r = self.node(key);
        write!(
            r.get_mut(),
            "add {key} 0 {secs} 1 noreply\r\n0\r\nincr {key} {}\r\n",
            by.max(0)
        )
        .map_err(io)?;
        let l = Self::line(r)?;
        l.parse::<i64>()
            .map_err(|_| format!("memcached answered '{l}' to incr"))
    }

    /// The answer to `ma … t v`: `VA <len> t<ttl>` and the value: (value, seconds left).
    fn arithmetic_answer(r: &mut BufReader<TcpStream>) -> Result<(i64, i64), String> {
        let head = Self::line(r)?;
        let mut parts = head.split(' ');
        if parts.next() != Some("VA") {
            return Err(format!("memcached answered '{head}' to ma"));
        }
        let _len = parts.next();
        let ttl = parts
            .find_map(|f| f.strip_prefix('t'))
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| format!("memcached answered '{head}' to ma (no TTL)"))?;
        let value = Self::line(r)?;
        let value = value
            .parse::<i64>()
            .map_err(|_| format!("memcached answered '{value}' as a counter"))?;
        Ok((value, ttl))
    }

    /// The next number of the event log.
    fn next_event(&mut self) -> Result<i64, String> {
        self.add_incr(SEQUENCE, 1, 0)
    }
}

impl Conn for Memcached {
    fn grant(&mut self, client: &str, asks: &[Ask]) -> Result<(Vec<Grant>, u32), String> {
        let block_key = format!("shield:{{{client}}}:b");
        let gen_key = format!("shield:{{{client}}}:g");
        let (blocked, generation) = {
            let r = self.node(&block_key);
            write!(r.get_mut(), "get {block_key} {gen_key}\r\n").map_err(io)?;
            let values = Self::get_values(r)?;
            let gen = values
                .iter()
                .find(|(k, _)| *k == gen_key)
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u32>().ok())
                .unwrap_or(0);
            (values.iter().any(|(k, _)| *k == block_key), gen)
        };
        // Every key of the client is on one server (its tag): the increments go in one write.
        let mut batch = String::new();
        let mut sizes = Vec::with_capacity(asks.len());
        for a in asks {
            let key = format!("{}:{generation}", a.key);
            let left_guess = a.left_seen.unwrap_or(i64::from(a.limit));
            let by = grant_size(left_guess, a.delta, a.lease)
                .unwrap_or(a.delta)
                .max(0);
            // J<by>: a counter created by this grant starts at `by` (memcached does not add
            // the delta to the initial value), so either way the new value is old + by.
            batch.push_str(&format!(
                "ma {key} N{} J{by} D{by} t v\r\n",
                a.interval.max(1)
            ));
            sizes.push(by);
        }
        let r = self.node(&block_key);
        r.get_mut().write_all(batch.as_bytes()).map_err(io)?;
        let mut grants = Vec::with_capacity(asks.len());
        for (a, by) in asks.iter().zip(sizes) {
            let (new, ttl_secs) = Self::arithmetic_answer(r)?;
            let limit = i64::from(a.limit);
            let granted = (limit - (new - by)).clamp(0, by);
            let units = if blocked || granted < a.delta {
                0
            } else {
                granted
            };
            grants.push(Grant {
                units,
                left: (limit - new).max(0),
                ttl_ms: ttl_secs.max(0) * 1000,
            });
        }
        Ok((grants, generation))
    }

    fn announce(&mut self, ev: &Event, reset: &[String]) -> Result<(), String> {
        let now = super::now_micros();
        let payload = ev.encode();
        match ev.op {
            Op::Block => {
                let secs = ((ev.until - now) / 1_000_000 + 1).clamp(1, 30 * 86_400) as u32;
                self.set(&ev.block_key(), payload.as_bytes(), secs)?;
                let remembered = secs.saturating_add(ev.memory_secs).min(30 * 86_400);
                // One more generation, atomically, whatever this server thought it was.
                self.add_incr(&ev.generation_key(), 1, remembered)?;
                // The new generation moves the client's counts to new keys (see above): the
                // crossed counters in `reset` start again from 0 there.
                let _ = reset;
            }
            Op::Unblock => {
                self.delete(&ev.block_key())?;
                if ev.forget {
                    self.delete(&ev.generation_key())?;
                }
            }
        }
        let n = self.next_event()?;
        self.set(&format!("{SEQUENCE}:{n}"), payload.as_bytes(), EVENT_SECS)
    }

    fn restart(&mut self, counters: &[(String, u32)]) -> Result<(), String> {
        for (key, interval) in counters {
            // The client's generation is in its tag: `shield:{client}:…`.
            let tag = key.find('}').map_or(key.as_str(), |i| &key[..=i]);
            let generation = self
                .get(&format!("{tag}:g"))?
                .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
                .unwrap_or(0);
            let _ = interval;
            self.delete(&format!("{key}:{generation}"))?;
        }
        Ok(())
    }

    fn ping(&mut self) -> Result<(), String> {
        for r in &mut self.nodes {
            r.get_mut().write_all(b"version\r\n").map_err(io)?;
            let l = Self::line(r)?;
            if !l.starts_with("VERSION") {
                return Err(format!("memcached answered '{l}' to version"));
            }
        }
        Ok(())
    }
}

/// Polls the event log and hands each new event to `apply`, until a command fails.
pub(super) fn listen(
    spec: &FarmSpec,
    apply: &dyn Fn(Event),
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    let mut m = connect(spec)?;
    let current = |m: &mut Memcached| -> Result<i64, String> {
        Ok(m.get(SEQUENCE)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
            .unwrap_or(0))
    };
    let mut seen = current(&mut m)?;
    // An event whose number is taken but whose body is not written yet is looked for again
    // for a while, then skipped.
    let mut waiting = 0u32;
    while !stop() {
        std::thread::sleep(POLL);
        let last = current(&mut m)?;
        if last < seen {
            // The log was lost (memcached restarted): start again from its end.
            seen = last;
        }
        while seen < last {
            match m.get(&format!("{SEQUENCE}:{}", seen + 1))? {
                Some(body) => {
                    if let Some(ev) = Event::decode(&body) {
                        apply(ev);
                    }
                    seen += 1;
                    waiting = 0;
                }
                None if waiting < 20 => {
                    waiting += 1;
                    break;
                }
                None => {
                    seen += 1;
                    waiting = 0;
                }
            }
        }
    }
    Ok(())
}
