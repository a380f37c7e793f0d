//! One function per command. Errors carry their exit code: 1 not found or problems found, 2 bad
//! input, 3 a storage failure.

use crate::output::{self, out, shown};
use crate::{demo, Cli, Command};
use bytes::Bytes;
use cairn_adapters::blobdir::BlobDir;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions, OpenError, BLOB_DIR, DB_FILE};
use cairn_adapters::{Body, Error, InlineRuntime, Location, PutOptions};
use cairn_core::{Config, Duration, Key, KeyBuf, RecoveryReport, WriteOutcome};
use futures_lite::future::block_on;
use futures_lite::StreamExt;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes read from a file or standard input per chunk.
const CHUNK: usize = 256 * 1024;
/// Keys listed per page.
const LIST_PAGE: usize = 1000;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The caller's input is wrong; nothing was written.
    #[error("{0}")]
    Input(String),
    /// The key holds nothing. (Printed escaped, as every key is; `--json` carries it as it is.)
    #[error("no object under key {}", shown(.0))]
    NotFound(String),
    /// A check found problems, which it has reported already (under `--json`, in its one
    /// document: nothing more is printed).
    #[error("{0}")]
    Problems(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The store failed.
    #[error(transparent)]
    Store(Error),
    /// A file named on the command line cannot be used (missing, a directory, not permitted);
    /// nothing was written.
    #[error("{}: {source}", .path.display())]
    Path {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A local file failed while being read or written.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Standard output was closed by its reader (`cairn ls | head`): the command stops, quietly
    /// and successfully.
    #[error("standard output was closed")]
    Closed,
}

impl CliError {
    /// A short machine-readable name for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Input(_) | CliError::Path { .. } => "input",
            CliError::Store(e) if e.is_caller_error() => "input",
            CliError::Closed => "closed",
            CliError::NotFound(_) => "not_found",
            CliError::Problems(_) => "problems",
            CliError::Open(_) | CliError::Store(_) | CliError::File { .. } => "storage",
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind() {
            "closed" => 0,
            "not_found" | "problems" => 1,
            "input" => 2,
            _ => 3,
        })
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidKey(_) | Error::InvalidMetadata(_) | Error::InvalidRange { .. } => {
                CliError::Input(e.to_string())
            }
            e => CliError::Store(e),
        }
    }
}

/// A data directory as the commands use it.
pub type Data = Embedded<InlineRuntime>;

/// The data directory: `--data`, else `$CAIRN_DATA` (unless empty), else `./cairn-data`.
fn data_dir(cli: &Cli) -> Result<PathBuf, CliError> {
    match &cli.data {
        Some(dir) if dir.as_os_str().is_empty() => {
            Err(CliError::Input("--data needs a directory".into()))
        }
        Some(dir) => Ok(dir.clone()),
        None => Ok(std::env::var_os("CAIRN_DATA")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("cairn-data"), PathBuf::from)),
    }
}

