//! [`Supervisor`]: the public facade. It spawns and supervises one actor per provider and
//! answers calls, status and health.

mod builder;
mod health;
mod registry;

use builder::Options;
pub use builder::SupervisorBuilder;
pub use health::{CircuitHealth, Health};
pub use registry::RELOAD_DRAIN;

/// How many times the router actor is restarted within [`ROUTER_RESTART_WINDOW`] before it
/// stays stopped (routing then goes on with the last published orders).
const ROUTER_RESTARTS: u32 = 10;
const ROUTER_RESTART_WINDOW: Duration = Duration::from_secs(10);

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use kameo::actor::{Actor, ActorId, ActorRef, Spawn, WeakActorRef};
use kameo::error::ActorStopReason;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Config;
use crate::events::Event;
use crate::provider::{Closing, ProviderHandle};
use crate::router::{self, RouteStatus, Routed, RouterActor, RouterCtx, RouterStatus, Table};
use crate::stream::{self, GuardedStream};
use crate::{CallError, Classify, ConfigError, ProviderId, ProviderStatus, RouteError, Verdict};

/// A supervising actor: the parent of the provider actors (one root) and of the router actor
/// (another), so that neither can be stopped by the other.
#[derive(Debug)]
pub(crate) struct Root;

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

/// What [`Supervisor::shutdown`] (or [`Supervisor::remove_provider`]) left behind.
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
    /// The registry as the router actor last published it.
    table: crate::router::Tables,
    router: ActorRef<RouterActor>,
    router_ctx: Arc<RouterCtx>,
    events: broadcast::Sender<Event>,
    /// The parent of the provider actors.
    root: ActorRef<Root>,
    /// The parent of the router actor.
    router_root: ActorRef<Root>,
    /// Timers: each provider's, the router's resampler, the metrics publisher.
    timers: Mutex<HashMap<Timer, JoinHandle<()>>>,
    /// Set by `shutdown`: the registry takes no more changes.
    closing: Arc<Closing>,
    /// Registry changes, one at a time.
    registry: tokio::sync::Mutex<registry::Spawner>,
    /// The fleet link, when replicas share circuit state.
    #[cfg(feature = "redis")]
    fleet: Option<Arc<crate::fleet::Link>>,
}

/// The supervisor's timer tasks, by what they drive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Timer {
    /// A provider's timer, by its incarnation (see `registry::timer_of`).
    Provider(usize),
    Resampler,
    Metrics,
    /// The fleet link's task.
    #[cfg(feature = "redis")]
    Fleet,
}

impl Inner {
    fn timers(&self) -> std::sync::MutexGuard<'_, HashMap<Timer, JoinHandle<()>>> {
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for timer in self.timers().values() {
            timer.abort();
        }
        self.root.kill();
        self.router_root.kill();
    }
}

