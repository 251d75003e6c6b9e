//! The sandbox as the fetcher writes it: a directory descriptor, and every
//! path below it reached from there one component at a time with
//! `O_NOFOLLOW`, so no write of the fetcher ever goes through a symlink,
//! whoever made it.
//!
//! What an archive may create here, and what is refused (a refusal fails
//! the whole fetch):
//! - a member's path must be relative with no `..` component (`.` and empty
//!   components are dropped); an absolute path or a `..` is refused;
//! - a member whose parent path passes through a symlink (one extracted
//!   earlier, or one already there) is refused: writes never follow links;
//! - a symlink's target must not be absolute, and must resolve inside the
//!   sandbox from where the link is, following the links already in the
//!   sandbox (read, never left); once an archive is unpacked every link
//!   made during this fetch is resolved again ([`Sandbox::check_links`]),
//!   so a link that only escapes through one made after it is caught too,
//!   and removed;
//! - a hard link must name a regular file already in the sandbox (by a path
//!   under the same rules), never a link, a directory or a path outside;
//! - device nodes, FIFOs and sockets are refused.
//!
//! Everything here blocks: call it from a blocking thread. The sandbox must
//! not be changed by anyone else meanwhile (the task has not started).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};

use super::Failure;

/// How many symlinks one resolution may follow (the kernel's limit).
const MAX_LINK_FOLLOWS: u32 = 40;

/// A validated relative path below the sandbox: one or more normal
/// components, none `.` or `..`, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    parts: Vec<OsString>,
}

impl Member {
    /// Parses a member's raw name (`/`-separated). `Ok(None)`: the name is
    /// the archive's root itself (`./`). `Err`: why it is refused.
    pub(super) fn parse(raw: &[u8]) -> Result<Option<Member>, String> {
        if raw.contains(&0) {
            return Err("has a NUL byte in its name".to_string());
        }
        if raw.first() == Some(&b'/') {
            return Err("has an absolute path, which would land outside the sandbox".to_string());
        }
        let mut parts = Vec::new();
        for part in raw.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    return Err(
                        "has a '..' component, which could land outside the sandbox".to_string()
                    )
                }
                _ => parts.push(OsString::from_vec(part.to_vec())),
            }
        }
        Ok((!parts.is_empty()).then_some(Member { parts }))
    }

    /// A member of one component, `name` (validated).
    pub(super) fn file_name(name: &str) -> Result<Member, String> {
        match Member::parse(name.as_bytes())? {
            Some(member) if member.parts.len() == 1 => Ok(member),
            _ => Err(format!("'{name}' is not a file name")),
        }
    }

    fn split(&self) -> (&[OsString], &OsStr) {
        match self.parts.split_last() {
            Some((name, parents)) => (parents, name.as_os_str()),
            // parse() never makes an empty member.
            None => (&[], OsStr::new(".")),
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let joined: Vec<_> = self.parts.iter().map(|p| p.to_string_lossy()).collect();
        f.write_str(&joined.join("/"))
    }
}

/// Why a placement failed.
#[derive(Debug)]
pub(super) enum Placement {
    /// It would leave the sandbox or make something the fetcher never makes.
    Unsafe(String),
    /// Something of another kind is in the way.
    Conflict(String),
    Io(io::Error),
}

impl From<Errno> for Placement {
    fn from(e: Errno) -> Self {
        Placement::Io(io::Error::from(e))
    }
}

impl From<io::Error> for Placement {
    fn from(e: io::Error) -> Self {
        Placement::Io(e)
    }
}

impl Placement {
    /// The failure of placing `member` (as the archive names it).
    pub(super) fn for_member(self, member: &str) -> Failure {
        match self {
            Placement::Unsafe(reason) => Failure::Unsafe {
                member: member.to_string(),
                reason,
            },
            Placement::Conflict(reason) => {
                Failure::Archive(format!("cannot extract '{member}': {reason}"))
            }
            Placement::Io(source) => Failure::io(format!("cannot extract '{member}'"), source),
        }
    }
}

