//! What an interrupted command (Ctrl-C, `kill`, a closed terminal) removes before it exits: the
//! files it made that would otherwise stay behind — a `get -o`'s partial output, the demo's
//! temporary data directory. Anything the store writes needs nothing of the kind: it is
//! crash-safe, and recovery reclaims what an interrupted write left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once an interrupt is being handled: the handler ends the process when it is done.
static INTERRUPTING: AtomicBool = AtomicBool::new(false);

/// The paths to remove if the process is interrupted now.
static DOOMED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Exit status of a process ended by SIGINT, as shells report it.
const INTERRUPTED: i32 = 130;

/// Installs the handler (once, at start). Without one — if installing fails — an interrupt
/// ends the process as it always did.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTING.store(true, Ordering::SeqCst);
        let doomed = std::mem::take(&mut *lock());
        for path in doomed {
            // The command's own threads go on meanwhile: a file made as the removal runs fails
            // it (the directory is not empty), and an open making its directory can make it
            // again. So it is tried until the path is gone, for up to a tenth of a second; the
            // exit right after ends those threads.
            for _ in 0..100 {
                let _ = match path.is_dir() {
                    true => std::fs::remove_dir_all(&path),
                    false => std::fs::remove_file(&path),
                };
                if std::fs::symlink_metadata(&path).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        std::process::exit(INTERRUPTED);
    });
}

/// Called by `main` before it reports and exits: while an interrupt is being handled, the
/// command (which may have failed only because the handler removed its files from under it)
/// neither says anything nor exits with its own status; it waits for the handler to end the
/// process with the interrupt's.
pub fn settle() {
    while INTERRUPTING.load(Ordering::SeqCst) {
        std::thread::park();
    }
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
