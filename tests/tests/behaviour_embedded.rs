//! The behavioural suite on the embedded default as a whole: the high-volume tier and the change
//! log on SQLite and the long-term tier on a blob directory, in one fresh data directory per test,
//! both compare-and-write modes, the blob directory's file work in place and on a blocking pool,
//! under tokio, smol and the blocking driver.

mod common;

use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::embedded::{BLOB_DIR, DB_FILE};
use cairn_adapters::memory::CasMode;
use cairn_adapters::sqlite::{SqliteDb, SqliteHv, SqliteLog, SqliteOptions};
use cairn_adapters::SmolRuntime;
use common::tiers::{clock, scratch_dir, Tiers};

type EmbeddedTiers = Tiers<SqliteHv, BlobDir, SqliteLog>;

/// Fresh tiers in one directory laid out as `Embedded` lays it out. Blob expiry follows the
/// scenarios' manual clock, like row expiry; leases run on the system clock.
/// With `offload`, the blob directory's file work runs on smol's blocking pool, whichever
/// driver runs the store.
fn embedded_tiers(mode: CasMode, offload: bool) -> EmbeddedTiers {
    let files = scratch_dir();
    let clock = clock();
    let options = SqliteOptions::default().cas_mode(mode);
    let db = SqliteDb::open(&files.path().join(DB_FILE), options).expect("open the database");
    let mut blobs = BlobDirOptions::default().clock(clock.clone());
    if offload {
        blobs = blobs.offload(SmolRuntime);
    }
    let lt = BlobDir::open(&files.path().join(BLOB_DIR), blobs).expect("open the blob directory");
    Tiers::new(db.hv(), lt, db.log(), clock, Some(files))
}

common::scenarios::behaviour_suite!([
    (CasMode::Reapply, false),
    (CasMode::Skip, false),
    (CasMode::Reapply, true),
    (CasMode::Skip, true),
]
.map(|(mode, offload)| embedded_tiers(mode, offload)));
