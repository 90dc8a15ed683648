//! [`ProviderId`]: a provider's name, cheap to clone.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

/// A provider's name and its metadata, cheap to clone into errors, events and traces: one
/// pointer. Ids are interned for the life of the process, once per distinct name and
/// metadata, so that cloning and dropping one touch no reference count (every call's error,
/// trace and answer carry one); building the same id again (a reload, `ProviderId::from`
/// of a configured name) finds it. Build them from names you configure, not from unbounded
/// data: each distinct one is kept.
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
pub struct ProviderId(&'static Named);

#[derive(PartialEq, Eq)]
struct Named {
    name: Box<str>,
    /// Sorted by key.
    meta: Box<[(Box<str>, Box<str>)]>,
}

/// The interned ids, by name.
fn interned() -> &'static Mutex<HashMap<Box<str>, Vec<&'static Named>>> {
    static INTERNED: OnceLock<Mutex<HashMap<Box<str>, Vec<&'static Named>>>> = OnceLock::new();
    INTERNED.get_or_init(Mutex::default)
}

impl ProviderId {
    /// The id of `name` with `meta`, interned.
    pub(crate) fn with_meta<'a>(
        name: &str,
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let named = Named::new(name, meta);
        let mut table = interned().lock().unwrap_or_else(PoisonError::into_inner);
        let same = table.entry(named.name.clone()).or_default();
        if let Some(found) = same.iter().find(|n| ***n == named) {
            return ProviderId(found);
        }
        let leaked: &'static Named = Box::leak(Box::new(named));
        same.push(leaked);
        ProviderId(leaked)
    }

    #[inline]
    fn named(&self) -> &'static Named {
        self.0
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.named().name
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
        let meta = &self.named().meta;
        meta.binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*meta[i].1)
    }

    /// Every metadata entry, sorted by key.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.named().meta.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl Named {
    fn new<'a>(name: &str, meta: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut meta: Vec<(Box<str>, Box<str>)> = meta
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        meta.sort_by(|a, b| a.0.cmp(&b.0));
        Named {
            name: name.into(),
            meta: meta.into_boxed_slice(),
        }
    }
}

impl PartialEq for ProviderId {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.named(), other.named()) || self.named().name == other.named().name
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ids_are_interned_once_per_name_and_metadata() {
        let a = ProviderId::with_meta("interned-a", [("model", "m1")]);
        let again = ProviderId::with_meta("interned-a", [("model", "m1")]);
        let other_meta = ProviderId::with_meta("interned-a", [("model", "m2")]);
        assert!(std::ptr::eq(a.named(), again.named()));
        assert!(!std::ptr::eq(a.named(), other_meta.named()));
        // Equality is by name, whatever the representation.
        assert_eq!(a, other_meta);
        assert_eq!(a, ProviderId::from("interned-a"));
        assert_eq!(other_meta.meta("model"), Some("m2"));
        assert_eq!(ProviderId::from("interned-a").meta("model"), None);
    }
}
