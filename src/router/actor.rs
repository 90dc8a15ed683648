//! [`RouterActor`]: owns the registry and every route's order, and publishes them.
//!
//! It is the registry's one writer: providers and routes are added, removed and reloaded
//! through its messages, and each change is published as a new immutable [`Table`] that
//! calls read with one atomic load. It re-ranks a route when a member's circuit changes
//! (provider actors `tell` it every transition, with its outcome epoch) and on a timer that
//! samples every provider (the failure rate over a sliding window, for demotion) and resyncs
//! from the gates, so a lost or reordered notification is repaired within one period. Events
//! are triggers, the gates are the truth: no acknowledgement is needed.
//!
//! Its durable state is the last published table: restarted after a panic, it rebuilds from
//! it, re-reads every gate and publishes again. Routed calls keep using the last table in
//! the meantime.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kameo::actor::{Actor, ActorRef};
use kameo::message::{Context, Message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::table::{Reason, RouteCounters, RouteView, Table};
use crate::config::{Config, Provider, Route};
use crate::provider::CircuitChanged;
use crate::{ConfigError, ProviderHandle, ProviderId};

/// The sliding window a provider's failure rate is measured over for demotion.
pub const DEMOTION_WINDOW: Duration = Duration::from_secs(10);
/// The fewest finished calls in the window for a failure rate to demote or promote.
pub const DEMOTION_MIN_CALLS: u64 = 10;
/// A closed provider failing at least this share of its calls over the window (in
/// percent) is demoted behind every healthy member.
pub const DEMOTE_AT_PERCENT: u64 = 50;
/// A demoted provider is promoted back once its failure rate over the window is at most
/// this share (in percent), or once a whole window passed with too few calls to tell.
pub const PROMOTE_AT_PERCENT: u64 = 25;
/// A closed provider whose tightest rate-limit quota has less than this share left (from
/// its last response's headers) is ranked behind the others...
pub const LOW_HEADROOM: f64 = 0.1;
/// ...until at least this share is left again (or its headroom is no longer current).
pub const HEADROOM_RECOVERED: f64 = 0.2;

/// What the router actor starts (and restarts) with, and what outlives it.
#[derive(Debug)]
pub(crate) struct RouterCtx {
    pub(crate) table: super::table::Tables,
    /// Messages handled, over every incarnation.
    pub(crate) messages: AtomicU64,
    /// Tables published.
    pub(crate) publications: AtomicU64,
    /// How many times the actor started (1 + restarts).
    pub(crate) starts: AtomicU64,
}

impl RouterCtx {
    pub(crate) fn new(table: Table) -> Self {
        RouterCtx {
            table: Arc::new(super::table::Published::new(table)),
            messages: AtomicU64::new(0),
            publications: AtomicU64::new(0),
            starts: AtomicU64::new(0),
        }
    }
}

/// A provider's recent outcomes, as the router samples them.
#[derive(Debug, Default)]
struct Sampled {
    /// (when, successes, failures) since the previous sample, newest last.
    window: VecDeque<(Instant, u64, u64)>,
    /// Lifetime totals at the last sample.
    last: Option<(u64, u64)>,
    /// Why it is demoted, while it is.
    demoted: Option<Reason>,
    /// When the window last had enough calls to tell.
    last_evidence: Option<Instant>,
    /// Whether it is ranked down for low headroom (with hysteresis).
    low_headroom: bool,
}

impl Sampled {
    fn totals(&self) -> (u64, u64) {
        self.window
            .iter()
            .fold((0, 0), |(s, f), &(_, ds, df)| (s + ds, f + df))
    }
}

/// The router actor. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct RouterActor {
    ctx: Arc<RouterCtx>,
    /// The registry, as last published (the actor's working copy).
    config: Config,
    providers: HashMap<ProviderId, ProviderHandle>,
    order: Vec<ProviderHandle>,
    counters: HashMap<String, Arc<RouteCounters>>,
    /// The last outcome epoch seen per provider.
    seen: HashMap<ProviderId, u64>,
    sampled: HashMap<ProviderId, Sampled>,
    /// Slow-start ramps (`router::ramp`).
    ramps: super::ramp::Ramps,
}

impl Actor for RouterActor {
    type Args = Arc<RouterCtx>;
    type Error = Infallible;

