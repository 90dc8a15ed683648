//! The fleet link: one task per supervisor holding the Redis connections, writing local
//! changes, applying remote ones and re-reading every record; and the [`FleetPort`] the
//! provider actors and half-open trials use, which never waits on the network except for a
//! trial's bounded lease request.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record::{self, Kind, Record, RecordProblem};
use super::{Fleet, FleetError, FleetStatus};
use crate::error::{ConfigError, Scope};
use crate::provider::{Change, FleetPort, Lease, LocalChange, RemoteChange};
use crate::{ProviderHandle, ProviderId};

/// Writes one provider's record if the writer has seen the stored generation, publishes it,
/// and gives back the writer's trial lease. See the module docs of `fusebox::fleet`.
const WRITE: &str = r#"
-- KEYS[1]: the provider's record hash; KEYS[2]: its trial lease.
-- ARGV[1]: the change channel; ARGV[2]: the generation the writer last saw;
-- ARGV[3], ARGV[4]: the record before and after its generation; ARGV[5]: the writer;
-- ARGV[6]: for an open, its remaining milliseconds, else 0.
local function ms(t) return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local current = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0
if current < 0 or current >= 1e12 or current ~= math.floor(current) then
  current = 0
end
local seen = tonumber(ARGV[2]) or 0
local now = ms(redis.call('TIME'))
if seen < current then
  local stored = redis.call('HMGET', KEYS[1], 'record', 'at')
  return {'0', string.format('%d', current), stored[1] or '', stored[2] or '', now}
end
local gen = string.format('%d', seen + 1)
local record = ARGV[3] .. gen .. ARGV[4]
redis.call('HSET', KEYS[1], 'gen', gen, 'record', record, 'at', now)
redis.call('PUBLISH', ARGV[1], record)
-- The writer's trial lease: kept to the end of a re-open (no other replica trials before
-- it has heard of the re-open), given back otherwise.
if redis.pcall('GET', KEYS[2]) == ARGV[5] then
  if (tonumber(ARGV[6]) or 0) > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
  else
    redis.call('DEL', KEYS[2])
  end
end
return {'1', gen}
"#;

/// Takes (or keeps) a provider's trial lease: 0 when the asker holds it, else the
/// milliseconds it is still held by another replica.
const LEASE: &str = r#"
-- KEYS[1]: the trial lease; ARGV[1]: the replica asking; ARGV[2]: how long to hold it (ms).
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
if left < 1 then left = 1 end
return left
"#;

/// Reads every provider's record with the server's time: the time, then per key its type,
/// generation, record and write time.
const READ: &str = r#"
local t = redis.call('TIME')
local out = {string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  local v = {'', '', ''}
  if kind == 'hash' then
    local got = redis.call('HMGET', key, 'gen', 'record', 'at')
    v = {got[1] or '', got[2] or '', got[3] or ''}
  end
  table.insert(out, kind)
  table.insert(out, v[1])
  table.insert(out, v[2])
  table.insert(out, v[3])
end
return out
"#;

/// The first reconnect delay, doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The providers the link serves: the supervisor's current registry.
pub(crate) type Directory = Arc<dyn Fn() -> Vec<ProviderHandle> + Send + Sync>;

/// What the link knows of a provider outside its task: for trial leases.
#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    /// The fleet's latest record closed or reset it: confirmation trials need no lease.
    recovered: bool,
    /// Another replica holds its trial lease until then.
    busy_until: Option<Instant>,
}

