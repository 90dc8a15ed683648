//! The live registry: providers and routes added, removed and reloaded while calls run.
//!
//! The supervisor spawns (and stops) the provider actors; the router actor owns the registry
//! and publishes every change. Changes are validated before anything starts, applied one at
//! a time, and answered with a [`ConfigError`] naming what is wrong.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kameo::actor::{ActorRef, Recipient, Spawn};
use kameo::mailbox;
use kameo::supervision::RestartPolicy;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Root, ShutdownReport, Supervisor, Timer};
use crate::config::{Config, Provider, Route};
use crate::events::Event;
use crate::provider::{CircuitChanged, Closing, Ctx, FleetPort, ProviderActor, Shared, Tick};
use crate::router::{AddProvider, Reload, RemoveProvider, RemoveRoute, Snapshot, UpsertRoute};
use crate::{ConfigError, ProviderHandle};

/// How long the providers a [`Supervisor::reload`] removed or replaced may finish their
/// calls in flight before their actors stop.
pub const RELOAD_DRAIN: Duration = Duration::from_secs(60);

/// Starts provider actors.
#[derive(Debug)]
pub(crate) struct Spawner {
    root: ActorRef<Root>,
    events: broadcast::Sender<Event>,
    router: Recipient<CircuitChanged>,
    spawned: usize,
    /// The fleet link every provider started here hands its changes to, if any.
    pub(crate) fleet: Option<Arc<dyn FleetPort>>,
}

impl Spawner {
    pub(crate) fn new(
        root: ActorRef<Root>,
        events: broadcast::Sender<Event>,
        router: Recipient<CircuitChanged>,
    ) -> Self {
        Spawner {
            root,
            events,
            router,
            spawned: 0,
            fleet: None,
        }
    }

    /// Starts a provider's actor and its timer; with `previous`, the new provider takes over
    /// that one's circuit (a reload that changed its settings).
    pub(crate) async fn spawn(
        &mut self,
        config: Provider,
        previous: Option<&ProviderHandle>,
    ) -> Result<(ProviderHandle, JoinHandle<()>), ConfigError> {
        let now = Instant::now();
        let seed = seed(config.name(), self.spawned);
        self.spawned += 1;
        let mut shared = match previous {
            Some(old) => Shared::carrying(config, seed, now, &old.shared)?,
            None => Shared::new(config, seed, now)?,
        };
        shared.fleet = self.fleet.clone();
        let shared = Arc::new(shared);
        let closing = Arc::new(Closing::default());
        let (wake, wake_rx) = watch::channel(None);
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            events: self.events.clone(),
            wake,
            closing: closing.clone(),
            router: Some(self.router.clone()),
        });
        let actor = ProviderActor::supervise(&self.root, ctx)
            // The actor recovers from panics in place (see `provider::actor`); one that
            // stopped for good stays stopped.
            .restart_policy(RestartPolicy::Never)
            .spawn_with_mailbox(mailbox::unbounded())
            .await;
        // Messages sent before the actor started are buffered by kameo, and a panic while
        // that buffer drains drops the rest (tests/kameo_panic.rs).
        actor.wait_for_startup().await;
        let timer = tokio::spawn(run_timer(actor.clone(), wake_rx));
        Ok((
            ProviderHandle {
                shared,
                actor,
                closing,
            },
            timer,
        ))
    }
}

/// The key of a provider's timer: its incarnation (a reload may replace a provider of the
/// same name).
pub(super) fn timer_of(handle: &ProviderHandle) -> Timer {
    Timer::Provider(Arc::as_ptr(&handle.shared) as usize)
}

/// Stops admitting calls to `providers`, waits up to `grace` for their calls in flight and
/// reports what was left.
pub(crate) async fn drain(providers: &[ProviderHandle], grace: Duration) -> ShutdownReport {
    for handle in providers {
        handle.closing.close();
        if let Some(bulkhead) = &handle.shared.bulkhead {
            bulkhead.close();
        }
    }
    let start = Instant::now();
    let deadline = start + grace;
    let mut abandoned = Vec::new();
    for handle in providers {
        // Read after the flag was set (see `ProviderHandle::enter`). A call that counted
        // itself and is backing out shows for a moment: the report is taken from the read
        // that decides to stop waiting, so a clean read is a clean report.
        let busy = loop {
            let settled = handle.closing.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let in_flight = handle.status().in_flight;
            if in_flight == 0 {
                break 0;
            }
            tokio::select! {
                _ = settled => {}
                _ = tokio::time::sleep_until(deadline) => break handle.status().in_flight,
            }
        };
        if busy > 0 {
            abandoned.push((handle.id().clone(), busy));
        }
    }
    ShutdownReport {
        abandoned,
        waited: start.elapsed(),
    }
}

