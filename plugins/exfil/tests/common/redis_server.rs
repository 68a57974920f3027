//! The shared `redis-server` test harness (`phigate-test-redis`), plus what these tests add: a
//! client connection for inspecting the server.

pub use phigate_test_redis::{eventually, free_port, RedisServer};

/// `redis://127.0.0.1:<port>/0`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/0")
}

/// A connection for inspecting (and writing to) the server from the test.
pub async fn conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}