/// The link's state shared by its task, the provider actors and the trial callers.
pub(crate) struct Link {
    /// Itself, for the tasks of lease requests.
    me: std::sync::Weak<Link>,
    fleet: Fleet,
    replica: String,
    prefix: String,
    channel: String,
    tx: mpsc::UnboundedSender<LocalChange>,
    /// The command connection while connected (a cheap clone per lease request).
    conn: Mutex<Option<MultiplexedConnection>>,
    connected: AtomicBool,
    sent: AtomicU64,
    applied: AtomicU64,
    conflicts: AtomicU64,
    invalid: AtomicU64,
    reconnects: AtomicU64,
    leased: AtomicU64,
    deferred: AtomicU64,
    pending: AtomicU64,
    last_error: Mutex<Option<FleetError>>,
    marks: Mutex<HashMap<String, Mark>>,
    write: Script,
    lease: Script,
    read: Script,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("fleet", &self.fleet)
            .field("replica", &self.replica)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`start`] hands back to run once the providers are registered.
pub(crate) struct Starter {
    link: Arc<Link>,
    client: redis::Client,
    rx: mpsc::UnboundedReceiver<LocalChange>,
}

impl fmt::Debug for Starter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Starter").field("link", &self.link).finish()
    }
}

/// Prepares a fleet link (nothing is connected yet).
///
/// # Errors
///
/// [`ConfigError`] naming `fleet.url` when the URL cannot be parsed.
pub(crate) fn start(fleet: &Fleet) -> Result<(Arc<Link>, Starter), ConfigError> {
    fleet.validate()?;
    let client = redis::Client::open(fleet.url.as_str()).map_err(|e| {
        tracing::debug!(error = %e, "fleet url refused");
        ConfigError::invalid(
            &Scope::Supervisor,
            "fleet.url",
            fleet.url(),
            "not a Redis URL the client accepts",
        )
    })?;
    let replica = fleet.replica.clone().unwrap_or_else(|| {
        let seed = (std::process::id(), std::time::SystemTime::now());
        format!("{:016x}", std::hash::RandomState::new().hash_one(seed))
    });
    let prefix = format!("fusebox:{}:", fleet.namespace);
    let (tx, rx) = mpsc::unbounded_channel();
    let link = Arc::new_cyclic(|me| Link {
        me: me.clone(),
        channel: format!("{prefix}changes"),
        prefix,
        fleet: fleet.clone(),
        replica,
        tx,
        conn: Mutex::new(None),
        connected: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        invalid: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        leased: AtomicU64::new(0),
        deferred: AtomicU64::new(0),
        pending: AtomicU64::new(0),
        last_error: Mutex::new(None),
        marks: Mutex::new(HashMap::new()),
        write: Script::new(WRITE),
        lease: Script::new(LEASE),
        read: Script::new(READ),
    });
    crate::metrics::fleet_connected(false);
    Ok((link.clone(), Starter { link, client, rx }))
}

impl Starter {
    /// Spawns the link's task; the receiver answers once the first connection was tried
    /// (and, if it succeeded, every record was read).
    pub(crate) fn run(self, directory: Directory) -> (JoinHandle<()>, oneshot::Receiver<()>) {
        let (ready, first) = oneshot::channel();
        let task = Task {
            link: self.link,
            client: self.client,
            rx: self.rx,
            directory,
            seen: HashMap::new(),
            pending: HashMap::new(),
            refused: HashMap::new(),
            ready: Some(ready),
        };
        (tokio::spawn(task.run()), first)
    }
}

impl Link {
    fn record_key(&self, provider: &str) -> String {
        format!("{}circuit:{provider}", self.prefix)
    }

    fn lease_key(&self, provider: &str) -> String {
        format!("{}lease:{provider}", self.prefix)
    }

