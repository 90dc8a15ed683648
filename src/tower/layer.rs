//! [`FuseLayer`]: wraps HTTP services in [`Fuse`].

use tower::Layer;

use super::Fuse;
use crate::ProviderHandle;

/// A [`Layer`] guarding every request of an HTTP service with one provider: see
/// [`Fuse`] and [the module docs](super).
///
/// Every service it builds, and every clone of them, shares the provider: one breaker,
/// one bulkhead, one set of counts.
#[derive(Debug, Clone)]
pub struct FuseLayer {
    provider: ProviderHandle,
}

impl FuseLayer {
    /// A layer guarding requests with `provider`, obtained from `Supervisor::provider`.
    pub fn new(provider: ProviderHandle) -> Self {
        FuseLayer { provider }
    }
}

impl<S> Layer<S> for FuseLayer {
    type Service = Fuse<S>;

    fn layer(&self, inner: S) -> Fuse<S> {
        Fuse::new(inner, self.provider.clone())
    }
}
