//! The farm on Redis (and Valkey): one Redis, or a Redis Cluster from a seed list, through the
//! `redis` crate's synchronous client (no async runtime inside httpd).
//!
//! A grant is one Lua script (EVALSHA; the script is loaded on first use): it reads what the
//! window has used, grants [`super::grant_size`] of what is left, and starts the window's expiry
//! on its first grant. Every key of a client carries the client in a hash tag, so in a Cluster
//! one script sees all of them. A block is written by a second script, which also restarts the
//! crossed counters and PUBLISHes the event (in a Cluster, PUBLISH reaches every node).
#![forbid(unsafe_code)]

use std::time::Duration;

use redis::{ConnectionLike, Script};

use super::{Ask, Conn, Event, FarmSpec, Grant, CHANNEL, SHARE};
use crate::farm::event::Op;

/// KEYS: the asked counters, then the client's generation key and its block key.
/// ARGV: per counter `limit, window_ms, delta, lease (1|0)`.
/// Returns per counter `granted, left, ttl_ms`, then the remembered generation, as one
/// comma-separated string (one reply value: the client parses one value instead of 3n + 1).
/// A client blocked in the engine is granted nothing (a server that missed the block's event
/// learns it here).
const GRANT: &str = r"
local n = #KEYS - 2
local blocked = redis.call('PTTL', KEYS[n + 2]) > 0
local out = {}
for i = 1, n do
  local limit = tonumber(ARGV[4 * i - 3])
  local window = tonumber(ARGV[4 * i - 2])
  local delta = tonumber(ARGV[4 * i - 1])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local left = limit - used
  local g = 0
  if (not blocked) and left >= delta then
    g = delta
    if ARGV[4 * i] == '1' then g = math.max(math.floor(left / SHARE), delta) end
    if g > left then g = left end
    if g > 0 then redis.call('INCRBY', KEYS[i], g) end
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -1 then
    redis.call('PEXPIRE', KEYS[i], window)
    ttl = window
  elseif ttl < 0 then
    ttl = 0
  end
  out[#out + 1] = g
  out[#out + 1] = left - g
  out[#out + 1] = ttl
end
out[#out + 1] = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
return table.concat(out, ',')
";

/// KEYS: block key, generation key, counters to restart. ARGV: event, op, block ms,
/// remembered ms, generation, forget (1|0).
const ANNOUNCE: &str = r"
if ARGV[2] == 'block' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  local g = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[5]))
  redis.call('SET', KEYS[2], g, 'PX', ARGV[4])
  for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
else
  redis.call('DEL', KEYS[1])
  if ARGV[6] == '1' then redis.call('DEL', KEYS[2]) end
end
redis.call('PUBLISH', 'CHANNEL', ARGV[1])
return 1
";

fn scripts() -> &'static (Script, Script) {
    static S: std::sync::OnceLock<(Script, Script)> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        (
            Script::new(&GRANT.replace("SHARE", &SHARE.to_string())),
            Script::new(&ANNOUNCE.replace("'CHANNEL'", &format!("'{CHANNEL}'"))),
        )
    })
}

