//! The fetcher: Mesos' artifact staging for Marathon's `uris` / `fetch`.
//!
//! [`Fetcher::fetch`] stages a task's `CommandInfo.URI`s into its sandbox
//! before the task starts, one after the other, in order:
//!
//! - **Sources.** `http://` and `https://` (rustls with the host's root
//!   certificates; connect timeout 10 s, and a transfer that makes no
//!   progress for 60 s fails; redirects are followed; a non-2xx status is an
//!   error), `file://PATH` and plain local paths (relative ones from the
//!   agent's working directory; Mesos resolves those against its
//!   `--frameworks_home`). A local file must be readable by the task's user
//!   (by its mode bits, owner and primary group; supplementary groups and
//!   ACLs are not consulted), so `file:///etc/shadow` does not hand a task
//!   what its user cannot read.
//! - **Name.** `output_file` when set (one path component), else the last
//!   segment of the URI's path (percent-decoded, no query string). Empty,
//!   `.` and `..` are refused.
//! - **Archives.** Unless `extract` is false, a name ending in `.tgz`,
//!   `.tar.gz`, `.tar.bz2`, `.tbz2`, `.tar.xz`, `.txz`, `.tar` or `.zip` is
//!   unpacked into the sandbox, and a plain `.gz` is decompressed beside it
//!   (the name without `.gz`), as Mesos does; the archive file stays. Every
//!   member is validated by `sandbox.rs` rather than left to the archive
//!   crates: see there for what is refused. A refused member fails the whole
//!   fetch. Setuid, setgid and sticky bits are dropped; owners and times in
//!   the archive are not applied.
//! - **`executable`** makes the file 0755 (others are 0644). As in Mesos, an
//!   executable URI is not extracted.
//! - **Owner.** With an owner, every file, directory and link the fetcher
//!   makes is given to that uid/gid.
//! - **Cache** (`cache: true`, see `cache.rs`): per agent, under
//!   [`FetcherConfig::cache_dir`], keyed by the SHA-256 of the URI. A hit is
//!   copied into the sandbox without downloading; concurrent fetches of one
//!   URI download it once; least recently used entries are evicted to stay
//!   under [`FetcherConfig::cache_limit_bytes`] (never one being copied out);
//!   a file larger than the limit is fetched without caching. A hit is
//!   always copied, never hard-linked: the sandbox copy belongs to the task,
//!   which may write it, and the cached one must not change under other
//!   tasks. Unlike Mesos, whose cache starts empty when the agent restarts,
//!   entries survive a restart (each was fsynced before it was renamed into
//!   place).
//!
//! Downloads land in a temporary file in the sandbox (`.meseta-fetch-*`) and
//! are renamed to their name only when complete, so a task never sees half a
//! file under the expected name. On error nothing is promised about what was
//! already staged, but nothing is ever written outside the sandbox.
//!
//! Blocking work (files, archives, the cache) runs on tokio's blocking pool;
//! `fetch` itself only awaits.

mod cache;
mod download;
mod extract;
mod local;
mod sandbox;
mod uri;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meseta_proto::v1::command_info::Uri;

use self::cache::Cache;
use self::sandbox::{Sandbox, TempFile};
use self::uri::{Plan, Source};

/// How long the fetcher waits for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transfer may go without receiving anything (the response
/// headers, or the next part of the body) before it fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent's fetcher settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetcherConfig {
    /// Where cached downloads are kept (created if missing, mode 0700). Give
    /// the fetcher a directory of its own: it removes its own temporary
    /// files there at start and evicts its own entries, and leaves anything
    /// else alone.
    pub cache_dir: PathBuf,
    /// The most the cache holds, in bytes (`--fetcher-cache-size`). 0
    /// disables caching.
    pub cache_limit_bytes: u64,
}

/// Stages URIs into sandboxes. Cheap to clone; clones share the HTTP client
/// and the cache.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    cache: Arc<Cache>,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// One staged URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The URI as the task gave it.
    pub uri: String,
    /// The fetched file in the sandbox (the archive, when it was extracted).
    pub path: PathBuf,
    /// It came from the agent's cache, without a download.
    pub from_cache: bool,
    /// It was an archive and was unpacked into the sandbox.
    pub extracted: bool,
}

