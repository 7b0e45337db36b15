//! A broker on a temporary data directory with a `net::Server` on an ephemeral
//! loopback port, for tests that go over TCP. Stops both on drop.

#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

use ringbroker::broker::{Broker, BrokerConfig};
use ringbroker::client::{Client, ClientConfig};
use ringbroker::net::{Server, ServerConfig};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Fixture {
    pub server: Option<Server>,
    pub broker: Option<Broker>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A two-shard broker and a server with `config` (its listen address replaced).
    pub fn start(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (broker, server) = Self::open(dir.path(), config);
        Self {
            server: Some(server),
            broker: Some(broker),
            dir,
        }
    }

    fn open(path: &std::path::Path, config: ServerConfig) -> (Broker, Server) {
        let mut broker_config = BrokerConfig::new(path);
        broker_config.runtime.shards = Some(2);
        broker_config.runtime.pin_to_cores = false;
        let broker = Broker::open(broker_config).expect("broker");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..config
        };
        let server = Server::start(&broker, config).expect("server");
        (broker, server)
    }

    /// Stops server and broker gracefully and opens them again on the same directory.
    pub fn restart(&mut self) {
        self.stop();
        let (broker, server) = Self::open(self.dir.path(), ServerConfig::default());
        self.broker = Some(broker);
        self.server = Some(server);
    }

    pub fn url(&self) -> String {
        format!(
            "ringbroker://{}",
            self.server.as_ref().expect("server").local_addr()
        )
    }

    pub fn client(&self) -> Client {
        Client::connect(ClientConfig::new(self.url())).expect("connect")
    }

    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.server.as_ref().expect("server").local_addr())
            .expect("raw connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(5));
        }
        if let Some(broker) = self.broker.take() {
            broker.shutdown().expect("broker shutdown");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop();
    }
}
