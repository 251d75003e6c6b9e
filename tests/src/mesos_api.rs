//! A client of Mesos' v1 HTTP APIs for tests: the master's
//! `/api/v1/scheduler` and `/api/v1` (JSON or protobuf bodies, RecordIO
//! event streams).
//!
//! [`RecordStream::open`] POSTs a SUBSCRIBE over a `TcpStream` of its own
//! (plain HTTP/1.1, chunked transfer decoded here) and hands each RecordIO
//! record to the test through a channel, with the instant it arrived (the
//! latency bench uses it). Dropping the stream closes the connection. It
//! follows a 307 to the leader. [`post`] sends one call with a request
//! timeout. Every read has a timeout: a master that accepts and never
//! answers fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use meseta_proto::mesos::{recordio, Encoding, MesosMessage};

use crate::http::Reply;

/// How long a stream may be silent (heartbeats come every 15 s).
pub const STREAM_IDLE: Duration = Duration::from_secs(45);

/// One record of a stream and when it was read.
#[derive(Debug, Clone)]
pub struct Record {
    pub bytes: Vec<u8>,
    pub received: Instant,
}

/// A RecordIO event stream (scheduler or operator SUBSCRIBE).
pub struct RecordStream {
    rx: Receiver<Record>,
    socket: TcpStream,
    /// `Mesos-Stream-Id` of the answer, if any.
    pub stream_id: Option<String>,
    /// The master that answered (after redirects).
    pub master: String,
    pub encoding: Encoding,
}

impl Drop for RecordStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn connect(authority: &str) -> Result<TcpStream> {
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
    let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {authority}"))?;
    socket.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(socket)
}

/// The `host:port` a `Location` names.
pub fn location_authority(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))?;
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

impl RecordStream {
    /// POST `body` (SUBSCRIBE, in `encoding`) to `path` on `master` and
    /// read the answer's records; follows up to 3 redirects.
    pub fn open(master: &str, path: &str, encoding: Encoding, body: &[u8]) -> Result<RecordStream> {
        let mut target = master.to_string();
        for _ in 0..4 {
            let mut socket = connect(&target)?;
            let ct = encoding.content_type();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: {ct}\r\nAccept: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            socket
                .write_all(head.as_bytes())
                .context("sending the request")?;
            socket.write_all(body).context("sending the body")?;
            socket
                .set_read_timeout(Some(STREAM_IDLE))
                .context("setting a read timeout")?;
            let mut reader = BufReader::new(socket.try_clone().context("cloning the socket")?);
            let mut status_line = String::new();
            reader
                .read_line(&mut status_line)
                .context("reading the status line")?;
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).context("reading headers")?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            if status == 307 {
                target = header("location")
                    .and_then(|l| location_authority(&l))
                    .ok_or_else(|| anyhow!("307 without a usable Location"))?;
                continue;
            }
            if status != 200 {
                let mut rest = String::new();
                let _ = reader.read_to_string(&mut rest);
                bail!("SUBSCRIBE to {target}{path} answered {status}: {rest}");
            }
            if !header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                bail!("the SUBSCRIBE answer is not chunked: {headers:?}");
            }
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut decoder = recordio::Decoder::new();
                while let Ok(Some(chunk)) = read_chunk(&mut reader) {
                    decoder.push(&chunk);
                    while let Ok(Some(bytes)) = decoder.next_record() {
                        let record = Record {
                            bytes,
                            received: Instant::now(),
                        };
                        if tx.send(record).is_err() {
                            return;
                        }
                    }
                }
            });
            return Ok(RecordStream {
                rx,
                socket,
                stream_id: header("mesos-stream-id"),
                master: target,
                encoding,
            });
        }
        bail!("too many redirects from {master}")
    }

    /// The next record, or `None` after `timeout` or at the stream's end.
    pub fn next(&self, timeout: Duration) -> Option<Record> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next record decoded as `M`.
    pub fn next_message<M: MesosMessage>(&self, timeout: Duration) -> Result<Option<(M, Instant)>> {
        match self.next(timeout) {
            None => Ok(None),
            Some(r) => Ok(Some((self.encoding.decode(&r.bytes)?, r.received))),
        }
    }

    /// Read messages until `pick` returns `Some` (returned) or `timeout`
    /// passes (an error naming `what`).
    pub fn wait_for<M: MesosMessage, T>(
        &self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&M, Instant) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no {what} within {timeout:?}");
            }
            match self.next_message::<M>(left)? {
                Some((m, at)) => {
                    if let Some(t) = pick(&m, at) {
                        return Ok(t);
                    }
                }
                None => bail!("the stream ended (or stayed silent) before {what}"),
            }
        }
    }
}

/// One chunk of a chunked body; `None` at the last chunk.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut size_line = String::new();
    if reader.read_line(&mut size_line)? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if size == 0 {
        return Ok(None);
    }
    let mut chunk = vec![0; size];
    reader.read_exact(&mut chunk)?;
    let mut crlf = [0u8; 2];
    reader.read_exact(&mut crlf)?;
    Ok(Some(chunk))
}

/// One client for every call (its connections are kept alive and reused,
/// as a framework's would be): request and connect timeouts, no redirects
/// followed.
fn client() -> Result<reqwest::blocking::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let c = reqwest::blocking::Client::builder()
        .timeout(crate::http::REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building a client")?;
    Ok(CLIENT.get_or_init(|| c).clone())
}

/// POST one call to `path` on `master` (no redirects followed: a test sees
/// the 307). `stream_id` goes in `Mesos-Stream-Id`.
pub fn post(
    master: &str,
    path: &str,
    encoding: Encoding,
    stream_id: Option<&str>,
    body: Vec<u8>,
) -> Result<(Reply, Vec<(String, String)>)> {
    post_raw(master, path, encoding.content_type(), stream_id, body)
}

/// [`post`] with any content type.
pub fn post_raw(
    master: &str,
    path: &str,
    content_type: &str,
    stream_id: Option<&str>,
    body: Vec<u8>,
) -> Result<(Reply, Vec<(String, String)>)> {
    let mut req = client()?
        .post(format!("http://{master}{path}"))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::ACCEPT, content_type)
        .body(body);
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    let resp = req.send().with_context(|| format!("POST {master}{path}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = resp.bytes().context("reading the answer")?;
    Ok((
        Reply {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        },
        headers,
    ))
}

/// POST a message and decode a 200 answer as `R`.
pub fn call<C: MesosMessage, R: MesosMessage>(
    master: &str,
    path: &str,
    encoding: Encoding,
    message: &C,
) -> Result<R> {
    let resp = client()?
        .post(format!("http://{master}{path}"))
        .header(reqwest::header::CONTENT_TYPE, encoding.content_type())
        .header(reqwest::header::ACCEPT, encoding.content_type())
        .body(encoding.encode(message)?)
        .send()
        .with_context(|| format!("POST {master}{path}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().context("reading the answer")?;
    if status != 200 {
        bail!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(encoding.decode(&bytes)?)
}
