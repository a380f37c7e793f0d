//! What an interrupted command (Ctrl-C, `kill`, a closed terminal) removes before it exits: the
//! files it made that would otherwise stay behind — a `get -o`'s partial output, the demo's
//! temporary data directory. Anything the store writes needs nothing of the kind: it is
//! crash-safe, and recovery reclaims what an interrupted write left.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The paths to remove if the process is interrupted now.
static DOOMED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Exit status of a process ended by SIGINT, as shells report it.
const INTERRUPTED: i32 = 130;

/// Installs the handler (once, at start). Without one — if installing fails — an interrupt
/// ends the process as it always did.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let doomed = std::mem::take(&mut *lock());
        for path in doomed {
            let _ = match path.is_dir() {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
        }
        std::process::exit(INTERRUPTED);
    });
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    DOOMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A file or directory removed if the process is interrupted while this lives.
pub struct Doomed(PathBuf);

impl Doomed {
    pub fn new(path: &Path) -> Doomed {
        lock().push(path.to_path_buf());
        Doomed(path.to_path_buf())
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        let mut doomed = lock();
        if let Some(at) = doomed.iter().rposition(|p| *p == self.0) {
            doomed.swap_remove(at);
        }
    }
}
