//! Root filesystems for native tasks with an image (Mesos' unified
//! containerizer: `"container": {"type": "MESOS", "docker": {"image": …}}`).
//!
//! An image comes from the local Docker daemon's image store (exported
//! through bollard, `docker save` format) or from an OCI image layout
//! directory (an absolute path holding `index.json`). Its layers are applied
//! in order, with whiteouts, into `<work_dir>/images/<id>/rootfs`, once per
//! image id: later tasks of the image reuse it (each container gets its own
//! writable overlay on top, see [`super::init`]). A rootfs is complete only
//! once its `.complete` marker exists; concurrent launches of one image wait
//! for one extraction.
//!
//! Nothing of a layer lands outside the rootfs: members with absolute paths
//! or `..` are refused, and writes through symlinks that lead out are
//! refused by the tar crate's `unpack_in`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::ContainerizerError;

/// A root filesystem ready to run in, with what the image says about how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub rootfs: PathBuf,
    /// The image's `Env` (`PATH=…` and the like).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
}

/// See the module documentation.
pub struct ImageStore {
    dir: PathBuf,
    docker: Option<Docker>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The part of an image config the agent uses (Docker and OCI agree).
#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default, alias = "Env")]
    env: Option<Vec<String>>,
    #[serde(default, alias = "WorkingDir")]
    working_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
}

