//! The admin HTTP endpoint: `/healthz`, `/metrics`, `/v1/streams`, `/v1/consumers`,
//! `/v1/queues`, `/v1/queues/{name}` and `/v1/exchanges`, served by one plain thread
//! over a blocking `TcpListener`.
//!
//! Owns: the listener, its thread, and a minimal HTTP/1.1 server: `GET` only (another
//! method on a known path is 405, an unknown path 404), one request per connection
//! (`Connection: close`), a request head of at most `REQUEST_HEAD_BYTES_MAX` bytes
//! (larger is 431) read within `READ_TIMEOUT`, and no request body. Never: runs an
//! async runtime, serves two connections at once (a slow client delays the next by at
//! most `READ_TIMEOUT` + `WRITE_TIMEOUT`), authenticates (it binds to loopback unless
//! told otherwise, and `main` warns when it is not), or writes to the engine.
//!
//! Stopping: `stop` sets a flag and `shutdown(2)`s the listening socket, which on Linux
//! wakes the thread's blocking `accept` with an error; the thread sees the flag and
//! returns.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringbroker::queue::QueueError;

use crate::snapshot::Sources;
use crate::{api, metrics};

/// The longest request head (request line and headers) read.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long a client has to send its request head (per read).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the response (per write).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (out of descriptors, say) before the next.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Why the admin endpoint could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("admin endpoint cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The thread could not be started.
    #[error("admin endpoint thread: {0}")]
    Spawn(#[source] io::Error),
    /// The listening socket could not be shut down to wake the thread.
    #[error("stopping the admin endpoint: {0}")]
    Stop(#[source] io::Error),
    /// The thread panicked.
    #[error("the admin endpoint thread panicked")]
    Panicked,
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and starts serving `sources` on a thread of its own.
    pub fn start(addr: SocketAddr, sources: Sources) -> Result<Self, AdminError> {
        let bind_err = |source| AdminError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("ringbrokerd-admin".to_owned())
            .spawn({
                let (listener, stopping) = (listener.clone(), stopping.clone());
                move || accept_loop(&listener, &stopping, &sources)
            })
            .map_err(AdminError::Spawn)?;
        Ok(Self {
            addr,
            listener,
            stopping,
            thread,
        })
    }

    /// The address it is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets a request being served finish, and joins the thread.
    pub fn stop(self) -> Result<(), AdminError> {
        // Release: pairs with the Acquire load in `accept_loop` after `accept` returns.
        self.stopping.store(true, Ordering::Release);
        // SAFETY: `self.listener` keeps the descriptor open for the whole call, so it
        // names our listening socket and no other file.
        let rc = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if rc != 0 {
            // The thread may stay blocked in `accept`: do not join it (it dies with
            // the process).
            return Err(AdminError::Stop(io::Error::last_os_error()));
        }
        self.thread.join().map_err(|_| AdminError::Panicked)
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, sources: &Sources) {
    loop {
        let accepted = listener.accept();
        // Acquire: pairs with the Release store in `AdminServer::stop`.
        if stopping.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                if let Err(error) = serve(stream, sources) {
                    tracing::debug!(%peer, %error, "admin connection failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "admin endpoint accept failed");
                std::thread::sleep(ACCEPT_ERROR_BACKOFF);
            }
        }
    }
}

/// Serves the one request of a connection.
fn serve(mut stream: TcpStream, sources: &Sources) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf = [0_u8; REQUEST_HEAD_BYTES_MAX];
    let response = match read_head(&mut stream, &mut buf) {
        Ok(head) => match parse_request_line(head) {
            Ok(request) => respond(&request, sources),
            Err(why) => Response::text(400, &format!("bad request: {why}\n")),
        },
        Err(HeadError::TooLarge) => Response::text(431, "request head too large\n"),
        Err(HeadError::Closed) => return Ok(()),
        Err(HeadError::Io(error)) => return Err(error),
    };
    write_response(&mut stream, &response)?;
    stream.flush()
}

/// Why no request head could be read.
#[derive(Debug)]
enum HeadError {
    /// No blank line within `REQUEST_HEAD_BYTES_MAX` bytes.
    TooLarge,
    /// The client closed the connection before finishing its head.
    Closed,
    /// Reading failed (or timed out).
    Io(io::Error),
}

/// Reads into `buf` until the blank line that ends a request head; returns the head.
fn read_head<'b>(reader: &mut impl Read, buf: &'b mut [u8]) -> Result<&'b [u8], HeadError> {
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            return Ok(&buf[..end]);
        }
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Where the head ends: after the first `\r\n\r\n` (or bare `\n\n`, which RFC 9112
/// lets a server accept).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The parts of a request line the endpoint uses.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target's path, query string removed.
    path: &'a str,
}

/// Parses `METHOD SP TARGET SP HTTP/1.x`, the head's first line.
fn parse_request_line(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| "request line is not UTF-8")?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("request line is not METHOD TARGET VERSION");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("only HTTP/1.x is served");
    }
    if method.is_empty() || !target.starts_with('/') {
        return Err("empty method or a target that is not a path");
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request { method, path })
}

