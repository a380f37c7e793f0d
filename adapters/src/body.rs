//! Object bodies as streams of chunks, so large objects never sit in memory whole.

use bytes::{Bytes, BytesMut};
use futures_lite::{Stream, StreamExt};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A stream of body chunks. Long-term bodies are streamed from the backend as the reader pulls;
/// inline bodies are a single chunk.
///
/// ```
/// # futures_lite::future::block_on(async {
/// use cairn_adapters::Body;
/// let body = Body::from_chunks(vec![bytes::Bytes::from_static(b"he"), bytes::Bytes::from_static(b"llo")]);
/// assert_eq!(body.bytes().await.unwrap(), "hello");
/// # });
/// ```
pub struct Body {
    inner: Inner,
}

/// One chunk stays unboxed, so an inline object is read without an allocation.
enum Inner {
    Once(Option<Bytes>),
    Stream(Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>),
}

impl Body {
    /// A body from any stream of chunks.
    pub fn from_stream(stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> Body {
        Body {
            inner: Inner::Stream(Box::pin(stream)),
        }
    }

    /// A body of one chunk.
    #[inline]
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            inner: Inner::Once((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// A body of the given chunks.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Body {
        Body::from_stream(futures_lite::stream::iter(chunks.into_iter().map(Ok)))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body {
            inner: Inner::Once(None),
        }
    }

    /// Reads the whole body into one buffer. Meant for small objects and tests; stream large ones.
    pub async fn bytes(mut self) -> io::Result<Bytes> {
        if let Inner::Once(once) = &mut self.inner {
            return Ok(once.take().unwrap_or_default());
        }
        let Some(first) = self.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.next().await.transpose()? else {
            return Ok(first);
        };
        let mut buf = BytesMut::with_capacity(first.len() + second.len());
        buf.extend_from_slice(&first);
        buf.extend_from_slice(&second);
        while let Some(chunk) = self.next().await.transpose()? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// [`bytes`](Body::bytes) on the calling thread, for callers without a runtime (a
    /// [`BlockingStore`](crate::BlockingStore)'s): blocks until the body is read to the end.
    pub fn bytes_blocking(self) -> io::Result<Bytes> {
        crate::runtime::block_on(std::pin::pin!(self.bytes()))
    }
}

impl Stream for Body {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            Inner::Once(once) => Poll::Ready(once.take().map(Ok)),
            Inner::Stream(stream) => stream.as_mut().poll_next(cx),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Body { .. }")
    }
}