#[derive(Debug, Deserialize)]
struct SaveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct OciDescriptor {
    digest: String,
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Debug, Deserialize)]
struct OciManifest {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

fn failed(image: &str, reason: impl std::fmt::Display) -> ContainerizerError {
    ContainerizerError::Image {
        image: image.to_string(),
        reason: reason.to_string(),
    }
}

impl ImageStore {
    /// Images are kept under `dir`; `docker` is the daemon images come from
    /// (None: only OCI layout directories).
    pub fn new(dir: PathBuf, docker: Option<Docker>) -> ImageStore {
        ImageStore {
            dir,
            docker,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// The root filesystem of `image`, extracted if it is not cached yet.
    pub async fn provision(&self, image: &str) -> Result<Provisioned, ContainerizerError> {
        if image.starts_with('/') {
            return self.provision_oci(image).await;
        }
        let docker = self.docker.as_ref().ok_or_else(|| {
            failed(
                image,
                "no Docker daemon to take the image from (and it is not an OCI layout path)",
            )
        })?;
        let inspected = docker
            .inspect_image(image)
            .await
            .map_err(|e| failed(image, format!("not in the local Docker image store: {e}")))?;
        let id = inspected
            .id
            .clone()
            .ok_or_else(|| failed(image, "the daemon gave no image id"))?;
        let key = id.trim_start_matches("sha256:").to_string();
        let lock = self.lock_for(&key);
        let _held = lock.lock().await;
        let dir = self.dir.join(&key);
        if let Some(done) = cached(&dir)? {
            return Ok(done);
        }
        tracing::info!(image, id = %key, "extracting the image's root filesystem");
        fs::create_dir_all(&self.dir).map_err(|e| failed(image, e))?;
        let tar_path = self.dir.join(format!("{key}.save.tar"));
        {
            let mut out = tokio::fs::File::create(&tar_path)
                .await
                .map_err(|e| failed(image, e))?;
            let mut export = docker.export_image(image);
            while let Some(chunk) = export.next().await {
                let chunk = chunk.map_err(|e| failed(image, format!("export failed: {e}")))?;
                out.write_all(&chunk).await.map_err(|e| failed(image, e))?;
            }
            out.flush().await.map_err(|e| failed(image, e))?;
        }
        let name = image.to_string();
        let result = tokio::task::spawn_blocking(move || {
            let unpacked = dir.with_extension("unpack");
            let result = extract_save(&tar_path, &unpacked, &dir);
            let _ = fs::remove_file(&tar_path);
            let _ = fs::remove_dir_all(&unpacked);
            result
        })
        .await
        .map_err(|e| failed(&name, e))?;
        result.map_err(|e| failed(image, e))
    }

    async fn provision_oci(&self, layout: &str) -> Result<Provisioned, ContainerizerError> {
        let layout_dir = PathBuf::from(layout);
        let index: OciIndex = read_json(&layout_dir.join("index.json"))
            .map_err(|e| failed(layout, format!("not an OCI image layout: {e}")))?;
        let manifest_digest = index
            .manifests
            .first()
            .map(|m| m.digest.clone())
            .ok_or_else(|| failed(layout, "index.json lists no manifest"))?;
        let key = format!("oci-{}", digest_hex(&manifest_digest));
        let lock = self.lock_for(&key);
        let _held = lock.lock().await;
        let dir = self.dir.join(&key);
        if let Some(done) = cached(&dir)? {
            return Ok(done);
        }
        tracing::info!(image = layout, "extracting the OCI image's root filesystem");
        let name = layout.to_string();
        tokio::task::spawn_blocking(move || extract_oci(&layout_dir, &manifest_digest, &dir))
            .await
            .map_err(|e| failed(&name, e))?
            .map_err(|e| failed(layout, e))
    }
}

fn digest_hex(digest: &str) -> String {
    digest.rsplit(':').next().unwrap_or(digest).to_string()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(algorithm).join(hex)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let text = fs::read(path)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A finished extraction in `dir`, if there is one.
fn cached(dir: &Path) -> Result<Option<Provisioned>, ContainerizerError> {
    if !dir.join(".complete").exists() {
        return Ok(None);
    }
    let config: ImageConfig = read_json(&dir.join("config.json")).unwrap_or_default();
    Ok(Some(provisioned(dir, config)))
}

fn provisioned(dir: &Path, config: ImageConfig) -> Provisioned {
    Provisioned {
        rootfs: dir.join("rootfs"),
        env: config
            .env
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        working_dir: config.working_dir.filter(|w| !w.is_empty()),
    }
}

/// Applies `layers` (paths of layer tarballs, oldest first) into a fresh
/// `dir/rootfs` and marks it complete.
fn finish(dir: &Path, layers: &[PathBuf], config: ImageConfig) -> io::Result<Provisioned> {
    let partial = dir.join("rootfs.partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    for layer in layers {
        apply_layer(File::open(layer)?, &partial)?;
    }
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    fs::rename(&partial, &rootfs)?;
    let stored = serde_json::json!({"env": config.env, "working_dir": config.working_dir});
    fs::write(dir.join("config.json"), stored.to_string())?;
    File::create(dir.join(".complete"))?.sync_all()?;
    Ok(provisioned(dir, config))
}

/// A `docker save` tarball → rootfs.
fn extract_save(tar_path: &Path, unpacked: &Path, dir: &Path) -> io::Result<Provisioned> {
    let _ = fs::remove_dir_all(unpacked);
    fs::create_dir_all(unpacked)?;
    tar::Archive::new(File::open(tar_path)?).unpack(unpacked)?;
    let manifests: Vec<SaveManifest> = read_json(&unpacked.join("manifest.json"))?;
    let manifest = manifests
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "manifest.json is empty"))?;
    let config: ConfigFile = read_json(&inside(unpacked, &manifest.config)?)?;
    let layers = manifest
        .layers
        .iter()
        .map(|l| inside(unpacked, l))
        .collect::<io::Result<Vec<_>>>()?;
    fs::create_dir_all(dir)?;
    finish(dir, &layers, config.config.unwrap_or_default())
}

/// An OCI image layout → rootfs.
fn extract_oci(layout: &Path, manifest_digest: &str, dir: &Path) -> io::Result<Provisioned> {
    let manifest: OciManifest = read_json(&blob(layout, manifest_digest))?;
    let config: ConfigFile = read_json(&blob(layout, &manifest.config.digest))?;
    let layers: Vec<PathBuf> = manifest
        .layers
        .iter()
        .map(|l| blob(layout, &l.digest))
        .collect();
    fs::create_dir_all(dir)?;
    finish(dir, &layers, config.config.unwrap_or_default())
}

/// `relative` under `base`, refusing absolute paths and `..`.
fn inside(base: &Path, relative: &str) -> io::Result<PathBuf> {
    let mut out = base.to_path_buf();
    for c in Path::new(relative).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("'{relative}' leads outside the image"),
                ))
            }
        }
    }
    Ok(out)
}

