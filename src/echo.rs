//! Tiny HTTP/1.1 servers that answer every request with their own name,
//! and a one-request client that opens a fresh connection each time: the
//! demo's example services, and the members and probes of the HAProxy
//! benchmarks.
//!
//! Owns only these test servers and probes. Must not be used to serve
//! anything real: it reads at most one request head per connection, never
//! a body, and always closes the connection after answering.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request head read (a probe's or a health check's is far
/// smaller); the answer goes out once the head ends or this much arrived.
const HEAD_LIMIT: usize = 8 * 1024;
/// Largest answer a probe reads.
const ANSWER_LIMIT: u64 = 64 * 1024;
/// How long a server waits for a request head before it drops the
/// connection (a client that connects and says nothing must not hold a task
/// forever).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a server could not start, or a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The address is taken or not local.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting, sending or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The probe's time ran out.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
    /// What came back is not an HTTP answer.
    #[error("{addr}: not an HTTP answer")]
    Malformed {
        /// Where.
        addr: SocketAddr,
    },
}

/// A server answering `200 <name>\n` to every request, until dropped.
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Listens on `addr` (port 0: one the kernel picks).
    pub async fn bind(addr: SocketAddr, name: &str) -> Result<EchoServer, EchoError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EchoError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EchoError::Bind { addr, source })?;
        let answer: std::sync::Arc<[u8]> = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}\n",
            name.len() + 1
        )
        .into_bytes()
        .into();
        // The accept loop lives as long as the server: dropping it aborts
        // the task, which ends the loop.
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, most likely: pause rather
                    // than spin until connections close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT, answer_once(stream, &answer)).await;
                });
            }
        });
        Ok(EchoServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (up to [`HEAD_LIMIT`]) and sends the answer.
async fn answer_once(mut stream: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < HEAD_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(answer).await?;
    stream.shutdown().await
}

/// One answer: the status code and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET path` with `Host: host` over a new connection to `addr` (never a
/// pooled one: each probe must see what a new client would), with
/// `timeout` for the whole exchange.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Result<Answer, EchoError> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(ANSWER_LIMIT)
            .read_to_end(&mut bytes)
            .await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(source)) => return Err(EchoError::Io { addr, source }),
        Err(_) => return Err(EchoError::Timeout { addr, timeout }),
    };
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(EchoError::Malformed { addr })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(EchoError::Malformed { addr })?;
    Ok(Answer {
        status,
        body: body.trim_end().to_owned(),
    })
}