/// An open sandbox.
#[derive(Debug)]
pub(super) struct Sandbox {
    root: OwnedFd,
    owner: Option<(u32, u32)>,
    /// Every symlink made during this fetch, checked again after each
    /// archive.
    links: Mutex<Vec<Member>>,
}

fn nofollow_dir() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn is_symlink(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

fn is_regular(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn is_dir(st: &stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

impl Sandbox {
    /// Opens the sandbox directory (the agent made it: its own path is
    /// trusted). Files made here go to `owner` when given.
    pub(super) fn open(path: &Path, owner: Option<(u32, u32)>) -> Result<Sandbox, Failure> {
        let root = fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Failure::io(
                format!("cannot open the sandbox {}", path.display()),
                e.into(),
            )
        })?;
        Ok(Sandbox {
            root,
            owner,
            links: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// Gives `name` in `dir` to the owner, without following a symlink.
    fn give_at(&self, dir: &OwnedFd, name: &OsStr) -> Result<(), Placement> {
        if let Some((uid, gid)) = self.owner {
            unistd::fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        Ok(())
    }

    fn give(&self, file: &File) -> io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            unistd::fchown(file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    }

    /// The directory `parts` below the root, reached without following a
    /// symlink. With `create`, missing directories are made (0755, given to
    /// the owner).
    fn dir(&self, parts: &[OsString], create: bool) -> Result<OwnedFd, Placement> {
        let mut current: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let base = current.as_ref().unwrap_or(&self.root);
            let opened = match fcntl::openat(base, part.as_os_str(), nofollow_dir(), Mode::empty())
            {
                Err(Errno::ENOENT) if create => {
                    match stat::mkdirat(base, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) => self.give_at(base, part)?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    fcntl::openat(base, part.as_os_str(), nofollow_dir(), Mode::empty())
                }
                other => other,
            };
            match opened {
                Ok(fd) => current = Some(fd),
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    let prefix = Member {
                        parts: parts[..=i].to_vec(),
                    };
                    return Err(
                        match stat::fstatat(base, part.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                            Ok(st) if is_symlink(&st) => Placement::Unsafe(format!(
                                "would be written through the symlink '{prefix}'"
                            )),
                            Ok(_) => Placement::Conflict(format!("'{prefix}' is not a directory")),
                            Err(_) => e.into(),
                        },
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        match current {
            Some(fd) => Ok(fd),
            None => Ok(self.root.try_clone()?),
        }
    }

    /// Removes what is at `name` in `dir`, unless it is a directory.
    fn clear(dir: &OwnedFd, name: &OsStr) -> Result<(), Placement> {
        match unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR | Errno::EPERM) => {
                match stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if is_dir(&st) => {
                        Err(Placement::Conflict("a directory is in the way".to_string()))
                    }
                    _ => Err(Errno::EPERM.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes a new regular file at `member` (replacing a file or link
    /// there), mode 0600 until the caller sets it, given to the owner.
    pub(super) fn create_file(&self, member: &Member) -> Result<File, Placement> {
        let (parents, name) = member.split();
        let dir = self.dir(parents, true)?;
        Self::clear(&dir, name)?;
        let fd = fcntl::openat(
            &dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let file = File::from(fd);
        self.give(&file)?;
        Ok(file)
    }

    /// Makes the directory `member` (and its parents) if missing.
    pub(super) fn create_dir(&self, member: &Member) -> Result<(), Placement> {
        self.dir(&member.parts, true).map(drop)
    }

    /// Sets the mode of the directory `member`, reached without following a
    /// symlink.
    pub(super) fn set_dir_mode(&self, member: &Member, mode: u32) -> Result<(), Placement> {
        let dir = File::from(self.dir(&member.parts, false)?);
        dir.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
        Ok(())
    }

    /// Makes the symlink `member -> target`, if the target stays inside.
    pub(super) fn create_symlink(&self, member: &Member, target: &[u8]) -> Result<(), Placement> {
        let shown = String::from_utf8_lossy(target);
        if target.is_empty() || target.contains(&0) {
            return Err(Placement::Conflict(format!(
                "is a symlink with an invalid target '{shown}'"
            )));
        }
        if target.first() == Some(&b'/') {
            return Err(Placement::Unsafe(format!(
                "is a symlink to an absolute path ('{shown}'), which is outside the sandbox"
            )));
        }
        let (parents, name) = member.split();
        if !self.resolves_inside(parents, target)? {
            return Err(Placement::Unsafe(format!(
                "is a symlink to '{shown}', which is outside the sandbox"
            )));
        }
        let dir = self.dir(parents, true)?;
        Self::clear(&dir, name)?;
        unistd::symlinkat(OsStr::from_bytes(target), &dir, name)?;
        self.give_at(&dir, name)?;
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(member.clone());
        Ok(())
    }

    /// Makes `member` a hard link to the regular file `source`, which must
    /// already be in the sandbox.
    pub(super) fn create_hardlink(
        &self,
        member: &Member,
        source: &Member,
    ) -> Result<(), Placement> {
        let (source_parents, source_name) = source.split();
        let source_dir = match self.dir(source_parents, false) {
            Ok(dir) => dir,
            Err(Placement::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Placement::Conflict(format!(
                    "is a hard link to '{source}', which is not in the sandbox"
                )))
            }
            Err(other) => return Err(other),
        };
        match stat::fstatat(&source_dir, source_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_regular(&st) => {}
            Ok(_) => {
                return Err(Placement::Unsafe(format!(
                    "is a hard link to '{source}', which is not a regular file"
                )))
            }
            Err(Errno::ENOENT) => {
                return Err(Placement::Conflict(format!(
                    "is a hard link to '{source}', which is not in the sandbox"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if member == source {
            return Ok(());
        }
        let (parents, name) = member.split();
        let dir = self.dir(parents, true)?;
        Self::clear(&dir, name)?;
        unistd::linkat(&source_dir, source_name, &dir, name, AtFlags::empty())?;
        Ok(())
    }

    /// Whether `target`, resolved from the directory `base` as the kernel
    /// would, stays inside the sandbox. Symlinks already in the sandbox are
    /// followed (by reading them, never leaving the root); what does not
    /// exist yet is taken as written.
    fn resolves_inside(&self, base: &[OsString], target: &[u8]) -> Result<bool, Placement> {
        let mut at = base.to_vec();
        let mut budget = MAX_LINK_FOLLOWS;
        let mut missing = false;
        self.resolve(&mut at, target, &mut budget, &mut missing)
    }

    fn resolve(
        &self,
        at: &mut Vec<OsString>,
        target: &[u8],
        budget: &mut u32,
        missing: &mut bool,
    ) -> Result<bool, Placement> {
        if target.first() == Some(&b'/') {
            return Ok(false);
        }
        for part in target.split(|b| *b == b'/') {
            match part {
                b"" | b"." => continue,
                b".." => {
                    if at.pop().is_none() {
                        return Ok(false);
                    }
                    continue;
                }
                _ => {}
            }
            let name = OsStr::from_bytes(part);
            if *missing {
                at.push(name.to_os_string());
                continue;
            }
            // `at` holds no symlink: every link on the way was replaced by
            // what it resolves to.
            let dir = match self.dir(at, false) {
                Ok(dir) => dir,
                Err(Placement::Io(_) | Placement::Conflict(_)) => {
                    *missing = true;
                    at.push(name.to_os_string());
                    continue;
                }
                Err(other) => return Err(other),
            };
            match stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_symlink(&st) => {
                    if *budget == 0 {
                        return Err(Placement::Unsafe(
                            "is a symlink through too many levels of symlinks".to_string(),
                        ));
                    }
                    *budget -= 1;
                    let link = fcntl::readlinkat(&dir, name)?;
                    if !self.resolve(at, link.as_bytes(), budget, missing)? {
                        return Ok(false);
                    }
                }
                Ok(_) => at.push(name.to_os_string()),
                Err(Errno::ENOENT | Errno::ENOTDIR) => {
                    *missing = true;
                    at.push(name.to_os_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Resolves every symlink made during this fetch again, now that more is
    /// in place; one that leads out is removed and fails the fetch.
    pub(super) fn check_links(&self) -> Result<(), Failure> {
        let links = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for link in links {
            let shown = link.to_string();
            let (parents, name) = link.split();
            // Gone or replaced since by something else: nothing to check.
            let Ok(dir) = self.dir(parents, false) else {
                continue;
            };
            let target = match fcntl::readlinkat(&dir, name) {
                Ok(target) => target,
                Err(Errno::ENOENT | Errno::EINVAL) => continue,
                Err(e) => return Err(Placement::from(e).for_member(&shown)),
            };
            let inside = self
                .resolves_inside(parents, target.as_bytes())
                .map_err(|p| p.for_member(&shown))?;
            if !inside {
                let _ = unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir);
                return Err(Failure::Unsafe {
                    member: shown,
                    reason: format!(
                        "is a symlink to '{}', which resolves outside the sandbox",
                        target.to_string_lossy()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Opens the regular file `name` in the sandbox root for reading.
    pub(super) fn open_file(&self, name: &Member) -> Result<File, Placement> {
        let (parents, file_name) = name.split();
        let dir = self.dir(parents, false)?;
        let fd = fcntl::openat(
            &dir,
            file_name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// A new, empty temporary file in the sandbox root, removed when dropped
    /// unless [`TempFile::persist`] renamed it.
    pub(super) fn temp_file(self: &Arc<Self>) -> Result<TempFile, Failure> {
        let name = OsString::from(format!(".meseta-fetch-{}", uuid::Uuid::new_v4().simple()));
        let fd = fcntl::openat(
            &self.root,
            name.as_os_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Failure::io("cannot create a file in the sandbox", e.into()))?;
        Ok(TempFile {
            sandbox: self.clone(),
            name,
            file: File::from(fd),
            persisted: false,
        })
    }
}

/// A file being staged in the sandbox root under a temporary name.
#[derive(Debug)]
pub(super) struct TempFile {
    sandbox: Arc<Sandbox>,
    name: OsString,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// The file, to write the content into.
    pub(super) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Writes `bytes` at the end.
    pub(super) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Sets the mode and owner and renames the file to `name` in the
    /// sandbox root (replacing a file or symlink there, never following
    /// it). Returns its size.
    pub(super) fn persist(mut self, name: &str, mode: u32) -> Result<u64, Failure> {
        let member = Member::file_name(name).map_err(Failure::Invalid)?;
        let (_, target) = member.split();
        let size = self
            .file
            .seek(SeekFrom::End(0))
            .map_err(|e| Failure::io("cannot stage the file", e))?;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Failure::io(format!("cannot set the mode of '{name}'"), e))?;
        self.sandbox
            .give(&self.file)
            .map_err(|e| Failure::io(format!("cannot give '{name}' to the task's user"), e))?;
        let root = self.sandbox.root.as_fd();
        match fcntl::renameat(root, self.name.as_os_str(), root, target) {
            Ok(()) => {
                self.persisted = true;
                Ok(size)
            }
            Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => Err(Failure::Refused(
                format!("cannot place '{name}': a directory of that name is in the sandbox"),
            )),
            Err(e) => Err(Failure::io(
                format!("cannot place '{name}' in the sandbox"),
                e.into(),
            )),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = unistd::unlinkat(
                &self.sandbox.root,
                self.name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}