/// Keeps a fleet of LLM providers usable while some of them fail.
///
/// Each provider gets a circuit breaker, an optional bulkhead and optional adaptive
/// thresholds, owned by a supervised actor; a router actor orders every route's providers by
/// their health. Cloning a `Supervisor` is cheap and every clone drives the same providers.
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

    /// Validates a configuration and starts one actor per provider and the router actor.
    /// Must be called within a tokio runtime.
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
        let router_root = Root::spawn(());
        let router_ctx = Arc::new(RouterCtx::new(Table {
            config: Arc::new(Config {
                providers: Vec::new(),
                routes: Vec::new(),
                ..config.clone()
            }),
            providers: HashMap::new(),
            order: Vec::new(),
            routes: router::NameMap::default(),
        }));
        let router = RouterActor::supervise(&router_root, router_ctx.clone())
            .restart_policy(kameo::supervision::RestartPolicy::Permanent)
            .restart_limit(ROUTER_RESTARTS, ROUTER_RESTART_WINDOW)
            .spawn_with_mailbox(kameo::mailbox::unbounded())
            .await;
        router.wait_for_startup().await;
        let mut spawner =
            registry::Spawner::new(root.clone(), events.clone(), router.clone().recipient());
        #[cfg(feature = "redis")]
        let fleet = config.fleet.as_ref().map(crate::fleet::start).transpose()?;
        #[cfg(feature = "redis")]
        if let Some((link, _)) = &fleet {
            spawner.fleet = Some(link.clone());
        }
        let mut timers = HashMap::new();
        let mut handles = Vec::with_capacity(config.providers.len());
        for provider in &config.providers {
            match spawner.spawn(provider.clone(), None).await {
                Ok((handle, timer)) => {
                    timers.insert(registry::timer_of(&handle), timer);
                    handles.push(handle);
                }
                Err(error) => {
                    // Nothing started so far outlives the failed build.
                    for timer in timers.values() {
                        timer.abort();
                    }
                    for handle in &handles {
                        handle.actor.kill();
                    }
                    router.kill();
                    root.kill();
                    router_root.kill();
                    return Err(error);
                }
            }
        }
        timers.insert(
            Timer::Resampler,
            tokio::spawn(router::run_resampler(
                router.clone(),
                options.resample_every,
            )),
        );
        let table = router_ctx.table.clone();
        if let Some(every) = options.metrics_interval {
            let table = table.clone();
            timers.insert(
                Timer::Metrics,
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(every);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        publish_metrics(&table.load());
                    }
                }),
            );
        }
        let fuse = Supervisor {
            inner: Arc::new(Inner {
                table,
                router,
                router_ctx,
                events,
                root,
                router_root,
                timers: Mutex::new(timers),
                closing,
                registry: tokio::sync::Mutex::new(spawner),
                #[cfg(feature = "redis")]
                fleet: fleet.as_ref().map(|(link, _)| link.clone()),
            }),
        };
        #[cfg(feature = "redis")]
        let wait = config.fleet.as_ref().map(|f| f.connect_timeout);
        fuse.install(config, handles).await?;
        #[cfg(feature = "redis")]
        if let (Some((_, starter)), Some(wait)) = (fleet, wait) {
            // The link reads the registry as the router publishes it.
            let table = fuse.inner.table.clone();
            let (task, ready) = starter.run(Arc::new(move || table.load().order.clone()));
            fuse.inner.timers().insert(Timer::Fleet, task);
            // The first connection (and the first read of every record) is waited for, at
            // most a connection timeout: a replica that cannot reach Redis starts anyway.
            let _ = tokio::time::timeout(wait + wait, ready).await;
        }
        Ok(fuse)
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

    /// The configuration the supervisor runs now: as built, with every registry change since
    /// (see [`add_provider`](Self::add_provider) and [`reload`](Self::reload)).
    pub fn config(&self) -> Arc<Config> {
        self.table().config.clone()
    }

    /// The registry as last published: one atomic load.
    fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.inner.table.load()
    }

    /// The handle of a provider, for calls that skip the name lookup.
    pub fn provider(&self, name: &str) -> Option<ProviderHandle> {
        self.table().providers.get(name).cloned()
    }

    /// Every provider's handle, in configured order.
    pub fn providers(&self) -> Vec<ProviderHandle> {
        self.table().order.clone()
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
        let Some(handle) = self.provider(provider) else {
            return Err(CallError::UnknownProvider(provider.to_owned()));
        };
        handle.call_with(classify, op).await
    }

    /// Calls the providers of `route` in the order its policy gives, failing over on provider
    /// failures, until one answers. `op` is called with the provider's id and runs in the
    /// caller's task. Errors are classified by their [`Classify`] implementation.
    ///
    /// Open, isolated and saturated providers are skipped without a call. A failure, rate
    /// limit, isolating error or call timeout moves on to the next provider at once; an
    /// error that is the caller's fault ([`Verdict::Ignored`]) returns at once, except a
    /// context-window error ([`ErrorClass::ContextWindow`](crate::ErrorClass)), which goes
    /// on to the next provider with a larger [`max_context`](crate::Provider::max_context),
    /// and a content-policy refusal, which goes on over the route's
    /// [`on_content_policy`](crate::Route::on_content_policy) route if it has one (neither
    /// counts against the provider). A provider over its [`Budget`](crate::Budget) is
    /// skipped; a [`Retry`](crate::Retry) on the route or the provider retries failures on
    /// the same provider before failing over. The route's deadline bounds the whole call.
    ///
    /// Error classes and back-off hints come from [`Classify`]: [`route_with`](Self::route_with)
    /// (a closure verdict) fails over by verdict only, and retries without hints.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] carrying every attempt.
    ///
    /// # Cancel safety
    ///
    /// As for [`call`](Self::call): dropping the future gives back whatever the current
    /// attempt held.
    pub fn route<'a, T, E, F, Fut>(
        &'a self,
        route: &'a str,
        op: F,
    ) -> impl Future<Output = Result<Routed<T>, RouteError<E>>> + 'a
    where
        E: Classify + 'a,
        F: FnMut(ProviderId) -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
        T: 'a,
    {
        let calls = router::Calls {
            classify: E::verdict as fn(&E) -> Verdict,
            op,
        };
        self.routing(route, router::Classified(calls))
    }

    /// A routed call's future: the fast first pass (`router::Routing`), which hands over to
    /// [`run_route_from`](Self::run_route_from) whenever the common case does not hold.
    #[inline(always)]
    fn routing<'a, T, E, A>(
        &'a self,
        route: &'a str,
        attempter: A,
    ) -> impl Future<Output = Result<Routed<T>, RouteError<E>>> + 'a
    where
        A: router::PlainAttempter<T, E> + 'a,
        T: 'a,
        E: 'a,
    {
        router::Routing::new(
            route,
            &self.inner.table,
            attempter,
            move |attempter, table, resume| self.run_route_from(route, table, attempter, resume),
        )
    }

    /// Like [`route`](Self::route), for a call that declares the tokens it expects to use
    /// (`estimate`, reserved from each provider's token [`Budget`](crate::Budget) before
    /// calling it) and reports what it used ([`Metered`](crate::Metered)), which settles the
    /// reservation. Without budgets, the same as `route`.
    ///
    /// # Errors
    ///
    /// As for [`route`](Self::route).
    pub async fn route_metered<T, E, F, Fut>(
        &self,
        route: &str,
        estimate: u64,
        op: F,
    ) -> Result<Routed<T>, RouteError<E>>
    where
        E: Classify,
        F: FnMut(ProviderId) -> Fut,
        Fut: Future<Output = Result<crate::Metered<T>, E>>,
    {
        let calls = router::MeteredCalls {
            calls: router::Calls {
                classify: E::verdict,
                op,
            },
            estimate,
        };
        let routed = self.run_route(route, router::Classified(calls)).await?;
        Ok(Routed {
            value: routed.value.value,
            provider: routed.provider,
            attempts: routed.attempts,
        })
    }

    /// Like [`call`](Self::call), declaring the tokens the call expects to use and
    /// reporting what it used: see [`ProviderHandle::call_metered`].
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call), and [`CallError::OverBudget`].
    pub async fn call_metered<T, E, F, Fut>(
        &self,
        provider: &str,
        estimate: u64,
        op: F,
    ) -> Result<T, CallError<E>>
    where
        E: Classify,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<crate::Metered<T>, E>>,
    {
        let Some(handle) = self.provider(provider) else {
            return Err(CallError::UnknownProvider(provider.to_owned()));
        };
        handle.call_metered(estimate, op).await
    }

    /// Like [`call`](Self::call), retried on the same provider as its
    /// [`Provider::retry`](crate::Provider::retry) says: see
    /// [`ProviderHandle::call_retrying`].
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call).
    pub async fn call_retrying<T, E, F, Fut>(
        &self,
        provider: &str,
        op: F,
    ) -> Result<T, CallError<E>>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(handle) = self.provider(provider) else {
            return Err(CallError::UnknownProvider(provider.to_owned()));
        };
        handle.call_retrying(op).await
    }

    /// Like [`route`](Self::route), with a closure classifying errors.
    ///
    /// # Errors
    ///
    /// As for [`route`](Self::route).
    pub fn route_with<'a, T, E, C, F, Fut>(
        &'a self,
        route: &'a str,
        classify: C,
        op: F,
    ) -> impl Future<Output = Result<Routed<T>, RouteError<E>>> + 'a
    where
        C: Fn(&E) -> Verdict + 'a,
        F: FnMut(ProviderId) -> Fut + 'a,
        Fut: Future<Output = Result<T, E>> + 'a,
        T: 'a,
        E: 'a,
    {
        self.routing(route, router::Calls { classify, op })
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
        let Some(handle) = self.provider(provider) else {
            return Err(CallError::UnknownProvider(provider.to_owned()));
        };
        handle.call_stream_with(classify, op).await
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
        self.run_route_from(route, self.table(), attempter, router::Resume::default())
            .await
    }

    /// The failover loop of a routed call on `route` of `table`, from `resume`; then a
    /// content-policy refusal goes on over the route's fallback route.
    async fn run_route_from<T, E, A>(
        &self,
        route: &str,
        // The table's guard is held for the call (no reference count is touched).
        table: arc_swap::Guard<Arc<Table>>,
        mut attempter: A,
        resume: router::Resume<E>,
    ) -> Result<Routed<T>, RouteError<E>>
    where
        A: router::Attempter<T, E>,
    {
        let Some(view) = table.routes.get(route) else {
            return Err(RouteError::UnknownRoute(route.to_owned()));
        };
        let traced = tracing::level_enabled!(tracing::Level::DEBUG)
            .then(|| tracing::debug_span!("fusebox.route", route))
            .filter(|span| !span.is_disabled());
        let routed = match traced {
            None => router::run(view, &mut attempter, resume).await,
            Some(span) => {
                router::run(view, &mut attempter, resume)
                    .instrument(span)
                    .await
            }
        };
        match routed {
            Err(RouteError::NotRetryable { error, attempts })
                if view.config.on_content_policy.is_some()
                    && attempter.class(&error) == crate::ErrorClass::ContentPolicy =>
            {
                let fallback = view
                    .config
                    .on_content_policy
                    .as_deref()
                    .and_then(|name| self.table().routes.get(name).cloned());
                match fallback {
                    Some(fallback) => {
                        router::on_content_policy(&fallback, attempter, attempts).await
                    }
                    None => Err(RouteError::NotRetryable { error, attempts }),
                }
            }
            routed => routed,
        }
    }

    /// A receiver of every event from now on. See [`crate::events`] for what a receiver that
    /// falls behind sees.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A snapshot of every provider, in configured order.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.table()
            .order
            .iter()
            .map(ProviderHandle::status)
            .collect()
    }

    /// Publishes every provider's call counters and gauges, and every route's counters, to
    /// the `metrics` recorder now (see [`crate::metrics`]).
    pub fn publish_metrics(&self) {
        publish_metrics(&self.table());
        #[cfg(feature = "redis")]
        if let Some(link) = &self.inner.fleet {
            crate::metrics::fleet_connected(link.is_connected());
        }
    }

    /// Whether enough circuits are closed to serve, with each circuit's state.
    pub fn health(&self) -> Health {
        let table = self.table();
        let status: Vec<ProviderStatus> = table.order.iter().map(ProviderHandle::status).collect();
        let health = Health::from_status(&status, table.config.unhealthy_ratio);
        #[cfg(feature = "redis")]
        if let Some(link) = &self.inner.fleet {
            return health.with_fleet(link.is_connected());
        }
        health
    }

    /// The fleet link's state (feature `redis`): `None` without a fleet.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet_status(&self) -> Option<crate::fleet::FleetStatus> {
        self.inner.fleet.as_ref().map(|link| link.status())
    }

    /// A route's current order as the router actor last published it, with why each
    /// provider stands where it does; `None` if no route has this name.
    pub fn route_status(&self, route: &str) -> Option<RouteStatus> {
        self.table()
            .routes
            .get(route)
            .map(|view| RouteStatus::of(view))
    }

    /// Every route's status, in configured order.
    pub fn routes(&self) -> Vec<RouteStatus> {
        let table = self.table();
        table
            .config
            .routes
            .iter()
            .filter_map(|r| table.routes.get(&r.name))
            .map(|view| RouteStatus::of(view))
            .collect()
    }

    /// The router actor: whether it runs, how many messages it handled and how many orders
    /// it published.
    pub fn router_status(&self) -> RouterStatus {
        RouterStatus::read(&self.inner.router_ctx, self.inner.router.is_alive())
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

    fn handle(&self, provider: &str) -> Result<ProviderHandle, UnknownProvider> {
        self.provider(provider)
            .ok_or_else(|| UnknownProvider(provider.to_owned()))
    }

    /// Stops admitting calls (new calls get [`CallError::ShuttingDown`], queued ones are
    /// woken with it), waits up to `grace` for the calls in flight, then stops the actors.
    /// Returns what was still in flight when it gave up. Registry changes after it fail with
    /// [`ConfigError::ShuttingDown`].
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.closing.close();
        // Registry changes in progress finish first; later ones see the flag.
        let _registry = inner.registry.lock().await;
        let providers = self.table().order.clone();
        let report = registry::drain(&providers, grace).await;
        for timer in inner.timers().values() {
            timer.abort();
        }
        for root in [&inner.root, &inner.router_root] {
            if root.stop_gracefully().await.is_ok() {
                let _ = root.wait_for_shutdown_result().await;
            }
        }
        report
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

    /// Makes the router actor panic, to exercise its supervision in tests.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn crash_router_actor(&self) {
        let _ = self.inner.router.tell(router::CrashRouter).try_send();
    }
}

/// Publishes every provider's and route's counters to the `metrics` recorder.
fn publish_metrics(table: &Table) {
    for handle in &table.order {
        crate::metrics::publish(&handle.status());
    }
    for (name, view) in &table.routes {
        crate::metrics::publish_route(name, &view.counters);
    }
}
