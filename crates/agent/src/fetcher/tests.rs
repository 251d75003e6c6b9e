//! The fetcher against a real HTTP server on loopback (axum, counting the
//! requests per path), with archives built here by the same crates. No root
//! needed.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::*;

// ---------------------------------------------------------------- server

#[derive(Default)]
struct Served {
    files: HashMap<String, Vec<u8>>,
    redirects: HashMap<String, String>,
    /// Held before answering, so that concurrent fetches overlap.
    delay: Duration,
    hits: Mutex<HashMap<String, usize>>,
}

impl Served {
    fn with(files: &[(&str, Vec<u8>)]) -> Served {
        Served {
            files: files
                .iter()
                .map(|(path, body)| (path.to_string(), body.clone()))
                .collect(),
            ..Served::default()
        }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn respond(State(served): State<Arc<Served>>, uri: axum::http::Uri) -> Response {
    let path = uri.path().to_string();
    *served.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    if !served.delay.is_zero() {
        tokio::time::sleep(served.delay).await;
    }
    if let Some(to) = served.redirects.get(&path) {
        return (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response();
    }
    match served.files.get(&path) {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves `served` on 127.0.0.1; returns the base URL (`http://127.0.0.1:PORT`).
async fn serve(served: Served) -> (String, Arc<Served>) {
    let served = Arc::new(served);
    let app = axum::Router::new()
        .fallback(respond)
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), served)
}

// ---------------------------------------------------------------- archives

enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
}

/// A tar with the names written byte for byte (the `tar` builder itself
/// refuses `..` and absolute names, which the malicious cases need).
fn tar_of(items: &[Item]) -> Vec<u8> {
    fn raw(header: &mut tar::Header, name: &str, link: &str) {
        let old = header.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let (name, link, kind, mode, data): (&str, &str, tar::EntryType, u32, &[u8]) = match item {
            Item::File(name, data, mode) => (name, "", tar::EntryType::Regular, *mode, data),
            Item::Dir(name) => (name, "", tar::EntryType::Directory, 0o755, b""),
            Item::Symlink(name, to) => (name, to, tar::EntryType::Symlink, 0o777, b""),
            Item::Hardlink(name, to) => (name, to, tar::EntryType::Link, 0o644, b""),
            Item::Fifo(name) => (name, "", tar::EntryType::Fifo, 0o644, b""),
            Item::CharDevice(name) => (name, "", tar::EntryType::Char, 0o644, b""),
        };
        raw(&mut header, name, link);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zip_of(items: &[Item]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for item in items {
        match item {
            Item::File(name, data, mode) => {
                writer
                    .start_file(*name, options.unix_permissions(*mode))
                    .unwrap();
                writer.write_all(data).unwrap();
            }
            Item::Dir(name) => writer.add_directory(*name, options).unwrap(),
            Item::Symlink(name, to) => writer.add_symlink(*name, *to, options).unwrap(),
            Item::Hardlink(..) | Item::Fifo(_) | Item::CharDevice(_) => {
                unreachable!("not in zips")
            }
        }
    }
    writer.finish().unwrap().into_inner()
}

/// The sample package: `run.sh` (0755) and `lib/data.txt`.
fn package() -> Vec<Item<'static>> {
    vec![
        Item::Dir("./"),
        Item::File("./run.sh", b"#!/bin/sh\necho hello\n", 0o755),
        Item::Dir("./lib/"),
        Item::File("./lib/data.txt", b"data\n", 0o644),
    ]
}

// ---------------------------------------------------------------- fixtures

/// A sandbox inside a parent directory that holds nothing else but a
/// `secret` file (so that a write outside the sandbox shows), and a cache
/// elsewhere.
struct Dirs {
    _root: tempfile::TempDir,
    parent: PathBuf,
    sandbox: PathBuf,
    cache: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("parent");
        let sandbox = parent.join("sandbox");
        fs::create_dir_all(&sandbox).unwrap();
        fs::write(parent.join("secret"), b"secret\n").unwrap();
        let cache = root.path().join("cache");
        Dirs {
            parent,
            sandbox,
            cache,
            _root: root,
        }
    }

    /// Another sandbox beside the first.
    fn sandbox2(&self) -> PathBuf {
        let path = self.parent.join("sandbox2");
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn fetcher(&self, cache_limit_bytes: u64) -> Fetcher {
        Fetcher::new(FetcherConfig {
            cache_dir: self.cache.clone(),
            cache_limit_bytes,
        })
        .unwrap()
    }

    /// Fails the test if anything but the sandboxes and the untouched
    /// secret is in the parent directory.
    fn assert_nothing_outside(&self) {
        let mut names: Vec<String> = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.retain(|n| n != "sandbox2");
        assert_eq!(names, ["sandbox", "secret"], "in {}", self.parent.display());
        let secret = self.parent.join("secret");
        assert_eq!(fs::read(&secret).unwrap(), b"secret\n");
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "no hard link to it"
        );
    }

    /// The names in the sandbox root, sorted.
    fn sandbox_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.sandbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Bytes of cache entries on disk.
    fn cache_bytes_on_disk(&self) -> u64 {
        fs::read_dir(&self.cache)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}

fn uri(value: &str) -> Uri {
    Uri {
        value: value.to_string(),
        executable: false,
        extract: true,
        cache: false,
        output_file: String::new(),
    }
}

fn cached(value: &str) -> Uri {
    Uri {
        cache: true,
        ..uri(value)
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------- archives extracted

#[tokio::test]
async fn a_tar_gz_is_extracted_into_the_sandbox_and_kept() {
    let (base, served) = serve(Served::with(&[("/pkg.tgz", gz(&tar_of(&package())))])).await;
    let dirs = Dirs::new();
    let url = format!("{base}/pkg.tgz");
    let fetched = dirs
        .fetcher(0)
        .fetch(&[uri(&url)], &dirs.sandbox, None)
        .await
        .unwrap();
    assert_eq!(
        fetched,
        [Fetched {
            uri: url,
            path: dirs.sandbox.join("pkg.tgz"),
            from_cache: false,
            extracted: true,
        }]
    );
    assert_eq!(
        fs::read(dirs.sandbox.join("run.sh")).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    assert_eq!(mode_of(&dirs.sandbox.join("run.sh")), 0o755);
    assert_eq!(
        fs::read(dirs.sandbox.join("lib/data.txt")).unwrap(),
        b"data\n"
    );
    assert_eq!(dirs.sandbox_names(), ["lib", "pkg.tgz", "run.sh"]);
    assert_eq!(served.hits("/pkg.tgz"), 1);
    dirs.assert_nothing_outside();
}

#[tokio::test]
async fn a_zip_is_extracted_with_its_modes() {
    let archive = zip_of(&[
        Item::Dir("bin/"),
        Item::File("bin/tool", b"tool\n", 0o755),
        Item::File("README", b"readme\n", 0o644),
        Item::Symlink("latest", "bin/tool"),
    ]);
    let (base, _) = serve(Served::with(&[("/app.zip", archive)])).await;
    let dirs = Dirs::new();
    let fetched = dirs
        .fetcher(0)
        .fetch(&[uri(&format!("{base}/app.zip"))], &dirs.sandbox, None)
        .await
        .unwrap();
    assert!(fetched[0].extracted);
    assert_eq!(fs::read(dirs.sandbox.join("bin/tool")).unwrap(), b"tool\n");
    assert_eq!(mode_of(&dirs.sandbox.join("bin/tool")), 0o755);
    assert_eq!(mode_of(&dirs.sandbox.join("README")), 0o644);
    assert_eq!(
        fs::read_link(dirs.sandbox.join("latest")).unwrap(),
        Path::new("bin/tool")
    );
    assert_eq!(dirs.sandbox_names(), ["README", "app.zip", "bin", "latest"]);
    dirs.assert_nothing_outside();
}

#[tokio::test]
async fn tar_bz2_tar_xz_and_plain_tar_are_extracted() {
    let tar = tar_of(&package());
    let files = [
        ("/a.tar.bz2", bz2(&tar)),
        ("/b.tbz2", bz2(&tar)),
        ("/c.tar.xz", xz(&tar)),
        ("/d.txz", xz(&tar)),
        ("/e.tar", tar.clone()),
        ("/f.tar.gz", gz(&tar)),
    ];
    let (base, _) = serve(Served::with(&files)).await;
    for (path, _) in &files {
        let dirs = Dirs::new();
        let fetched = dirs
            .fetcher(0)
            .fetch(&[uri(&format!("{base}{path}"))], &dirs.sandbox, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(fetched[0].extracted, "{path}");
        assert_eq!(
            fs::read(dirs.sandbox.join("run.sh")).unwrap(),
            b"#!/bin/sh\necho hello\n",
            "{path}"
        );
        assert_eq!(
            fs::read(dirs.sandbox.join("lib/data.txt")).unwrap(),
            b"data\n"
        );
        assert!(dirs.sandbox.join(&path[1..]).is_file(), "{path} kept");
    }
}

#[tokio::test]
async fn a_plain_gz_is_decompressed_beside_itself() {
    let (base, _) = serve(Served::with(&[("/config.json.gz", gz(b"{}\n"))])).await;
    let dirs = Dirs::new();
    dirs.fetcher(0)
        .fetch(
            &[uri(&format!("{base}/config.json.gz"))],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert_eq!(fs::read(dirs.sandbox.join("config.json")).unwrap(), b"{}\n");
    assert!(dirs.sandbox.join("config.json.gz").is_file());
}

#[tokio::test]
async fn extract_false_keeps_the_archive_as_it_is() {
    let archive = gz(&tar_of(&package()));
    let (base, _) = serve(Served::with(&[("/pkg.tgz", archive.clone())])).await;
    let dirs = Dirs::new();
    let fetched = dirs
        .fetcher(0)
        .fetch(
            &[Uri {
                extract: false,
                ..uri(&format!("{base}/pkg.tgz"))
            }],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert!(!fetched[0].extracted);
    assert_eq!(dirs.sandbox_names(), ["pkg.tgz"]);
    assert_eq!(fs::read(dirs.sandbox.join("pkg.tgz")).unwrap(), archive);
}

#[tokio::test]
async fn executable_makes_the_file_0755_and_others_are_0644() {
    let (base, _) = serve(Served::with(&[
        ("/tool", b"#!/bin/sh\n".to_vec()),
        ("/notes.txt", b"notes\n".to_vec()),
    ]))
    .await;
    let dirs = Dirs::new();
    dirs.fetcher(0)
        .fetch(
            &[
                Uri {
                    executable: true,
                    ..uri(&format!("{base}/tool"))
                },
                uri(&format!("{base}/notes.txt")),
            ],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert_eq!(mode_of(&dirs.sandbox.join("tool")), 0o755);
    assert_eq!(mode_of(&dirs.sandbox.join("notes.txt")), 0o644);
}

#[tokio::test]
async fn an_executable_archive_is_made_executable_and_not_extracted() {
    // Mesos' order: `executable` wins over `extract`.
    let (base, _) = serve(Served::with(&[("/tool.tgz", gz(&tar_of(&package())))])).await;
    let dirs = Dirs::new();
    let fetched = dirs
        .fetcher(0)
        .fetch(
            &[Uri {
                executable: true,
                ..uri(&format!("{base}/tool.tgz"))
            }],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert!(!fetched[0].extracted);
    assert_eq!(dirs.sandbox_names(), ["tool.tgz"]);
    assert_eq!(mode_of(&dirs.sandbox.join("tool.tgz")), 0o755);
}

#[tokio::test]
async fn output_file_names_the_file_and_a_query_string_is_not_part_of_the_name() {
    let (base, served) = serve(Served::with(&[("/dl", gz(&tar_of(&package())))])).await;
    let dirs = Dirs::new();
    let fetched = dirs
        .fetcher(0)
        .fetch(
            &[
                Uri {
                    output_file: "app.tar.gz".to_string(),
                    ..uri(&format!("{base}/dl?version=3"))
                },
                Uri {
                    extract: false,
                    ..uri(&format!("{base}/dl?version=4"))
                },
            ],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert_eq!(fetched[0].path, dirs.sandbox.join("app.tar.gz"));
    assert!(fetched[0].extracted, "named as an archive by output_file");
    assert_eq!(fetched[1].path, dirs.sandbox.join("dl"));
    assert!(dirs.sandbox.join("run.sh").is_file());
    assert_eq!(served.hits("/dl"), 2);
}

#[tokio::test]
async fn redirects_are_followed() {
    let mut served = Served::with(&[("/real/pkg.tgz", gz(&tar_of(&package())))]);
    served
        .redirects
        .insert("/pkg.tgz".to_string(), "/real/pkg.tgz".to_string());
    let (base, served) = serve(served).await;
    let dirs = Dirs::new();
    dirs.fetcher(0)
        .fetch(&[uri(&format!("{base}/pkg.tgz"))], &dirs.sandbox, None)
        .await
        .unwrap();
    assert!(dirs.sandbox.join("run.sh").is_file());
    assert_eq!(served.hits("/real/pkg.tgz"), 1);
}

// ---------------------------------------------------------------- cache

#[tokio::test]
async fn a_cached_uri_is_downloaded_once_for_two_fetches() {
    let (base, served) = serve(Served::with(&[("/pkg.tgz", gz(&tar_of(&package())))])).await;
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(1 << 20);
    let url = format!("{base}/pkg.tgz");
    let first = fetcher
        .fetch(&[cached(&url)], &dirs.sandbox, None)
        .await
        .unwrap();
    let second_sandbox = dirs.sandbox2();
    let second = fetcher
        .fetch(&[cached(&url)], &second_sandbox, None)
        .await
        .unwrap();
    assert_eq!(served.hits("/pkg.tgz"), 1, "one download");
    assert!(!first[0].from_cache);
    assert!(second[0].from_cache);
    assert!(second[0].extracted);
    assert_eq!(
        fs::read(second_sandbox.join("run.sh")).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    assert_eq!(
        fs::read(second_sandbox.join("pkg.tgz")).unwrap(),
        fs::read(dirs.sandbox.join("pkg.tgz")).unwrap()
    );
    // A copy, not a link to the cache: the task may write its own.
    assert_eq!(
        fs::metadata(second_sandbox.join("pkg.tgz"))
            .unwrap()
            .nlink(),
        1
    );
    // A clone of the fetcher shares the cache.
    let third = dirs.parent.join("sandbox3");
    fs::create_dir(&third).unwrap();
    let again = fetcher
        .clone()
        .fetch(&[cached(&url)], &third, None)
        .await
        .unwrap();
    assert!(again[0].from_cache);
    assert_eq!(served.hits("/pkg.tgz"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_fetches_of_one_cached_uri_download_it_once() {
    let mut served = Served::with(&[("/big.tgz", gz(&tar_of(&package())))]);
    served.delay = Duration::from_millis(200);
    let (base, served) = serve(served).await;
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(1 << 20);
    let url = format!("{base}/big.tgz");
    let other = dirs.sandbox2();
    let uris = [cached(&url)];
    let (a, b) = tokio::join!(
        fetcher.fetch(&uris, &dirs.sandbox, None),
        fetcher.fetch(&uris, &other, None),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(served.hits("/big.tgz"), 1, "one download");
    assert_eq!(
        [a[0].from_cache, b[0].from_cache]
            .iter()
            .filter(|c| **c)
            .count(),
        1,
        "one of them came from the cache"
    );
    assert!(dirs.sandbox.join("run.sh").is_file());
    assert!(other.join("run.sh").is_file());
}

#[tokio::test]
async fn eviction_keeps_the_cache_under_its_limit() {
    let files = [
        ("/a.bin", vec![b'a'; 100]),
        ("/b.bin", vec![b'b'; 100]),
        ("/c.bin", vec![b'c'; 100]),
    ];
    let (base, served) = serve(Served::with(&files)).await;
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(250);
    for (path, _) in &files {
        fetcher
            .fetch(&[cached(&format!("{base}{path}"))], &dirs.sandbox, None)
            .await
            .unwrap();
        assert!(fetcher.inner.cache.used() <= 250);
        assert!(dirs.cache_bytes_on_disk() <= 250);
    }
    assert_eq!(fetcher.inner.cache.used(), 200);
    // c (the newest) and b are cached; a, the least recently used, went.
    let again = fetcher
        .fetch(
            &[
                cached(&format!("{base}/c.bin")),
                cached(&format!("{base}/a.bin")),
            ],
            &dirs.sandbox2(),
            None,
        )
        .await
        .unwrap();
    assert!(again[0].from_cache);
    assert!(!again[1].from_cache);
    assert_eq!(served.hits("/c.bin"), 1);
    assert_eq!(served.hits("/a.bin"), 2);
    assert!(dirs.cache_bytes_on_disk() <= 250);
}

#[tokio::test]
async fn a_file_larger_than_the_cache_is_fetched_without_caching() {
    let (base, served) = serve(Served::with(&[("/huge.bin", vec![7u8; 1000])])).await;
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(500);
    let url = format!("{base}/huge.bin");
    for sandbox in [dirs.sandbox.clone(), dirs.sandbox2()] {
        let fetched = fetcher
            .fetch(&[cached(&url)], &sandbox, None)
            .await
            .unwrap();
        assert!(!fetched[0].from_cache);
        assert_eq!(fs::read(sandbox.join("huge.bin")).unwrap(), vec![7u8; 1000]);
    }
    assert_eq!(served.hits("/huge.bin"), 2);
    assert_eq!(dirs.cache_bytes_on_disk(), 0);
}

#[tokio::test]
async fn the_cache_survives_a_new_fetcher_on_the_same_directory() {
    let (base, served) = serve(Served::with(&[("/x.bin", b"x".to_vec())])).await;
    let dirs = Dirs::new();
    let url = format!("{base}/x.bin");
    dirs.fetcher(1000)
        .fetch(&[cached(&url)], &dirs.sandbox, None)
        .await
        .unwrap();
    let fetched = dirs
        .fetcher(1000)
        .fetch(&[cached(&url)], &dirs.sandbox2(), None)
        .await
        .unwrap();
    assert!(fetched[0].from_cache);
    assert_eq!(served.hits("/x.bin"), 1);
}

// ---------------------------------------------------------------- local sources

#[tokio::test]
async fn file_uris_and_plain_paths_are_copied() {
    let dirs = Dirs::new();
    let source_dir = tempfile::tempdir().unwrap();
    let archive = source_dir.path().join("pkg.tar.gz");
    fs::write(&archive, gz(&tar_of(&package()))).unwrap();
    let plain = source_dir.path().join("plain.txt");
    fs::write(&plain, b"plain\n").unwrap();
    let fetched = dirs
        .fetcher(1 << 20)
        .fetch(
            &[
                uri(&format!("file://{}", archive.display())),
                cached(&plain.display().to_string()),
            ],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap();
    assert!(fetched[0].extracted);
    assert!(dirs.sandbox.join("run.sh").is_file());
    assert_eq!(
        fs::read(dirs.sandbox.join("plain.txt")).unwrap(),
        b"plain\n"
    );
    assert_eq!(fetched[1].path, dirs.sandbox.join("plain.txt"));
}

#[tokio::test]
async fn a_local_file_the_task_user_cannot_read_is_refused() {
    let dirs = Dirs::new();
    let source_dir = tempfile::tempdir().unwrap();
    let private = source_dir.path().join("private.key");
    fs::write(&private, b"key\n").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    let me = nix::unistd::getuid().as_raw();
    let stranger = if me == 65_534 { 65_533 } else { 65_534 };
    let value = format!("file://{}", private.display());
    let fetcher = dirs.fetcher(1 << 20);
    // The agent's own user may read it, and so it is cached ...
    let own = dirs.sandbox2();
    let fetched = fetcher.fetch(&[cached(&value)], &own, None).await.unwrap();
    assert!(!fetched[0].from_cache);
    // ... but the cache does not hand it to a user who may not.
    let err = fetcher
        .fetch(&[cached(&value)], &dirs.sandbox, Some((stranger, stranger)))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Refused { .. }), "{err}");
    assert!(err
        .to_string()
        .starts_with(&format!("Failed to fetch '{value}': ")));
    assert!(
        err.to_string().contains("not readable by the task's user"),
        "{err}"
    );
    assert!(
        dirs.sandbox_names().is_empty(),
        "{:?}",
        dirs.sandbox_names()
    );
}

#[tokio::test]
async fn files_are_given_to_the_owner() {
    // Giving files to one's own uid/gid works without root.
    let owner = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let (base, _) = serve(Served::with(&[("/pkg.tgz", gz(&tar_of(&package())))])).await;
    let dirs = Dirs::new();
    dirs.fetcher(0)
        .fetch(
            &[uri(&format!("{base}/pkg.tgz"))],
            &dirs.sandbox,
            Some(owner),
        )
        .await
        .unwrap();
    for name in ["pkg.tgz", "run.sh", "lib", "lib/data.txt"] {
        let meta = fs::symlink_metadata(dirs.sandbox.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), owner, "{name}");
    }
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn http_404_fails_with_the_uri_and_the_status() {
    let (base, served) = serve(Served::default()).await;
    let dirs = Dirs::new();
    let url = format!("{base}/missing.tgz");
    let err = dirs
        .fetcher(1 << 20)
        .fetch(&[cached(&url)], &dirs.sandbox, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("Failed to fetch '{url}': HTTP 404 Not Found")
    );
    assert_eq!(err.uri(), Some(url.as_str()));
    assert_eq!(served.hits("/missing.tgz"), 1);
    assert!(dirs.sandbox_names().is_empty(), "no temporary file left");
    assert_eq!(dirs.cache_bytes_on_disk(), 0);
}

#[tokio::test]
async fn a_refused_connection_fails_with_the_uri() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dirs = Dirs::new();
    let url = format!("http://127.0.0.1:{port}/pkg.tgz");
    let err = dirs
        .fetcher(0)
        .fetch(&[uri(&url)], &dirs.sandbox, None)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Transfer { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("Failed to fetch '{url}': ")),
        "{err}"
    );
    assert!(dirs.sandbox_names().is_empty());
}

#[tokio::test]
async fn the_first_failure_ends_the_fetch_and_names_its_uri() {
    let (base, _) = serve(Served::with(&[("/ok.txt", b"ok".to_vec())])).await;
    let dirs = Dirs::new();
    let bad = format!("{base}/nope.txt");
    let err = dirs
        .fetcher(0)
        .fetch(
            &[
                uri(&format!("{base}/ok.txt")),
                uri(&bad),
                uri(&format!("{base}/ok.txt")),
            ],
            &dirs.sandbox,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.uri(), Some(bad.as_str()));
    assert_eq!(dirs.sandbox_names(), ["ok.txt"]);
}

#[tokio::test]
async fn bad_uris_are_refused_before_any_download() {
    let (base, served) = serve(Served::with(&[("/a.txt", b"a".to_vec())])).await;
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(0);
    let cases = [
        Uri {
            output_file: "../escape".to_string(),
            ..uri(&format!("{base}/a.txt"))
        },
        Uri {
            output_file: "..".to_string(),
            ..uri(&format!("{base}/a.txt"))
        },
        uri(&format!("{base}/")),
        uri("ftp://example.com/a.txt"),
        uri(""),
    ];
    for case in cases {
        let err = fetcher
            .fetch(std::slice::from_ref(&case), &dirs.sandbox, None)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::InvalidUri { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("Failed to fetch '{}': ", case.value)),
            "{err}"
        );
    }
    assert_eq!(served.hits("/a.txt"), 0);
    assert_eq!(served.hits("/"), 0);
    assert!(dirs.sandbox_names().is_empty());
    dirs.assert_nothing_outside();
}

#[tokio::test]
async fn no_uris_fetch_nothing() {
    let dirs = Dirs::new();
    let fetched = dirs
        .fetcher(0)
        .fetch(&[], &dirs.sandbox, None)
        .await
        .unwrap();
    assert!(fetched.is_empty());
}

// ---------------------------------------------------------------- malicious archives

/// Serves `archive` as `name`, fetches it, and expects it refused as
/// unsafe with nothing created outside the sandbox.
async fn assert_refused(case: &str, name: &str, archive: Vec<u8>, dirs: &Dirs) -> FetchError {
    let path = format!("/{name}");
    let (base, _) = serve(Served::with(&[(path.as_str(), archive)])).await;
    let url = format!("{base}{path}");
    let err = dirs
        .fetcher(0)
        .fetch(&[uri(&url)], &dirs.sandbox, None)
        .await
        .expect_err(case);
    assert!(
        matches!(err, FetchError::UnsafeArchive { .. }),
        "{case}: {err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("Failed to fetch '{url}': archive member '")),
        "{case}: {err}"
    );
    dirs.assert_nothing_outside();
    err
}

#[tokio::test]
async fn malicious_tars_are_refused_and_nothing_lands_outside() {
    // Each case gets a fresh parent directory; `{parent}` is replaced by it.
    let cases: Vec<(&str, Vec<Item>)> = vec![
        (
            "absolute member",
            vec![Item::File("{parent}/abs-evil", b"x", 0o644)],
        ),
        ("dot-dot member", vec![Item::File("../evil", b"x", 0o644)]),
        (
            "dot-dot in the middle",
            vec![Item::Dir("a/"), Item::File("a/../../evil", b"x", 0o644)],
        ),
        (
            "symlink to an absolute directory, then a file through it",
            vec![
                Item::Symlink("etc", "{parent}"),
                Item::File("etc/evil", b"x", 0o644),
            ],
        ),
        (
            "symlink to /etc, then a file through it",
            vec![
                Item::Symlink("etc", "/etc"),
                Item::File("etc/meseta-fetcher-evil", b"x", 0o644),
            ],
        ),
        ("symlink up and out", vec![Item::Symlink("up", "..")]),
        (
            "symlink out through a deeper path",
            vec![Item::Dir("a/"), Item::Symlink("a/up", "../../secret")],
        ),
        (
            "symlink out through another symlink",
            vec![
                Item::Dir("a/b/"),
                Item::Symlink("a/b/up", "../.."),
                Item::Symlink("z", "a/b/up/.."),
            ],
        ),
        (
            "symlink out through a symlink that comes after it",
            vec![
                Item::Dir("a/b/"),
                Item::Symlink("a/b/up", "../.."),
                Item::Symlink("z", "later/.."),
                Item::Symlink("later", "a/b/up"),
            ],
        ),
        (
            "a write through a symlink extracted earlier",
            vec![
                Item::Dir("real/"),
                Item::Symlink("link", "real"),
                Item::File("link/file", b"x", 0o644),
            ],
        ),
        (
            "hard link to an absolute path",
            vec![Item::Hardlink("h", "{parent}/secret")],
        ),
        (
            "hard link up and out",
            vec![Item::Hardlink("h", "../secret")],
        ),
        (
            "hard link to a symlink",
            vec![
                Item::File("f", b"x", 0o644),
                Item::Symlink("s", "f"),
                Item::Hardlink("h", "s"),
            ],
        ),
        ("a FIFO", vec![Item::Fifo("pipe")]),
        ("a device node", vec![Item::CharDevice("null")]),
    ];
    for (case, items) in cases {
        let dirs = Dirs::new();
        let parent = dirs.parent.display().to_string();
        let items: Vec<(String, String, &Item)> = items
            .iter()
            .map(|item| {
                let (name, link) = match item {
                    Item::File(n, ..) | Item::Dir(n) | Item::Fifo(n) | Item::CharDevice(n) => {
                        (*n, "")
                    }
                    Item::Symlink(n, l) | Item::Hardlink(n, l) => (*n, *l),
                };
                (
                    name.replace("{parent}", &parent),
                    link.replace("{parent}", &parent),
                    item,
                )
            })
            .collect();
        let concrete: Vec<Item> = items
            .iter()
            .map(|(name, link, item)| match item {
                Item::File(_, data, mode) => Item::File(name, data, *mode),
                Item::Dir(_) => Item::Dir(name),
                Item::Symlink(..) => Item::Symlink(name, link),
                Item::Hardlink(..) => Item::Hardlink(name, link),
                Item::Fifo(_) => Item::Fifo(name),
                Item::CharDevice(_) => Item::CharDevice(name),
            })
            .collect();
        let err = assert_refused(case, "evil.tar.gz", gz(&tar_of(&concrete)), &dirs).await;
        assert!(!Path::new("/etc/meseta-fetcher-evil").exists(), "{case}");
        // Whatever was refused is not left behind pointing out.
        for link in ["etc", "up", "z", "a/up", "h"] {
            let at = dirs.sandbox.join(link);
            if let Ok(target) = fs::read_link(&at) {
                panic!("{case}: {link} -> {} left behind ({err})", target.display());
            }
        }
    }
}

#[tokio::test]
async fn malicious_zips_are_refused_and_nothing_lands_outside() {
    let cases: Vec<(&str, Vec<Item>)> = vec![
        ("dot-dot member", vec![Item::File("../evil", b"x", 0o644)]),
        (
            "backslash dot-dot member",
            vec![Item::File("..\\evil", b"x", 0o644)],
        ),
        (
            "absolute member",
            vec![Item::File("/tmp/meseta-zip-evil", b"x", 0o644)],
        ),
        ("symlink up and out", vec![Item::Symlink("up", "../..")]),
        (
            "symlink out, then a file through it",
            vec![
                Item::Symlink("out", "/tmp"),
                Item::File("out/meseta-zip-evil", b"x", 0o644),
            ],
        ),
    ];
    for (case, items) in cases {
        let dirs = Dirs::new();
        assert_refused(case, "evil.zip", zip_of(&items), &dirs).await;
        assert!(!Path::new("/tmp/meseta-zip-evil").exists(), "{case}");
    }
}

#[tokio::test]
async fn a_symlink_that_stays_inside_is_kept() {
    let archive = tar_of(&[
        Item::Dir("lib/"),
        Item::File("lib/libfoo.so.1", b"elf", 0o755),
        Item::Symlink("lib/libfoo.so", "libfoo.so.1"),
        Item::Dir("bin/"),
        Item::Symlink("bin/lib", "../lib"),
        Item::Hardlink("bin/copy", "lib/libfoo.so.1"),
    ]);
    let (base, _) = serve(Served::with(&[("/ok.tar", archive)])).await;
    let dirs = Dirs::new();
    dirs.fetcher(0)
        .fetch(&[uri(&format!("{base}/ok.tar"))], &dirs.sandbox, None)
        .await
        .unwrap();
    assert_eq!(
        fs::read(dirs.sandbox.join("bin/lib/libfoo.so")).unwrap(),
        b"elf"
    );
    assert_eq!(
        fs::metadata(dirs.sandbox.join("bin/copy")).unwrap().ino(),
        fs::metadata(dirs.sandbox.join("lib/libfoo.so.1"))
            .unwrap()
            .ino()
    );
    dirs.assert_nothing_outside();
}

#[test]
fn the_fetcher_is_send_and_sync_and_its_fetch_can_be_spawned() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let dirs = Dirs::new();
    let fetcher = dirs.fetcher(0);
    send_sync(&fetcher);
    let uris = [uri("http://127.0.0.1:9/x")];
    let future = fetcher.fetch(&uris, &dirs.sandbox, None);
    send(&future);
}
