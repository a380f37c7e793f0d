//! Object metadata as users see it: the core's fields plus content type and user pairs.

use cairn_core::{Duration, Instant, ObjectMeta};
use std::fmt;
use std::sync::Arc;

/// Longest content type accepted, in bytes (HTTP servers commonly cap header values near here).
pub const MAX_CONTENT_TYPE_LEN: usize = 256;
/// Longest time to live accepted: 1,000 years (in milliseconds, years of 365.25 days). Any
/// expiry is then a date every tier stores alike and every calendar can print.
pub const MAX_TTL: Duration = Duration::from_millis(1000 * 31_557_600_000);
/// Largest total size of user metadata (names plus values), in bytes: S3's limit, so objects
/// move between cairn and S3-compatible stores without loss.
pub const MAX_USER_METADATA_LEN: usize = 2048;

/// Everything stored about an object besides its bytes. It always lives with the payload: in the
/// high-volume row for inline objects, with the blob for long-term ones.
///
/// 32 bytes: the content type and user pairs, which most objects lack, live behind one shared
/// pointer, so that a get moves and drops a small value and cloning never copies strings.
///
/// ```
/// use cairn_adapters::{Labels, Metadata};
/// let meta = Metadata {
///     size: 5,
///     labels: Labels::shared(Some("text/plain".into()), vec![("owner".into(), "ada".into())]),
///     ..Metadata::default()
/// };
/// assert_eq!(meta.content_type(), Some("text/plain"));
/// assert_eq!(meta.user(), [("owner".to_string(), "ada".to_string())]);
/// assert_eq!(Metadata::default().user(), []);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Payload length in bytes.
    pub size: u64,
    /// When the write started (milliseconds since the UNIX epoch under the system clock).
    pub created: Instant,
    /// When the object expires, if ever.
    pub expires: Option<Instant>,
    /// The content type and user pairs; `None` when there are neither. Read them with
    /// [`content_type`](Metadata::content_type) and [`user`](Metadata::user).
    pub labels: Option<Arc<Labels>>,
}

/// What a writer says about an object besides its size and lifetime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// MIME type, if the writer gave one.
    pub content_type: Option<String>,
    /// User key-value pairs, in the order given.
    pub user: Vec<(String, String)>,
}

impl Labels {
    /// The labels to put in [`Metadata::labels`]: `None` when there are none, so that an
    /// object without any costs no allocation.
    pub fn shared(
        content_type: Option<String>,
        user: Vec<(String, String)>,
    ) -> Option<Arc<Labels>> {
        (content_type.is_some() || !user.is_empty())
            .then(|| Arc::new(Labels { content_type, user }))
    }
}

impl Metadata {
    /// The part the core needs.
    #[inline]
    pub fn core(&self) -> ObjectMeta {
        ObjectMeta {
            size: self.size,
            created: self.created,
            expires: self.expires,
        }
    }

    /// MIME type, if the writer gave one.
    pub fn content_type(&self) -> Option<&str> {
        self.labels.as_ref()?.content_type.as_deref()
    }

    /// User key-value pairs, in the order given.
    pub fn user(&self) -> &[(String, String)] {
        self.labels.as_ref().map_or(&[], |l| &l.user)
    }
}

/// Equal when every field reads the same: labels holding nothing equal no labels.
impl PartialEq for Metadata {
    fn eq(&self, other: &Metadata) -> bool {
        self.core() == other.core()
            && self.content_type() == other.content_type()
            && self.user() == other.user()
    }
}

impl Eq for Metadata {}

/// How to store an object: everything in [`Metadata`] that the writer chooses.
///
/// ```
/// use cairn_adapters::PutOptions;
/// use cairn_core::Duration;
/// let opts = PutOptions::default()
///     .content_type("image/png")
///     .ttl(Duration::from_secs(3600))
///     .user("owner", "ada");
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type.
    pub content_type: Option<String>,
    /// Time to live from the start of the put; `None` keeps the object until deleted.
    pub ttl: Option<Duration>,
    /// User key-value pairs.
    pub user: Vec<(String, String)>,
}

impl PutOptions {
    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets a time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Adds a user metadata pair.
    pub fn user(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.user.push((name.into(), value.into()));
        self
    }

    /// Checks the options against their limits.
    #[inline]
    pub fn validate(&self) -> Result<(), MetadataError> {
        if let Some(ct) = &self.content_type {
            if ct.is_empty() || ct.len() > MAX_CONTENT_TYPE_LEN || ct.chars().any(char::is_control)
            {
                return Err(MetadataError::ContentType);
            }
        }
        if let Some(ttl) = self.ttl {
            if ttl == Duration::ZERO || ttl > MAX_TTL {
                return Err(MetadataError::Ttl);
            }
        }
        let user_len: usize = self.user.iter().map(|(k, v)| k.len() + v.len()).sum();
        if user_len > MAX_USER_METADATA_LEN {
            return Err(MetadataError::UserTooLarge { len: user_len });
        }
        for (name, value) in &self.user {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(MetadataError::UserName { name: name.clone() });
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(MetadataError::UserValue { name: name.clone() });
            }
        }
        if self.user.len() > 1 {
            let mut names: Vec<String> = self
                .user
                .iter()
                .map(|(k, _)| k.to_ascii_lowercase())
                .collect();
            names.sort_unstable();
            if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(MetadataError::UserDuplicate {
                    name: twice[0].clone(),
                });
            }
        }
        Ok(())
    }

    /// The metadata of an object of `size` bytes written at `now`.
    #[inline]
    pub(crate) fn metadata(&self, size: u64, now: Instant) -> Metadata {
        Metadata {
            size,
            created: now,
            expires: self.ttl.map(|ttl| now + ttl),
            // Most puts carry no labels: skip the clones' calls.
            labels: if self.content_type.is_none() && self.user.is_empty() {
                None
            } else {
                Labels::shared(self.content_type.clone(), self.user.clone())
            },
        }
    }
}

