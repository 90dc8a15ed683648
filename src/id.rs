//! [`ProviderId`]: a provider's name, cheap to clone.

use std::fmt;
use std::sync::Arc;

/// A provider's name and its metadata, behind one `Arc`, so cloning it into errors, events
/// and traces is cheap.
///
/// The metadata are the free-form strings set with [`Provider::meta`](crate::Provider::meta)
/// (a base URL, a model name, a context size): an operation given a `ProviderId` reads what
/// it needs to call that provider from it, without a name-to-endpoint map of its own.
/// Equality, ordering and hashing use the name alone.
///
/// # Examples
///
/// ```
/// use fusebox::ProviderId;
///
/// let id = ProviderId::from("anthropic");
/// assert_eq!(id, "anthropic");
/// assert_eq!(id.as_str(), "anthropic");
/// assert_eq!(id.to_string(), "anthropic");
/// assert_eq!(id.meta("model"), None);
/// ```
#[derive(Clone)]
pub struct ProviderId(Arc<Named>);

struct Named {
    name: Box<str>,
    /// Sorted by key.
    meta: Box<[(Box<str>, Box<str>)]>,
}

impl ProviderId {
    /// A provider id with metadata.
    pub(crate) fn with_meta<'a>(
        name: &str,
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut meta: Vec<(Box<str>, Box<str>)> = meta
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        meta.sort_by(|a, b| a.0.cmp(&b.0));
        ProviderId(Arc::new(Named {
            name: name.into(),
            meta: meta.into_boxed_slice(),
        }))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The metadata value for `key`, as set with [`Provider::meta`](crate::Provider::meta).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fusebox::ConfigError> {
    /// use fusebox::{Provider, Supervisor};
    ///
    /// let fuse = Supervisor::builder()
    ///     .provider(Provider::new("anthropic").meta("model", "claude-sonnet-4-6"))
    ///     .build()
    ///     .await?;
    /// let id = fuse.provider("anthropic").unwrap().id().clone();
    /// assert_eq!(id.meta("model"), Some("claude-sonnet-4-6"));
    /// assert_eq!(id.meta("base_url"), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn meta(&self, key: &str) -> Option<&str> {
        let meta = &self.0.meta;
        meta.binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*meta[i].1)
    }

    /// Every metadata entry, sorted by key.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.meta.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl PartialEq for ProviderId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.name == other.0.name
    }
}

impl Eq for ProviderId {}

impl std::hash::Hash for ProviderId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that maps keyed by id can be looked up by `&str`.
        self.as_str().hash(state);
    }
}

impl PartialOrd for ProviderId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProviderId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ProviderId {
    fn from(name: &str) -> Self {
        ProviderId::with_meta(name, [])
    }
}

impl From<String> for ProviderId {
    fn from(name: String) -> Self {
        ProviderId::from(name.as_str())
    }
}

impl AsRef<str> for ProviderId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for ProviderId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ProviderId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ProviderId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ProviderId> for &str {
    fn eq(&self, other: &ProviderId) -> bool {
        *self == other.as_str()
    }
}