    async fn on_start(ctx: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        ctx.starts.fetch_add(1, Ordering::Relaxed);
        let table = ctx.table.load_full();
        let mut sampled: HashMap<ProviderId, Sampled> = HashMap::new();
        // Demotions survive a restart: they are in the published orders.
        for view in table.routes.values() {
            for member in &view.members {
                if matches!(
                    member.reason,
                    Reason::Demoted { .. } | Reason::LowHeadroom { .. }
                ) {
                    sampled
                        .entry(member.handle.id().clone())
                        .or_default()
                        .demoted = Some(member.reason);
                }
            }
        }
        let mut actor = RouterActor {
            config: (*table.config).clone(),
            providers: table.providers.clone(),
            order: table.order.clone(),
            counters: table
                .routes
                .iter()
                .map(|(name, view)| (name.clone(), view.counters.clone()))
                .collect(),
            seen: table
                .order
                .iter()
                .map(|h| (h.id().clone(), h.epoch()))
                .collect(),
            sampled,
            ramps: super::ramp::Ramps::from_table(&table),
            ctx,
        };
        actor.publish(true);
        Ok(actor)
    }
}

impl RouterActor {
    /// Ranks every route from the gates and the samples, and publishes the table if anything
    /// changed (or when `force`d).
    fn publish(&mut self, force: bool) {
        let now = Instant::now();
        let current = self.ctx.table.load_full();
        let mut routes =
            super::NameMap::with_capacity_and_hasher(self.config.routes.len(), Default::default());
        let mut changed = force
            || current.routes.len() != self.config.routes.len()
            || current.providers.len() != self.providers.len();
        self.ramps.sync(&self.providers);
        let configured = self.config.routes.clone();
        for route in &configured {
            let counters = self.counters.entry(route.name.clone()).or_default().clone();
            if route.policy == crate::config::Policy::LowestLatency {
                for name in &route.providers {
                    if let Some(handle) = self.providers.get(name.as_str()) {
                        handle.shared.want_latency();
                    }
                }
            }
            let order = self.rank(route, now);
            let previous = current.routes.get(&route.name);
            let same = previous.is_some_and(|p| {
                p.config == *route
                    && p.members.len() == order.len()
                    && p.order()
                        .zip(order.iter())
                        .all(|((id, reason), (h, r))| id == h.id() && same_reason(reason, *r))
            });
            let version = match previous {
                Some(p) if same => p.version,
                Some(p) => {
                    counters.order_changes.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::route_order_changed(&route.name);
                    p.version + 1
                }
                None => 1,
            };
            changed |= !same;
            routes.insert(
                route.name.clone(),
                match previous {
                    // A forced publication rebuilds every view: a reload may have replaced
                    // a member's handle under the same name.
                    Some(p) if same && !force => p.clone(),
                    _ => Arc::new(self.ramps.attach(RouteView::new(
                        route.clone(),
                        order,
                        counters,
                        version,
                    ))),
                },
            );
        }
        if !changed {
            return;
        }
        self.counters.retain(|name, _| routes.contains_key(name));
        self.ctx.table.store(Arc::new(Table {
            config: Arc::new(self.config.clone()),
            providers: self.providers.clone(),
            order: self.order.clone(),
            routes,
        }));
        self.ctx.publications.fetch_add(1, Ordering::Relaxed);
    }

    /// One route's members in order: every member that is not demoted in configured order
    /// (open, isolated and stopped ones keep their place and are skipped by the gate check,
    /// so the trace shows why a fallback served), then the demoted ones.
    fn rank(&mut self, route: &Route, now: Instant) -> Vec<(ProviderHandle, Reason)> {
        let mut order: Vec<(ProviderHandle, Reason)> = Vec::with_capacity(route.providers.len());
        for name in &route.providers {
            let Some(handle) = self.providers.get(name.as_str()) else {
                continue;
            };
            let sampled = self.sampled.entry(handle.id().clone()).or_default();
            let headroom = handle.shared.headroom.ratio(now);
            sampled.low_headroom = match headroom {
                Some(ratio) if ratio < LOW_HEADROOM => true,
                Some(ratio) if ratio >= HEADROOM_RECOVERED => false,
                Some(_) => sampled.low_headroom,
                None => false,
            };
            let reason = Table::gate_reason(handle).unwrap_or_else(|| match headroom {
                Some(ratio) if sampled.low_headroom => Reason::LowHeadroom { ratio },
                _ => sampled.demoted.unwrap_or(Reason::Healthy),
            });
            order.push((handle.clone(), reason));
        }
        order.sort_by_key(|(_, reason)| reason.is_demoted());
        order
    }

