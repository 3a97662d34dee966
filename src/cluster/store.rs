//! The cluster's Redis commands (the `redis` crate's blocking client, on the cluster's own
//! threads only): the per-AOR write script, heartbeats, the start-up scan and the shared
//! secret.
//!
//! Keys (prefix `P`, `[cluster] key_prefix`):
//! - `P:loc:AOR` — hash: Contact URI → binding ([`super::wire`]); expires (PEXPIREAT) with
//!   its last binding;
//! - `P:changes` — pub/sub channel: after every write, the publishing node's name, the AOR
//!   and every binding the hash holds now, one per line;
//! - `P:node:NAME` — this node's address, with a TTL of `dead_after_ms` (the heartbeat);
//!   `P:nodes` — set of node names ever seen;
//! - `P:secret` — the nonce and Record-Route token secret shared by every node.

use std::net::SocketAddr;
use std::time::Duration;

use redis::{Client, Connection, RedisResult};

/// Connect, read and write timeouts of every cluster connection: a dead Redis costs a
/// cluster thread at most this long per attempt, never a worker.
pub const IO_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Write one node's bindings of one AOR and publish the AOR's whole hash.
///
/// KEYS: hash, channel. ARGV: node, now (ms), AOR, then field/value pairs (this node's
/// bindings). Fields this node owned that it no longer lists are deleted, and so is every
/// expired field; a listed field owned by another node is overwritten only when this
/// node's copy expires later (the newer registration wins). The key expires with its last
/// binding.
pub const SYNC_LUA: &str = r#"
local key, me, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local function parse(v)
  local o, e = string.match(v, '^([^\t]*)\t(%d+)\t')
  return o, tonumber(e or '0')
end
local mine = {}
for i = 4, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local cur = redis.call('HGETALL', key)
local have = {}
for i = 1, #cur, 2 do
  local f, v = cur[i], cur[i + 1]
  local o, e = parse(v)
  if (mine[f] == nil and o == me) or e <= now then
    redis.call('HDEL', key, f)
  else
    have[f] = v
  end
end
for i = 4, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local old = have[f]
  local ok = old == nil
  if not ok then
    local o, e = parse(old)
    local _, ne = parse(v)
    ok = o == me or e <= ne
  end
  if ok then redis.call('HSET', key, f, v) end
end
local all = redis.call('HGETALL', key)
local out = {me, ARGV[3]}
local max = 0
for i = 2, #all, 2 do
  local _, e = parse(all[i])
  if e > max then max = e end
  out[#out + 1] = all[i]
end
if #all == 0 then redis.call('DEL', key) else redis.call('PEXPIREAT', key, max) end
redis.call('PUBLISH', KEYS[2], table.concat(out, '\n'))
return #all / 2
"#;

/// The key names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }
    pub fn loc(&self, aor: &str) -> String {
        format!("{}:loc:{aor}", self.prefix)
    }
    /// The AOR of a `loc` key.
    pub fn aor_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":loc:")
    }
    pub fn loc_pattern(&self) -> String {
        format!("{}:loc:*", self.prefix)
    }
    pub fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}:node:{name}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub fn secret(&self) -> String {
        format!("{}:secret", self.prefix)
    }
}

/// A connection with the cluster's timeouts.
pub fn connect(client: &Client) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// Load the write script; its SHA1 for EVALSHA.
pub fn load_script(con: &mut Connection) -> RedisResult<String> {
    redis::cmd("SCRIPT").arg("LOAD").arg(SYNC_LUA).query(con)
}

/// One AOR's bindings owned by this node, encoded.
pub struct AorWrite {
    pub aor: Box<str>,
    pub fields: Vec<(String, String)>,
}

/// Write a batch of AORs in one pipeline (one EVALSHA each).
pub fn write_batch(
    con: &mut Connection,
    sha: &str,
    keys: &Keys,
    me: &str,
    now_ms: u64,
    batch: &[AorWrite],
) -> RedisResult<()> {
    let channel = keys.channel();
    let mut pipe = redis::pipe();
    for w in batch {
        let c = pipe
            .cmd("EVALSHA")
            .arg(sha)
            .arg(2)
            .arg(keys.loc(&w.aor))
            .arg(&channel)
            .arg(me)
            .arg(now_ms)
            .arg(&*w.aor);
        for (f, v) in &w.fields {
            c.arg(f).arg(v);
        }
        c.ignore();
    }
    pipe.query::<()>(con)
}

/// Refresh this node's heartbeat; true when its key was still there (false after a Redis
/// restart or flush, and on the first beat: everything of this node must be written again).
pub fn heartbeat(
    con: &mut Connection,
    keys: &Keys,
    me: &str,
    addr: SocketAddr,
    ttl_ms: u64,
) -> RedisResult<bool> {
    let (old, _): (Option<String>, i64) = redis::pipe()
        .cmd("SET")
        .arg(keys.node(me))
        .arg(addr.to_string())
        .arg("PX")
        .arg(ttl_ms)
        .arg("GET")
        .cmd("SADD")
        .arg(keys.nodes())
        .arg(me)
        .query(con)?;
    Ok(old.is_some())
}

/// The nodes whose heartbeat key is alive, with their addresses.
pub fn live_nodes(con: &mut Connection, keys: &Keys) -> RedisResult<Vec<(String, SocketAddr)>> {
    let names: Vec<String> = redis::cmd("SMEMBERS").arg(keys.nodes()).query(con)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let node_keys: Vec<String> = names.iter().map(|n| keys.node(n)).collect();
    let addrs: Vec<Option<String>> = redis::cmd("MGET").arg(&node_keys).query(con)?;
    Ok(names
        .into_iter()
        .zip(addrs)
        .filter_map(|(n, a)| Some((n, a?.parse().ok()?)))
        .collect())
}

/// One page of a SCAN over the location keys: the next cursor (0: done) and the keys.
pub fn scan_page(
    con: &mut Connection,
    keys: &Keys,
    cursor: u64,
    count: usize,
) -> RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(keys.loc_pattern())
        .arg("COUNT")
        .arg(count)
        .query(con)
}

/// Every field value of each key (pipelined HVALS).
pub fn values_of(con: &mut Connection, keys: &[String]) -> RedisResult<Vec<Vec<Vec<u8>>>> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HVALS").arg(k);
    }
    pipe.query(con)
}

/// The secret every node shares: set once by the first node (`SET NX`), read by the rest.
pub fn shared_secret(con: &mut Connection, keys: &Keys, candidate: &str) -> RedisResult<String> {
    let _: Option<String> = redis::cmd("SET")
        .arg(keys.secret())
        .arg(candidate)
        .arg("NX")
        .query(con)?;
    redis::cmd("GET").arg(keys.secret()).query(con)
}
