//! The client of HAProxy's UNIX-socket command interfaces: the runtime API
//! (the admin `stats socket`) and the master CLI (`-S`).
//!
//! Owns one exchange: connect, write a command line, half-close, read the
//! reply to EOF, all within a time limit and a size limit. Must not
//! interpret replies: HAProxy reports a failed runtime command as free text
//! ("No such server.", "Unknown command…") with nothing that separates the
//! replies of `;`-chained commands reliably, so the caller, which knows the
//! command it sent, judges the reply.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The largest reply accepted. `show stat` on a configuration with
/// thousands of servers runs to megabytes; anything beyond this is not a
/// reply we can use, and reading it would only grow memory.
pub const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why an exchange on a HAProxy socket failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Nothing accepted the connection (no HAProxy, or not yet listening).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The whole exchange did not finish within the limit.
    #[error("no complete reply from {path} within {limit:?}")]
    TimedOut {
        /// The socket.
        path: PathBuf,
        /// The limit that passed.
        limit: Duration,
    },
    /// The reply exceeded [`REPLY_BYTES_MAX`].
    #[error("the reply from {path} exceeds {REPLY_BYTES_MAX} bytes")]
    TooLarge {
        /// The socket.
        path: PathBuf,
    },
    /// Writing the command or reading the reply failed after connecting.
    #[error("exchange with {path} failed: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Sends `commands` (one line; the runtime API accepts several commands
/// separated by `;`) to the socket at `path` and returns the whole reply.
///
/// The write side is shut down after the line: in non-interactive mode
/// HAProxy then answers and closes, so EOF marks the end of the reply.
/// Bytes that are not UTF-8 (HAProxy echoes user input in some errors) are
/// replaced rather than failing the exchange.
pub async fn send(path: &Path, commands: &str, timeout: Duration) -> Result<String, SocketError> {
    match tokio::time::timeout(timeout, exchange(path, commands)).await {
        Ok(reply) => reply,
        Err(_) => Err(SocketError::TimedOut {
            path: path.to_path_buf(),
            limit: timeout,
        }),
    }
}

async fn exchange(path: &Path, commands: &str) -> Result<String, SocketError> {
    let io_error = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| SocketError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let mut line = String::with_capacity(commands.len() + 1);
    line.push_str(commands);
    line.push('\n');
    stream.write_all(line.as_bytes()).await.map_err(io_error)?;
    stream.shutdown().await.map_err(io_error)?;
    // One byte beyond the bound tells "exactly at the limit" from "over it".
    let mut reply = Vec::new();
    (&mut stream)
        .take(REPLY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut reply)
        .await
        .map_err(io_error)?;
    if reply.len() > REPLY_BYTES_MAX {
        return Err(SocketError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::net::UnixListener;

    /// A UNIX socket path in a fresh directory, removed when dropped.
    struct SocketDir(PathBuf);

    impl SocketDir {
        fn new() -> SocketDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "aqueduct-socket-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            SocketDir(dir)
        }

        fn socket(&self) -> PathBuf {
            self.0.join("cli.sock")
        }
    }

    impl Drop for SocketDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Serves one connection: reads the command line to EOF, checks it,
    /// then writes `reply_bytes` bytes of `x` (or stays silent if `None`).
    fn serve_once(path: &Path, reply_bytes: Option<usize>) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(path).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut command = String::new();
            (&mut stream)
                .take(1024)
                .read_to_string(&mut command)
                .await
                .expect("command");
            match reply_bytes {
                Some(n) => {
                    let _ = stream.write_all(&vec![b'x'; n]).await;
                }
                None => std::future::pending::<()>().await,
            }
            command
        })
    }

    #[tokio::test]
    async fn the_command_is_sent_as_one_line_and_the_reply_read_to_eof() {
        let dir = SocketDir::new();
        let server = serve_once(&dir.socket(), Some(3));
        let reply = send(&dir.socket(), "show info", Duration::from_secs(5))
            .await
            .expect("reply");
        assert_eq!(reply, "xxx");
        assert_eq!(server.await.expect("server"), "show info\n");
    }

    #[tokio::test]
    async fn a_reply_over_the_bound_is_an_error() {
        let dir = SocketDir::new();
        let _server = serve_once(&dir.socket(), Some(REPLY_BYTES_MAX + 1));
        let error = send(&dir.socket(), "show stat", Duration::from_secs(30))
            .await
            .expect_err("too large");
        assert!(matches!(error, SocketError::TooLarge { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let dir = SocketDir::new();
        let _server = serve_once(&dir.socket(), None);
        let error = send(&dir.socket(), "show stat", Duration::from_millis(100))
            .await
            .expect_err("silent");
        assert!(matches!(error, SocketError::TimedOut { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = SocketDir::new();
        let error = send(&dir.socket(), "show stat", Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, SocketError::Connect { .. }), "{error}");
    }
}
