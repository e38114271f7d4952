//! The connection to Redis: one server (a `ConnectionManager`, which reconnects), or a
//! Redis Cluster (ElastiCache cluster mode, MemoryDB, Valkey) through the cluster
//! client, which follows the slots as they move and reconnects itself. Either way the
//! worker starts (and keeps running) while Redis is down: the cluster's first
//! connection is made on first use, and tried again at every use until it succeeds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a single Redis or to a cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// The cluster client and, once made, its connection.
pub struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl RedisConn {
    /// One Redis at `url` (redis:// or rediss://).
    pub fn single(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, config)?))
    }

    /// A cluster known by some of its nodes (`seeds`: redis:// or rediss:// URLs); the
    /// client learns the others, and the slots, from them.
    pub fn cluster(seeds: &[String]) -> anyhow::Result<Self> {
        let client = ClusterClient::builder(seeds.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3)
            .build()
            .context("REDIS_URL is not a list of valid Redis URLs for REDIS_CLUSTER=true")?;
        Ok(Self::Cluster(Arc::new(LazyCluster { client, conn: tokio::sync::OnceCell::new() })))
    }

    /// From the worker's settings: `urls` is one URL, or (cluster) a comma-separated list.
    pub fn open(urls: &str, cluster: bool) -> anyhow::Result<Self> {
        if cluster {
            Self::cluster(&seed_urls(urls))
        } else {
            Self::single(urls)
        }
    }
}

impl RedisConn {
    /// Waits until `replicas` replicas of the node holding `key` have every write this
    /// connection sent it so far, or `timeout_ms` passed (`WAIT`); how many have.
    pub async fn wait_for_replicas(&self, key: &str, replicas: u32, timeout_ms: u64) -> redis::RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await,
            Self::Cluster(lazy) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)));
                Ok(redis::from_redis_value(lazy.get().await?.route_command(cmd, route).await?)?)
            }
        }
    }
}

/// The seed nodes of a cluster in a comma-separated `REDIS_URL`.
pub fn seed_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
}

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move { lazy.get().await?.req_packed_commands(pipeline, offset, count).await }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