/// Applies one layer (plain or gzip-compressed tar) onto `rootfs`, with
/// OCI/Docker whiteouts: `.wh.NAME` removes NAME, `.wh..wh..opq` empties
/// its directory.
pub(crate) fn apply_layer(mut file: File, rootfs: &Path) -> io::Result<()> {
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let target = inside(rootfs, &path.to_string_lossy())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == ".wh..wh..opq" {
            if let Some(parent) = target.parent() {
                if let Ok(children) = fs::read_dir(parent) {
                    for child in children.flatten() {
                        remove_path(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if let Some(parent) = target.parent() {
                remove_path(&parent.join(hidden))?;
            }
            continue;
        }
        // A directory entry over an existing non-directory (or the other
        // way round) replaces it.
        if let Ok(existing) = fs::symlink_metadata(&target) {
            let is_dir_entry = entry.header().entry_type().is_dir();
            if existing.is_dir() != is_dir_entry || existing.file_type().is_symlink() {
                remove_path(&target)?;
            }
        }
        entry.unpack_in(rootfs)?;
    }
    Ok(())
}

/// Removes a file, symlink or directory tree, never following a symlink.
fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp");
        let mut builder = tar::Builder::new(file.reopen().expect("reopen"));
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(text) => {
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder
                        .append_data(&mut header, path, text.as_bytes())
                        .expect("append");
                }
                None => {
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_entry_type(tar::EntryType::Directory);
                    builder
                        .append_data(&mut header, path, &[][..])
                        .expect("append");
                }
            }
        }
        builder.finish().expect("finish");
        file
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = layer(&[
            ("etc/", None),
            ("etc/os-release", Some("NAME=base\n")),
            ("etc/gone", Some("x")),
            ("var/", None),
            ("var/cache/", None),
            ("var/cache/a", Some("a")),
        ]);
        let top = layer(&[
            ("etc/os-release", Some("NAME=top\n")),
            ("etc/.wh.gone", Some("")),
            ("var/cache/.wh..wh..opq", Some("")),
            ("var/cache/b", Some("b")),
        ]);
        apply_layer(base.reopen().expect("open"), root.path()).expect("base");
        apply_layer(top.reopen().expect("open"), root.path()).expect("top");
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap_or_default();
        assert_eq!(read("etc/os-release"), "NAME=top\n");
        assert!(!root.path().join("etc/gone").exists());
        assert!(!root.path().join("var/cache/a").exists());
        assert_eq!(read("var/cache/b"), "b");
    }

    #[test]
    fn layer_members_cannot_leave_the_rootfs() {
        assert!(inside(Path::new("/r"), "../etc/passwd").is_err());
        assert!(inside(Path::new("/r"), "/etc/passwd").is_err());
        assert_eq!(
            inside(Path::new("/r"), "./a/b").expect("fine"),
            PathBuf::from("/r/a/b")
        );
    }

    #[test]
    fn an_oci_layout_becomes_a_rootfs_once() {
        let layout = tempfile::tempdir().expect("tempdir");
        let blobs = layout.path().join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("mkdir");
        let l = layer(&[("etc/", None), ("etc/os-release", Some("NAME=oci-test\n"))]);
        fs::copy(l.path(), blobs.join("layer1")).expect("copy");
        fs::write(
            blobs.join("config1"),
            r#"{"config": {"Env": ["PATH=/bin:/usr/bin", "A=b"], "WorkingDir": "/srv"}}"#,
        )
        .expect("write");
        fs::write(
            blobs.join("manifest1"),
            r#"{"config": {"digest": "sha256:config1"}, "layers": [{"digest": "sha256:layer1"}]}"#,
        )
        .expect("write");
        fs::write(
            layout.path().join("index.json"),
            r#"{"manifests": [{"digest": "sha256:manifest1"}]}"#,
        )
        .expect("write");
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(store_dir.path().to_path_buf(), None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path = layout.path().display().to_string();
        let first = runtime
            .block_on(store.provision(&path))
            .expect("provisioned");
        assert_eq!(
            fs::read_to_string(first.rootfs.join("etc/os-release")).expect("read"),
            "NAME=oci-test\n"
        );
        assert!(first
            .env
            .contains(&("PATH".to_string(), "/bin:/usr/bin".to_string())));
        assert_eq!(first.working_dir.as_deref(), Some("/srv"));
        // The second task of the image reuses the extraction.
        fs::write(first.rootfs.join("marker"), "kept").expect("write");
        let again = runtime.block_on(store.provision(&path)).expect("cached");
        assert_eq!(again.rootfs, first.rootfs);
        assert!(again.rootfs.join("marker").exists(), "extracted again");
    }
}
