//! A scripted fake LLM provider for the integration tests, plus small helpers.
//!
//! Each test file is its own crate and uses only part of this module.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusebox::{Classify, Verdict};

/// How the fake answers one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ok,                            // Ok("reply #n"), n counting from 1
    Fail,                          // 503: Verdict::Failure
    RateLimited(Option<Duration>), // 429: Verdict::RateLimited
    BadRequest,                    // 400: Verdict::Ignored
    Unauthorized,                  // 401: Verdict::Isolate
    Delay(Duration, Box<Step>),    // sleeps on tokio time, then answers
    Hang,                          // never answers
    Panic,                         // panics inside the caller's future
}

impl Step {
    /// `Delay(d, step)` without the `Box::new`.
    pub fn delay(d: Duration, step: Step) -> Step {
        Step::Delay(d, Box::new(step))
    }
}

/// The fake's errors, classified like the HTTP statuses they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeError {
    Unavailable,
    RateLimited(Option<Duration>),
    BadRequest,
    Unauthorized,
}

impl Classify for FakeError {
    fn verdict(&self) -> Verdict {
        match self {
            FakeError::Unavailable => Verdict::Failure,
            FakeError::RateLimited(retry_after) => Verdict::RateLimited {
                retry_after: *retry_after,
            },
            FakeError::BadRequest => Verdict::Ignored,
            FakeError::Unauthorized => Verdict::Isolate,
        }
    }
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FakeError::Unavailable => f.write_str("503 service unavailable"),
            FakeError::RateLimited(_) => f.write_str("429 too many requests"),
            FakeError::BadRequest => f.write_str("400 bad request"),
            FakeError::Unauthorized => f.write_str("401 unauthorized"),
        }
    }
}

impl std::error::Error for FakeError {}

#[derive(Debug)]
struct Inner {
    calls: AtomicU64,
    running: AtomicU64,
    max_running: AtomicU64,
    script: Mutex<VecDeque<Step>>,
    default: Step,
}

/// A fake provider: answers each invocation with the next scripted [`Step`], or the default
/// step once the script runs out. Clones share the script and the counters.
#[derive(Debug, Clone)]
pub struct FakeProvider(Arc<Inner>);

struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeProvider {
    pub fn new(default: Step) -> Self {
        Self::scripted([], default)
    }

    pub fn scripted(steps: impl IntoIterator<Item = Step>, default: Step) -> Self {
        FakeProvider(Arc::new(Inner {
            calls: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_running: AtomicU64::new(0),
            script: Mutex::new(steps.into_iter().collect()),
            default,
        }))
    }

    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.0.script.lock().unwrap().extend(steps);
    }

    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::SeqCst)
    }

    pub fn running(&self) -> u64 {
        self.0.running.load(Ordering::SeqCst)
    }

    pub fn max_running(&self) -> u64 {
        self.0.max_running.load(Ordering::SeqCst)
    }

    pub fn respond(&self) -> impl Future<Output = Result<String, FakeError>> + Send + 'static {
        let step = self.0.script.lock().unwrap().pop_front();
        self.answer(step.unwrap_or_else(|| self.0.default.clone()))
    }

    /// Answers with `step`, leaving the script alone.
    pub fn answer(&self, step: Step) -> impl Future<Output = Result<String, FakeError>> + Send {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_running.fetch_max(now, Ordering::SeqCst);
        let running = Running(self.0.clone());
        async move {
            let _running = running;
            play(step, n).await
        }
    }
}

async fn play(mut step: Step, n: u64) -> Result<String, FakeError> {
    loop {
        return match step {
            Step::Ok => Ok(format!("reply #{n}")),
            Step::Fail => Err(FakeError::Unavailable),
            Step::RateLimited(hint) => Err(FakeError::RateLimited(hint)),
            Step::BadRequest => Err(FakeError::BadRequest),
            Step::Unauthorized => Err(FakeError::Unauthorized),
            Step::Delay(d, next) => {
                tokio::time::sleep(d).await;
                step = *next;
                continue;
            }
            Step::Hang => std::future::pending().await,
            Step::Panic => panic!("fake provider panicked (scripted)"),
        };
    }
}

/// Lets spawned tasks and actors run until they wait on something (the clock does not move).
pub async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every event received so far, without waiting. Panics on lag.
pub fn drain(rx: &mut tokio::sync::broadcast::Receiver<fusebox::Event>) -> Vec<fusebox::Event> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(event) => out.push(event),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return out,
            Err(e) => panic!("event receiver: {e:?}"),
        }
    }
}

pub async fn call(
    fuse: &fusebox::Supervisor,
    provider: &str,
    fake: &FakeProvider,
) -> Result<String, fusebox::CallError<FakeError>> {
    fuse.call(provider, || fake.respond()).await
}

/// `call` in a task of its own.
pub fn spawn_call(
    fuse: &fusebox::Supervisor,
    provider: &'static str,
    fake: &FakeProvider,
) -> tokio::task::JoinHandle<Result<String, fusebox::CallError<FakeError>>> {
    let (fuse, fake) = (fuse.clone(), fake.clone());
    tokio::spawn(async move { call(&fuse, provider, &fake).await })
}