/// Why a fetch failed. Every variant but the two that [`Fetcher::new`]
/// returns names the URI, and its `Display` is the message the task fails
/// with: `Failed to fetch 'http://…/pkg.tgz': HTTP 404 Not Found`. A
/// password in the URI is shown as `****`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URI cannot be fetched as written: an unsupported scheme, no file
    /// name to give it, an invalid `output_file`.
    #[error("Failed to fetch '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    /// The server answered with a status other than 2xx.
    #[error("Failed to fetch '{uri}': HTTP {status}{}", reason_suffix(.reason))]
    Http {
        uri: String,
        status: u16,
        /// The status' canonical reason phrase (`Not Found`), if it has one.
        reason: String,
    },
    /// The transfer failed: no connection, a stalled or broken transfer.
    #[error("Failed to fetch '{uri}': {reason}")]
    Transfer { uri: String, reason: String },
    /// The fetcher refused to do it: a local file the task's user may not
    /// read, something that is not a regular file.
    #[error("Failed to fetch '{uri}': {reason}")]
    Refused { uri: String, reason: String },
    /// An archive member that would land outside the sandbox (or that the
    /// fetcher never creates, like a device node).
    #[error("Failed to fetch '{uri}': archive member '{member}' {reason}")]
    UnsafeArchive {
        uri: String,
        member: String,
        reason: String,
    },
    /// An archive that cannot be read or unpacked.
    #[error("Failed to fetch '{uri}': {reason}")]
    Archive { uri: String, reason: String },
    /// A file operation failed.
    #[error("Failed to fetch '{uri}': {what}: {source}")]
    Io {
        uri: String,
        what: String,
        source: io::Error,
    },
    /// A worker thread of the fetcher failed.
    #[error("Failed to fetch '{uri}': {reason}")]
    Internal { uri: String, reason: String },
    /// [`Fetcher::new`]: the cache directory cannot be made or read.
    #[error("cannot use the fetcher cache directory {path}: {source}")]
    CacheDir { path: PathBuf, source: io::Error },
    /// [`Fetcher::new`]: the HTTP client cannot be built.
    #[error("cannot set up the fetcher's HTTP client: {reason}")]
    HttpClient { reason: String },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

impl FetchError {
    /// The URI the error is about (with a password masked), if any.
    #[must_use]
    pub fn uri(&self) -> Option<&str> {
        match self {
            FetchError::InvalidUri { uri, .. }
            | FetchError::Http { uri, .. }
            | FetchError::Transfer { uri, .. }
            | FetchError::Refused { uri, .. }
            | FetchError::UnsafeArchive { uri, .. }
            | FetchError::Archive { uri, .. }
            | FetchError::Io { uri, .. }
            | FetchError::Internal { uri, .. } => Some(uri),
            FetchError::CacheDir { .. } | FetchError::HttpClient { .. } => None,
        }
    }
}

/// What went wrong with one URI, before the URI is attached.
#[derive(Debug)]
enum Failure {
    Invalid(String),
    Http { status: u16, reason: String },
    Transfer(String),
    Refused(String),
    Unsafe { member: String, reason: String },
    Archive(String),
    Io { what: String, source: io::Error },
    Internal(String),
}

impl Failure {
    fn io(what: impl Into<String>, source: io::Error) -> Failure {
        Failure::Io {
            what: what.into(),
            source,
        }
    }

    fn for_uri(self, uri: &str) -> FetchError {
        let uri = uri::redacted(uri);
        match self {
            Failure::Invalid(reason) => FetchError::InvalidUri { uri, reason },
            Failure::Http { status, reason } => FetchError::Http {
                uri,
                status,
                reason,
            },
            Failure::Transfer(reason) => FetchError::Transfer { uri, reason },
            Failure::Refused(reason) => FetchError::Refused { uri, reason },
            Failure::Unsafe { member, reason } => FetchError::UnsafeArchive {
                uri,
                member,
                reason,
            },
            Failure::Archive(reason) => FetchError::Archive { uri, reason },
            Failure::Io { what, source } => FetchError::Io { uri, what, source },
            Failure::Internal(reason) => FetchError::Internal { uri, reason },
        }
    }
}

/// Where a URI's bytes are read from: a local file already opened (and
/// checked) for the task's user, or a URL.
enum Origin<'a> {
    File(File),
    Http(&'a reqwest::Url),
}

/// Runs `f` on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Internal(format!("the fetcher's worker failed: {e}")))?
}

