//! The agent's fetcher cache: one file per URI, `<dir>/<sha256 of the URI>`.
//!
//! - **One download per URI.** A fetch of a cached URI holds that URI's
//!   async lock ([`Cache::lock`]) from the lookup until the download is in
//!   the cache, so concurrent fetches of one URI download it once; other
//!   URIs are not held up.
//! - **Size.** The entries' sizes add up to at most the limit: inserting
//!   one evicts the least recently used entries that nobody is copying out
//!   ([`Checkout`] pins an entry). A file larger than the limit, or one that
//!   does not fit beside the pinned entries, is not cached.
//! - **Complete entries only.** A download enters the cache as a copy in a
//!   temporary file (`.tmp-*`), fsynced, then renamed to its key; eviction
//!   and insertion rename and unlink under the index lock, so an evicted
//!   file's unlink never removes a newer entry of the same key.
//! - **Restarts.** [`Cache::open`] takes back the entries in the directory
//!   (their modification time is their last use; a hit touches it), removes
//!   the temporary files, and trims to the limit. Files it does not name
//!   are left alone and not counted.
//!
//! All but [`Cache::lock`] block: call them from a blocking thread.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The cache key of a URI: the lowercase hex SHA-256 of its text.
pub(super) fn key(uri: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(uri.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    size: u64,
    /// A logical clock: larger is more recent.
    last_used: u64,
    /// Checkouts being copied from.
    pins: u32,
}

/// The entries in memory, their total size and the clock.
#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

impl Index {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn add(&mut self, key: String, size: u64) {
        let last_used = self.tick();
        if let Some(old) = self.entries.insert(
            key,
            Entry {
                size,
                last_used,
                pins: 0,
            },
        ) {
            self.total -= old.size;
        }
        self.total += size;
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.total -= old.size;
        }
    }

    /// The keys to evict, least recently used first and never a pinned
    /// one, so that `incoming` more bytes fit under `limit`; `None` when
    /// they cannot fit.
    fn victims(&self, incoming: u64, limit: u64) -> Option<Vec<String>> {
        if incoming > limit {
            return None;
        }
        let mut candidates: Vec<(&String, &Entry)> =
            self.entries.iter().filter(|(_, e)| e.pins == 0).collect();
        candidates.sort_by_key(|(_, e)| e.last_used);
        let mut total = self.total;
        let mut victims = Vec::new();
        for (key, entry) in candidates {
            if total + incoming <= limit {
                break;
            }
            total -= entry.size;
            victims.push(key.clone());
        }
        (total + incoming <= limit).then_some(victims)
    }
}

/// The cache.
pub(super) struct Cache {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    /// One async lock per URI being fetched through the cache.
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    /// Opens (making it, mode 0700, if missing) the cache in `dir`, takes
    /// back the entries there and trims them to `limit`.
    pub(super) fn open(dir: PathBuf, limit: u64) -> io::Result<Cache> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut found = Vec::new();
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(item.path());
                continue;
            }
            if !is_key(name) {
                continue;
            }
            let meta = item.metadata()?;
            if meta.is_file() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, name.to_string(), meta.len()));
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, key, size) in found {
            index.add(key, size);
        }
        let cache = Cache {
            dir,
            limit,
            index: Mutex::new(index),
            keys: Mutex::new(HashMap::new()),
        };
        {
            let mut index = locked(&cache.index);
            let victims = index.victims(0, limit).unwrap_or_default();
            for victim in victims {
                cache.evict(&mut index, &victim);
            }
        }
        Ok(cache)
    }

    /// Whether anything can be cached at all.
    pub(super) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// The bytes the entries take.
    pub(super) fn used(&self) -> u64 {
        locked(&self.index).total
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Waits for, and takes, the lock of `key`: the holder is the only one
    /// looking up and filling that entry.
    pub(super) async fn lock(self: &Arc<Self>, key: &str) -> KeyLock {
        let mutex = locked(&self.keys)
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        KeyLock {
            cache: self.clone(),
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// The entry of `key`, pinned against eviction while the checkout
    /// lives, if it is cached (and its file is still there).
    pub(super) fn checkout(self: &Arc<Self>, key: &str) -> Option<Checkout> {
        let path = self.path(key);
        {
            let mut index = locked(&self.index);
            let entry = index.entries.get(key).copied()?;
            let intact = fs::symlink_metadata(&path)
                .is_ok_and(|meta| meta.is_file() && meta.len() == entry.size);
            if !intact {
                tracing::warn!(path = %path.display(), "a fetcher cache entry is gone or changed; fetching again");
                self.evict(&mut index, key);
                return None;
            }
            let last_used = index.tick();
            if let Some(entry) = index.entries.get_mut(key) {
                entry.pins += 1;
                entry.last_used = last_used;
            }
        }
        // The last use survives a restart as the file's modification time.
        if let Ok(file) = OpenOptions::new().write(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(Checkout {
            cache: self.clone(),
            key: key.to_string(),
            path,
        })
    }

    /// Adds the content of `source` (read from its start) as the entry of
    /// `key`, evicting what must go. `Ok(false)`: it was not cached (too
    /// large, or it does not fit beside the entries in use).
    pub(super) fn insert(&self, key: &str, source: &mut File) -> io::Result<bool> {
        let size = source.seek(SeekFrom::End(0))?;
        if size > self.limit {
            return Ok(false);
        }
        source.seek(SeekFrom::Start(0))?;
        let temp_path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut temp = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)?;
            io::copy(source, &mut temp)?;
            temp.set_permissions(fs::Permissions::from_mode(0o600))?;
            temp.sync_all()?;
            let mut index = locked(&self.index);
            let Some(victims) = index.victims(size, self.limit) else {
                return Ok(false);
            };
            for victim in victims {
                self.evict(&mut index, &victim);
            }
            fs::rename(&temp_path, self.path(key))?;
            index.add(key.to_string(), size);
            Ok(true)
        })();
        if !matches!(result, Ok(true)) {
            let _ = fs::remove_file(&temp_path);
        }
        result
    }

    /// Forgets `key` and removes its file; the caller holds the index lock.
    fn evict(&self, index: &mut Index, key: &str) {
        index.remove(key);
        match fs::remove_file(self.path(key)) {
            Ok(()) => tracing::debug!(key, "evicted from the fetcher cache"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot remove a fetcher cache entry"),
        }
    }
}

/// Holds one URI's cache lock; released when dropped.
pub(super) struct KeyLock {
    cache: Arc<Cache>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        self.guard.take();
        let mut keys = locked(&self.cache.keys);
        // Nobody else holds or waits for it (waiters hold a clone): forget it.
        if keys
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            keys.remove(&self.key);
        }
    }
}