    /// Samples every provider's outcomes and moves demotions, with hysteresis.
    fn sample(&mut self, now: Instant) {
        for handle in &self.order {
            let status = handle.status();
            let sampled = self.sampled.entry(handle.id().clone()).or_default();
            let totals = (status.successful, status.failed);
            if let Some((s, f)) = sampled.last {
                sampled.window.push_back((
                    now,
                    totals.0.saturating_sub(s),
                    totals.1.saturating_sub(f),
                ));
            }
            sampled.last = Some(totals);
            while sampled
                .window
                .front()
                .is_some_and(|&(at, _, _)| now.saturating_duration_since(at) >= DEMOTION_WINDOW)
            {
                sampled.window.pop_front();
            }
            let (ok, failed) = sampled.totals();
            let calls = ok + failed;
            if calls >= DEMOTION_MIN_CALLS {
                sampled.last_evidence = Some(now);
                let rate = failed as f64 / calls as f64;
                // Integer comparisons: exact at the thresholds.
                if failed * 100 >= DEMOTE_AT_PERCENT * calls {
                    sampled.demoted = Some(Reason::Demoted { failure_rate: rate });
                } else if failed * 100 <= PROMOTE_AT_PERCENT * calls {
                    sampled.demoted = None;
                } else if let Some(Reason::Demoted { .. }) = sampled.demoted {
                    // Between the thresholds: stays demoted, with the rate updated.
                    sampled.demoted = Some(Reason::Demoted { failure_rate: rate });
                }
            } else if sampled.demoted.is_some()
                && sampled
                    .last_evidence
                    .is_none_or(|at| now.saturating_duration_since(at) >= DEMOTION_WINDOW)
            {
                // A whole window without enough calls to tell: the evidence is stale, so it
                // gets real traffic again (and is demoted again if it still fails).
                sampled.demoted = None;
            }
        }
    }

    /// Notes a provider's epoch; whether it is newer than the last one seen (an older or
    /// repeated notification is stale: the table already reflects its gate).
    fn note(&mut self, provider: &ProviderId, epoch: u64) -> bool {
        match self.seen.get_mut(provider) {
            Some(seen) if epoch <= *seen => false,
            Some(seen) => {
                *seen = epoch;
                true
            }
            // Not (or no longer) in the registry.
            None => false,
        }
    }

    fn counted(&self) {
        self.ctx.messages.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether two reasons put a member in the same place (rates are refreshed, not re-ranked).
fn same_reason(a: Reason, b: Reason) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

impl Message<CircuitChanged> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: CircuitChanged, _: &mut Context<Self, ()>) {
        self.counted();
        if let Some(handle) = self.providers.get(&msg.provider) {
            self.ramps.observe(handle, Instant::now());
        }
        if !self.note(&msg.provider, msg.epoch) && !msg.headroom {
            return;
        }
        if !msg.headroom && matches!(msg.state, crate::CircuitState::Closed) {
            // A provider that just recovered starts with a clean slate.
            if let Some(s) = self.sampled.get_mut(&msg.provider) {
                s.window.clear();
                s.demoted = None;
            }
        }
        self.publish(false);
    }
}

/// Samples every provider and resyncs from the gates; sent by the router's timer.
#[derive(Debug)]
pub(crate) struct Resample;

impl Message<Resample> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, _: Resample, _: &mut Context<Self, ()>) {
        self.counted();
        let now = Instant::now();
        self.sample(now);
        for handle in &self.order {
            self.ramps.observe(handle, now);
        }
        let gates: Vec<_> = self
            .order
            .iter()
            .map(|h| (h.id().clone(), h.epoch()))
            .collect();
        for (id, epoch) in gates {
            self.note(&id, epoch);
        }
        self.publish(false);
    }
}

/// Samples, resyncs and publishes now; answered once the table is published.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) reply: oneshot::Sender<()>,
}

impl Message<Snapshot> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: Snapshot, _: &mut Context<Self, ()>) {
        self.counted();
        self.sample(Instant::now());
        self.publish(false);
        let _ = msg.reply.send(());
    }
}

/// Adds a running provider to the registry.
#[derive(Debug)]
pub(crate) struct AddProvider {
    pub(crate) handle: ProviderHandle,
    pub(crate) config: Provider,
    pub(crate) reply: oneshot::Sender<Result<(), ConfigError>>,
}

