//! The sandbox files API (`/files/read`, `/files/download`, `/files/browse`):
//! it serves paths inside task sandboxes and nothing else.
//!
//! A path (absolute, or relative to the work dir) must name
//! `<work_dir>/frameworks/<f>/tasks/<t>/runs/<c>[/…]`, a sandbox or something
//! in it; `..` is refused outright. It is then opened without ever leaving
//! the sandbox: the sandbox directory is opened beneath the work dir with no
//! symlink followed (the agent made that part and put no link in it), and
//! the rest beneath the sandbox with `openat2(RESOLVE_BENEATH)`, so a
//! symlink a task planted (to `/etc/shadow`, to `/`) fails instead of being
//! followed out. Kernels without `openat2` (before 5.6) get a walk that
//! refuses every symlink. Only regular files are read and only directories
//! listed: a FIFO or a device a task made in its sandbox is refused without
//! being opened for reading.
//!
//! Everything here blocks: call it from a blocking thread.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Why a files request is refused; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilesError {
    /// 400
    #[error("{0}")]
    BadRequest(String),
    /// 403
    #[error("{0}")]
    Forbidden(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 500
    #[error("{0}")]
    Io(String),
}

/// Components under the work dir that name a sandbox:
/// `frameworks/<f>/tasks/<t>/runs/<c>`.
const SANDBOX_DEPTH: usize = 6;

/// A requested path, split into the sandbox (relative to the work dir) and
/// the part inside it.
#[derive(Debug, PartialEq, Eq)]
struct SandboxPath {
    sandbox: PathBuf,
    inner: PathBuf,
}

fn split(work_dir: &Path, path: &str) -> Result<SandboxPath, FilesError> {
    if path.is_empty() {
        return Err(FilesError::BadRequest("the path is empty".into()));
    }
    let requested = Path::new(path);
    let relative = if requested.is_absolute() {
        requested
            .strip_prefix(work_dir)
            .map_err(|_| FilesError::Forbidden(format!("{path} is not inside a task sandbox")))?
    } else {
        requested
    };
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(FilesError::BadRequest("path must not contain '..'".into()))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(FilesError::BadRequest(format!(
                    "{path} is not a valid path"
                )))
            }
        }
    }
    let shaped = parts.len() >= SANDBOX_DEPTH
        && parts[0] == "frameworks"
        && parts[2] == "tasks"
        && parts[4] == "runs";
    if !shaped {
        return Err(FilesError::Forbidden(format!(
            "{path} is not inside a task sandbox"
        )));
    }
    Ok(SandboxPath {
        sandbox: parts[..SANDBOX_DEPTH].iter().collect(),
        inner: parts[SANDBOX_DEPTH..].iter().collect(),
    })
}

