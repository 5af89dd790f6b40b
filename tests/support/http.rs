//! Plain HTTP on loopback for tests with real HAProxy, from blocking test
//! code: `aqueduct::echo`'s servers (they answer with their own name, so a
//! test can tell which member served a request) and its one-request client,
//! on one shared runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

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
        TestServer::bind(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A server on `addr`, in the network namespace of the calling thread
    /// (the socket stays there whichever thread serves it).
    pub fn bind(name: &str, addr: SocketAddr) -> TestServer {
        let server = RUNTIME
            .block_on(EchoServer::bind(addr, name))
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

/// Clients sending requests one after another on new connections until
/// stopped (each for 10 minutes at most), counting what fails.
pub struct Clients {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Clients {
    /// `count` clients requesting `/` with `Host: host` from `addr`.
    pub fn start(addr: SocketAddr, host: &str, count: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..count)
            .map(|_| {
                let (stop, sent, host) = (stop.clone(), sent.clone(), host.to_owned());
                std::thread::spawn(move || {
                    let (mut ok, mut failures) = (0, Vec::new());
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        sent.fetch_add(1, Ordering::SeqCst);
                        match fetch(addr, "/", &host) {
                            Ok((200, _)) => ok += 1,
                            Ok((status, body)) => failures.push(format!("{status}: {body}")),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        Clients {
            stop,
            sent,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops them: requests answered 200, and the failures.
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = (0, Vec::new());
        for thread in self.threads {
            let (ok, failures) = thread.join().expect("a client");
            total.0 += ok;
            total.1.extend(failures);
        }
        total
    }
}

/// One HTTP/1.1 request written byte for byte (the request target is sent
/// as given: no normalization of `..` or percent-escapes, which URL-based
/// clients do), with an optional `Content-Type` and a body; the status and
/// body of the answer. The body is written from another thread while the
/// answer is read, so an answer the server sends before reading the whole
/// body (a 413) is not lost to a reset.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|content_type| ("Content-Type", content_type))
        .into_iter()
        .collect();
    raw_request_with(addr, method, target, &headers, body)
}

/// [`raw_request`] with any headers; `Host` is the address unless
/// `headers` give one.
pub fn raw_request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    ));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone()?;
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // Write errors are ignored: the server may answer and close early.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = sender.join();
    match read {
        Err(error) if answer.is_empty() => return Err(error),
        _ => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP answer head")
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The payload of a chunked body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
