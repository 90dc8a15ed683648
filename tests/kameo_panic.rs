//! What kameo 0.22 itself does with messages queued behind a panicking handler, pinned with
//! kameo alone, because fusebox's provider actors depend on it (see `src/provider/actor.rs`).
//!
//! Measured: once an actor has started, neither a supervised restart nor an in-place
//! recovery (`on_panic` continuing) loses the messages queued behind the panic; only the
//! message being handled is lost (its reply channel closes). Messages sent while the actor is
//! still starting are buffered, and a panic while that buffer drains drops the rest of it.
//! An earlier note that "a restart drops the queued messages" was this startup case. If kameo
//! changes any of this, these tests say so.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::time::Duration;

use kameo::actor::{Actor, ActorRef, Spawn, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use kameo::supervision::RestartPolicy;
use tokio::sync::oneshot;

struct Parent;

impl Actor for Parent {
    type Args = ();
    type Error = Infallible;

    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(Parent)
    }
}

/// Restarted by its supervisor after a panic (kameo's default `on_panic` stops it).
struct Restarted;

/// Recovers in place: `on_panic` continues with the same mailbox.
struct Recovers;

impl Actor for Restarted {
    type Args = ();
    type Error = Infallible;

    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(Restarted)
    }
}

impl Actor for Recovers {
    type Args = ();
    type Error = Infallible;

    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(Recovers)
    }

    async fn on_panic(
        &mut self,
        _: WeakActorRef<Self>,
        _: PanicError,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        Ok(ControlFlow::Continue(()))
    }
}

struct Boom;
struct Ping(oneshot::Sender<()>);

macro_rules! handlers {
    ($actor:ty) => {
        impl Message<Boom> for $actor {
            type Reply = ();
            async fn handle(&mut self, _: Boom, _: &mut Context<Self, Self::Reply>) {
                panic!("boom");
            }
        }

        impl Message<Ping> for $actor {
            type Reply = ();
            async fn handle(&mut self, msg: Ping, _: &mut Context<Self, Self::Reply>) {
                let _ = msg.0.send(());
            }
        }
    };
}

handlers!(Restarted);
handlers!(Recovers);

/// Sends a panic then `n` pings without waiting; returns how many pings were answered.
async fn answered<A>(actor: &ActorRef<A>, n: usize) -> usize
where
    A: Actor + Message<Boom, Reply = ()> + Message<Ping, Reply = ()>,
{
    actor.tell(Boom).try_send().unwrap();
    let replies: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = oneshot::channel();
            actor.tell(Ping(tx)).try_send().unwrap();
            rx
        })
        .collect();
    let mut ok = 0;
    for rx in replies {
        if tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn a_restart_keeps_the_messages_queued_behind_the_panic() {
    let parent = Parent::spawn(());
    let child = Restarted::supervise(&parent, ())
        .restart_policy(RestartPolicy::Permanent)
        .spawn_with_mailbox(kameo::mailbox::unbounded())
        .await;
    child.wait_for_startup().await;
    assert_eq!(answered(&child, 10).await, 10);
}

/// Messages sent before an actor finished starting are buffered, and a panic while the
/// buffer is drained drops the rest of it, whatever `on_panic` says: fusebox waits for each
/// provider actor to start before it hands the provider out.
#[tokio::test]
async fn a_panic_while_starting_drops_the_buffered_messages() {
    let actor = Recovers::spawn_with_mailbox((), kameo::mailbox::unbounded());
    let ok = answered(&actor, 10).await;
    assert!(
        ok < 10,
        "kameo now keeps buffered messages across a panic ({ok}/10)"
    );
}

#[tokio::test]
async fn recovering_in_place_keeps_every_queued_message() {
    let actor = Recovers::spawn_with_mailbox((), kameo::mailbox::unbounded());
    actor.wait_for_startup().await;
    assert_eq!(answered(&actor, 10).await, 10);
    assert!(actor.is_alive());
}