/// Stops a provider's actor once its calls have drained.
async fn stop(handle: &ProviderHandle) {
    if handle.actor.stop_gracefully().await.is_ok() {
        let _ = handle.actor.wait_for_shutdown_result().await;
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

/// Asks the router: sends `make(reply)` and waits for the answer.
async fn ask<T, M>(
    router: &ActorRef<crate::router::RouterActor>,
    make: impl FnOnce(oneshot::Sender<T>) -> M,
) -> Result<T, ConfigError>
where
    crate::router::RouterActor: kameo::message::Message<M, Reply = ()>,
    M: Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    router
        .tell(make(reply))
        .try_send()
        .map_err(|_| ConfigError::ShuttingDown)?;
    answer.await.map_err(|_| ConfigError::ShuttingDown)
}

impl Supervisor {
    /// Publishes the providers of a freshly started supervisor.
    pub(super) async fn install(
        &self,
        config: Config,
        providers: Vec<ProviderHandle>,
    ) -> Result<(), ConfigError> {
        ask(&self.inner.router, |reply| Reload {
            config,
            providers,
            reply,
        })
        .await
    }

    /// Starts a provider while calls run. Once this returns it can be called, and any route
    /// that names it (see [`upsert_route`](Self::upsert_route)) routes to it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateProvider`] if a provider of that name runs, the provider's
    /// first invalid setting, or [`ConfigError::ShuttingDown`] after a shutdown.
    pub async fn add_provider(&self, provider: Provider) -> Result<(), ConfigError> {
        provider.validate()?;
        let mut spawner = self.inner.registry.lock().await;
        if self.inner.closing.is_closed() {
            return Err(ConfigError::ShuttingDown);
        }
        if self.provider(provider.name()).is_some() {
            return Err(ConfigError::DuplicateProvider(provider.name().to_owned()));
        }
        let (handle, timer) = spawner.spawn(provider.clone(), None).await?;
        let added = ask(&self.inner.router, |reply| AddProvider {
            handle: handle.clone(),
            config: provider,
            reply,
        })
        .await
        .and_then(|r| r);
        match added {
            Ok(()) => {
                self.inner.timers().insert(timer_of(&handle), timer);
                Ok(())
            }
            Err(error) => {
                timer.abort();
                stop(&handle).await;
                Err(error)
            }
        }
    }

    /// Removes a provider while calls run: routes skip it at once (it is taken out of every
    /// route), no new call starts on it, calls in flight finish within `grace`, then its actor
    /// stops. Returns what was still in flight when the grace ended.
    ///
    /// A [`ProviderHandle`] of it kept by the caller refuses calls from then on with
    /// [`CallError::ShuttingDown`](crate::CallError::ShuttingDown).
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotRunning`] if no provider has this name, or
    /// [`ConfigError::ShuttingDown`] after a shutdown.
    pub async fn remove_provider(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<ShutdownReport, ConfigError> {
        let _spawner = self.inner.registry.lock().await;
        if self.inner.closing.is_closed() {
            return Err(ConfigError::ShuttingDown);
        }
        let handle = ask(&self.inner.router, |reply| RemoveProvider {
            name: name.to_owned(),
            reply,
        })
        .await??;
        let report = drain(std::slice::from_ref(&handle), grace).await;
        if let Some(timer) = self.inner.timers().remove(&timer_of(&handle)) {
            timer.abort();
        }
        stop(&handle).await;
        Ok(report)
    }

    /// Adds a route, or replaces the route of the same name; routed calls use it as soon as
    /// this returns.
    ///
    /// # Errors
    ///
    /// The route's first problem (no providers, an unknown or repeated provider, a bad
    /// deadline), or [`ConfigError::ShuttingDown`] after a shutdown.
    pub async fn upsert_route(&self, route: Route) -> Result<(), ConfigError> {
        let _spawner = self.inner.registry.lock().await;
        if self.inner.closing.is_closed() {
            return Err(ConfigError::ShuttingDown);
        }
        ask(&self.inner.router, |reply| UpsertRoute { route, reply }).await?
    }

    /// Removes a route; routed calls to it fail with
    /// [`RouteError::UnknownRoute`](crate::RouteError::UnknownRoute) from then on (calls
    /// already routing finish on its last order).
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotRunning`] if no route has this name, or
    /// [`ConfigError::ShuttingDown`] after a shutdown.
    pub async fn remove_route(&self, name: &str) -> Result<(), ConfigError> {
        let _spawner = self.inner.registry.lock().await;
        if self.inner.closing.is_closed() {
            return Err(ConfigError::ShuttingDown);
        }
        let removed = ask(&self.inner.router, |reply| RemoveRoute {
            name: name.to_owned(),
            reply,
        })
        .await?;
        if removed {
            Ok(())
        } else {
            Err(ConfigError::NotRunning {
                kind: "route",
                name: name.to_owned(),
            })
        }
    }

    /// Replaces the running configuration with `config`, validated first and diffed against
    /// what runs:
    ///
    /// - providers whose settings are unchanged keep running as they are;
    /// - providers whose settings changed are restarted with the new settings and keep their
    ///   circuit: an open circuit stays open until the same deadline, with its generation,
    ///   backoff and lifetime counts (the rate window carries over when its shape is the
    ///   same); calls in flight on the old settings finish within [`RELOAD_DRAIN`];
    /// - new providers start; removed ones stop taking calls and drain within
    ///   [`RELOAD_DRAIN`];
    /// - routes are replaced by the new ones.
    ///
    /// The supervisor-wide settings (`event_capacity`, `unhealthy_ratio`) of `config` apply
    /// from the next supervisor: they are kept as they run.
    ///
    /// # Errors
    ///
    /// The configuration's first problem (nothing changes then), or
    /// [`ConfigError::ShuttingDown`] after a shutdown.
    pub async fn reload(&self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        let mut spawner = self.inner.registry.lock().await;
        if self.inner.closing.is_closed() {
            return Err(ConfigError::ShuttingDown);
        }
        let running = self.table().clone();
        let mut providers = Vec::with_capacity(config.providers.len());
        let mut started = Vec::new();
        let mut retired = Vec::new();
        for provider in &config.providers {
            let current = running.providers.get(provider.name());
            match current {
                Some(handle) if handle.shared.config == *provider => {
                    providers.push(handle.clone());
                    continue;
                }
                _ => {}
            }
            match spawner.spawn(provider.clone(), current).await {
                Ok((handle, timer)) => {
                    started.push((handle.clone(), timer));
                    providers.push(handle);
                    retired.extend(current.cloned());
                }
                Err(error) => {
                    for (handle, timer) in started {
                        timer.abort();
                        stop(&handle).await;
                    }
                    return Err(error);
                }
            }
        }
        let kept: HashSet<&str> = config.providers.iter().map(Provider::name).collect();
        retired.extend(
            running
                .order
                .iter()
                .filter(|h| !kept.contains(h.id().as_str()))
                .cloned(),
        );
        let config = Config {
            event_capacity: running.config.event_capacity,
            unhealthy_ratio: running.config.unhealthy_ratio,
            // The fleet link runs as the supervisor started it.
            #[cfg(feature = "redis")]
            fleet: running.config.fleet.clone(),
            ..config
        };
        ask(&self.inner.router, |reply| Reload {
            config,
            providers,
            reply,
        })
        .await?;
        {
            let mut timers = self.inner.timers();
            for (handle, timer) in started {
                timers.insert(timer_of(&handle), timer);
            }
        }
        if !retired.is_empty() {
            let fuse = self.clone();
            tokio::spawn(async move {
                drain(&retired, RELOAD_DRAIN).await;
                for handle in &retired {
                    if let Some(timer) = fuse.inner.timers().remove(&timer_of(handle)) {
                        timer.abort();
                    }
                    stop(handle).await;
                }
            });
        }
        Ok(())
    }

    /// Reads a TOML configuration (see [`crate::config::file`]) and [`reload`](Self::reload)s
    /// it. A recovery [`Probe`](crate::Probe) is code, which TOML cannot hold: each provider
    /// the file names keeps the probe it runs with (also when its other settings change).
    ///
    /// # Errors
    ///
    /// As for [`reload`](Self::reload), and the TOML's first problem with its line.
    pub async fn reload_toml_str(&self, toml: &str) -> Result<(), ConfigError> {
        let mut config = Config::from_toml_str(toml)?;
        // A probe is code, so TOML has none: each provider keeps the probe it runs with.
        let running = self.table().clone();
        for provider in &mut config.providers {
            if let Some(handle) = running.providers.get(provider.name()) {
                if provider.probe.is_none() {
                    provider.probe.clone_from(&handle.shared.config.probe);
                }
            }
        }
        self.reload(config).await
    }

    /// Reads a TOML configuration file and [`reload`](Self::reload)s it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] naming the path if it cannot be read, and as for
    /// [`reload_toml_str`](Self::reload_toml_str).
    pub async fn reload_toml_file(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| ConfigError::Io {
                path: path.to_owned(),
                source,
            })?;
        self.reload_toml_str(&text).await
    }

    /// Has the router sample every provider, resync from the gates and publish now; returns
    /// once the new orders are published. The router does this by itself every second (see
    /// `SupervisorBuilder::resample_every`); this is for tests and for operators who want the
    /// orders current at once.
    pub async fn resync_routes(&self) {
        let _ = ask(&self.inner.router, |reply| Snapshot { reply }).await;
    }
}
