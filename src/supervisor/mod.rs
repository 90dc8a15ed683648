//! [`Supervisor`]: the public facade. It spawns and supervises one actor per provider and
//! answers calls, status and health.

mod builder;
mod health;

use builder::Options;
pub use builder::SupervisorBuilder;
pub use health::{CircuitHealth, Health};

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use kameo::actor::{Actor, ActorId, ActorRef, Spawn, WeakActorRef};
use kameo::error::ActorStopReason;
use kameo::mailbox;
use kameo::supervision::RestartPolicy;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Config;
use crate::events::Event;
use crate::provider::{Closing, Ctx, ProviderActor, ProviderHandle, Shared, Tick};
use crate::router::{self, RouteEntry, Routed, Routes};
use crate::stream::{self, GuardedStream};
use crate::{CallError, Classify, ConfigError, ProviderId, ProviderStatus, RouteError, Verdict};

/// The root of the actor tree: supervises the provider actors.
#[derive(Debug)]
struct Root;

impl Actor for Root {
    type Args = ();
    type Error = Infallible;

    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(Root)
    }

    /// A child that stopped for good (a provider past its panic limit) is that child's
    /// fault alone: the root, and with it every other provider, carries on. (kameo's default
    /// stops the parent.)
    async fn on_link_died(
        &mut self,
        _: WeakActorRef<Self>,
        id: ActorId,
        reason: ActorStopReason,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        if !matches!(reason, ActorStopReason::Normal) {
            tracing::error!(actor = %id, %reason, "a supervised actor stopped for good");
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// The error for an operation naming a provider that is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`")]
pub struct UnknownProvider(pub String);

/// What [`Supervisor::shutdown`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Providers that still had calls in flight when the grace period ended, with how many.
    /// Those calls run on in their callers' tasks, but their outcomes are no longer recorded.
    pub abandoned: Vec<(ProviderId, u64)>,
    /// How long the shutdown waited for in-flight calls.
    pub waited: Duration,
}

impl ShutdownReport {
    /// Whether every in-flight call finished within the grace period.
    pub fn is_clean(&self) -> bool {
        self.abandoned.is_empty()
    }
}

#[derive(Debug)]
struct Inner {
    config: Config,
    providers: HashMap<ProviderId, ProviderHandle>,
    order: Vec<ProviderHandle>,
    events: broadcast::Sender<Event>,
    routes: Routes,
    root: ActorRef<Root>,
    timers: Vec<JoinHandle<()>>,
    closing: Arc<Closing>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for timer in &self.timers {
            timer.abort();
        }
        self.root.kill();
    }
}

