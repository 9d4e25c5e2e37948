//! A small file system of our own, for what a full disk does: a tmpfs mounted on a fresh
//! directory (the tests run as root, as CI does), unmounted on drop.

use std::path::PathBuf;
use std::process::Command;

use super::fresh_dir;

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(what: &str, size: &str) -> Tmpfs {
        let dir = fresh_dir(what);
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount ({e}): this test needs a tmpfs of its own, mounted as root, as CI runs it"));
        assert!(
            output.status.success(),
            "mount -t tmpfs on {} was refused ({}: {}): this test needs a tmpfs of its own, so it \
             runs as root (as on CI), never skipped",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { dir }
    }

    /// Writes zeros into `name` until the file system is full; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.dir.join(name)).expect("create the filler");
        let chunk = vec![0u8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