/// Checks `dir` before a command opens it. Only a put creates a data directory: for every other
/// command a missing one — or a directory without cairn's database in it — is a mistake (a
/// mistyped `--data`), not an empty store to create.
fn check_dir(dir: &Path, create: bool) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() && dir.join(DB_FILE).exists() => Ok(()),
        // A put makes a new or an empty directory a store, never one holding other things: a
        // mistyped --data could name someone's files. (An empty `blobs` prepared in advance,
        // say a link to another disk, is cairn's own; `lost+found` is a mount point's.)
        Ok(m) if m.is_dir() && create => {
            inside_a_store(dir)?;
            for entry in std::fs::read_dir(dir).map_err(path_err(dir))? {
                let name = entry.map_err(path_err(dir))?.file_name();
                let empty = |d: &Path| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_none());
                let ours = (name == BLOB_DIR && empty(&dir.join(BLOB_DIR))) || name == "lost+found";
                // Another put making this directory a store at the same moment creates the
                // database first, then its companions and the blob directory: a store in the
                // making, and SQLite's locks take it from there.
                if !ours && !dir.join(DB_FILE).exists() {
                    return Err(CliError::Input(format!(
                        "{} is neither empty nor a cairn data directory: a put makes only a new \
                         or an empty directory one",
                        dir.display()
                    )));
                }
            }
            Ok(())
        }
        Ok(m) if m.is_dir() => Err(CliError::Input(format!(
            "{} is not a cairn data directory (a put makes it one)",
            dir.display()
        ))),
        Ok(_) => Err(CliError::Input(format!(
            "{} is not a directory",
            dir.display()
        ))),
        // Creating it would fail on the link with a puzzling "File exists".
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_symlink() => Err(CliError::Input(
            format!("{} is a symbolic link to nothing", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => inside_a_store(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CliError::Input(format!(
            "no data directory at {} (a put creates one)",
            dir.display()
        ))),
        Err(source) => Err(CliError::Path {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Refuses a new store at `dir` inside another one — under its data directory or its blob
/// directory, an empty fan-out directory say — where each would take the other's files for
/// strays.
pub fn inside_a_store(dir: &Path) -> Result<(), CliError> {
    let dir = std::path::absolute(dir).map_err(path_err(dir))?;
    for above in dir.ancestors().skip(1) {
        let above = std::fs::canonicalize(above).unwrap_or_else(|_| above.to_path_buf());
        if above.join(DB_FILE).is_file() || BlobDir::is_blob_dir(&above) {
            return Err(CliError::Input(format!(
                "{} is inside the cairn data directory {}; a store cannot hold another",
                dir.display(),
                above.display()
            )));
        }
    }
    Ok(())
}

fn options(lease_ms: u64) -> EmbeddedOptions {
    let mut options = EmbeddedOptions::default();
    options.sqlite = options.sqlite.lease(Duration::from_millis(lease_ms.max(1)));
    // Every command recovers on open, so a cleanup that fails is tried again soon anyway: a
    // few attempts (0.3 s of backoff) rather than the library's 8 (12.7 s), which a cleanup
    // failing for good — a blob directory gone read-only — would add to every command.
    options.config.cleanup_attempts = CLI_CLEANUP_ATTEMPTS;
    options
}

/// Attempts per cleanup step in the command (see [`options`]).
const CLI_CLEANUP_ATTEMPTS: u8 = 3;

/// Opens the data directory as [`Embedded::open`] does — recovery and maintenance first — and
/// warns on standard error if recovery had to leave change-log entries behind, with why; or,
/// as `Embedded::open` does too, if the disk was too full for the pass to finish, which then
/// waits for the next command rather than keep this one (an `rm` freeing space) from running.
pub fn open(dir: &Path, lease_ms: u64) -> Result<Data, CliError> {
    let data = open_without_recovery(dir, lease_ms)?;
    let warning = match block_on(data.maintain_explained()) {
        Ok((report, cause)) if report.deferred > 0 => {
            Some(deferred_note(report.deferred, cause.as_ref()))
        }
        Ok(_) => None,
        Err(e) if e.is_disk_full() => Some(format!(
            "the disk is too full for the maintenance pass to finish ({e}); every command that \
             opens the store tries again"
        )),
        Err(e) => return Err(e.into()),
    };
    if let Some(warning) = warning {
        let _ = writeln!(io::stderr(), "cairn: warning: {warning}");
    }
    Ok(data)
}

/// Why recovery left `deferred` change-log entries, and what becomes of them.
fn deferred_note(deferred: u64, cause: Option<&impl std::fmt::Display>) -> String {
    let why = cause.map_or_else(String::new, |c| format!(" (last failure: {c})"));
    format!(
        "recovery could not finish cleaning up after {}{why}; they are retried by every command \
         that opens the store, and `cairn fsck` lists them",
        output::count(deferred, "interrupted write", "interrupted writes")
    )
}

/// Opens without the recovery pass that [`open`] runs, to look at what a crash left.
pub fn open_without_recovery(dir: &Path, lease_ms: u64) -> Result<Data, CliError> {
    Ok(block_on(Embedded::open_unrecovered(
        dir,
        options(lease_ms),
        InlineRuntime,
    ))?)
}

/// Validates a key from the command line before anything is opened.
fn key(key: &str) -> Result<&Key, CliError> {
    Key::new(key.as_bytes()).map_err(|e| {
        // A key far too long is named by its start, not repeated in full.
        let shown: String = key.chars().take(64).collect();
        let more = if shown.len() < key.len() { "…" } else { "" };
        CliError::Input(format!("invalid key {shown:?}{more}: {e}"))
    })
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let json = cli.json;
    let creates = matches!(
        cli.command,
        Command::Put { .. } | Command::CrashPut { .. } | Command::Workload { .. }
    );
    let dir = match &cli.command {
        Command::Demo { .. } => PathBuf::new(), // the demo picks its own
        _ => data_dir(&cli)?,
    };
    if !matches!(cli.command, Command::Demo { .. }) {
        check_dir(&dir, creates)?;
    }
    match &cli.command {
        Command::Demo { keep } => {
            if json {
                return Err(CliError::Input(
                    "the demo narrates for people; it has no --json output".into(),
                ));
            }
            demo::run(*keep, cli.data.as_deref())?;
        }
        Command::CrashPut { key: k, size } => return demo::crash_put(&dir, cli.lease_ms, k, *size),
        Command::Workload { seed } => {
            return crate::workload::run(&open(&dir, cli.lease_ms)?, *seed)
        }
        Command::Put {
            key: k,
            file,
            ttl,
            content_type,
            meta,
        } => {
            key(k)?;
            let mut options = PutOptions {
                content_type: content_type.clone(),
                user: meta.clone(),
                ..PutOptions::default()
            };
            options.ttl =
                ttl.map(|d| Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64));
            options
                .validate()
                .map_err(|e| CliError::Input(e.to_string()))?;
            let (body, read) = source(file.as_deref(), json)?;
            let data = open(&dir, cli.lease_ms)?;
            let outcome = block_on(data.store().put_stream(k, body, &options))?;
            let size = read.load(Ordering::Acquire);
            // What is under the key now, if it is what this put stored: another writer may have
            // replaced it already (and a superseded put's value was never there).
            let info = match outcome {
                WriteOutcome::Committed => block_on(data.store().head(k))?.filter(|i| {
                    i.meta.size == size && i.meta.content_type() == options.content_type.as_deref()
                }),
                WriteOutcome::Superseded => None,
            };
            report_put(k, outcome, info.as_ref(), size, &options, json)?;
        }
        Command::Get {
            key: k,
            output: out,
            range,
        } => {
            key(k)?;
            // `-o -` is standard output, as everywhere.
            let shown = out.as_deref().unwrap_or(Path::new("-"));
            let target = check_output(shown, &dir)?;
            if json && matches!(target, Target::Stdout) {
                return Err(CliError::Input(
                    "--json prints metadata; give the bytes a file with -o".into(),
                ));
            }
            let data = open(&dir, cli.lease_ms)?;
            let object = match range {
                Some(r) => block_on(data.store().get_range(k, *r))?,
                None => block_on(data.store().get(k))?,
            };
            let object = object.ok_or_else(|| CliError::NotFound(k.clone()))?;
            let len = object.span.map_or(object.meta.size, |s| s.len());
            // No bar across bytes going to the terminal it would draw on; `> FILE` gets one.
            let streamed = matches!(target, Target::Stdout | Target::Stderr);
            let to_terminal = match target {
                Target::Stdout => io::stdout().is_terminal(),
                Target::Stderr => true,
                _ => false,
            };
            let bar = output::progress("get", Some(len), json || to_terminal);
            let written = sink(object.body, &target, shown, bar)?;
            if json {
                let mut doc = output::meta_json(k, &object.meta, &object.location);
                doc["bytes_written"] = json!(written);
                doc["range"] = json!(object.span.map(|s| [s.start, s.end - 1]));
                out!("{doc}");
            } else if !streamed {
                let _ = writeln!(io::stderr(), "wrote {written} bytes to {}", shown.display());
            }
        }
        Command::Head { key: k } => {
            key(k)?;
            let data = open(&dir, cli.lease_ms)?;
            let info =
                block_on(data.store().head(k))?.ok_or_else(|| CliError::NotFound(k.clone()))?;
            if json {
                out!("{}", output::meta_json(k, &info.meta, &info.location));
            } else {
                out!("{}", output::meta_text(k, &info.meta, &info.location));
            }
        }
        Command::Rm { key: k } => {
            key(k)?;
            let data = open(&dir, cli.lease_ms)?;
            // Deleting a missing key succeeds, but says so. What was there is read first, as a
            // listing sees it (a tombstone whose blob is gone counts: deleting clears it); a
            // concurrent writer may change it in between, which only the message would miss.
            let page = block_on(data.store().list(k, None, 1))?;
            let existed = page
                .entries
                .first()
                .is_some_and(|e| e.key.as_bytes() == k.as_bytes());
            block_on(data.store().delete(k))?;
            if json {
                out!("{}", json!({ "key": k, "deleted": existed }));
            } else if existed {
                out!("deleted {}", shown(k));
            } else {
                out!("nothing under {}; nothing to delete", shown(k));
            }
        }
        Command::Ls { prefix } => {
            let data = open(&dir, cli.lease_ms)?;
            list(&data, prefix.as_deref().unwrap_or(""), json)?;
        }
        Command::Recover => {
            // Opened without its own recovery pass, so that this one reports all there was.
            let data = open_without_recovery(&dir, cli.lease_ms)?;
            let (report, cause) = block_on(data.store().recover_explained())?;
            let me = data.db().instance_id();
            let held = data
                .db()
                .log_entries()
                .map_err(|source| Error::Read {
                    tier: cairn_core::Tier::Log,
                    source,
                })?
                .iter()
                .filter(|e| e.owner_live && e.owner != me)
                .count();
            if json {
                out!(
                    "{}",
                    json!({ "entries": report.entries, "cleaned": report.cleaned, "deferred": report.deferred, "blobs_deleted": report.blobs_deleted, "held_by_live_instances": held, "last_failure": cause.as_ref().map(ToString::to_string) })
                );
            } else {
                out!("{}", recovery_line(&report));
                if held > 0 {
                    out!("{}", held_note(held));
                }
            }
            if report.deferred > 0 {
                return Err(CliError::Problems(deferred_note(
                    report.deferred,
                    cause.as_ref(),
                )));
            }
        }
        // Opened without recovery, so that the check sees what a crash left (repair recovers).
        Command::Fsck { repair } => {
            return fsck(&open_without_recovery(&dir, cli.lease_ms)?, *repair, json)
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The body to store, and a count of the bytes it has read, with a progress bar on large
/// transfers.
fn source(file: Option<&Path>, json: bool) -> Result<(Body, Arc<AtomicU64>), CliError> {
    let (reader, total): (Box<dyn Read + Send>, Option<u64>) = match file {
        // A forgotten FILE would read the terminal and, at the first Ctrl-D, store nothing over
        // the key: typing the object in takes an explicit `-`.
        None if io::stdin().is_terminal() => {
            return Err(CliError::Input(
                "no FILE to store, and standard input is a terminal: name a file, pipe the \
                 object in, or pass - to type it (end with Ctrl-D)"
                    .into(),
            ))
        }
        // Likewise a standard input that is no pipe and no file: `/dev/null`, which is also
        // what a job started without one (`<&-`) reads. It would store an empty object over
        // the key, by accident.
        None if stdin_is_a_device() => {
            return Err(CliError::Input(
                "no FILE to store, and standard input is neither a pipe nor a file (closed, \
                 or /dev/null): name a file, pipe the object in, or pass - to read it all \
                 the same"
                    .into(),
            ))
        }
        None => (Box::new(io::stdin()), None),
        Some(p) if p == Path::new("-") => (Box::new(io::stdin()), None),
        Some(path) => {
            let f = File::open(path).map_err(path_err(path))?;
            let meta = f.metadata().map_err(path_err(path))?;
            if meta.is_dir() {
                return Err(CliError::Input(format!(
                    "{} is a directory, not a file to store",
                    path.display()
                )));
            }
            (Box::new(f), Some(meta.len()))
        }
    };
    let read = Arc::new(AtomicU64::new(0));
    let bar = output::Progress::new("put", total, json);
    let mut body = chunks(reader, bar, read.clone());
    // The first chunk is read before the store is opened (and a data directory perhaps
    // created): input that cannot be read at all — standard input redirected from a
    // directory, say — is refused with nothing written.
    let body = match block_on(body.next()) {
        Some(Err(e)) => return Err(CliError::Store(Error::Body(e))),
        Some(Ok(first)) => Body::from_stream(futures_lite::stream::once(Ok(first)).chain(body)),
        // Ended already (polled again, the reader's stream would panic).
        None => Body::from_bytes(Bytes::new()),
    };
    Ok((body, read))
}

/// Whether standard input is a device, such as `/dev/null` (which is what a process started
/// with it closed gets in its place).
fn stdin_is_a_device() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileTypeExt;
        io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.file_type().is_char_device())
    }
    #[cfg(not(unix))]
    false
}

/// A body that reads `reader` a chunk at a time as the store pulls it, counting into `read`.
fn chunks(reader: Box<dyn Read + Send>, bar: output::Progress, read: Arc<AtomicU64>) -> Body {
    let stream = futures_lite::stream::unfold(Some((reader, bar)), move |state| {
        let read = read.clone();
        async move {
            let (mut reader, mut bar) = state?;
            let mut buf = vec![0; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Some((Err(e), None)),
                }
            }
            read.fetch_add(filled as u64, Ordering::AcqRel);
            bar.inc(filled as u64);
            if filled == 0 {
                bar.finish();
                return None;
            }
            buf.truncate(filled);
            Some((Ok(Bytes::from(buf)), Some((reader, bar))))
        }
    });
    Body::from_stream(stream)
}

/// The error of a file named on the command line that cannot be used.
fn path_err(path: &Path) -> impl Fn(io::Error) -> CliError {
    let path = path.to_path_buf();
    move |source| CliError::Path {
        path: path.clone(),
        source,
    }
}

/// Where `get -o PATH` writes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// This process's standard output (`-`, `/dev/stdout`, `/dev/fd/1`): written through the
    /// open descriptor, so that a redirection appending to a file, or a pipe, gets the bytes.
    Stdout,
    /// This process's standard error (`/dev/stderr`, `/dev/fd/2`).
    Stderr,
    /// Something that is not a regular file — a device, a pipe, another open descriptor — written
    /// where it is, without truncating it.
    InPlace(PathBuf),
    /// A regular file, existing or not, at this resolved path: replaced as a whole at the end.
    Replace(PathBuf),
}

/// Where `get -o PATH` may write, following symbolic links: the file PATH names in the end.
/// Refused inside the data directory — the database and its WAL, a blob: the store itself —
/// however it is reached (`..`, a link to it, a link to a file not yet made, a blob directory
/// that is itself a link elsewhere); refused too where the shell would refuse `> PATH`: a
/// directory, a file this user may not write.
fn check_output(path: &Path, data: &Path) -> Result<Target, CliError> {
    if path == Path::new("-") {
        return Ok(Target::Stdout);
    }
    match path.to_str() {
        Some("/dev/stdout") => return Ok(Target::Stdout),
        Some("/dev/stderr") => return Ok(Target::Stderr),
        _ => {}
    }
    // An open descriptor of this process, named through /dev/fd or /proc/self/fd. Standard
    // output and error are written through as they are: resolved, /dev/stdout would name the
    // file it was redirected to, and replacing that file would lose what a `>>` had appended.
    // Another descriptor can only be opened anew, which suits a pipe (`-o >(gzip > x.gz)`) or a
    // device, but would write a regular file from its start: refused, its own name will do.
    let fd = ["/dev/fd/", "/proc/self/fd/"]
        .iter()
        .find_map(|fds| path.to_str()?.strip_prefix(fds)?.parse::<u32>().ok());
    match fd {
        Some(1) => return Ok(Target::Stdout),
        Some(2) => return Ok(Target::Stderr),
        Some(_) => {
            let m = std::fs::metadata(path).map_err(path_err(path))?;
            if m.is_file() || m.is_dir() {
                return Err(CliError::Input(format!(
                    "{} is an open file or directory of its own; name the file to write, or \
                     redirect standard output",
                    path.display()
                )));
            }
            return Ok(Target::InPlace(path.to_path_buf()));
        }
        None => {}
    }
    if path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(CliError::Input(format!(
            "{} names a directory; name the file to write",
            path.display()
        )));
    }
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if path.is_symlink() {
                return Err(CliError::Input(format!(
                    "{} is a symbolic link to nothing; name the file to write itself",
                    path.display()
                )));
            }
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let name = path.file_name().ok_or_else(|| {
                CliError::Input(format!("{} does not name a file", path.display()))
            })?;
            std::fs::canonicalize(parent)
                .map_err(path_err(parent))?
                .join(name)
        }
        Err(source) => return Err(path_err(path)(source)),
    };
    let real = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let db = real(data.join(DB_FILE));
    let db_dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    let db_name = db.file_name().unwrap_or_default().to_string_lossy();
    let inside = [real(data.to_path_buf()), real(data.join(BLOB_DIR))]
        .iter()
        .any(|dir| target.starts_with(dir))
        || ["", "-wal", "-shm", "-journal"]
            .iter()
            .any(|suffix| target == db_dir.join(format!("{db_name}{suffix}")));
    if inside {
        return Err(CliError::Input(format!(
            "refusing to write {} inside the data directory {}: it could overwrite the store",
            path.display(),
            data.display()
        )));
    }
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => Err(CliError::Input(format!(
            "{} is a directory; name the file to write",
            path.display()
        ))),
        Ok(m) if !m.is_file() => Ok(Target::InPlace(target)),
        Ok(_) => {
            // Replaced by a rename, a write-protected file would be overwritten all the same:
            // ask for the right to write it, as `> PATH` would (writing nothing yet).
            OpenOptions::new()
                .write(true)
                .open(&target)
                .map_err(path_err(path))?;
            Ok(Target::Replace(target))
        }
        Err(_) => Ok(Target::Replace(target)),
    }
}

