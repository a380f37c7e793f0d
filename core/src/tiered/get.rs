//! Get and head: read the high-volume tier, follow a tombstone to the long-term tier.

use crate::limits::MAX_REDIRECT_HOPS;
use crate::machine::unexpected;
#[cfg(feature = "planted-bugs")]
use crate::PlantedBug;
use crate::{
    BlobId, ByteRange, Completion, Config, HvRow, Instant, Key, Machine, ObjectMeta, Poll,
    ReadError, Request, Revision, Span, Tier, Tombstone,
};

/// Where a found object lives, with the span of it to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Inline in the high-volume tier; the driver holds the payload it read.
    Inline {
        /// The object's metadata.
        meta: ObjectMeta,
        /// The bytes to return; `None` for all of them.
        span: Option<Span>,
    },
    /// A blob in the long-term tier; the driver holds the body it opened.
    LongTerm {
        /// The tombstone that was followed.
        tombstone: Tombstone,
        /// The bytes to return; `None` for all of them.
        span: Option<Span>,
    },
}

/// What a get or head produces: `Ok(None)` is not found.
pub type GetResult = Result<Option<Found>, ReadError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `vanished`: the revision whose blob was missing on the previous hop.
    AwaitHvRead {
        hops: u8,
        attempt: u8,
        vanished: Option<Revision>,
    },
    AwaitBlob {
        tombstone: Tombstone,
        span: Option<Span>,
        hops: u8,
        attempt: u8,
    },
    Finished(GetResult),
    Taken,
}

/// Reads an object (whole or a byte range), or with [`Get::head`] only its metadata.
///
/// One high-volume read; a tombstone is followed to its blob. If the blob has vanished — a
/// concurrent overwrite committed and cleaned up between the two reads — the high-volume tier is
/// read again and the new target followed, at most
/// [`MAX_REDIRECT_HOPS`](crate::limits::MAX_REDIRECT_HOPS) times. A concurrent overwrite never
/// shows as not-found. If the re-read finds the *same* tombstone, its blob was removed behind
/// cairn's back: the object is lost, and the read fails with [`ReadError::Lost`] rather than
/// pass the loss off as a key that never held anything.
///
/// ```
/// use cairn_core::*;
/// let mut get = Get::new(Key::new(b"k").unwrap(), Some(ByteRange::From(2)), Config::DEFAULT);
/// let now = Instant::ZERO;
/// assert!(matches!(get.poll(now), Poll::Io(Request::HvRead { payload: true, .. })));
/// get.handle(Completion::Row(HvRow::Inline(ObjectMeta { size: 5, created: now, expires: None })));
/// let Poll::Done(Ok(Some(Found::Inline { span, .. }))) = get.poll(now) else { panic!() };
/// assert_eq!(span, Some(Span { start: 2, end: 5 }));
/// ```
#[derive(Clone, Debug)]
pub struct Get<'k> {
    key: &'k Key,
    range: Option<ByteRange>,
    head: bool,
    io_attempts: u8,
    state: State,
    /// PLANTED BUG (`GetGivesUpOnVanishedBlob`, `GetCallsVanishedBlobLost`,
    /// `GetReportsVanishedBlobAsIoError`, `GetRefusesSecondHop`) switch.
    #[cfg(feature = "planted-bugs")]
    bug: Option<PlantedBug>,
}

impl<'k> Get<'k> {
    /// A get of `key`, whole (`range: None`) or a byte range of it.
    #[inline]
    pub fn new(key: &'k Key, range: Option<ByteRange>, config: Config) -> Get<'k> {
        Get::start(key, range, false, config)
    }

    /// A head of `key`: metadata only; never reads an inline payload or a blob body.
    pub fn head(key: &'k Key, config: Config) -> Get<'k> {
        Get::start(key, None, true, config)
    }

    #[inline]
    fn start(key: &'k Key, range: Option<ByteRange>, head: bool, config: Config) -> Get<'k> {
        let state = State::AwaitHvRead {
            hops: 0,
            attempt: 0,
            vanished: None,
        };
        Get {
            key,
            range,
            head,
            io_attempts: config.io_attempts,
            state,
            #[cfg(feature = "planted-bugs")]
            bug: config.bug,
        }
    }

    /// The key being read.
    pub fn key(&self) -> &'k Key {
        self.key
    }

    #[inline]
    fn span(&self, size: u64) -> Result<Option<Span>, ReadError> {
        match self.range {
            Some(range) if !self.head => range.resolve(size).map(Some).map_err(ReadError::Range),
            _ => Ok(None),
        }
    }

    #[inline]
    fn read_row(&self, row: HvRow, hops: u8, vanished: Option<Revision>) -> State {
        match row {
            HvRow::Absent => State::Finished(Ok(None)),
            HvRow::Inline(meta) => State::Finished(
                self.span(meta.size)
                    .map(|span| Some(Found::Inline { meta, span })),
            ),
            // The tombstone we just followed is still there but its blob is not: it was removed
            // behind cairn's back (cairn never deletes a referenced blob). The object is lost.
            HvRow::Tombstone(t) if Some(t.revision) == vanished => {
                State::Finished(Err(ReadError::Lost(t.revision)))
            }
            HvRow::Tombstone(tombstone) => match self.span(tombstone.size) {
                Ok(span) => State::AwaitBlob {
                    tombstone,
                    span,
                    hops,
                    attempt: 0,
                },
                Err(e) => State::Finished(Err(e)),
            },
        }
    }
}

impl Machine for Get<'_> {
    type Output = GetResult;

    #[inline]
    fn poll(&mut self, now: Instant) -> Poll<'_, GetResult> {
        let key = self.key;
        match &self.state {
            State::AwaitHvRead { .. } => Poll::Io(Request::HvRead {
                key,
                payload: !self.head,
                now,
            }),
            &State::AwaitBlob {
                tombstone, span, ..
            } => {
                let blob = BlobId {
                    key,
                    revision: tombstone.revision,
                };
                Poll::Io(if self.head {
                    Request::LtHead { blob }
                } else {
                    Request::LtGet { blob, span }
                })
            }
            &State::Finished(result) => {
                self.state = State::Taken;
                Poll::Done(result)
            }
            State::Taken => panic!("driver bug: get polled after it was done"),
        }
    }