/// `openat2(dir, path, flags, resolve)`; `ENOSYS` when the kernel lacks it.
fn openat2(dir: &OwnedFd, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: open_how is a plain C struct; all-zero is its documented
    // "nothing asked" value, and every field is then set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: the path is NUL-terminated and outlives the call; `how` is a
    // valid open_how of the size passed; the result is a new descriptor or
    // -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            cpath.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `openat(dir, name, flags | O_NOFOLLOW)` of one component.
fn openat_nofollow(dir: &OwnedFd, name: &std::ffi::OsStr, flags: i32) -> io::Result<OwnedFd> {
    let cname = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: a NUL-terminated name that outlives the call; returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` beneath `dir`: with `follow_inside`, symlinks that stay
/// beneath `dir` are followed; otherwise none is. Never leaves `dir`.
fn open_beneath(
    dir: &OwnedFd,
    path: &Path,
    flags: i32,
    follow_inside: bool,
) -> io::Result<OwnedFd> {
    let resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_MAGICLINKS
        | if follow_inside {
            0
        } else {
            libc::RESOLVE_NO_SYMLINKS
        };
    match openat2(dir, path, flags, resolve) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        other => return other,
    }
    // No openat2: walk one component at a time, refusing every symlink.
    let parts: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return openat_nofollow(dir, std::ffi::OsStr::new("."), flags);
    };
    let mut current: Option<OwnedFd> = None;
    for part in parents {
        let base = current.as_ref().unwrap_or(dir);
        current = Some(openat_nofollow(
            base,
            part,
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
    }
    openat_nofollow(current.as_ref().unwrap_or(dir), last, flags)
}

fn refusal(path: &str, e: io::Error) -> FilesError {
    match e.raw_os_error() {
        Some(libc::EXDEV) => FilesError::Forbidden(format!(
            "{path} leads out of its sandbox (through a symlink)"
        )),
        Some(libc::ELOOP) => {
            FilesError::Forbidden(format!("{path} is a symlink this agent does not follow"))
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            FilesError::Forbidden(format!("{path} is not readable: {e}"))
        }
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
            FilesError::NotFound(format!("{path} does not exist"))
        }
        _ => FilesError::Io(format!("cannot open {path}: {e}")),
    }
}

/// What a path turned out to be.
pub(crate) enum Opened {
    File(File, std::fs::Metadata),
    Dir(OwnedFd),
}

/// Opens `path` (a sandbox or something in it) for reading, confined to
/// its sandbox.
pub(crate) fn open(work_dir: &Path, path: &str) -> Result<Opened, FilesError> {
    let split = split(work_dir, path)?;
    let work = File::open(work_dir)
        .map(OwnedFd::from)
        .map_err(|e| FilesError::Io(format!("cannot open the work dir: {e}")))?;
    let sandbox = open_beneath(
        &work,
        &split.sandbox,
        libc::O_PATH | libc::O_DIRECTORY,
        false,
    )
    .map_err(|e| refusal(path, e))?;
    let target = if split.inner.as_os_str().is_empty() {
        Path::new(".")
    } else {
        split.inner.as_path()
    };
    // First without opening anything for reading: what is it?
    let handle =
        open_beneath(&sandbox, target, libc::O_PATH, true).map_err(|e| refusal(path, e))?;
    let meta = File::from(handle)
        .metadata()
        .map_err(|e| FilesError::Io(format!("cannot stat {path}: {e}")))?;
    if meta.is_dir() {
        let dir = open_beneath(&sandbox, target, libc::O_RDONLY | libc::O_DIRECTORY, true)
            .map_err(|e| refusal(path, e))?;
        return Ok(Opened::Dir(dir));
    }
    if !meta.is_file() {
        return Err(FilesError::Forbidden(format!(
            "{path} is not a regular file or directory"
        )));
    }
    let fd = open_beneath(
        &sandbox,
        target,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        true,
    )
    .map_err(|e| refusal(path, e))?;
    let file = File::from(fd);
    let now = file
        .metadata()
        .map_err(|e| FilesError::Io(format!("cannot stat {path}: {e}")))?;
    if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
        return Err(FilesError::Forbidden(format!(
            "{path} changed while it was opened"
        )));
    }
    Ok(Opened::File(file, now))
}

/// Opens a regular file; a directory is refused.
pub(crate) fn open_file(work_dir: &Path, path: &str) -> Result<(File, u64), FilesError> {
    match open(work_dir, path)? {
        Opened::File(file, meta) => Ok((file, meta.len())),
        Opened::Dir(_) => Err(FilesError::BadRequest(format!("{path} is a directory"))),
    }
}

/// Up to `length` bytes of `file` from `offset`.
pub(crate) fn read_at(file: &File, offset: u64, length: u64) -> Result<Vec<u8>, FilesError> {
    let mut buf = vec![0u8; usize::try_from(length).unwrap_or(usize::MAX)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FilesError::Io(format!("read failed: {e}"))),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// One entry of `/files/browse`, in Mesos' shape.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Entry {
    pub path: String,
    pub nlink: u64,
    pub size: u64,
    pub mtime: i64,
    pub mode: String,
    pub uid: String,
    pub gid: String,
}

/// The entries of the directory `path` (a sandbox or a directory in it).
/// Entries are described, never followed.
pub(crate) fn browse(work_dir: &Path, path: &str) -> Result<Vec<Entry>, FilesError> {
    let dir = match open(work_dir, path)? {
        Opened::Dir(dir) => dir,
        Opened::File(..) => {
            return Err(FilesError::BadRequest(format!("{path} is not a directory")))
        }
    };
    let mut listing = nix::dir::Dir::from_fd(dir)
        .map_err(|e| FilesError::Io(format!("cannot list {path}: {e}")))?;
    let base = path.trim_end_matches('/').to_string();
    let names: Vec<std::ffi::CString> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.to_bytes() != b"." && n.to_bytes() != b"..")
        .collect();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        // Described where it is: a symlink is listed as a link, never
        // followed.
        let Ok(st) = nix::sys::stat::fstatat(
            &listing,
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue; // gone meanwhile
        };
        let uid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(st.st_uid))
            .ok()
            .flatten()
            .map_or_else(|| st.st_uid.to_string(), |u| u.name);
        let gid = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(st.st_gid))
            .ok()
            .flatten()
            .map_or_else(|| st.st_gid.to_string(), |g| g.name);
        entries.push(Entry {
            path: format!("{base}/{}", name.to_string_lossy()),
            nlink: st.st_nlink,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mode: mode_string(st.st_mode),
            uid,
            gid,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// `ls -l` style mode of `st_mode`.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_a_sandbox_are_taken() {
        let wd = Path::new("/var/lib/meseta/agent");
        let ok = split(
            wd,
            "/var/lib/meseta/agent/frameworks/f/tasks/t/runs/c/stdout",
        )
        .expect("ok");
        assert_eq!(ok.sandbox, Path::new("frameworks/f/tasks/t/runs/c"));
        assert_eq!(ok.inner, Path::new("stdout"));
        let rel = split(wd, "frameworks/f/tasks/t/runs/c").expect("ok");
        assert_eq!(rel.inner, Path::new(""));
        for bad in [
            "/etc/shadow",
            "/var/lib/meseta/agent/meta/checkpoint/db",
            "frameworks/f/tasks/t",
            "frameworks/f/x/t/runs/c/stdout",
        ] {
            assert!(
                matches!(split(wd, bad), Err(FilesError::Forbidden(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            split(
                wd,
                "frameworks/f/tasks/t/runs/c/../../../../../../../etc/shadow"
            ),
            Err(FilesError::BadRequest(_))
        ));
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o640), "-rw-r-----");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    }

    /// A work dir with one sandbox holding `stdout`, a subdirectory, and
    /// symlinks out of it.
    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let wd = tempfile::tempdir().expect("tempdir");
        let sandbox = wd.path().join("frameworks/f/tasks/t/runs/c");
        std::fs::create_dir_all(sandbox.join("logs")).expect("mkdir");
        std::fs::write(sandbox.join("stdout"), "hello sandbox\n").expect("write");
        std::fs::write(sandbox.join("logs/app.log"), "line\n").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", sandbox.join("leak")).expect("link");
        std::os::unix::fs::symlink("/", sandbox.join("root")).expect("link");
        std::os::unix::fs::symlink("../../../../../../..", sandbox.join("up")).expect("link");
        std::os::unix::fs::symlink("logs/app.log", sandbox.join("inside")).expect("link");
        (wd, sandbox)
    }

    #[test]
    fn files_in_the_sandbox_are_read_and_links_out_are_refused() {
        let (wd, sandbox) = sandbox();
        let s = sandbox.display().to_string();
        let (file, size) = open_file(wd.path(), &format!("{s}/stdout")).expect("readable");
        assert_eq!(size, 14);
        assert_eq!(read_at(&file, 6, 100).expect("read"), b"sandbox\n");
        for escape in ["leak", "root/etc/passwd", "up/etc/passwd", "root"] {
            let refused = open(wd.path(), &format!("{s}/{escape}"));
            assert!(
                matches!(refused, Err(FilesError::Forbidden(_))),
                "{escape} was not refused"
            );
        }
        // A link that stays inside is fine.
        let (file, _) = open_file(wd.path(), &format!("{s}/inside")).expect("inside link");
        assert_eq!(read_at(&file, 0, 100).expect("read"), b"line\n");
        assert!(matches!(
            open(wd.path(), &format!("{s}/missing")),
            Err(FilesError::NotFound(_))
        ));
    }

    #[test]
    fn a_sandbox_replaced_by_a_link_is_refused() {
        let (wd, sandbox) = sandbox();
        std::fs::remove_dir_all(&sandbox).expect("rm");
        std::os::unix::fs::symlink("/etc", &sandbox).expect("link");
        let refused = open(wd.path(), &format!("{}/passwd", sandbox.display()));
        assert!(
            matches!(refused, Err(FilesError::Forbidden(_))),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let (wd, sandbox) = sandbox();
        nix::unistd::mkfifo(
            &sandbox.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let refused = open(wd.path(), &format!("{}/pipe", sandbox.display()));
        assert!(matches!(refused, Err(FilesError::Forbidden(_))));
    }

    #[test]
    fn browse_lists_entries_without_following_links() {
        let (wd, sandbox) = sandbox();
        let s = sandbox.display().to_string();
        let entries = browse(wd.path(), &s).expect("listed");
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.path == format!("{s}/{name}"))
                .unwrap_or_else(|| panic!("{name} not listed: {entries:?}"))
        };
        assert!(find("logs").mode.starts_with('d'));
        assert_eq!(find("stdout").size, 14);
        assert!(find("leak").mode.starts_with('l'));
        assert!(matches!(
            browse(wd.path(), &format!("{s}/root")),
            Err(FilesError::Forbidden(_))
        ));
    }
}
