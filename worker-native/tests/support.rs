//! A real Redis for tests: `redis-server` on a free port, without persistence, killed
//! when dropped; or, when `TEST_REDIS_CLUSTER` names the nodes of a Redis Cluster
//! (`scripts/test.sh` starts one with `devstack/cluster.py`), that cluster, shared by
//! the tests, each under a prefix of its own and with `TEST_SCHEDULE_SHARDS` shards
//! (default 4). Key names are shown as on a single Redis (`t:...`), whatever the shard.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shared::message::QueueMessage;
use shared::rate::RateLimit;
use worker_native::connection::RedisConn;
use worker_native::schedule::{Limits, Schedule};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The cluster's nodes, when on a cluster.
    nodes: Vec<String>,
    prefix: String,
}

static TESTS: AtomicU32 = AtomicU32::new(0);

impl RedisServer {
    /// Tests run in parallel threads, each picking a free port: two may pick the same one,
    /// and then the second server cannot bind while its client reaches the first (whose
    /// test later kills it). So a server counts as started only when the process that
    /// answers on the port is this child; otherwise another port is tried.
    pub fn start() -> Self {
        if let Ok(nodes) = std::env::var("TEST_REDIS_CLUSTER") {
            let nodes = worker_native::connection::seed_urls(&nodes);
            let prefix = format!("t{}x{}:", std::process::id(), TESTS.fetch_add(1, Ordering::Relaxed));
            return Self { child: None, port: 0, nodes, prefix };
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/install-tools.sh installs it)");
            let mut server = Self { child: Some(child), port, nodes: vec![], prefix: "t:".into() };
            if server.answers_as_itself() {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Waits (up to 10 s) until this child answers on its port; false if it exited or
    /// another process answers there.
    fn answers_as_itself(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = self.url();
        let child = self.child.as_mut().expect("a server of its own");
        let pid = child.id();
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let info: Option<String> =
                redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c)).ok();
            if let Some(info) = info {
                return info.lines().any(|l| l.trim() == format!("process_id:{pid}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start within 10 s");
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_cluster(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection to the single Redis.
    pub fn client(&self) -> redis::Connection {
        assert!(!self.is_cluster(), "a plain connection is for a single Redis");
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// Connections to each primary of the cluster (or to the single Redis).
    fn primaries(&self) -> Vec<redis::Connection> {
        if !self.is_cluster() {
            return vec![self.client()];
        }
        let mut seed = redis::Client::open(self.nodes[0].as_str()).unwrap().get_connection().unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut seed).unwrap();
        nodes
            .lines()
            .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master") && !f.contains("fail")))
            .map(|l| {
                let addr = l.split(' ').nth(1).unwrap().split('@').next().unwrap();
                redis::Client::open(format!("redis://{addr}")).unwrap().get_connection().unwrap()
            })
            .collect()
    }

    /// The names of this test's keys, on whichever node, each shown under `t:` (a
    /// shard's `{t…:k}:` prefix replaced), sorted, once each.
    pub fn keys(&self) -> Vec<String> {
        let pattern = if self.is_cluster() { format!("{{{}*", self.prefix) } else { "t:*".to_owned() };
        let mut keys: Vec<String> = Vec::new();
        for mut c in self.primaries() {
            let found: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c).unwrap();
            keys.extend(found.into_iter().map(|k| match k.split_once("}:") {
                Some((_, rest)) if self.is_cluster() => format!("t:{rest}"),
                _ => k,
            }));
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Redis loses this test's data, as a failover without persistence does: FLUSHALL on
    /// a single Redis; on the shared cluster, every key of the test.
    pub fn wipe(&self) {
        if !self.is_cluster() {
            let _: () = redis::cmd("FLUSHALL").query(&mut self.client()).unwrap();
            return;
        }
        for mut c in self.primaries() {
            let found: Vec<String> = redis::cmd("KEYS").arg(format!("{{{}*", self.prefix)).query(&mut c).unwrap();
            for k in found {
                let _: () = redis::cmd("DEL").arg(k).query(&mut c).unwrap();
            }
        }
    }

    /// Runs `cmd` on the node that holds `key`.
    fn on_key(&self, key: &str, cmd: &redis::Cmd) {
        if !self.is_cluster() {
            let _: () = cmd.query(&mut self.client()).unwrap();
            return;
        }
        let client = redis::cluster::ClusterClient::new(self.nodes.clone()).unwrap();
        let _: redis::Value = cmd.query(&mut client.get_connection().unwrap()).unwrap_or_else(|e| panic!("{key}: {e}"));
    }

    /// A schedule on this Redis, complete (each shard's epoch set, as a worker's first
    /// start does).
    pub fn schedule(&self, rate: RateLimit, burst: u32, margin_ms: u64) -> Schedule {
        let shards = if self.is_cluster() { std::env::var("TEST_SCHEDULE_SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4) } else { 1 };
        self.schedule_of(Limits { rate, burst, margin_ms }, shards)
    }

    /// A schedule of `shards` shards (burst 1, no margin), its epochs not set.
    pub fn schedule_with_shards(&self, rate: RateLimit, shards: u16) -> Schedule {
        self.new_schedule(Limits { rate, burst: 1, margin_ms: 0 }, shards)
    }

    fn new_schedule(&self, limits: Limits, shards: u16) -> Schedule {
        if self.is_cluster() {
            Schedule::sharded(RedisConn::cluster(&self.nodes).unwrap(), self.prefix.clone(), limits, shards, true)
        } else {
            Schedule::sharded(RedisConn::single(&self.url()).unwrap(), "t:", limits, shards, false)
        }
    }

    fn schedule_of(&self, limits: Limits, shards: u16) -> Schedule {
        let s = self.new_schedule(limits, shards);
        self.set_epochs(&s, s.shard_count());
        s
    }

    /// Sets every shard's epoch as workers with `shards` shards complete it (on the node
    /// that holds it, with that node's run id).
    pub fn set_epochs(&self, s: &Schedule, shards: usize) {
        for k in 0..s.shard_count() {
            let prefix = s.shard_key_prefix(k).to_owned();
            let key = format!("{prefix}epoch");
            let info: String = redis::cmd("INFO").arg("server").query(&mut self.conn_for(&prefix)).unwrap();
            let run = info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap().trim().to_owned();
            self.on_key(&key, redis::cmd("SET").arg(&key).arg(format!("shards={shards} run={run}")));
        }
    }

    /// A plain connection to the node holding the keys under `prefix` (a shard's).
    pub fn conn_for(&self, prefix: &str) -> redis::Connection {
        if !self.is_cluster() {
            return self.client();
        }
        let slot_key = format!("{prefix}epoch");
        let mut seed = redis::Client::open(self.nodes[0].as_str()).unwrap().get_connection().unwrap();
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&slot_key).query(&mut seed).unwrap();
        let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut seed).unwrap();
        for range in ranges {
            let (from, to): (u16, u16) = (redis::from_redis_value(range[0].clone()).unwrap(), redis::from_redis_value(range[1].clone()).unwrap());
            if (from..=to).contains(&slot) {
                let primary: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
                let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
                return redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Removes every shard's epoch, as on a new Redis.
    pub fn drop_epochs(&self, s: &Schedule) {
        for k in 0..s.shard_count() {
            let key = format!("{}epoch", s.shard_key_prefix(k));
            self.on_key(&key, redis::cmd("DEL").arg(&key));
        }
    }

    /// used_memory of the single Redis (on the shared cluster, other tests' data moves it).
    pub fn used_memory(&self) -> Option<i64> {
        if self.is_cluster() {
            return None;
        }
        let info: String = redis::cmd("INFO").arg("memory").query(&mut self.client()).unwrap();
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).map(|v| v.trim().parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if self.is_cluster() && !std::thread::panicking() {
            self.wipe(); // the shared cluster keeps no test's keys
        }
    }
}

/// A message of `account`; `seq` orders ids and acceptance times.
pub fn message(account: &str, seq: u16, priority: u8) -> QueueMessage {
    let accepted_ms = 1_795_586_400_000 + u64::from(seq);
    // Ids unique across accounts too: the account's bytes fill the random part.
    let mut random = [0u8; 8];
    for (i, b) in account.bytes().enumerate() {
        random[i % 8] ^= b;
    }
    QueueMessage {
        id: shared::id::uuid_v7(accepted_ms, seq, random),
        creator_id: account.into(),
        recipient_id: format!("fan-{seq}"),
        content: "hello".into(),
        media_urls: vec![],
        priority,
        metadata: Default::default(),
        accepted_at: shared::time::rfc3339_ms(accepted_ms),
        generation: 0,
        send_at: None,
        campaign_id: None,
        vendor_media: None,
    }
}
