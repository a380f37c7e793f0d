//! The calls a behavioural scenario makes, over the async store on any runtime or over the
//! blocking store, for any backends.

use bytes::Bytes;
use cairn_adapters::backend::{ChangeLog, HvBackend, LtBackend};
use cairn_adapters::{BlockingStore, Body, Error, ObjectInfo, PutOptions, Runtime, TieredStore};
use cairn_core::{ByteRange, KeyBuf, RecoveryReport, Span, WriteOutcome};

/// The calls a scenario makes, over any driver.
#[allow(async_fn_in_trait)]
pub trait Api {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error>;
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error>;
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error>;
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error>;
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error>;
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error>;
    async fn recover(&self) -> Result<RecoveryReport, Error>;
    async fn join(&self);
}

impl<H: HvBackend, L: LtBackend, G: ChangeLog, R: Runtime> Api for TieredStore<H, L, G, R> {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error> {
        TieredStore::put(self, key, bytes, opts).await
    }
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        TieredStore::put_stream(self, key, body, opts).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error> {
        let object = match range {
            Some(r) => self.get_range(key, r).await?,
            None => TieredStore::get(self, key).await?,
        };
        match object {
            None => Ok(None),
            Some(o) => {
                let info = ObjectInfo {
                    meta: o.meta.clone(),
                    location: o.location,
                };
                Ok(Some((
                    info,
                    o.span,
                    o.body.bytes().await.map_err(Error::Body)?,
                )))
            }
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        TieredStore::head(self, key).await
    }
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error> {
        TieredStore::delete(self, key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error> {
        let mut keys = Vec::new();
        let mut after: Option<KeyBuf> = None;
        loop {
            let page = TieredStore::list(self, prefix, after.as_deref(), 2).await?;
            // A full last page says it is the last: no page after the first comes back empty.
            assert!(
                after.is_none() || !page.entries.is_empty(),
                "an empty page after {after:?}"
            );
            keys.extend(page.entries.into_iter().map(|e| e.key));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
    async fn recover(&self) -> Result<RecoveryReport, Error> {
        TieredStore::recover(self).await
    }
    async fn join(&self) {
        TieredStore::join(self).await
    }
}

/// The blocking driver: every call is synchronous; the async wrapper only lets scenarios be
/// written once.
impl<H: HvBackend, L: LtBackend, G: ChangeLog> Api for BlockingStore<H, L, G> {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error> {
        BlockingStore::put(self, key, bytes, opts)
    }
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        BlockingStore::put_stream(self, key, body, opts)
    }
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error> {
        let object = match range {
            Some(r) => self.get_range(key, r)?,
            None => BlockingStore::get(self, key)?,
        };
        match object {
            None => Ok(None),
            Some(o) => {
                let info = ObjectInfo {
                    meta: o.meta.clone(),
                    location: o.location,
                };
                let bytes = o.body.bytes_blocking().map_err(Error::Body)?;
                Ok(Some((info, o.span, bytes)))
            }
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        BlockingStore::head(self, key)
    }
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error> {
        BlockingStore::delete(self, key)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error> {
        let mut keys = Vec::new();
        let mut after: Option<KeyBuf> = None;
        loop {
            let page = BlockingStore::list(self, prefix, after.as_deref(), 2)?;
            // A full last page says it is the last: no page after the first comes back empty.
            assert!(
                after.is_none() || !page.entries.is_empty(),
                "an empty page after {after:?}"
            );
            keys.extend(page.entries.into_iter().map(|e| e.key));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
    async fn recover(&self) -> Result<RecoveryReport, Error> {
        BlockingStore::recover(self)
    }
    /// Every call's own cleanup ran before it returned; what may remain is the release of an
    /// operation that panicked over a tier still settling, on a thread of its own.
    async fn join(&self) {
        self.inner().join().await
    }
}
