//! Running as an unprivileged user (design.md "Process model", spec/mail.md §8.5):
//! one instance per config (an exclusive `flock`), a pid file, then `chroot`,
//! `setgroups`, `setgid`, `setuid` in that order, and a check that root cannot be
//! regained. Started as a normal user, a daemon stays that user.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, Uid, User, chdir, chroot, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};
use serde::Deserialize;

use crate::config::{Problems, Validate};

/// `[privileges]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrivilegesConfig {
    /// User to run as once the listeners are bound. Required when started as root
    /// (unless `allow_root`).
    pub user: Option<String>,
    /// Primary group; default: the user's own group.
    pub group: Option<String>,
    /// Supplementary groups (e.g. the group allowed to write the stats socket).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Directory to `chroot` into before dropping privileges. With it, the database
    /// must be reached over TCP (PostgreSQL or MySQL/MariaDB), not as an SQLite file.
    pub chroot: Option<PathBuf>,
    /// Keep running as root when started as root and no `user` is set (not advised).
    #[serde(default)]
    pub allow_root: bool,
    /// File locked for the life of the process so a second instance with the same
    /// config cannot start; default: the config file itself.
    pub lock_file: Option<PathBuf>,
    /// File receiving the process id (removed at exit when still permitted).
    pub pid_file: Option<PathBuf>,
}

/// Why the process could not take on its configured identity.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Another process holds the instance lock.
    #[error("another instance is running (lock {0} is held)")]
    AlreadyRunning(PathBuf),
    /// A file could not be opened, locked or written.
    #[error("{0}: {1}")]
    File(PathBuf, String),
    /// Unknown user or group name.
    #[error("unknown {0} {1:?}")]
    Unknown(&'static str, String),
    /// Started as root without `[privileges] user`.
    #[error("refusing to run as root: set [privileges] user (or allow_root = true)")]
    Root,
    /// A system call failed.
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
    /// The process could regain root after dropping it.
    #[error("privileges were not dropped for good: {0}")]
    NotDropped(&'static str),
}

impl Validate for PrivilegesConfig {
    fn validate(&self, p: &mut Problems) {
        if let Some(name) = &self.user
            && !matches!(User::from_name(name), Ok(Some(_)))
        {
            p.add("privileges.user", format_args!("there is no user {name:?} on this system"));
        }
        for (key, name) in self
            .group
            .iter()
            .map(|g| ("privileges.group", g))
            .chain(self.groups.iter().map(|g| ("privileges.groups", g)))
        {
            if !matches!(Group::from_name(name), Ok(Some(_))) {
                p.add(key, format_args!("there is no group {name:?} on this system"));
            }
        }
        if let Some(dir) = &self.chroot
            && !dir.is_dir()
        {
            p.add("privileges.chroot", format_args!("{} is not a directory", dir.display()));
        }
        if self.user.is_none() && (self.group.is_some() || !self.groups.is_empty()) {
            p.add("privileges.group", "needs privileges.user");
        }
    }
}

impl PrivilegesConfig {
    /// Checks this section against the database it will need after `chroot`.
    pub fn validate_with(&self, database: &crate::config::DatabaseConfig, p: &mut Problems) {
        self.validate(p);
        if self.chroot.is_some() && database.url.expose().starts_with("sqlite:") {
            p.add("privileges.chroot", "needs a database reached over TCP (PostgreSQL or MySQL), not an SQLite file");
        }
    }
}

/// Who a daemon is once [`drop_root`] has run: the user and every group it holds, for
/// `--check-config` to ask whether the files the daemon uses after that are reachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name (or uid, for a user without one), for messages.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group first, then the supplementary groups.
    pub gids: Vec<Gid>,
}

/// What a file must allow [`Identity::may`]: read, write, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read (a file) or list (a directory).
    Read,
    /// Read and write (a database file; a directory files are made in).
    ReadWrite,
}

impl PrivilegesConfig {
    /// The identity the daemon will hold: `user`/`group`/`groups` when started as root,
    /// else the current user. `None` when it stays root (no `user`; root may open
    /// anything) or a name does not resolve (reported by `validate`).
    pub fn identity(&self) -> Option<Identity> {
        if !geteuid().is_root() {
            let uid = geteuid();
            let mut gids = vec![getegid()];
            gids.extend(nix::unistd::getgroups().unwrap_or_default().into_iter().filter(|g| *g != getegid()));
            let name = User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name);
            return Some(Identity { name, uid, gids });
        }
        let name = self.user.as_ref()?;
        let user = User::from_name(name).ok().flatten()?;
        let primary = match &self.group {
            Some(g) => Group::from_name(g).ok().flatten()?.gid,
            None => user.gid,
        };
        let mut gids = vec![primary];
        for g in &self.groups {
            let gid = Group::from_name(g).ok().flatten()?.gid;
            if !gids.contains(&gid) {
                gids.push(gid);
            }
        }
        Some(Identity { name: name.clone(), uid: user.uid, gids })
    }
}

