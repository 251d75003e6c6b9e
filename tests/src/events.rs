//! A reader of Marathon's `/v2/events` server-sent events.
//!
//! [`EventStream::connect`] returns once the server has answered the
//! request, so the subscription exists and no later event is missed. A
//! thread reads frames (`event: <type>`, `data: <json>`, blank line) and
//! hands them over with the instant each was received, which the benchmark
//! uses to time launches.
//!
//! The stream is plain HTTP/1.1 over a `TcpStream` of its own (not reqwest)
//! so that dropping an [`EventStream`] really closes the connection: a
//! server that waits for its open connections on shutdown is not held up by
//! a test's forgotten subscriber.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `event:` line (Marathon's `eventType`).
    pub kind: String,
    /// The `data:` line as JSON.
    pub data: Value,
    /// When this process read it.
    pub received: Instant,
}

impl Event {
    /// A string field of the event's JSON.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// Events of one `/v2/events` connection, in order. Dropping it closes the
/// connection.
pub struct EventStream {
    rx: Receiver<Event>,
    socket: TcpStream,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl EventStream {
    /// Subscribes at `base` (`http://host:port`) with `query` appended to
    /// `/v2/events` (e.g. `?event_type=status_update_event`).
    pub fn connect(base: &str, query: &str) -> Result<EventStream> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{base}: only http:// is supported"))?
            .trim_end_matches('/');
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {authority}"))?;
        socket.set_nodelay(true).context("setting TCP_NODELAY")?;
        let path = format!("/v2/events{query}");
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        .with_context(|| format!("sending GET {path}"))?;

        // The head must come quickly; the body then may idle for long.
        socket
            .set_read_timeout(Some(Duration::from_secs(15)))
            .context("setting a read timeout")?;
        let mut reader = BufReader::new(socket.try_clone().context("cloning the socket")?);
        let mut status = String::new();
        reader
            .read_line(&mut status)
            .with_context(|| format!("reading the status of GET {path}"))?;
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        if code != "200" {
            bail!("GET {base}{path}: {}", status.trim());
        }
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .with_context(|| format!("reading the headers of GET {path}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.trim().eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        socket
            .set_read_timeout(None)
            .context("clearing the read timeout")?;

        let (tx, rx) = mpsc::channel();
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(Chunked::new(reader))
        } else {
            Box::new(reader)
        };
        std::thread::Builder::new()
            .name("sse-reader".into())
            .spawn(move || {
                let mut body = BufReader::new(body);
                let mut kind = String::new();
                let mut data = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    match body.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l.is_empty() {
                        if !data.is_empty() {
                            let event = Event {
                                kind: std::mem::take(&mut kind),
                                data: serde_json::from_str(&data)
                                    .unwrap_or(Value::String(data.clone())),
                                received: Instant::now(),
                            };
                            data.clear();
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                        kind.clear();
                    } else if let Some(v) = l.strip_prefix("event:") {
                        kind = v.trim_start().to_string();
                    } else if let Some(v) = l.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                    // `:` comments (keep-alives) and unknown fields are skipped.
                }
            })
            .context("starting the event reader thread")?;
        Ok(EventStream { rx, socket })
    }

    /// The next event, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Skips events until one matches `wanted`; `None` after `timeout`.
    pub fn next_matching(
        &self,
        timeout: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let e = self.next(left)?;
            if wanted(&e) {
                return Some(e);
            }
        }
    }

    /// Every event that arrived so far, without waiting.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }
}

/// The body of a `Transfer-Encoding: chunked` response, de-chunked.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            self.done = true;
            return Ok(());
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            self.done = true;
        }
        self.left = size;
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 && !self.done {
            self.next_chunk()?;
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
            return Ok(0);
        }
        self.left -= n;
        if self.left == 0 {
            // The CRLF after the chunk's data.
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked::new(&raw[..])
            .read_to_string(&mut out)
            .expect("in-memory read");
        assert_eq!(out, "hello, world");
    }
}
