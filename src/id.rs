//! [`ProviderId`]: a provider's name, cheap to clone.

use std::fmt;
use std::sync::Arc;

/// A provider's name: an `Arc<str>`, so cloning it into errors, events and traces is cheap.
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
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(Arc<str>);

impl ProviderId {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ProviderId {
    fn from(name: &str) -> Self {
        ProviderId(Arc::from(name))
    }
}

impl From<String> for ProviderId {
    fn from(name: String) -> Self {
        ProviderId(Arc::from(name))
    }
}

impl AsRef<str> for ProviderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ProviderId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ProviderId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ProviderId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<ProviderId> for &str {
    fn eq(&self, other: &ProviderId) -> bool {
        *self == &*other.0
    }
}
