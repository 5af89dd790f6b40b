//! Plain HTTP on loopback for tests with real HAProxy, from blocking test
//! code: `aqueduct::echo`'s servers (they answer with their own name, so a
//! test can tell which member served a request) and its one-request client,
//! on one shared runtime.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use aqueduct::echo::{self, EchoServer};

/// Bound on any one exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime the servers run on (they outlive any one `block_on`).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for test servers")
});

/// A server on 127.0.0.1 (ephemeral port) answering every request with 200
/// and its name; stops when dropped.
pub struct TestServer {
    pub name: String,
    pub addr: SocketAddr,
    _server: EchoServer,
}

impl TestServer {
    pub fn start(name: &str) -> TestServer {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = RUNTIME
            .block_on(EchoServer::bind(any_port, name))
            .expect("a test server listens");
        TestServer {
            name: name.to_owned(),
            addr: server.addr(),
            _server: server,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// One request on a new connection: the status and body.
pub fn fetch(addr: SocketAddr, path: &str, host: &str) -> Result<(u16, String), echo::EchoError> {
    let answer = RUNTIME.block_on(echo::get(addr, path, host, IO_TIMEOUT))?;
    Ok((answer.status, answer.body))
}
