//! Safe unpacking of a layer tar stream into a directory, with OCI whiteouts turned into
//! overlayfs whiteouts.
//!
//! Every entry is checked: absolute paths and `..` are refused, parents are created without
//! following symlinks (an existing symlink on the way is refused), files are created with
//! `O_NOFOLLOW | O_EXCL` after removing what was there, and hard links must name a file that
//! is already inside the directory, reached without symlinks. Nothing is ever written outside
//! `dest`. The caller unpacks into a fresh temporary directory and discards it on error.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::error::{ImageError, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How entries named `.wh.*` are treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteouts {
    /// Image layer: turn them into overlayfs whiteouts / opaque directories.
    Overlay,
    /// Plain archive (e.g. a `docker save` tar): unpack them as ordinary files.
    Keep,
}

/// Unpacks the tar stream `reader` into the existing, empty directory `dest`.
/// `what` names the source in errors. Returns the number of entries unpacked.
pub(crate) fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    what: &str,
    whiteouts: Whiteouts,
) -> Result<u64> {
    let mut archive = tar::Archive::new(reader);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    let mut count = 0;
    let entries = archive.entries().ctx(|| format!("read tar {what}"))?;
    for entry in entries {
        let mut entry = entry.ctx(|| format!("read tar {what}"))?;
        let raw = entry
            .path()
            .ctx(|| format!("read entry path in {what}"))?
            .into_owned();
        let u = Unpacker {
            dest,
            what,
            raw: &raw,
        };
        if let Some(dir) = u.entry(&mut entry, whiteouts)? {
            dir_times.push(dir);
        }
        count += 1;
    }
    // Directory times last: creating children changes them.
    for (path, mtime) in dir_times.iter().rev() {
        set_mtime(path, *mtime)?;
    }
    Ok(count)
}