/// Streams `body` to `target`, returning the bytes written; `shown` is the path as the user
/// gave it. A regular file is written to a temporary file beside it and renamed into place at
/// the end — with the old file's permissions, or for a new file those `> PATH` would give it —
/// so a get that fails half way leaves an existing file as it was; anything else is written
/// directly.
fn sink(
    mut body: Body,
    target: &Target,
    shown: &Path,
    bar: Option<indicatif::ProgressBar>,
) -> Result<u64, CliError> {
    let file_err = || {
        let path = shown.to_path_buf();
        move |source| CliError::File {
            path: path.clone(),
            source,
        }
    };
    let written = match target {
        Target::Stdout => {
            let mut out = io::stdout().lock();
            copy(&mut body, &mut out, bar.as_ref(), output::stdout_error)
                .and_then(|n| out.flush().map_err(output::stdout_error).map(|()| n))
        }
        Target::Stderr => copy(
            &mut body,
            &mut io::stderr().lock(),
            bar.as_ref(),
            file_err(),
        ),
        Target::InPlace(path) => OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(path_err(shown))
            .and_then(|mut out| copy(&mut body, &mut out, bar.as_ref(), file_err())),
        Target::Replace(path) => {
            let existing = std::fs::metadata(path).ok();
            let dir = path.parent().unwrap_or(Path::new("."));
            // A short random name: the user's own name, lengthened, might not fit.
            let mut temp = tempfile::Builder::new();
            temp.prefix(".cairn-get-").suffix(".partial");
            // The mode `> PATH` creates a file with (the umask applies); tempfile's is 0600.
            #[cfg(unix)]
            temp.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
            let temp = temp.tempfile_in(dir).map_err(path_err(shown))?;
            if let Some(m) = &existing {
                temp.as_file()
                    .set_permissions(m.permissions())
                    .map_err(file_err())?;
            }
            // Dropped on any error below, the temporary file is removed; interrupted, the
            // handler removes it.
            let _doomed = crate::interrupt::Doomed::new(temp.path());
            // Written through the plain file, whose errors name the file asked for, not the
            // temporary one.
            let mut out = io::BufWriter::new(temp.as_file());
            let written = copy(&mut body, &mut out, bar.as_ref(), file_err())
                .and_then(|n| out.flush().map_err(file_err()).map(|()| n));
            drop(out);
            written.and_then(|n| {
                temp.persist(path).map_err(|e| file_err()(e.error))?;
                Ok(n)
            })
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    written
}

/// Copies `body` into `out`, advancing `bar`.
fn copy(
    body: &mut Body,
    out: &mut impl Write,
    bar: Option<&indicatif::ProgressBar>,
    write_err: impl Fn(io::Error) -> CliError,
) -> Result<u64, CliError> {
    let mut written = 0u64;
    while let Some(chunk) = block_on(body.next()) {
        let chunk = chunk.map_err(|e| CliError::Store(Error::stored_body(e)))?;
        out.write_all(&chunk).map_err(&write_err)?;
        written += chunk.len() as u64;
        if let Some(bar) = bar {
            bar.inc(chunk.len() as u64);
        }
    }
    out.flush().map_err(write_err)?;
    Ok(written)
}

fn report_put(
    k: &str,
    outcome: WriteOutcome,
    info: Option<&cairn_adapters::ObjectInfo>,
    size: u64,
    options: &PutOptions,
    json: bool,
) -> Result<(), CliError> {
    let outcome = match outcome {
        WriteOutcome::Committed => "committed",
        WriteOutcome::Superseded => "superseded by a concurrent write",
    };
    let Some(info) = info else {
        // Only what this put itself knows: the object is no longer there to ask.
        let tier = if size > Config::DEFAULT.inline_threshold {
            "long-term"
        } else {
            "inline"
        };
        if json {
            out!(
                "{}",
                json!({
                    "key": k,
                    "size": size,
                    "tier": tier,
                    "revision": null,
                    "content_type": options.content_type,
                    "created": null,
                    "expires": null,
                    "meta": options.user.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
                    "outcome": outcome,
                })
            );
        } else {
            out!(
                "stored {}: {size} bytes, {tier} ({outcome}; since replaced, deleted or expired)",
                shown(k)
            );
        }
        return Ok(());
    };
    if json {
        let mut doc = output::meta_json(k, &info.meta, &info.location);
        doc["outcome"] = json!(outcome);
        out!("{doc}");
    } else {
        out!(
            "stored {}: {} bytes, {} ({outcome})",
            shown(k),
            info.meta.size,
            output::location(&info.location)
        );
    }
    Ok(())
}

fn list(data: &Data, prefix: &str, json: bool) -> Result<(), CliError> {
    let mut after: Option<KeyBuf> = None;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    // JSON goes out as one array written a page at a time, so a listing of any length holds
    // one page in memory, as the text listing does.
    let mut separator = "[";
    loop {
        let page = match block_on(data.store().list(prefix, after.as_deref(), LIST_PAGE)) {
            Ok(page) => page,
            Err(e) => {
                // What was streamed cannot be taken back, but the error document that follows
                // (as every `--json` error, one line on standard output) must not be glued to
                // the unfinished array.
                if json && separator != "[" {
                    writeln!(out).map_err(output::stdout_error)?;
                }
                return Err(e.into());
            }
        };
        for entry in &page.entries {
            let key = String::from_utf8_lossy(entry.key.as_bytes()).into_owned();
            let (size, tier) = match entry.row {
                cairn_core::HvRow::Inline(m) => (m.size, "inline"),
                cairn_core::HvRow::Tombstone(t) => (t.size, "long-term"),
                cairn_core::HvRow::Absent => continue,
            };
            if json {
                let doc = json!({ "key": key, "size": size, "tier": tier });
                write!(out, "{separator}{doc}").map_err(output::stdout_error)?;
                separator = ",";
            } else {
                writeln!(out, "{size:>12}  {tier:<9}  {}", shown(&key))
                    .map_err(output::stdout_error)?;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if json {
        // An empty listing is `[]`: the opening bracket is still the separator then.
        let open = if separator == "[" { "[" } else { "" };
        writeln!(out, "{open}]").map_err(output::stdout_error)?;
    }
    out.flush().map_err(output::stdout_error)
}

fn fsck(data: &Data, repair: bool, json: bool) -> Result<ExitCode, CliError> {
    let mut tally = output::Tally::new(json);
    let checked = block_on(data.fsck_with_progress(repair, |so_far| {
        tally.show(so_far.rows + so_far.blobs, || {
            format!(
                "fsck: checked {} and {}",
                output::count(so_far.rows, "row", "rows"),
                output::count(so_far.blobs, "blob file", "blob files")
            )
        })
    }));
    tally.finish();
    let report = checked?;
    let lossy = |k: &KeyBuf| String::from_utf8_lossy(k.as_bytes()).into_owned();
    let text = |k: &KeyBuf| shown(&lossy(k)).into_owned();
    // What remains wrong after any repair: orphans are deleted and stale entries recovered; a
    // dangling tombstone's bytes are gone and cannot be repaired.
    let left = report.dangling.len()
        + report.stale_entries.len()
        + report.unreadable.len()
        + if repair { 0 } else { report.orphans.len() };
    if json {
        out!(
            "{}",
            json!({
                "rows": report.rows,
                "blobs": report.blobs,
                "dangling_tombstones": report.dangling.iter().map(|(k, r)| json!({"key": lossy(k), "revision": r.to_string()})).collect::<Vec<_>>(),
                "orphan_blobs": report.orphans.iter().map(|(k, r, p)| json!({"key": lossy(k), "revision": r.to_string(), "path": p})).collect::<Vec<_>>(),
                "stale_log_entries": report.stale_entries.iter().map(|e| json!({"id": e.record.id.to_string(), "key": lossy(&e.record.key), "owner": e.owner})).collect::<Vec<_>>(),
                "in_flight_log_entries": report.in_flight.iter().map(|e| json!({"id": e.record.id.to_string(), "key": lossy(&e.record.key), "owner": e.owner})).collect::<Vec<_>>(),
                "temp_files": report.temp_files,
                "temp_bytes": report.temp_bytes,
                "unreadable_files": report.unreadable,
                "repaired": repair,
                "orphans_deleted": report.orphans_deleted,
                "recovery": report.recovered.map(|r| json!({"entries": r.entries, "cleaned": r.cleaned, "deferred": r.deferred, "blobs_deleted": r.blobs_deleted, "last_failure": report.recovery_failure})),
                "problems": left,
                "clean": left == 0,
            })
        );
    } else {
        out!(
            "checked {} and {}",
            output::count(report.rows, "high-volume row", "high-volume rows"),
            output::count(report.blobs, "blob file", "blob files")
        );
        for (k, r) in &report.dangling {
            out!(
                "dangling tombstone: {} -> revision {r} (its blob is missing: the object is lost; \
                 `cairn rm` the key to clear it)",
                text(k)
            );
        }
        for (k, r, p) in &report.orphans {
            let done = if repair { " (deleted)" } else { "" };
            out!(
                "orphan blob: {} revision {r} at {}{done}",
                text(k),
                p.display()
            );
        }
        for e in &report.unreadable {
            out!("not a readable blob (left alone): {e}");
        }
        for e in &report.stale_entries {
            let why = if e.owner_live {
                "its cleanup failed; recovery retries it".to_owned()
            } else {
                format!("owner {} is gone", e.owner)
            };
            out!(
                "stale change-log entry {} for {} ({why})",
                e.record.id,
                text(&e.record.key),
            );
        }
        if !report.in_flight.is_empty() {
            out!("{}", held_note(report.in_flight.len()));
        }
        if report.temp_files > 0 {
            out!(
                "{} ({} bytes) of writes under way or interrupted; maintenance removes them once \
                 an hour old",
                output::count(report.temp_files, "temporary file", "temporary files"),
                report.temp_bytes
            );
        }
        if let Some(r) = &report.recovered {
            out!("{}", recovery_line(r));
            if let Some(why) = &report.recovery_failure {
                out!("recovery's last failure: {why}");
            }
        }
        out!("{}", if left == 0 { "ok" } else { "problems found" });
    }
    if left == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Problems(format!(
            "fsck found {}",
            output::count(left, "problem", "problems")
        )))
    }
}

/// What a recovery pass did, in one line.
fn recovery_line(r: &RecoveryReport) -> String {
    format!(
        "recovery: {} examined, {} cleaned, {} deferred, {}",
        output::count(r.entries, "change-log entry", "change-log entries"),
        r.cleaned,
        r.deferred,
        output::count(r.blobs_deleted, "blob delete", "blob deletes")
    )
}

/// Why `held` change-log entries were left alone.
fn held_note(held: usize) -> String {
    format!(
        "{} of another live instance left alone: a write under way in another process, or of \
         one killed less than its lease (30 s unless it set another) ago; recovery takes them \
         over once that has run out",
        output::count(held, "change-log entry", "change-log entries")
    )
}

/// Used by the demo: where an object lives.
pub fn location_of(data: &Data, k: &str) -> Result<Option<Location>, CliError> {
    Ok(block_on(data.store().head(k))?.map(|i| i.location))
}

#[cfg(test)]
mod tests {
    use super::{sink, Target};
    use bytes::Bytes;
    use cairn_adapters::Body;
    use std::io;
    use std::path::Path;

    /// A body that fails after its first chunk, as a damaged blob read half way does.
    fn failing_body() -> Body {
        Body::from_stream(futures_lite::stream::iter([
            Ok(Bytes::from_static(b"first chunk")),
            Err(io::Error::other("the disk failed")),
        ]))
    }

    #[test]
    fn a_get_failing_half_way_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(&out, b"precious").unwrap();
        let shown = Path::new("out");
        assert!(sink(failing_body(), &Target::Replace(out.clone()), shown, None).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only out"
        );
        // Nothing there before: nothing there after.
        let new = dir.path().join("new");
        assert!(sink(failing_body(), &Target::Replace(new.clone()), shown, None).is_err());
        assert!(!new.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only out"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::write(&out, b"old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
        let body = Body::from_bytes(Bytes::from_static(b"new"));
        let target = Target::Replace(out.clone());
        assert_eq!(sink(body, &target, Path::new("out"), None).unwrap(), 3);
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