/// Keeps a fleet of LLM providers usable while some of them fail.
///
/// Each provider gets a circuit breaker, an optional bulkhead and optional adaptive
/// thresholds, owned by a supervised actor. Cloning a `Supervisor` is cheap and every clone
/// drives the same providers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusebox::{Breaker, CallError, Provider, Supervisor};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), fusebox::ConfigError> {
/// let fuse = Supervisor::builder()
///     .provider(Provider::new("anthropic").breaker(Breaker::consecutive(2)))
///     .build()
///     .await?;
///
/// for _ in 0..2 {
///     let failed: Result<(), _> = fuse
///         .call("anthropic", || async { Err(std::io::Error::other("503")) })
///         .await;
///     assert!(matches!(failed, Err(CallError::Inner(_))));
/// }
/// // The circuit is open: the next call fails at once without running the closure.
/// let rejected: Result<(), CallError<std::io::Error>> =
///     fuse.call("anthropic", || async { unreachable!() }).await;
/// assert_eq!(rejected.unwrap_err().retry_after(), Some(Duration::from_secs(60)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Starts configuring a supervisor.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::new()
    }

    /// Validates a configuration and starts one actor per provider. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad value.
    pub async fn from_config(config: Config) -> Result<Self, ConfigError> {
        Self::start(config, Options::default()).await
    }

    async fn start(config: Config, options: Options) -> Result<Self, ConfigError> {
        config.validate()?;
        crate::metrics::describe();
        let (events, _) = broadcast::channel(config.event_capacity);
        let closing = Arc::new(Closing::default());
        let root = Root::spawn(());
        let now = Instant::now();
        let mut providers = HashMap::with_capacity(config.providers.len());
        let mut order = Vec::with_capacity(config.providers.len());
        let mut timers = Vec::with_capacity(config.providers.len());
        for (index, provider) in config.providers.iter().enumerate() {
            let shared = Arc::new(Shared::new(
                provider.clone(),
                seed(provider.name(), index),
                now,
            )?);
            let (wake, wake_rx) = watch::channel(None);
            let ctx = Arc::new(Ctx {
                shared: shared.clone(),
                events: events.clone(),
                wake,
                closing: closing.clone(),
            });
            let actor = ProviderActor::supervise(&root, ctx)
                // The actor recovers from panics in place (see `provider::actor`); one that
                // stopped for good stays stopped.
                .restart_policy(RestartPolicy::Never)
                .spawn_with_mailbox(mailbox::unbounded())
                .await;
            // Messages sent before the actor started are buffered by kameo, and a panic
            // while that buffer drains drops the rest (tests/kameo_panic.rs).
            actor.wait_for_startup().await;
            timers.push(tokio::spawn(run_timer(actor.clone(), wake_rx)));
            let handle = ProviderHandle {
                shared,
                actor,
                closing: closing.clone(),
            };
            providers.insert(handle.id().clone(), handle.clone());
            order.push(handle);
        }
        let routes = Routes {
            entries: config
                .routes
                .iter()
                .map(|r| (r.name.clone(), RouteEntry::new(r.clone(), &providers)))
                .collect(),
        };
        if let Some(every) = options.metrics_interval {
            let handles = order.clone();
            timers.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    for handle in &handles {
                        crate::metrics::publish(&handle.status());
                    }
                }
            }));
        }
        Ok(Supervisor {
            inner: Arc::new(Inner {
                config,
                providers,
                order,
                events,
                routes,
                root,
                timers,
                closing,
            }),
        })
    }

    /// Loads a configuration from TOML (see [`crate::config::file`]) and starts it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] with the line of the problem.
    pub async fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::from_config(Config::from_toml_str(toml)?).await
    }

    /// Reads a TOML configuration file and starts it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] naming the path if it cannot be read, or the problem in it.
    pub async fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| ConfigError::Io {
                path: path.to_owned(),
                source,
            })?;
        Self::from_toml_str(&text).await
    }

    /// The configuration the supervisor runs.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The handle of a provider, for calls that skip the name lookup.
    pub fn provider(&self, name: &str) -> Option<ProviderHandle> {
        self.inner.providers.get(name).cloned()
    }

    /// Every provider's handle, in configured order.
    pub fn providers(&self) -> &[ProviderHandle] {
        &self.inner.order
    }

    /// Calls `provider` through its circuit breaker and bulkhead; errors are classified by
    /// their [`Classify`] implementation.
    ///
    /// `op` runs in the caller's task, never in an actor. See [`ProviderHandle::call`].
    ///
    /// # Errors
    ///
    /// [`CallError::Inner`] with the operation's own error, [`CallError::UnknownProvider`],
    /// or why the call was not made or was abandoned.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future at any point gives back every slot the call held and never
    /// counts as a failure.
    pub async fn call<T, E, F, Fut>(&self, provider: &str, op: F) -> Result<T, CallError<E>>
    where
        E: Classify,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(provider, E::verdict, op).await
    }

    /// Like [`call`](Self::call), with a closure deciding what each error says about the
    /// provider (for example, to treat a 404 from one deployment as a failure).
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call).
    pub async fn call_with<T, E, C, F, Fut>(
        &self,
        provider: &str,
        classify: C,
        op: F,
    ) -> Result<T, CallError<E>>
    where
        C: Fn(&E) -> Verdict,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.inner.providers.get(provider) {
            Some(handle) => handle.call_with(classify, op).await,
            None => Err(CallError::UnknownProvider(provider.to_owned())),
        }
    }

    /// Calls the providers of `route` in the order its policy gives, failing over on provider
    /// failures, until one answers. `op` is called with the provider's id and runs in the
    /// caller's task. Errors are classified by their [`Classify`] implementation.
    ///
    /// Open, isolated and saturated providers are skipped without a call. A failure, rate
    /// limit, isolating error or call timeout moves on to the next provider at once; an
    /// error that is the caller's fault ([`Verdict::Ignored`]) returns at once. The route's
    /// deadline bounds the whole call.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] carrying every attempt.
    ///
    /// # Cancel safety
    ///
    /// As for [`call`](Self::call): dropping the future gives back whatever the current
    /// attempt held.
    pub async fn route<T, E, F, Fut>(&self, route: &str, op: F) -> Result<Routed<T>, RouteError<E>>
    where
        E: Classify,
        F: FnMut(ProviderId) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.route_with(route, E::verdict, op).await
    }

    /// Like [`route`](Self::route), with a closure classifying errors.
    ///
    /// # Errors
    ///
    /// As for [`route`](Self::route).
    pub async fn route_with<T, E, C, F, Fut>(
        &self,
        route: &str,
        classify: C,
        op: F,
    ) -> Result<Routed<T>, RouteError<E>>
    where
        C: Fn(&E) -> Verdict,
        F: FnMut(ProviderId) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_route(route, router::Calls { classify, op }).await
    }

    /// Opens a streamed call to `provider` (see [`crate::stream`]): `op` establishes the
    /// stream; the returned [`GuardedStream`] records the call's outcome when it ends.
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), for failures before the stream is established.
    pub async fn call_stream<S, T, E, F, Fut>(
        &self,
        provider: &str,
        op: F,
    ) -> Result<GuardedStream<S, E, fn(&E) -> Verdict>, CallError<E>>
    where
        E: Classify,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        self.call_stream_with(provider, E::verdict as fn(&E) -> Verdict, op)
            .await
    }

    /// Like [`call_stream`](Self::call_stream), with a closure classifying errors.
    ///
    /// # Errors
    ///
    /// As for [`call_stream`](Self::call_stream).
    pub async fn call_stream_with<S, T, E, C, F, Fut>(
        &self,
        provider: &str,
        classify: C,
        op: F,
    ) -> Result<GuardedStream<S, E, C>, CallError<E>>
    where
        C: Fn(&E) -> Verdict,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        match self.inner.providers.get(provider) {
            Some(handle) => handle.call_stream_with(classify, op).await,
            None => Err(CallError::UnknownProvider(provider.to_owned())),
        }
    }

    /// A streamed call over a route: providers are tried in order, as by
    /// [`route`](Self::route), until one delivers its first chunk; after that the stream is
    /// the caller's, and an error ends it (marked
    /// [`StreamError::is_mid_stream`](crate::StreamError::is_mid_stream)) rather than
    /// failing over, so no content is delivered twice.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] when no provider delivered a first chunk.
    pub async fn route_stream<S, T, E, F, Fut>(
        &self,
        route: &str,
        op: F,
    ) -> Result<Routed<GuardedStream<S, E, fn(&E) -> Verdict>>, RouteError<E>>
    where
        E: Classify,
        F: FnMut(ProviderId) -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        self.route_stream_with(route, E::verdict as fn(&E) -> Verdict, op)
            .await
    }

    /// Like [`route_stream`](Self::route_stream), with a closure classifying errors.
    ///
    /// # Errors
    ///
    /// As for [`route_stream`](Self::route_stream).
    pub async fn route_stream_with<S, T, E, C, F, Fut>(
        &self,
        route: &str,
        classify: C,
        op: F,
    ) -> Result<Routed<GuardedStream<S, E, C>>, RouteError<E>>
    where
        C: Fn(&E) -> Verdict + Clone,
        F: FnMut(ProviderId) -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: Stream<Item = Result<T, E>>,
    {
        self.run_route(route, stream::Streams { classify, op })
            .await
    }

    /// Runs the failover loop of a route with one kind of attempt, and records its metrics.
    async fn run_route<T, E, A>(
        &self,
        route: &str,
        attempter: A,
    ) -> Result<Routed<T>, RouteError<E>>
    where
        A: router::Attempter<T, E>,
    {
        let Some(entry) = self.inner.routes.entries.get(route) else {
            return Err(RouteError::UnknownRoute(route.to_owned()));
        };
        let span = tracing::debug_span!("fusebox.route", route);
        let result = router::run(entry, attempter).instrument(span).await;
        match &result {
            Ok(routed) => crate::metrics::route(route, &routed.attempts, Some(&routed.provider)),
            Err(error) => crate::metrics::route(route, error.attempts(), None),
        }
        result
    }

    /// A receiver of every event from now on. See [`crate::events`] for what a receiver that
    /// falls behind sees.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A snapshot of every provider, in configured order.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.inner
            .order
            .iter()
            .map(ProviderHandle::status)
            .collect()
    }

    /// Publishes every provider's call counters and gauges to the `metrics` recorder now
    /// (see [`crate::metrics`]).
    pub fn publish_metrics(&self) {
        for handle in &self.inner.order {
            crate::metrics::publish(&handle.status());
        }
    }

    /// Whether enough circuits are closed to serve, with each circuit's state.
    pub fn health(&self) -> Health {
        Health::from_status(&self.status(), self.inner.config.unhealthy_ratio)
    }

    /// Takes a provider out until [`reset`](Self::reset). Returns once it is isolated.
    ///
    /// # Errors
    ///
    /// [`UnknownProvider`] if no provider has this name.
    pub async fn isolate(&self, provider: &str) -> Result<(), UnknownProvider> {
        self.handle(provider)?.isolate().await;
        Ok(())
    }

    /// Closes a provider's circuit, whatever its state, and forgets its failures.
    ///
    /// # Errors
    ///
    /// [`UnknownProvider`] if no provider has this name.
    pub async fn reset(&self, provider: &str) -> Result<(), UnknownProvider> {
        self.handle(provider)?.reset().await;
        Ok(())
    }

    fn handle(&self, provider: &str) -> Result<&ProviderHandle, UnknownProvider> {
        self.inner
            .providers
            .get(provider)
            .ok_or_else(|| UnknownProvider(provider.to_owned()))
    }

    /// Stops admitting calls (new calls get [`CallError::ShuttingDown`], queued ones are
    /// woken with it), waits up to `grace` for the calls in flight, then stops the actors.
    /// Returns what was still in flight when it gave up.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.closing.close();
        for handle in &inner.order {
            if let Some(bulkhead) = &handle.shared.bulkhead {
                bulkhead.close();
            }
        }
        let start = Instant::now();
        let deadline = start + grace;
        // What is in flight, read after the flag was set (see `ProviderHandle::enter`). A
        // call that counted itself and is backing out shows for a moment: the report is taken
        // from the same read that decides to stop waiting, so a clean read is a clean report.
        let in_flight = || -> Vec<(ProviderId, u64)> {
            self.status()
                .into_iter()
                .filter(|s| s.in_flight > 0)
                .map(|s| (s.provider, s.in_flight))
                .collect()
        };
        let abandoned = loop {
            let settled = inner.closing.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let busy = in_flight();
            if busy.is_empty() {
                break busy;
            }
            tokio::select! {
                _ = settled => {}
                _ = tokio::time::sleep_until(deadline) => break in_flight(),
            }
        };
        for timer in &inner.timers {
            timer.abort();
        }
        if inner.root.stop_gracefully().await.is_ok() {
            let _ = inner.root.wait_for_shutdown_result().await;
        }
        ShutdownReport {
            abandoned,
            waited: start.elapsed(),
        }
    }

    /// Makes a provider's actor panic, to exercise supervision in tests.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn crash_provider_actor(&self, provider: &str) -> Result<(), UnknownProvider> {
        let handle = self.handle(provider)?;
        let _ = handle.actor.tell(crate::provider::Crash).try_send();
        Ok(())
    }

    /// While `poisoned`, a provider's actor panics on every report it handles, to exercise
    /// poison messages in tests.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn poison_provider_reports(
        &self,
        provider: &str,
        poisoned: bool,
    ) -> Result<(), UnknownProvider> {
        let handle = self.handle(provider)?;
        handle
            .shared
            .poison_reports
            .store(poisoned, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Sends the actor a [`Tick`] whenever the time it asked for arrives.
async fn run_timer(actor: ActorRef<ProviderActor>, mut wake: watch::Receiver<Option<Instant>>) {
    loop {
        let next = *wake.borrow_and_update();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        if actor.tell(Tick).try_send().is_err() {
                            return;
                        }
                        // The actor answers every tick with its next wake time.
                        if wake.changed().await.is_err() {
                            return;
                        }
                    }
                    changed = wake.changed() => if changed.is_err() { return },
                }
            }
            None => {
                if wake.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A per-provider seed for the jitter, so providers' re-opens do not line up.
fn seed(name: &str, index: usize) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (name, index).hash(&mut hasher);
    hasher.finish()
}