    /// The link's status now.
    pub(crate) fn status(&self) -> FleetStatus {
        FleetStatus {
            connected: self.connected.load(Ordering::Acquire),
            namespace: self.fleet.namespace.clone(),
            replica: self.replica.clone(),
            changes_sent: self.sent.load(Ordering::Relaxed),
            changes_applied: self.applied.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            invalid_records: self.invalid.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            trials_leased: self.leased.load(Ordering::Relaxed),
            trials_deferred: self.deferred.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            resync_every: self.fleet.resync_every,
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Whether the link reaches Redis now.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        *lock(&self.conn) = conn;
        self.connected.store(up, Ordering::Release);
        crate::metrics::fleet_connected(up);
    }

    fn error(&self, error: FleetError) {
        *lock(&self.last_error) = Some(error);
    }

    /// A record of `provider` was written or applied: leases start afresh.
    fn note(&self, provider: &str, kind: &Kind) {
        let mut marks = lock(&self.marks);
        let mark = marks.entry(provider.to_owned()).or_default();
        mark.recovered = matches!(kind, Kind::Close { .. } | Kind::Reset);
        mark.busy_until = None;
    }
}

/// The provider actors' and trial callers' side of the link.
impl FleetPort for Link {
    fn local_change(&self, change: LocalChange) {
        // Only fails once the task is gone (the supervisor is shutting down).
        let _ = self.tx.send(change);
    }

    fn connected(&self) -> bool {
        self.is_connected()
    }

