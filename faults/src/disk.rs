//! Small disks that can be filled on purpose: a tmpfs mount per test, and a filler file
//! that takes every free byte until it is removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted on a fresh temporary directory; unmounted and
/// removed on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB (needs root).
    ///
    /// # Panics
    /// If the mount fails.
    pub fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("mmmail-fault-").tempdir().expect("temp dir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount tmpfs on {}", dir.path().display());
        let filler = dir.path().join("filler");
        Tmpfs { dir, filler }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes on the mount.
    pub fn free(&self) -> u64 {
        nix::sys::statvfs::statvfs(self.path()).map_or(0, |s| s.blocks_available() * s.fragment_size())
    }

    /// Takes every free byte with a filler file (writes until `ENOSPC`).
    ///
    /// # Panics
    /// On an error other than a full disk.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.filler).expect("filler");
        let block = vec![0u8; 16 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
                Err(e) => panic!("filling {}: {e}", self.filler.display()),
            }
        }
        // Whatever a partial page left.
        let small = [0u8; 512];
        while f.write(&small).is_ok_and(|n| n > 0) {}
    }

    /// Removes the filler: the space is back.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there (a database being stopped)
        // must not keep the mount busy.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