/// Whether `b` may be part of an HTTP header name (RFC 9110's `tchar`): S3 carries user metadata
/// as headers, so a name of anything else could not move there.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Metadata that breaks a limit. The caller's fault; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// The content type is empty, longer than [`MAX_CONTENT_TYPE_LEN`] or has control
    /// characters.
    ContentType,
    /// The time to live is zero or longer than [`MAX_TTL`].
    Ttl,
    /// User metadata exceeds [`MAX_USER_METADATA_LEN`] bytes.
    UserTooLarge {
        /// Its total size.
        len: usize,
    },
    /// A user metadata name is empty or has a character an HTTP header name cannot hold
    /// (anything but ASCII letters, digits and ``!#$%&'*+-.^_`|~``: no space, no `:`).
    UserName {
        /// The name refused.
        name: String,
    },
    /// A user metadata value has a control character other than a tab (a newline, NUL, …),
    /// which an HTTP header value cannot hold.
    UserValue {
        /// The name whose value it is.
        name: String,
    },
    /// Two user metadata names differ only in ASCII case, or not at all: as in S3 (whose names
    /// are HTTP headers), a name holds one value.
    UserDuplicate {
        /// The name given twice.
        name: String,
    },
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::ContentType => write!(
                f,
                "content type must be 1 to {MAX_CONTENT_TYPE_LEN} bytes without control characters"
            ),
            MetadataError::Ttl => {
                f.write_str("a time to live must be at least 1 ms and at most 1,000 years")
            }
            MetadataError::UserTooLarge { len } => write!(
                f,
                "user metadata is {len} bytes; the limit is {MAX_USER_METADATA_LEN}"
            ),
            MetadataError::UserName { name } => write!(
                f,
                "user metadata name {name:?} is not allowed: names must be non-empty and made of \
                 ASCII letters, digits and !#$%&'*+-.^_`|~ only, as HTTP header names are (no \
                 spaces, no colons)"
            ),
            MetadataError::UserValue { name } => write!(
                f,
                "the value of user metadata {name:?} has a control character (a tab aside), \
                 which an HTTP header value cannot hold"
            ),
            MetadataError::UserDuplicate { name } => write!(
                f,
                "user metadata name {name:?} is given more than once (names ignore ASCII case)"
            ),
        }
    }
}
impl std::error::Error for MetadataError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_to_live_is_at_least_a_millisecond_and_at_most_max_ttl() {
        let with = |ttl| PutOptions::default().ttl(ttl).validate();
        assert_eq!(with(Duration::ZERO), Err(MetadataError::Ttl));
        assert_eq!(with(Duration::from_millis(1)), Ok(()));
        assert_eq!(with(MAX_TTL), Ok(()));
        let over = Duration::from_millis(MAX_TTL.as_millis() + 1);
        assert_eq!(with(over), Err(MetadataError::Ttl));
    }

    #[test]
    fn a_content_type_is_never_empty() {
        let with = |ct: &str| PutOptions::default().content_type(ct).validate();
        assert_eq!(with(""), Err(MetadataError::ContentType));
        assert_eq!(with("text/plain"), Ok(()));
        assert_eq!(with("text/\nplain"), Err(MetadataError::ContentType));
    }

    #[test]
    fn a_user_metadata_name_holds_one_value_whatever_its_case() {
        let two = |a: &str, b: &str| PutOptions::default().user(a, "1").user(b, "2").validate();
        assert_eq!(two("colour", "size"), Ok(()));
        let twice = Err(MetadataError::UserDuplicate {
            name: "colour".into(),
        });
        assert_eq!(two("colour", "colour"), twice);
        assert_eq!(two("colour", "Colour"), twice);
    }

    /// Names and values travel as HTTP headers in S3: a name is a header-name token, a value
    /// holds no control character but a tab.
    #[test]
    fn user_metadata_is_what_an_http_header_can_carry() {
        let one = |name: &str, value: &str| PutOptions::default().user(name, value).validate();
        for name in ["owner", "x-Trace_ID.2", "a!#$%&'*+-.^_`|~z"] {
            assert_eq!(one(name, "v"), Ok(()), "{name:?}");
        }
        for name in ["", "a b", "a:b", "a=b", "é", "a\tb", "a\nb", "(x)", "a/b"] {
            let refused = Err(MetadataError::UserName { name: name.into() });
            assert_eq!(one(name, "v"), refused, "{name:?}");
        }
        for value in ["", "plain text", "tab\tseparated", "日本語", "a: b; c=d"] {
            assert_eq!(one("n", value), Ok(()), "{value:?}");
        }
        for value in ["line\nbreak", "cr\r", "nul\0", "\u{7f}", "\u{85}"] {
            assert_eq!(
                one("n", value),
                Err(MetadataError::UserValue { name: "n".into() }),
                "{value:?}"
            );
        }
    }
}
