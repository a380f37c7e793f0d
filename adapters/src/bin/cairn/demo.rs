//! `cairn demo`: a self-contained tour on a fresh data directory, explaining each step.

use crate::commands::{self, location_of, CliError};
use crate::output::{self, out};
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::embedded::{BLOB_DIR, DB_FILE};
use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
use cairn_adapters::{InlineRuntime, Location, PutOptions, TieredStore};
use cairn_core::{ByteRange, Duration};
use futures_lite::future::block_on;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The lease the crashing child takes, so the demo need not wait the default 30 s for it.
const CHILD_LEASE_MS: u64 = 300;

fn step(n: u32, what: &str) -> Result<(), CliError> {
    out!("\n{n}. {what}");
    Ok(())
}

/// The directory the demo may fill: `--data DIR` if it does not exist yet or is empty (and is
/// not inside another store), else a fresh one under the temp dir.
fn demo_dir(asked: Option<&Path>) -> Result<PathBuf, CliError> {
    let Some(dir) = asked else {
        return fresh_dir();
    };
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(CliError::Path {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !empty {
        return Err(CliError::Input(format!(
            "the demo needs a fresh directory, and {} is not empty",
            dir.display()
        )));
    }
    commands::inside_a_store(dir)?;
    Ok(dir.to_path_buf())
}

fn fresh_dir() -> Result<PathBuf, CliError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("cairn-demo-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(CliError::File { path: dir, source }),
        }
    }
    Err(CliError::Input(
        "could not create a fresh demo directory under the temp dir".into(),
    ))
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(_) if e.path().extension().is_some_and(|x| x == "blob") => 1,
            _ => 0,
        })
        .sum()
}

/// What the data directory holds now, in one line.
fn tiers(dir: &Path, data: &commands::Data) -> Result<(), CliError> {
    let rows = block_on(data.store().list("", None, 1000))?.entries.len();
    let entries = data
        .db()
        .log_entries()
        .map_err(|source| {
            CliError::Store(cairn_adapters::Error::Read {
                tier: cairn_core::Tier::Log,
                source,
            })
        })?
        .len();
    out!(
        "   data dir: {} in {DB_FILE}, {} in {BLOB_DIR}/, {}",
        output::count(rows, "key", "keys"),
        output::count(files_under(&dir.join(BLOB_DIR)), "blob file", "blob files"),
        output::count(entries, "change-log entry", "change-log entries")
    );
    Ok(())
}

/// Runs the tour in `--data DIR` (kept afterwards) or in a fresh temporary directory (removed
/// unless `keep`, or the tour failed).
pub fn run(keep: bool, asked: Option<&Path>) -> Result<(), CliError> {
    let dir = demo_dir(asked)?;
    let keep = keep || asked.is_some();
    // Interrupted, a temporary directory goes as it would at the end.
    let doomed = (!keep).then(|| crate::interrupt::Doomed::new(&dir));
    let result = tour(&dir);
    drop(doomed);
    match result {
        // A reader that stopped reading (`cairn demo | head`) has seen what it wanted.
        Err(CliError::Closed) | Ok(()) if !keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => out!("\nthe demo's data directory is kept at {}", dir.display()),
    }
    result
}