/// A cached entry being copied out: it is not evicted while this lives.
pub(super) struct Checkout {
    cache: Arc<Cache>,
    key: String,
    path: PathBuf,
}

impl Checkout {
    /// Opens the cached file for reading.
    pub(super) fn open(&self) -> io::Result<File> {
        File::open(&self.path)
    }

    #[cfg(test)]
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let mut index = locked(&self.cache.index);
        if let Some(entry) = index.entries.get_mut(&self.key) {
            entry.pins = entry.pins.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(entries: &[(&str, u64)]) -> Index {
        let mut index = Index::default();
        for (key, size) in entries {
            index.add(key.to_string(), *size);
        }
        index
    }

    #[test]
    fn victims_are_the_least_recently_used() {
        let index = index_of(&[("a", 100), ("b", 100), ("c", 100)]);
        assert_eq!(index.victims(50, 300), Some(vec!["a".to_string()]));
        assert_eq!(
            index.victims(150, 300),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(index.victims(0, 300), Some(vec![]));
        assert_eq!(index.victims(301, 300), None);
    }

    #[test]
    fn a_pinned_entry_is_never_a_victim() {
        let mut index = index_of(&[("a", 100), ("b", 100), ("c", 100)]);
        if let Some(a) = index.entries.get_mut("a") {
            a.pins = 1;
        }
        assert_eq!(index.victims(50, 300), Some(vec!["b".to_string()]));
        for entry in index.entries.values_mut() {
            entry.pins = 1;
        }
        assert_eq!(index.victims(50, 300), None);
    }

    #[test]
    fn keys_are_sha256_hex() {
        assert_eq!(
            key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_key(&key("http://example.com/a.tgz")));
        assert_ne!(key("http://h/a"), key("http://h/b"));
    }

    #[test]
    fn entries_survive_a_reopen_and_are_trimmed_to_a_new_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(Cache::open(dir.path().join("c"), 1000).expect("open"));
        for (i, uri) in ["u1", "u2", "u3"].iter().enumerate() {
            let mut src = tempfile::tempfile().expect("tempfile");
            io::Write::write_all(&mut src, &[i as u8; 100]).expect("write");
            assert!(cache.insert(&key(uri), &mut src).expect("insert"));
            // Distinct modification times for the order after a reopen.
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            File::options()
                .write(true)
                .open(cache.path(&key(uri)))
                .and_then(|f| f.set_modified(t))
                .expect("set mtime");
        }
        fs::write(dir.path().join("c").join(".tmp-leftover"), b"x").expect("leftover");
        fs::write(dir.path().join("c").join("not-ours"), b"x").expect("foreign");
        drop(cache);

        let cache = Arc::new(Cache::open(dir.path().join("c"), 250).expect("reopen"));
        assert_eq!(cache.used(), 200);
        assert!(cache.checkout(&key("u1")).is_none(), "the oldest went");
        let kept = cache.checkout(&key("u3")).expect("u3 kept");
        assert_eq!(fs::read(kept.path()).expect("read"), vec![2u8; 100]);
        assert!(!dir.path().join("c").join(".tmp-leftover").exists());
        assert!(dir.path().join("c").join("not-ours").exists());
    }
}