struct Unpacker<'a> {
    dest: &'a Path,
    what: &'a str,
    raw: &'a Path,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            what: self.what.to_string(),
            entry: self.raw.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Relative, normal components only: no root, no `..`.
    fn sanitize(&self, p: &Path) -> Result<PathBuf> {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(format!(
                        "absolute path {p:?} (layer paths must be relative)"
                    )))
                }
                Component::ParentDir => {
                    return Err(self.unsafe_entry(format!("path {p:?} contains `..`")))
                }
            }
        }
        Ok(out)
    }

    /// Creates the directories of `rel` under dest, refusing symlinks and non-directories.
    fn make_parents(&self, rel: &Path) -> Result<PathBuf> {
        let mut cur = self.dest.to_path_buf();
        for c in rel.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(format!(
                        "its parent {:?} is a symlink; writing through it could escape the layer",
                        cur.strip_prefix(self.dest).unwrap_or(&cur)
                    )))
                }
                Ok(_) => {
                    return Err(self.unsafe_entry(format!(
                        "its parent {:?} is not a directory",
                        cur.strip_prefix(self.dest).unwrap_or(&cur)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).ctx(|| format!("create {}", cur.display()))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .ctx(|| format!("chmod {}", cur.display()))?;
                }
                Err(e) => return Err(e).ctx(|| format!("stat {}", cur.display())),
            }
        }
        Ok(cur)
    }

    /// Unpacks one entry; returns a directory and its mtime to set at the end.
    fn entry<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        whiteouts: Whiteouts,
    ) -> Result<Option<(PathBuf, u64)>> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            return Ok(None);
        }
        let rel = self.sanitize(self.raw)?;
        let mode = entry
            .header()
            .mode()
            .ctx(|| format!("mode of {:?}", self.raw))?;
        let uid = entry
            .header()
            .uid()
            .ctx(|| format!("uid of {:?}", self.raw))?;
        let gid = entry
            .header()
            .gid()
            .ctx(|| format!("gid of {:?}", self.raw))?;
        let mtime = entry.header().mtime().unwrap_or(0);

        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            // The root itself ("./"): take its owner and mode.
            if kind == EntryType::Directory {
                self.set_owner_mode(self.dest, uid, gid, mode)?;
                return Ok(Some((self.dest.to_path_buf(), mtime)));
            }
            return Err(self.unsafe_entry("a non-directory entry names the layer root"));
        };
        let parent = self.make_parents(rel.parent().unwrap_or(Path::new("")))?;
        let name_str = name.to_string_lossy();

        if whiteouts == Whiteouts::Overlay && name_str.starts_with(WHITEOUT_PREFIX) {
            if name_str == OPAQUE_MARKER {
                set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
            } else if !name_str.starts_with(".wh..wh.") {
                let target = parent.join(&name_str[WHITEOUT_PREFIX.len()..]);
                remove_existing(&target)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .ctx(|| format!("create whiteout {}", target.display()))?;
            }
            // Other ".wh..wh." names are aufs bookkeeping: ignored.
            return Ok(None);
        }

        let path = parent.join(&name);
        if kind == EntryType::Directory {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    remove_existing(&path)?;
                    fs::create_dir(&path).ctx(|| format!("create {}", path.display()))?;
                }
                Err(_) => fs::create_dir(&path).ctx(|| format!("create {}", path.display()))?,
            }
            self.set_owner_mode(&path, uid, gid, mode)?;
            self.set_xattrs(entry, &path)?;
            return Ok(Some((path, mtime)));
        }

        remove_existing(&path)?;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .ctx(|| format!("create {}", path.display()))?;
                io::copy(entry, &mut f).ctx(|| format!("write {}", path.display()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ctx(|| format!("read link target of {:?}", self.raw))?
                    .ok_or_else(|| self.unsafe_entry("symlink without a target"))?;
                std::os::unix::fs::symlink(&target, &path)
                    .ctx(|| format!("create symlink {}", path.display()))?;
                std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
                    .ctx(|| format!("chown {}", path.display()))?;
                set_mtime(&path, mtime)?;
                return Ok(None);
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ctx(|| format!("read link target of {:?}", self.raw))?
                    .ok_or_else(|| self.unsafe_entry("hard link without a target"))?;
                let src = self.hardlink_source(&target)?;
                fs::hard_link(&src, &path)
                    .ctx(|| format!("create hard link {}", path.display()))?;
                return Ok(None);
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                mknod(
                    &path,
                    sflag,
                    Mode::empty(),
                    makedev(u64::from(major), u64::from(minor)),
                )
                .ctx(|| format!("create device node {}", path.display()))?;
            }
            other => {
                return Err(ImageError::Format(format!(
                    "entry {:?} in {} has unsupported tar type {other:?}",
                    self.raw, self.what
                )))
            }
        }
        self.set_owner_mode(&path, uid, gid, mode)?;
        self.set_xattrs(entry, &path)?;
        set_mtime(&path, mtime)?;
        Ok(None)
    }

    /// The existing file a hard link names: inside dest, reached without symlinks.
    fn hardlink_source(&self, target: &Path) -> Result<PathBuf> {
        let rel = self.sanitize(target)?;
        let name = rel
            .file_name()
            .ok_or_else(|| self.unsafe_entry("hard link to the layer root"))?;
        let mut cur = self.dest.to_path_buf();
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => {}
                _ => {
                    return Err(self.unsafe_entry(format!(
                        "hard link target {target:?} is not reachable inside the layer without symlinks"
                    )))
                }
            }
        }
        cur.push(name);
        match fs::symlink_metadata(&cur) {
            Ok(m) if !m.file_type().is_dir() => Ok(cur),
            _ => Err(self.unsafe_entry(format!(
                "hard link target {target:?} is not a file earlier in the same layer"
            ))),
        }
    }

    fn set_owner_mode(&self, path: &Path, uid: u64, gid: u64, mode: u32) -> Result<()> {
        let (uid, gid) = (u32::try_from(uid), u32::try_from(gid));
        let (Ok(uid), Ok(gid)) = (uid, gid) else {
            return Err(ImageError::Format(format!(
                "entry {:?} in {} has an out-of-range owner",
                self.raw, self.what
            )));
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .ctx(|| format!("chown {}", path.display()))?;
        // After chown, which clears set-id bits.
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .ctx(|| format!("chmod {}", path.display()))
    }

    /// Extended attributes from PAX `SCHILY.xattr.*` records (e.g. file capabilities).
    /// `trusted.overlay.*` is never taken from a layer: only whiteouts may set it.
    fn set_xattrs<R: Read>(&self, entry: &mut tar::Entry<R>, path: &Path) -> Result<()> {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(());
        };
        let mut attrs = Vec::new();
        for ext in exts.flatten() {
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                if !name.starts_with("trusted.overlay.") {
                    attrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        for (name, value) in attrs {
            set_xattr(path, &name, &value)?;
        }
        Ok(())
    }
}

/// Removes whatever is at `path` (a directory recursively), never following a symlink.
fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            fs::remove_dir_all(path).ctx(|| format!("remove {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).ctx(|| format!("remove {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(0), 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .ctx(|| format!("set times of {}", path.display()))
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::Format(format!("path {} contains NUL", path.display())))?;
    let cname = CString::new(name)
        .map_err(|_| ImageError::Format(format!("xattr name {name:?} contains NUL")))?;
    // SAFETY: both strings are valid NUL-terminated C strings that outlive the call, and
    // `value` is a valid buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error()).ctx(|| format!("set xattr {name} on {}", path.display()))
    }
}
