//! A real Redis for tests: `redis-server` on a free port, without persistence, killed
//! when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared::message::QueueMessage;
use shared::rate::RateLimit;
use worker_native::schedule::{Limits, Schedule};

pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Tests run in parallel threads, each picking a free port: two may pick the same one,
    /// and then the second server cannot bind while its client reaches the first (whose
    /// test later kills it). So a server counts as started only when the process that
    /// answers on the port is this child; otherwise another port is tried.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/install-tools.sh installs it)");
            let mut server = Self { child, port };
            if server.answers_as_itself() {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Waits (up to 10 s) until this child answers on its port; false if it exited or
    /// another process answers there.
    fn answers_as_itself(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let info: Option<String> = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c))
                .ok();
            if let Some(info) = info {
                return info.lines().any(|l| l.trim() == format!("process_id:{}", self.child.id()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start within 10 s");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, to look at what the schedule left in Redis.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// The keys under the tests' prefix.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("t:*").query(&mut self.client()).unwrap();
        keys.sort();
        keys
    }

    /// A schedule on this Redis, complete (its epoch set, as a worker's first start does).
    pub fn schedule(&self, rate: RateLimit, burst: u32, margin_ms: u64) -> Schedule {
        let conn = worker_native::app::connect_redis(&self.url()).unwrap();
        let _: () = redis::cmd("SET").arg("t:epoch").arg("test").query(&mut self.client()).unwrap();
        Schedule::new(conn, "t:", Limits { rate, burst, margin_ms })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    }
}