/// A connection to one Redis or to a Cluster.
enum RedisConn {
    One(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl RedisConn {
    fn con(&mut self) -> &mut dyn ConnectionLike {
        match self {
            RedisConn::One(c) => c,
            RedisConn::Cluster(c) => c.as_mut(),
        }
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v.max(1)))
}

pub(super) fn connect(spec: &FarmSpec) -> Result<Box<dyn Conn>, String> {
    let why = |e: redis::RedisError| e.to_string();
    let conn = if spec.nodes.len() == 1 {
        let client = redis::Client::open(spec.nodes[0].as_str()).map_err(why)?;
        let c = client
            .get_connection_with_timeout(ms(spec.connect_timeout_ms))
            .map_err(why)?;
        c.set_read_timeout(Some(ms(spec.command_timeout_ms)))
            .map_err(why)?;
        c.set_write_timeout(Some(ms(spec.command_timeout_ms)))
            .map_err(why)?;
        RedisConn::One(c)
    } else {
        let client = redis::cluster::ClusterClient::builder(spec.nodes.clone())
            .connection_timeout(ms(spec.connect_timeout_ms))
            .response_timeout(ms(spec.command_timeout_ms))
            .build()
            .map_err(why)?;
        RedisConn::Cluster(Box::new(client.get_connection().map_err(why)?))
    };
    let mut conn = conn;
    Conn::ping(&mut conn)?;
    Ok(Box::new(conn))
}

impl Conn for RedisConn {
    fn grant(&mut self, client: &str, asks: &[Ask]) -> Result<(Vec<Grant>, u32), String> {
        let script = &scripts().0;
        let mut inv = script.prepare_invoke();
        for a in asks {
            inv.key(&a.key);
        }
        inv.key(format!("shield:{{{client}}}:g"));
        inv.key(format!("shield:{{{client}}}:b"));
        for a in asks {
            inv.arg(a.limit)
                .arg(u64::from(a.interval.max(1)) * 1000)
                .arg(a.delta)
                .arg(if a.lease { "1" } else { "0" });
        }
        let reply: String = inv.invoke(self.con()).map_err(|e| e.to_string())?;
        let out = reply
            .split(',')
            .map(|v| v.trim().parse::<f64>().map(|f| f as i64))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| format!("the grant script answered '{reply}'"))?;
        if out.len() != asks.len() * 3 + 1 {
            return Err(format!("the grant script answered {} values", out.len()));
        }
        let grants = out
            .chunks(3)
            .take(asks.len())
            .map(|c| Grant {
                units: c[0].max(0),
                left: c[1].max(0),
                ttl_ms: c[2].max(0),
            })
            .collect();
        Ok((
            grants,
            out[out.len() - 1].clamp(0, i64::from(u32::MAX)) as u32,
        ))
    }

    fn announce(&mut self, ev: &Event, reset: &[String]) -> Result<(), String> {
        let script = &scripts().1;
        let mut inv = script.prepare_invoke();
        inv.key(ev.block_key()).key(ev.generation_key());
        for k in reset {
            inv.key(k);
        }
        let now = super::now_micros();
        let block_ms = ((ev.until - now) / 1000).max(1);
        let remembered_ms = block_ms + i64::from(ev.memory_secs) * 1000;
        inv.arg(ev.encode())
            .arg(match ev.op {
                Op::Block => "block",
                Op::Unblock => "unblock",
            })
            .arg(block_ms)
            .arg(remembered_ms)
            .arg(ev.generation)
            .arg(if ev.forget { "1" } else { "0" });
        let _: i64 = inv.invoke(self.con()).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn restart(&mut self, counters: &[(String, u32)]) -> Result<(), String> {
        // One DEL per key: a Cluster routes each by its own slot.
        for (key, _) in counters {
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query(self.con())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn ping(&mut self) -> Result<(), String> {
        let pong: String = redis::cmd("PING")
            .query(self.con())
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered '{pong}'"))
        }
    }
}

/// Subscribes to the farm's channel on one node (any node of a Cluster hears every PUBLISH)
/// and hands each event to `apply`, until the connection fails.
pub(super) fn listen(
    spec: &FarmSpec,
    apply: &dyn Fn(Event),
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    let why = |e: redis::RedisError| e.to_string();
    let mut last = String::new();
    for node in &spec.nodes {
        let client = match redis::Client::open(node.as_str()) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut con = match client.get_connection_with_timeout(ms(spec.connect_timeout_ms)) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut ps = con.as_pubsub();
        ps.subscribe(CHANNEL).map_err(why)?;
        ps.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(why)?;
        loop {
            if stop() {
                return Ok(());
            }
            match ps.get_message() {
                Ok(msg) => {
                    if let Some(ev) = Event::decode(msg.get_payload_bytes()) {
                        apply(ev);
                    }
                }
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Err(last)
}