    fn trial_lease(&self, provider: &ProviderId, ttl: Duration) -> oneshot::Receiver<Lease> {
        let (answer, lease) = oneshot::channel();
        let name = provider.as_str();
        let now = Instant::now();
        {
            let mut marks = lock(&self.marks);
            let mark = marks.entry(name.to_owned()).or_default();
            if mark.recovered {
                let _ = answer.send(Lease::Local);
                return lease;
            }
            if let Some(until) = mark.busy_until.filter(|&until| until > now) {
                self.deferred.fetch_add(1, Ordering::Relaxed);
                let _ = answer.send(Lease::Elsewhere {
                    retry_after: until - now,
                });
                return lease;
            }
        }
        let conn = lock(&self.conn).clone();
        let (Some(mut conn), Ok(runtime)) = (conn, tokio::runtime::Handle::try_current()) else {
            let _ = answer.send(Lease::Local);
            return lease;
        };
        let ttl = ttl
            .min(self.fleet.trial_lease)
            .max(Duration::from_millis(1));
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let key = self.lease_key(name);
        let name = name.to_owned();
        let replica = self.replica.clone();
        let wait = self.fleet.lease_wait;
        let script = self.lease.clone();
        let Some(link) = self.me.upgrade() else {
            let _ = answer.send(Lease::Local);
            return lease;
        };
        runtime.spawn(async move {
            let mut call = script.key(&key);
            call.arg(&replica).arg(ttl_ms);
            let decided = match tokio::time::timeout(wait, call.invoke_async(&mut conn)).await {
                Ok(Ok(0i64)) => {
                    link.leased.fetch_add(1, Ordering::Relaxed);
                    Lease::Granted
                }
                Ok(Ok(left)) => {
                    let retry_after = Duration::from_millis(left.unsigned_abs());
                    link.deferred.fetch_add(1, Ordering::Relaxed);
                    lock(&link.marks).entry(name.clone()).or_default().busy_until =
                        Some(Instant::now() + retry_after);
                    Lease::Elsewhere { retry_after }
                }
                Ok(Err(e)) => {
                    tracing::debug!(provider = %name, error = %e, "fleet trial lease failed: trial runs locally");
                    Lease::Local
                }
                Err(_) => {
                    tracing::debug!(provider = %name, ?wait, "fleet trial lease unanswered: trial runs locally");
                    Lease::Local
                }
            };
            let _ = answer.send(decided);
        });
        lease
    }
}

/// Why a session with Redis ended.
enum End {
    /// Redis was lost: reconnect.
    Lost(FleetError),
    /// The supervisor is gone.
    Closed,
}

fn unreachable(e: &redis::RedisError) -> FleetError {
    FleetError::Unreachable(e.to_string())
}

/// Whether an error means the connection is unusable (rather than one command refused).
fn is_link_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

struct Task {
    link: Arc<Link>,
    client: redis::Client,
    rx: mpsc::UnboundedReceiver<LocalChange>,
    directory: Directory,
    /// The highest fleet generation applied or written, per provider.
    seen: HashMap<String, u64>,
    /// The latest local change per provider not yet written.
    pending: HashMap<String, LocalChange>,
    /// The last problem logged per provider, so that a bad record is logged once, not every
    /// resync.
    refused: HashMap<String, RecordProblem>,
    ready: Option<oneshot::Sender<()>>,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut sessions = 0u64;
        loop {
            match self.connect().await {
                Ok((conn, messages)) => {
                    if sessions > 0 {
                        self.link.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    sessions += 1;
                    backoff = MIN_BACKOFF;
                    *lock(&self.link.last_error) = None;
                    self.link.set_connected(Some(conn.clone()));
                    tracing::info!(namespace = %self.link.fleet.namespace, replica = %self.link.replica, "fleet link connected");
                    let ended = self.session(conn, messages).await;
                    self.link.set_connected(None);
                    match ended {
                        End::Closed => return,
                        End::Lost(error) => {
                            tracing::warn!(%error, "fleet link lost: deciding locally until Redis is back");
                            self.link.error(error);
                        }
                    }
                }
                Err(error) => {
                    if sessions == 0 || backoff == MIN_BACKOFF {
                        tracing::warn!(%error, "fleet link cannot reach Redis: deciding locally");
                    }
                    self.link.error(error);
                }
            }
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
            // Wait before the next attempt, keeping the latest local change per provider.
            let sleep = tokio::time::sleep(backoff.min(self.link.fleet.resync_every));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    change = self.rx.recv() => match change {
                        Some(change) => self.keep(change),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn keep(&mut self, change: LocalChange) {
        self.pending
            .insert(change.provider.as_str().to_owned(), change);
        self.link
            .pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    async fn connect(
        &self,
    ) -> Result<(MultiplexedConnection, redis::aio::PubSubStream), FleetError> {
        let timeout = self.link.fleet.connect_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| unreachable(&e))?;
        let subscribed = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.link.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        let messages = tokio::time::timeout(timeout, subscribed)
            .await
            .map_err(|_| FleetError::Unreachable(format!("no subscription within {timeout:?}")))?
            .map_err(|e| unreachable(&e))?;
        Ok((conn, messages))
    }

    async fn session(
        &mut self,
        mut conn: MultiplexedConnection,
        mut messages: redis::aio::PubSubStream,
    ) -> End {
        // Changes made while Redis was away first (each by compare-and-set), then every
        // record.
        if let Err(end) = self.flush(&mut conn).await {
            return end;
        }
        if let Err(end) = self.resync(&mut conn).await {
            return end;
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        let every = self.link.fleet.resync_every;
        let mut resync = tokio::time::interval_at(Instant::now() + every, every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                change = self.rx.recv() => {
                    let Some(change) = change else { return End::Closed };
                    self.keep(change);
                    while let Ok(change) = self.rx.try_recv() {
                        self.keep(change);
                    }
                    if let Err(end) = self.flush(&mut conn).await {
                        return end;
                    }
                }
                message = messages.next() => {
                    let Some(message) = message else {
                        return End::Lost(FleetError::Unreachable("the subscription ended".to_owned()));
                    };
                    self.on_message(message.get_payload_bytes());
                }
                _ = resync.tick() => {
                    if let Err(end) = self.resync(&mut conn).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Writes every pending change. A change Redis refused for good is dropped (logged); one
    /// that could not reach it stays pending for the next session.
    async fn flush(&mut self, conn: &mut MultiplexedConnection) -> Result<(), End> {
        let names: Vec<String> = self.pending.keys().cloned().collect();
        for name in names {
            let Some(change) = self.pending.get(&name).cloned() else {
                continue;
            };
            match self.write(conn, &change).await {
                Ok(()) => {}
                Err(e) if is_link_error(&e) => return Err(End::Lost(unreachable(&e))),
                Err(e) => {
                    tracing::error!(provider = %name, error = %e, "fleet write refused by Redis: change not shared");
                    self.link.error(unreachable(&e));
                }
            }
            self.pending.remove(&name);
            self.link
                .pending
                .store(self.pending.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes one local change: by compare-and-set on the generation this replica last saw.
    /// Refused because another replica wrote first: the newer record is applied here, and an
    /// operator's change is written again on top of it; an automatic one gives way (local
    /// traffic re-decides it). A stored record that is invalid is overwritten.
    async fn write(
        &mut self,
        conn: &mut MultiplexedConnection,
        change: &LocalChange,
    ) -> Result<(), redis::RedisError> {
        let name = change.provider.as_str();
        let kind = match change.change {
            Change::Open {
                until,
                cause,
                failures,
            } => {
                let remaining = until.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    // Over already: nothing left to tell the fleet.
                    return Ok(());
                }
                Kind::Open {
                    remaining,
                    cause,
                    failures,
                }
            }
            Change::Isolate { cause } => Kind::Isolate { cause },
            Change::Reset => Kind::Reset,
            Change::Close { cause } => Kind::Close { cause },
        };
        let operator = matches!(
            kind,
            Kind::Reset
                | Kind::Isolate {
                    cause: crate::Cause::Operator
                }
        );
        let (head, tail) = record::encode_parts(name, &kind, &self.link.replica);
        let open_ms = match kind {
            Kind::Open { remaining, .. } => {
                u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)
            }
            _ => 0,
        };
        let mut over = None;
        for _ in 0..3 {
            let expected = over.unwrap_or_else(|| self.seen.get(name).copied().unwrap_or(0));
            let reply: Vec<Vec<u8>> = self
                .link
                .write
                .key(self.link.record_key(name))
                .key(self.link.lease_key(name))
                .arg(&self.link.channel)
                .arg(expected)
                .arg(&head)
                .arg(&tail)
                .arg(&self.link.replica)
                .arg(open_ms)
                .invoke_async(conn)
                .await?;
            let field = |i: usize| reply.get(i).map(Vec::as_slice).unwrap_or_default();
            let number = |i: usize| {
                std::str::from_utf8(field(i))
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            };
            match field(0) {
                b"1" => {
                    let generation = number(1).unwrap_or(expected + 1);
                    self.seen.insert(name.to_owned(), generation);
                    self.link.note(name, &kind);
                    self.link.sent.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::fleet_change("sent");
                    return Ok(());
                }
                b"0" => {
                    self.link.conflicts.fetch_add(1, Ordering::Relaxed);
                    let current = number(1).unwrap_or(0);
                    let age = number(4)
                        .zip(number(3))
                        .map_or(0, |(now, at)| now.saturating_sub(at));
                    match self.stored(name, current, field(2)) {
                        Ok(newer) => {
                            self.apply(&newer, Duration::from_millis(age));
                            if !operator {
                                return Ok(());
                            }
                        }
                        Err(error) => self.refuse(name, error),
                    }
                    over = Some(current);
                }
                _ => {
                    tracing::error!(provider = %name, "fleet write: unexpected reply from the script");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A record read from a provider's hash, checked against the generation stored beside it.
    fn stored(&self, name: &str, generation: u64, bytes: &[u8]) -> Result<Record, FleetError> {
        let record = record::decode(Some(name), bytes)?;
        if record.generation != generation {
            return Err(FleetError::InvalidRecord {
                provider: Some(name.to_owned()),
                problem: RecordProblem::Generation(record.generation),
            });
        }
        Ok(record)
    }

    /// Logs and counts a refused record, once per distinct problem per provider.
    fn refuse(&mut self, provider: &str, error: FleetError) {
        if let FleetError::InvalidRecord { problem, .. } = &error {
            if self.refused.get(provider) == Some(problem) {
                return;
            }
            self.refused.insert(provider.to_owned(), problem.clone());
        }
        self.link.invalid.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "fleet record refused: nothing applied");
        self.link.error(error);
    }

    fn on_message(&mut self, payload: &[u8]) {
        match record::decode(None, payload) {
            Ok(record) => {
                self.refused.remove(&record.provider);
                self.apply(&record, Duration::ZERO);
            }
            Err(error) => {
                let provider = match &error {
                    FleetError::InvalidRecord {
                        provider: Some(p), ..
                    } => p.clone(),
                    _ => String::new(),
                };
                self.refuse(&provider, error);
            }
        }
    }

    /// Applies a record newer than any this replica has seen for its provider, through the
    /// provider's actor. `age`: how long ago it was written (for the time an open has left).
    fn apply(&mut self, record: &Record, age: Duration) {
        let seen = self.seen.entry(record.provider.clone()).or_insert(0);
        if record.generation <= *seen {
            return;
        }
        *seen = record.generation;
        self.link.note(&record.provider, &record.kind);
        let change = match record.kind {
            Kind::Open {
                remaining,
                cause,
                failures,
            } => {
                let left = remaining.saturating_sub(age);
                if left.is_zero() {
                    return;
                }
                Change::Open {
                    until: Instant::now() + left,
                    cause,
                    failures,
                }
            }
            Kind::Isolate { cause } => Change::Isolate { cause },
            Kind::Reset => Change::Reset,
            Kind::Close { cause } => Change::Close { cause },
        };
        let handle = (self.directory)()
            .into_iter()
            .find(|h| h.id().as_str() == record.provider);
        let Some(handle) = handle else {
            // Not configured on this replica.
            return;
        };
        if handle
            .actor
            .tell(RemoteChange { change })
            .try_send()
            .is_ok()
        {
            self.link.applied.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fleet_change("applied");
        }
    }

    /// Re-reads every provider's record and applies the ones newer than this replica saw.
    async fn resync(&mut self, conn: &mut MultiplexedConnection) -> Result<(), End> {
        let names: Vec<String> = (self.directory)()
            .iter()
            .map(|h| h.id().as_str().to_owned())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let mut call = self.link.read.prepare_invoke();
        for name in &names {
            call.key(self.link.record_key(name));
        }
        let reply: Vec<Vec<u8>> = match call.invoke_async(conn).await {
            Ok(reply) => reply,
            Err(e) if is_link_error(&e) => return Err(End::Lost(unreachable(&e))),
            Err(e) => {
                tracing::error!(error = %e, "fleet resync refused by Redis");
                self.link.error(unreachable(&e));
                return Ok(());
            }
        };
        let number = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let now = reply.first().and_then(|b| number(b)).unwrap_or(0);
        for (name, entry) in names
            .iter()
            .zip(reply.get(1..).unwrap_or_default().chunks(4))
        {
            let [kind, generation, record, at] = entry else {
                break;
            };
            match kind.as_slice() {
                b"none" => continue,
                b"hash" => {}
                other => {
                    let problem =
                        RecordProblem::WrongType(String::from_utf8_lossy(other).into_owned());
                    self.refuse(
                        name,
                        FleetError::InvalidRecord {
                            provider: Some(name.clone()),
                            problem,
                        },
                    );
                    continue;
                }
            }
            let Some(generation) = number(generation) else {
                self.refuse(
                    name,
                    FleetError::InvalidRecord {
                        provider: Some(name.clone()),
                        problem: RecordProblem::Generation(0),
                    },
                );
                continue;
            };
            match self.stored(name, generation, record) {
                Ok(record) => {
                    self.refused.remove(name);
                    let age = number(at).map_or(0, |at| now.saturating_sub(at));
                    self.apply(&record, Duration::from_millis(age));
                }
                Err(error) => self.refuse(name, error),
            }
        }
        Ok(())
    }
}