    #[inline]
    fn handle(&mut self, completion: Completion<'_>) {
        let completion = completion.or_failed();
        let retry = |attempt: u8| attempt + 1 < self.io_attempts;
        // Matched by reference: the state is read in place, not copied out and back.
        let next = match (&self.state, completion) {
            (&State::AwaitHvRead { hops, vanished, .. }, Completion::Row(row)) => {
                self.read_row(row, hops, vanished)
            }
            (
                &State::AwaitHvRead {
                    hops,
                    attempt,
                    vanished,
                },
                Completion::Failed,
            ) => {
                if retry(attempt) {
                    State::AwaitHvRead {
                        hops,
                        attempt: attempt + 1,
                        vanished,
                    }
                } else {
                    State::Finished(Err(ReadError::Io(Tier::Hv)))
                }
            }
            (
                &State::AwaitBlob {
                    tombstone, span, ..
                },
                Completion::Blob { found: true },
            ) => State::Finished(Ok(Some(Found::LongTerm { tombstone, span }))),
            (
                &State::AwaitBlob {
                    tombstone, hops, ..
                },
                Completion::Blob { found: false },
            ) => {
                // PLANTED BUG: the vanished blob is taken for a missing object.
                #[cfg(feature = "planted-bugs")]
                if self.bug == Some(PlantedBug::GetGivesUpOnVanishedBlob) {
                    self.state = State::Finished(Ok(None));
                    return;
                }
                // PLANTED BUG: the vanished blob is taken for a lost object.
                #[cfg(feature = "planted-bugs")]
                if self.bug == Some(PlantedBug::GetCallsVanishedBlobLost) {
                    self.state = State::Finished(Err(ReadError::Lost(tombstone.revision)));
                    return;
                }
                // PLANTED BUG: the vanished blob is taken for a failing long-term tier.
                #[cfg(feature = "planted-bugs")]
                if self.bug == Some(PlantedBug::GetReportsVanishedBlobAsIoError) {
                    self.state = State::Finished(Err(ReadError::Io(Tier::Lt)));
                    return;
                }
                // PLANTED BUG: a second vanished blob exhausts the redirect budget.
                #[cfg(feature = "planted-bugs")]
                if self.bug == Some(PlantedBug::GetRefusesSecondHop) && hops >= 1 {
                    self.state = State::Finished(Err(ReadError::Unstable));
                    return;
                }
                if hops >= MAX_REDIRECT_HOPS {
                    State::Finished(Err(ReadError::Unstable))
                } else {
                    State::AwaitHvRead {
                        hops: hops + 1,
                        attempt: 0,
                        vanished: Some(tombstone.revision),
                    }
                }
            }
            (
                &State::AwaitBlob {
                    tombstone,
                    span,
                    hops,
                    attempt,
                },
                Completion::Failed,
            ) => {
                if retry(attempt) {
                    State::AwaitBlob {
                        tombstone,
                        span,
                        hops,
                        attempt: attempt + 1,
                    }
                } else {
                    State::Finished(Err(ReadError::Io(Tier::Lt)))
                }
            }
            (state, completion) => unexpected("get", state.name(), &completion),
        };
        self.state = next;
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitHvRead { .. } => "AwaitHvRead",
            State::AwaitBlob { .. } => "AwaitBlob",
            State::Finished(_) => "Finished",
            State::Taken => "Taken",
        }
    }
}
