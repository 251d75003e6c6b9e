//! HTTP(S) downloads into a staged file. The body is received on the async
//! runtime and written by a blocking thread, a chunk at a time.

use std::error::Error as _;

use reqwest::Url;
use tokio::sync::mpsc;

use super::sandbox::TempFile;
use super::{Failure, STALL_TIMEOUT};

/// How many received chunks may wait for the writer.
const CHUNKS_IN_FLIGHT: usize = 16;

/// A reqwest error with its causes (`…: tcp connect error: Connection
/// refused`), without the URL (it may hold a password; the message names
/// the URI already).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_redirect() {
        "too many redirects".to_string()
    } else {
        String::new()
    };
    let mut cause: Option<&dyn std::error::Error> = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // hyper's "client error (Connect)" only repeats what the next cause says.
        if !message.contains(&text) && !text.starts_with("client error (") {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        cause = c.source();
    }
    if message.is_empty() {
        e.to_string()
    } else {
        message
    }
}

fn stalled() -> Failure {
    Failure::Transfer(format!(
        "the transfer made no progress for {} s",
        STALL_TIMEOUT.as_secs()
    ))
}

/// GETs `url` (following redirects) into `temp`. A non-2xx answer is an
/// error; so is a connection or a body that makes no progress for
/// [`STALL_TIMEOUT`].
pub(super) async fn to_file(
    client: &reqwest::Client,
    url: &Url,
    temp: TempFile,
) -> Result<TempFile, Failure> {
    let response = tokio::time::timeout(STALL_TIMEOUT, client.get(url.clone()).send())
        .await
        .map_err(|_| stalled())?
        .map_err(|e| Failure::Transfer(describe(&e.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::Http {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
        });
    }
    let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || write_chunks(temp, received));
    let mut response = response;
    let mut failed = None;
    loop {
        let bytes = match tokio::time::timeout(STALL_TIMEOUT, response.chunk()).await {
            Err(_) => {
                failed = Some(stalled());
                break;
            }
            Ok(Err(e)) => {
                failed = Some(Failure::Transfer(describe(&e.without_url())));
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(bytes))) => bytes,
        };
        if chunks.send(bytes).await.is_err() {
            // The writer stopped: its error says why.
            break;
        }
    }
    drop(chunks);
    let written = writer
        .await
        .map_err(|e| Failure::Internal(format!("the fetcher's writer failed: {e}")))?;
    match failed {
        Some(failure) => Err(failure),
        None => written,
    }
}

/// Writes every chunk received into `temp`, until the sender is dropped.
fn write_chunks<B: AsRef<[u8]>>(
    mut temp: TempFile,
    mut chunks: mpsc::Receiver<B>,
) -> Result<TempFile, Failure> {
    while let Some(chunk) = chunks.blocking_recv() {
        temp.write_all(chunk.as_ref())
            .map_err(|e| Failure::io("cannot write the download into the sandbox", e))?;
    }
    Ok(temp)
}