impl Fetcher {
    /// A fetcher with its cache in `config.cache_dir` (made if missing;
    /// entries left by an earlier agent are kept, its temporary files
    /// removed, and the cache trimmed to the limit). Blocks briefly on that
    /// directory: call it before serving, or from a blocking thread.
    ///
    /// # Errors
    ///
    /// [`FetchError::CacheDir`] when the cache directory cannot be made or
    /// read, [`FetchError::HttpClient`] when TLS cannot be set up.
    pub fn new(config: FetcherConfig) -> Result<Fetcher, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("meseta-fetcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::HttpClient {
                reason: download::describe(&e),
            })?;
        let cache =
            Cache::open(config.cache_dir.clone(), config.cache_limit_bytes).map_err(|source| {
                FetchError::CacheDir {
                    path: config.cache_dir,
                    source,
                }
            })?;
        Ok(Fetcher {
            inner: Arc::new(Inner {
                client,
                cache: Arc::new(cache),
            }),
        })
    }

    /// Stages every URI into `sandbox` (which must exist), in order, and
    /// says what each became. With an `owner` (uid, gid), every file,
    /// directory and link it makes is chowned to it, which needs the agent
    /// to be root unless that is the agent's own user. The first failure
    /// ends the fetch: what was staged before it stays, nothing ever lands
    /// outside the sandbox. The sandbox must not be written by anyone else
    /// (the task has not started) while this runs.
    ///
    /// # Errors
    ///
    /// The first URI that cannot be staged, as a [`FetchError`] naming it;
    /// its `Display` is the message to fail the task with.
    pub async fn fetch(
        &self,
        uris: &[Uri],
        sandbox: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Vec<Fetched>, FetchError> {
        let Some(first) = uris.first() else {
            return Ok(Vec::new());
        };
        let path = sandbox.to_path_buf();
        let opened = blocking(move || Sandbox::open(&path, owner))
            .await
            .map_err(|f| f.for_uri(&first.value))?;
        let opened = Arc::new(opened);
        let mut fetched = Vec::with_capacity(uris.len());
        for uri in uris {
            let one = self
                .fetch_one(uri, sandbox, &opened)
                .await
                .map_err(|f| f.for_uri(&uri.value))?;
            fetched.push(one);
        }
        Ok(fetched)
    }

    async fn fetch_one(
        &self,
        uri: &Uri,
        sandbox_path: &Path,
        sandbox: &Arc<Sandbox>,
    ) -> Result<Fetched, Failure> {
        let started = Instant::now();
        let plan = Plan::parse(uri)?;
        // A local source is opened (and checked against the task's user)
        // first, even when the cache has it: the cache must not hand out
        // what the user could not read.
        let origin = match &plan.source {
            Source::Local(path) => {
                let path = path.clone();
                let owner = sandbox.owner();
                Origin::File(blocking(move || local::open(&path, owner)).await?)
            }
            Source::Http(url) => Origin::Http(url),
        };
        let mode = if plan.executable { 0o755 } else { 0o644 };

        let cache = &self.inner.cache;
        let (bytes, from_cache) = if plan.cache && cache.enabled() {
            let key = cache::key(&uri.value);
            let _key_lock = cache.lock(&key).await;
            let hit = {
                let (cache, key) = (cache.clone(), key.clone());
                blocking(move || Ok(cache.checkout(&key))).await?
            };
            match hit {
                Some(entry) => {
                    let (sandbox, name) = (sandbox.clone(), plan.name.clone());
                    let bytes = blocking(move || {
                        let mut source = entry
                            .open()
                            .map_err(|e| Failure::io("cannot read the cached copy", e))?;
                        let mut temp = sandbox.temp_file()?;
                        io::copy(&mut source, temp.file())
                            .map_err(|e| Failure::io("cannot copy from the cache", e))?;
                        temp.persist(&name, mode)
                    })
                    .await?;
                    (bytes, true)
                }
                None => {
                    let temp = self.stage(origin, sandbox).await?;
                    let (cache, name) = (cache.clone(), plan.name.clone());
                    let bytes = blocking(move || {
                        let mut temp = temp;
                        match cache.insert(&key, temp.file()) {
                            Ok(true) => {}
                            Ok(false) => tracing::debug!(
                                name,
                                "not cached: larger than the cache or the cache is in use"
                            ),
                            Err(e) => tracing::warn!(
                                name,
                                error = %e,
                                "cannot add a download to the fetcher cache"
                            ),
                        }
                        temp.persist(&name, mode)
                    })
                    .await?;
                    (bytes, false)
                }
            }
        } else {
            let temp = self.stage(origin, sandbox).await?;
            let name = plan.name.clone();
            let bytes = blocking(move || temp.persist(&name, mode)).await?;
            (bytes, false)
        };

        let extracted = match plan.archive {
            Some(kind) if plan.extract && !plan.executable => {
                let (sandbox, name) = (sandbox.clone(), plan.name.clone());
                blocking(move || {
                    extract::unpack(&sandbox, &name, kind)?;
                    sandbox.check_links()
                })
                .await?;
                true
            }
            _ => false,
        };

        tracing::info!(
            uri = %uri::redacted(&uri.value),
            bytes,
            from_cache,
            extracted,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "fetched"
        );
        Ok(Fetched {
            uri: uri.value.clone(),
            path: sandbox_path.join(&plan.name),
            from_cache,
            extracted,
        })
    }

    /// Brings the source's bytes into a new temporary file in the sandbox.
    async fn stage(&self, origin: Origin<'_>, sandbox: &Arc<Sandbox>) -> Result<TempFile, Failure> {
        let temp = {
            let sandbox = sandbox.clone();
            blocking(move || sandbox.temp_file()).await?
        };
        match origin {
            Origin::File(mut source) => {
                blocking(move || {
                    let mut temp = temp;
                    io::copy(&mut source, temp.file())
                        .map_err(|e| Failure::io("cannot copy the file into the sandbox", e))?;
                    Ok(temp)
                })
                .await
            }
            Origin::Http(url) => download::to_file(&self.inner.client, url, temp).await,
        }
    }
}
