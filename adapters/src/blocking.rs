//! [`BlockingStore`]: the same store for callers without an async runtime.

use crate::backend::{ChangeLog, HvBackend, LtBackend};
use crate::runtime::{block_on, InlineRuntime};
use crate::store::{ListPage, Object, ObjectInfo, StoreBuilder};
use crate::{Body, Error, PutOptions, TieredStore};
use bytes::Bytes;
use cairn_core::{ByteRange, Key, RecoveryReport, WriteOutcome};
use std::pin::pin;

/// A [`TieredStore`] driven on the calling thread. Background cleanup runs inline before the call
/// that started it returns, so every call leaves storage converged.
///
/// ```
/// use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
/// use cairn_adapters::{BlockingStore, PutOptions};
/// let store = BlockingStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new());
/// store.put("k", vec![7u8; 3 << 20], &PutOptions::default())?; // 3 MiB: goes long-term
/// assert_eq!(store.get_bytes("k")?.unwrap().len(), 3 << 20);
/// store.delete("k")?;
/// assert!(store.get("k")?.is_none());
/// # Ok::<(), cairn_adapters::Error>(())
/// ```
pub struct BlockingStore<H, L, C> {
    store: TieredStore<H, L, C, InlineRuntime>,
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog> BlockingStore<H, L, C> {
    /// A store with default settings.
    pub fn new(hv: H, lt: L, log: C) -> Self {
        BlockingStore {
            store: TieredStore::new(hv, lt, log, InlineRuntime),
        }
    }

    /// A store from a configured builder.
    pub fn from_builder(builder: StoreBuilder<H, L, C>) -> Result<Self, Error> {
        Ok(BlockingStore {
            store: builder.build(InlineRuntime)?,
        })
    }

    /// The async store underneath.
    pub fn inner(&self) -> &TieredStore<H, L, C, InlineRuntime> {
        &self.store
    }

    /// See [`TieredStore::put`].
    pub fn put(
        &self,
        key: impl AsRef<[u8]>,
        bytes: impl Into<Bytes>,
        options: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        self.store
            .put_bytes_blocking(key.as_ref(), bytes.into(), options)
    }

    /// See [`TieredStore::put_stream`].
    pub fn put_stream(
        &self,
        key: impl AsRef<[u8]>,
        body: Body,
        options: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        block_on(pin!(self.store.put_stream(key, body, options)))
    }

    /// See [`TieredStore::get`]. The body is still a stream; read it with
    /// [`Body::bytes_blocking`] or use [`BlockingStore::get_bytes`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Object>, Error> {
        self.store.read_blocking(key.as_ref(), None)
    }

    /// The whole object's bytes.
    pub fn get_bytes(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        block_on(pin!(async {
            match self.store.read_blocking(key.as_ref(), None)? {
                Some(object) => object.bytes().await.map(Some).map_err(Error::stored_body),
                None => Ok(None),
            }
        }))
    }

    /// See [`TieredStore::get_range`].
    pub fn get_range(
        &self,
        key: impl AsRef<[u8]>,
        range: ByteRange,
    ) -> Result<Option<Object>, Error> {
        self.store.read_blocking(key.as_ref(), Some(range))
    }

    /// Reads a body to the end on this thread: [`Body::bytes_blocking`], which needs no type
    /// parameters spelled out.
    pub fn read_body(body: Body) -> std::io::Result<Bytes> {
        body.bytes_blocking()
    }

    /// See [`TieredStore::head`].
    pub fn head(&self, key: impl AsRef<[u8]>) -> Result<Option<ObjectInfo>, Error> {
        self.store.head_blocking(key.as_ref())
    }

    /// See [`TieredStore::delete`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<WriteOutcome, Error> {
        self.store.delete_blocking(key.as_ref())
    }

    /// See [`TieredStore::list`].
    pub fn list(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<ListPage, Error> {
        block_on(pin!(self.store.list(prefix, after, limit)))
    }

    /// See [`TieredStore::recover`].
    pub fn recover(&self) -> Result<RecoveryReport, Error> {
        block_on(pin!(self.store.recover()))
    }
}