impl Message<AddProvider> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: AddProvider, _: &mut Context<Self, ()>) {
        self.counted();
        let name = msg.config.name.clone();
        let result = if self.providers.contains_key(name.as_str()) {
            Err(ConfigError::DuplicateProvider(name))
        } else {
            self.seen
                .insert(msg.handle.id().clone(), msg.handle.epoch());
            self.providers
                .insert(msg.handle.id().clone(), msg.handle.clone());
            self.order.push(msg.handle);
            self.config.providers.push(msg.config);
            self.publish(true);
            Ok(())
        };
        let _ = msg.reply.send(result);
    }
}

/// Takes a provider out of the registry and every route; answers with its handle, for the
/// supervisor to drain and stop.
#[derive(Debug)]
pub(crate) struct RemoveProvider {
    pub(crate) name: String,
    pub(crate) reply: oneshot::Sender<Result<ProviderHandle, ConfigError>>,
}

impl Message<RemoveProvider> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: RemoveProvider, _: &mut Context<Self, ()>) {
        self.counted();
        let result = match self.providers.remove(msg.name.as_str()) {
            None => Err(ConfigError::NotRunning {
                kind: "provider",
                name: msg.name,
            }),
            Some(handle) => {
                self.order.retain(|h| h.id() != handle.id());
                self.config.providers.retain(|p| p.name != msg.name);
                for route in &mut self.config.routes {
                    route.providers.retain(|p| *p != msg.name);
                }
                self.sampled.remove(handle.id());
                self.seen.remove(handle.id());
                self.publish(true);
                Ok(handle)
            }
        };
        let _ = msg.reply.send(result);
    }
}

/// Adds a route, or replaces the one of the same name.
#[derive(Debug)]
pub(crate) struct UpsertRoute {
    pub(crate) route: Route,
    pub(crate) reply: oneshot::Sender<Result<(), ConfigError>>,
}

impl Message<UpsertRoute> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: UpsertRoute, _: &mut Context<Self, ()>) {
        self.counted();
        let known: HashSet<&str> = self.providers.keys().map(ProviderId::as_str).collect();
        let result = msg.route.validate(&known);
        if result.is_ok() {
            match self
                .config
                .routes
                .iter_mut()
                .find(|r| r.name == msg.route.name)
            {
                Some(existing) => *existing = msg.route,
                None => self.config.routes.push(msg.route),
            }
            self.publish(true);
        }
        let _ = msg.reply.send(result);
    }
}

/// Removes a route; answers whether it existed.
#[derive(Debug)]
pub(crate) struct RemoveRoute {
    pub(crate) name: String,
    pub(crate) reply: oneshot::Sender<bool>,
}

impl Message<RemoveRoute> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: RemoveRoute, _: &mut Context<Self, ()>) {
        self.counted();
        let before = self.config.routes.len();
        self.config.routes.retain(|r| r.name != msg.name);
        let removed = self.config.routes.len() != before;
        if removed {
            self.publish(true);
        }
        let _ = msg.reply.send(removed);
    }
}

/// Replaces the whole registry: a validated configuration and the running provider for each
/// of its providers (kept, replaced or new, as the supervisor decided).
#[derive(Debug)]
pub(crate) struct Reload {
    pub(crate) config: Config,
    pub(crate) providers: Vec<ProviderHandle>,
    pub(crate) reply: oneshot::Sender<()>,
}

impl Message<Reload> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, msg: Reload, _: &mut Context<Self, ()>) {
        self.counted();
        self.providers = msg
            .providers
            .iter()
            .map(|h| (h.id().clone(), h.clone()))
            .collect();
        self.seen = msg
            .providers
            .iter()
            .map(|h| (h.id().clone(), h.epoch()))
            .collect();
        self.sampled
            .retain(|id, _| msg.providers.iter().any(|h| h.id() == id));
        self.order = msg.providers;
        self.config = msg.config;
        self.publish(true);
        let _ = msg.reply.send(());
    }
}

/// Makes the router actor panic, to test its supervision.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct CrashRouter;

#[cfg(feature = "testing")]
impl Message<CrashRouter> for RouterActor {
    type Reply = ();

    async fn handle(&mut self, _: CrashRouter, _: &mut Context<Self, ()>) {
        self.counted();
        panic!("fusebox test hook: router actor crash requested");
    }
}

/// Sends the router a [`Resample`] every `every` until the router is gone.
pub(crate) async fn run_resampler(router: ActorRef<RouterActor>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if router.tell(Resample).try_send().is_err() && !router.is_alive() {
            return;
        }
    }
}