/// What the endpoint serves.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Metrics,
    Streams,
    Consumers,
    Queues,
    Exchanges,
    /// `/v1/queues/{name}`, the name still percent-encoded.
    Queue(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/healthz" => Some(Route::Healthz),
        "/metrics" => Some(Route::Metrics),
        "/v1/streams" => Some(Route::Streams),
        "/v1/consumers" => Some(Route::Consumers),
        "/v1/queues" => Some(Route::Queues),
        "/v1/exchanges" => Some(Route::Exchanges),
        _ => match path.strip_prefix("/v1/queues/") {
            Some(name) if !name.is_empty() => Some(Route::Queue(name)),
            _ => None,
        },
    }
}

fn respond(request: &Request<'_>, sources: &Sources) -> Response {
    let Some(route) = route(request.path) else {
        return Response::text(404, "not found\n");
    };
    if request.method != "GET" {
        return Response {
            allow_get: true,
            ..Response::text(405, "only GET is served\n")
        };
    }
    match route {
        Route::Healthz => Response::text(200, "ok\n"),
        Route::Metrics => match sources.snapshot() {
            Ok(snapshot) => Response::new(200, metrics::CONTENT_TYPE, metrics::render(&snapshot)),
            Err(error) => Response::text(503, &format!("{error}\n")),
        },
        Route::Streams => match sources.streams() {
            Ok(snapshot) => json(api::streams(&snapshot)),
            Err(error) => json_error(503, &error),
        },
        Route::Consumers => match sources.streams() {
            Ok(snapshot) => json(api::consumers(&snapshot)),
            Err(error) => json_error(503, &error),
        },
        Route::Queues => match sources.queues() {
            Ok(all) => json(api::queues(&all)),
            Err(error) => json_error(503, &error),
        },
        Route::Exchanges => json(api::exchanges(&sources.exchanges())),
        Route::Queue(encoded) => match percent_decode(encoded) {
            Some(name) => match sources.queue(&name) {
                Ok(info) => json(api::queue(&info)),
                Err(error @ QueueError::NotFound { .. }) => json_error(404, &error),
                Err(error) => json_error(503, &error),
            },
            None => Response::text(400, "bad percent-encoding in the queue name\n"),
        },
    }
}

/// A rendered JSON document, or 500 if it could not be rendered.
fn json(document: serde_json::Result<Vec<u8>>) -> Response {
    match document {
        Ok(body) => Response::new(200, api::CONTENT_TYPE, body),
        Err(error) => json_error(500, &error),
    }
}

fn json_error(status: u16, error: &dyn std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": error.to_string() }).to_string();
    Response::new(status, api::CONTENT_TYPE, body)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
        i += 3;
    }
    String::from_utf8(decoded).ok()
}

/// A response, always sent with `Connection: close`.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Adds `Allow: GET` (for 405).
    allow_get: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            allow_get: false,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(out: &mut impl Write, response: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.allow_get {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_gives_method_and_path_without_query() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_request_line(head),
            Ok(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert!(parse_request_line(b"GET /metrics\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET /metrics HTTP/2\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET  /metrics HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request_line(b"GET metrics HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn head_is_read_up_to_the_blank_line_and_no_further() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        let mut buf = [0_u8; 64];
        let head = read_head(&mut input, &mut buf).expect("head");
        assert_eq!(head, b"GET / HTTP/1.1\r\nA: b\r\n\r\n");
    }

    #[test]
    fn head_larger_than_the_bound_is_refused() {
        let long = [b'a'; 100];
        let mut buf = [0_u8; 64];
        assert!(matches!(
            read_head(&mut &long[..], &mut buf),
            Err(HeadError::TooLarge)
        ));
        let mut short: &[u8] = b"GET / HT";
        assert!(matches!(
            read_head(&mut short, &mut buf),
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn routes_are_exact_paths() {
        assert_eq!(route("/healthz"), Some(Route::Healthz));
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/v1/streams"), Some(Route::Streams));
        assert_eq!(route("/v1/consumers"), Some(Route::Consumers));
        assert_eq!(route("/v1/queues/a%20b"), Some(Route::Queue("a%20b")));
        assert_eq!(route("/v1/queues/"), None);
        assert_eq!(route("/v1/queues"), Some(Route::Queues));
        assert_eq!(route("/v1/exchanges"), Some(Route::Exchanges));
        assert_eq!(route("/v1/exchanges/"), None);
        assert_eq!(route("/healthz/"), None);
        assert_eq!(route("/"), None);
    }

    #[test]
    fn percent_decoding_of_queue_names() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("plain.name").as_deref(), Some("plain.name"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("bad%+1"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn responses_close_and_405_says_allow_get() {
        let mut out = Vec::new();
        let response = Response {
            allow_get: true,
            ..Response::text(405, "only GET is served\n")
        };
        write_response(&mut out, &response).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\nConnection: close\r\nAllow: GET\r\n\r\nonly GET is served\n"
        );
    }
}