impl Identity {
    /// Whether this identity may use `path` as `access` says, by the permission bits of
    /// the path and every directory above it (each must be searchable); ACLs are not
    /// consulted. `Err` says in plain words what stands in the way.
    ///
    /// # Errors
    /// The reason, naming the file or directory and the user.
    pub fn may(&self, path: &Path, access: Access) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let bits = |m: &std::fs::Metadata| -> u32 {
            if m.uid() == self.uid.as_raw() {
                (m.mode() >> 6) & 7
            } else if self.gids.iter().any(|g| g.as_raw() == m.gid()) {
                (m.mode() >> 3) & 7
            } else {
                m.mode() & 7
            }
        };
        let absolute = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for dir in absolute.ancestors().skip(1) {
            let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if bits(&meta) & 1 == 0 {
                return Err(format!("user {} cannot enter directory {}", self.name, dir.display()));
            }
        }
        let meta = std::fs::metadata(&absolute).map_err(|e| format!("{}: {e}", absolute.display()))?;
        let want = match access {
            Access::Read if meta.is_dir() => 4 | 1,
            Access::Read => 4,
            Access::ReadWrite if meta.is_dir() => 4 | 2 | 1,
            Access::ReadWrite => 4 | 2,
        };
        if bits(&meta) & want == want {
            return Ok(());
        }
        let what = if meta.is_dir() { "directory" } else { "file" };
        let verb = match access {
            Access::Read => "read",
            Access::ReadWrite => "write",
        };
        Err(format!("user {} cannot {verb} {what} {}", self.name, absolute.display()))
    }
}

/// The instance lock and pid file, held for the life of the process.
#[derive(Debug)]
pub struct Instance {
    _lock: Flock<File>,
    pid_file: Option<PathBuf>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(p) = &self.pid_file {
            // After dropping privileges this may not be permitted; then the file stays
            // (spec/mail.md §8.5: the lock is what matters).
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Takes the instance lock (`lock_file`, default `config`) and writes the pid file.
///
/// # Errors
/// [`PrivilegeError::AlreadyRunning`] if another process holds the lock; file errors.
pub fn claim(config: &Path, cfg: &PrivilegesConfig) -> Result<Instance, PrivilegeError> {
    let path = cfg.lock_file.clone().unwrap_or_else(|| config.to_path_buf());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(cfg.lock_file.is_some())
        .create(cfg.lock_file.is_some())
        .truncate(false)
        .open(&path)
        .map_err(|e| PrivilegeError::File(path.clone(), e.to_string()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::Error::EWOULDBLOCK => PrivilegeError::AlreadyRunning(path.clone()),
        e => PrivilegeError::File(path.clone(), e.to_string()),
    })?;
    if let Some(pid) = &cfg.pid_file {
        std::fs::write(pid, format!("{}\n", std::process::id()))
            .map_err(|e| PrivilegeError::File(pid.clone(), e.to_string()))?;
    }
    Ok(Instance { _lock: lock, pid_file: cfg.pid_file.clone() })
}

fn group_id(name: &str) -> Result<Gid, PrivilegeError> {
    Group::from_name(name)
        .map_err(|e| PrivilegeError::Sys("getgrnam", e))?
        .map(|g| g.gid)
        .ok_or_else(|| PrivilegeError::Unknown("group", name.to_owned()))
}

/// Drops root (see the module docs). Call after binding listeners and loading keys,
/// before starting threads. Not root: nothing changes (a configured user is only
/// noted). Returns a description of the identity now held, for the log.
///
/// # Errors
/// [`PrivilegeError`]; the caller must not serve then.
pub fn drop_root(cfg: &PrivilegesConfig) -> Result<String, PrivilegeError> {
    if !geteuid().is_root() {
        return Ok(format!("running as uid {} (not started as root)", getuid()));
    }
    let Some(name) = &cfg.user else {
        return if cfg.allow_root { Ok("running as root (allow_root)".into()) } else { Err(PrivilegeError::Root) };
    };
    // Names are resolved before chroot: the user and group files are outside it.
    let user = User::from_name(name)
        .map_err(|e| PrivilegeError::Sys("getpwnam", e))?
        .ok_or_else(|| PrivilegeError::Unknown("user", name.clone()))?;
    let gid = match &cfg.group {
        Some(g) => group_id(g)?,
        None => user.gid,
    };
    let mut groups = vec![gid];
    for g in &cfg.groups {
        let id = group_id(g)?;
        if !groups.contains(&id) {
            groups.push(id);
        }
    }
    if let Some(dir) = &cfg.chroot {
        chroot(dir.as_path()).map_err(|e| PrivilegeError::Sys("chroot", e))?;
        chdir("/").map_err(|e| PrivilegeError::Sys("chdir", e))?;
    }
    // setgroups and setgid need root, so they come before setuid.
    setgroups(&groups).map_err(|e| PrivilegeError::Sys("setgroups", e))?;
    setgid(gid).map_err(|e| PrivilegeError::Sys("setgid", e))?;
    setuid(user.uid).map_err(|e| PrivilegeError::Sys("setuid", e))?;
    if getuid() != user.uid || geteuid() != user.uid {
        return Err(PrivilegeError::NotDropped("uid"));
    }
    if getgid() != gid || getegid() != gid {
        return Err(PrivilegeError::NotDropped("gid"));
    }
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::NotDropped("setuid(0) succeeded"));
    }
    Ok(format!(
        "running as {name} (uid {}, gid {}, groups {:?}){}",
        user.uid,
        gid,
        groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(),
        cfg.chroot.as_ref().map(|d| format!(" in chroot {}", d.display())).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_on_one_config_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("d.toml");
        std::fs::write(&cfg_path, "").unwrap();
        let pid = dir.path().join("d.pid");
        let cfg = PrivilegesConfig { pid_file: Some(pid.clone()), ..PrivilegesConfig::default() };
        let first = claim(&cfg_path, &cfg).unwrap();
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), format!("{}\n", std::process::id()));
        assert!(matches!(claim(&cfg_path, &cfg), Err(PrivilegeError::AlreadyRunning(_))));
        drop(first);
        assert!(!pid.exists(), "pid file removed");
        assert!(claim(&cfg_path, &cfg).is_ok(), "free again");
    }
}