fn tour(dir: &Path) -> Result<(), CliError> {
    out!("cairn demo in {}", dir.display());
    out!("objects up to 1 MiB live inline in SQLite; larger ones go to the blob directory behind a tombstone");
    let data = commands::open(dir, 30_000)?;
    let store = data.store();
    let plain = PutOptions::default();

    step(
        1,
        "small put: 'notes/hello' (13 bytes) is stored inline, in one SQLite transaction",
    )?;
    block_on(store.put(
        "notes/hello",
        "hello, cairn!",
        &plain.clone().content_type("text/plain"),
    ))?;
    out!(
        "   head: {}",
        crate::output::location(&location_of(&data, "notes/hello")?.expect("just written"))
    );
    tiers(dir, &data)?;

    step(
        2,
        "large put: 'videos/cat' (3 MiB) is streamed to a blob file, then a tombstone commits it",
    )?;
    let video: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    block_on(store.put("videos/cat", video.clone(), &plain))?;
    let Some(Location::LongTerm(first)) = location_of(&data, "videos/cat")? else {
        unreachable!("3 MiB is above the 1 MiB threshold")
    };
    out!("   the tombstone points at revision {first}");
    tiers(dir, &data)?;

    step(
        3,
        "overwrite: a 4 MiB version commits; the old blob is deleted only after the commit",
    )?;
    let video2: Vec<u8> = (0..4u32 << 20).map(|i| (i % 241) as u8).collect();
    block_on(store.put("videos/cat", video2.clone(), &plain))?;
    let Some(Location::LongTerm(second)) = location_of(&data, "videos/cat")? else {
        unreachable!()
    };
    out!("   the tombstone now points at revision {second}");
    tiers(dir, &data)?;

    step(
        4,
        "range read: bytes 1000-1009, read from the middle of the blob file",
    )?;
    let part = block_on(store.get_range(
        "videos/cat",
        ByteRange::Inclusive {
            start: 1000,
            end: 1009,
        },
    ))?
    .expect("present");
    let bytes = block_on(part.bytes())
        .map_err(|e| CliError::Store(cairn_adapters::Error::stored_body(e)))?;
    out!("   {:?}", &bytes[..]);
    assert_eq!(
        &bytes[..],
        &video2[1000..1010],
        "the range read returns the stored bytes"
    );

    step(
        5,
        "delete: the tombstone goes first (the commit point), then its blob",
    )?;
    block_on(store.delete("videos/cat"))?;
    let found = block_on(store.get("videos/cat"))?;
    out!(
        "   get now finds: {}",
        if found.is_some() {
            "it (unexpectedly)"
        } else {
            "nothing"
        }
    );
    tiers(dir, &data)?;

    step(6, "crash: another process stores 'videos/dog' (2 MiB) and dies after writing the blob, before committing")?;
    drop(data);
    let status =
        std::process::Command::new(std::env::current_exe().map_err(|source| CliError::File {
            path: PathBuf::from("<current exe>"),
            source,
        })?)
        .arg("--data")
        .arg(dir)
        .arg("--lease-ms")
        .arg(CHILD_LEASE_MS.to_string())
        .args(["__crash-put", "videos/dog", &(2u64 << 20).to_string()])
        .status()
        .map_err(|source| CliError::File {
            path: PathBuf::from("cairn __crash-put"),
            source,
        })?;
    out!("   the writer exited with {status}; it left a blob file and a change-log entry behind");
    let data = commands::open_without_recovery(dir, 30_000)?;
    tiers(dir, &data)?;
    let entries = data.db().log_entries().map_err(|source| {
        CliError::Store(cairn_adapters::Error::Read {
            tier: cairn_core::Tier::Log,
            source,
        })
    })?;
    let held = entries.iter().filter(|e| e.owner_live).count();
    let all = output::count(entries.len(), "entry", "entries");
    let whose = match held == entries.len() {
        true => format!("the change log's {all}"),
        false => format!("{held} of the change log's {all}"),
    };
    let (verb, them) = if held == 1 {
        ("belongs", "it")
    } else {
        ("belong", "them")
    };
    out!("   {whose} still {verb} to the dead writer until its lease runs out;");
    out!("   until then recovery leaves {them} alone, since a live writer could be mid-commit");
    drop(data);

    step(7, "restart: opening the data directory recovers what the dead writer's lease no longer protects")?;
    std::thread::sleep(std::time::Duration::from_millis(CHILD_LEASE_MS + 100));
    let data = commands::open(dir, 30_000)?;
    let dog = match location_of(&data, "videos/dog")? {
        None => "nothing".to_string(),
        Some(at) => output::location(&at),
    };
    out!("   'videos/dog' reads as: {dog} (its put never committed)");
    tiers(dir, &data)?;
    let report = block_on(data.fsck(false))?;
    out!(
        "   fsck: {}",
        if report.is_clean() {
            "ok"
        } else {
            "problems found"
        }
    );
    if !report.is_clean() {
        return Err(CliError::Problems(
            "the demo's data directory did not recover".into(),
        ));
    }
    out!("\ndone: every blob is referenced and the change log is empty");
    Ok(())
}

/// The hidden `__crash-put`: write a large object and abort after its blob write, before its
/// commit, leaving exactly what a crash at that point leaves.
pub fn crash_put(dir: &Path, lease_ms: u64, key: &str, size: u64) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let options = SqliteOptions::default().lease(Duration::from_millis(lease_ms.max(1)));
    let db = SqliteDb::open(&dir.join(DB_FILE), options)
        .map_err(cairn_adapters::embedded::OpenError::from)?;
    let blobs =
        BlobDir::open(&dir.join(BLOB_DIR), BlobDirOptions::default()).map_err(|source| {
            CliError::File {
                path: dir.join(BLOB_DIR),
                source,
            }
        })?;
    let faults = Faults::new();
    faults.inject(Op::HvCas, Fault::Run(Arc::new(|| std::process::abort())));
    let store = TieredStore::new(
        Faulty::new(db.hv(), faults.clone()),
        Faulty::new(blobs, faults.clone()),
        Faulty::new(db.log(), faults),
        InlineRuntime,
    );
    let body = vec![7u8; size as usize];
    block_on(store.put(key, body, &PutOptions::default()))?;
    Err(CliError::Input(
        "__crash-put expected to abort before committing, but the put finished".into(),
    ))
}
