//! Read connections. WAL lets readers run beside the writer, so reads never queue behind group
//! commit: each runs synchronously on the calling thread, on a connection taken from a small
//! pool (opened on demand, kept while the pool has room).

use super::schema;
use super::{SqliteError, SqliteOptions};
use crate::memory_lock as lock;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Idle read connections kept open. Each holds its own page cache and statement cache; a few
/// cover the parallelism of a small machine, and a burst beyond them opens (and then closes)
/// extra connections instead of waiting.
const MAX_IDLE_READERS: usize = 4;

/// A pool of read-only connections to one database.
pub(crate) struct Readers {
    path: Arc<Path>,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: Arc<Path>, options: SqliteOptions) -> Readers {
        Readers {
            path,
            options,
            idle: Mutex::new(Vec::with_capacity(MAX_IDLE_READERS)),
        }
    }

    /// Runs `f` on a read connection. Each statement `f` runs sees the latest commit.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        let taken = lock(&self.idle).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => schema::connect(&self.path, &self.options, false)?,
        };
        let result = f(&conn);
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}
