//! Publishes held back for a transaction ([`Staged`]): what a handler of a transactional
//! consumer publishes while it handles a message is kept beside the message and goes to the
//! broker with the message's acknowledgement — all of it in one transaction, or none of it.
//!
//! The runtime runs each handler call (its retries, its reply, its dead letter) inside the
//! message's staging area; a transport that stages (Kafka with `transactional`) asks
//! [`Staged::current`] in its `send` whether the message being sent belongs to one of its
//! own, and if so keeps it there instead of sending it. A failed attempt's publishes are
//! discarded ([`Staged::discard`]), so only the attempt that settled the message counts.
//!
//! Only the task that handles the message is inside the area: a task the handler spawns
//! publishes outside it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::Outgoing;
use crate::error::Result;

tokio::task_local! {
    static CURRENT: Staged;
}

/// A staging area: messages published inside it ([`Staged::scope`]) on a socket of its
/// owner are held back until the owner sends them in a transaction. Cheap to clone (shared).
#[derive(Clone)]
pub struct Staged {
    inner: Arc<Inner>,
}

struct Inner {
    owner: u64,
    held: Mutex<Vec<Outgoing>>,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("owner", &self.inner.owner)
            .field("held", &self.held().len())
            .finish()
    }
}

/// A new owner id, for a transport's sockets that stage: unique in the process.
pub fn new_owner() -> u64 {
    static OWNERS: AtomicU64 = AtomicU64::new(1);
    OWNERS.fetch_add(1, Ordering::Relaxed)
}

impl Staged {
    /// An empty area whose messages the sockets of `owner` (from [`new_owner`]) hold back.
    pub fn new(owner: u64) -> Self {
        Staged {
            inner: Arc::new(Inner {
                owner,
                held: Mutex::new(Vec::new()),
            }),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Outgoing>> {
        // Pushes and takes only: consistent after a panic elsewhere.
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` inside this area: what it publishes on a socket of the owner is held here.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, work)
    }

    /// [`Staged::scope`] for synchronous work (a future's first poll).
    pub fn sync_scope<R>(self, work: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, work)
    }

    /// The area the current task is in, if its owner is `owner`.
    pub fn current(owner: u64) -> Option<Staged> {
        CURRENT
            .try_with(|staged| (staged.inner.owner == owner).then(|| staged.clone()))
            .ok()
            .flatten()
    }

    /// Holds `message` back.
    pub fn push(&self, message: Outgoing) {
        self.held().push(message);
    }

    /// Drops what is held: the publishes of an attempt that failed.
    pub fn discard(&self) {
        self.held().clear();
    }

    /// Takes what is held, in the order published.
    pub fn take(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.held())
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held().is_empty()
    }
}

/// A transport's transactions (see [`super::SpaSocket::transactions`]): what
/// [`crate::Socket::transaction`] publishes as one.
#[async_trait]
pub trait Transactions: Send + Sync {
    /// A new, empty staging area of this transport's.
    fn stage(&self) -> Staged;

    /// Sends what `staged` holds in one transaction; returns once it is committed, or fails
    /// having sent none of it.
    async fn commit(&self, staged: Staged) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_owners_sockets_see_the_area_and_only_inside_it() {
        let (owner, other) = (new_owner(), new_owner());
        let staged = Staged::new(owner);
        assert!(Staged::current(owner).is_none(), "outside: none");
        staged
            .clone()
            .scope(async move {
                let inside = Staged::current(owner).expect("inside");
                inside.push(Outgoing::new("t", "a"));
                assert!(Staged::current(other).is_none(), "another owner's socket");
                // A spawned task is outside.
                let spawned = tokio::spawn(async move { Staged::current(owner).is_none() });
                assert!(spawned.await.expect("ran"));
            })
            .await;
        assert_eq!(staged.len(), 1);
        staged.discard();
        assert!(staged.is_empty());
        staged.clone().sync_scope(|| {
            Staged::current(owner)
                .expect("inside")
                .push(Outgoing::new("t", "b"))
        });
        let held = staged.take();
        assert_eq!(held.len(), 1);
        assert_eq!(&held[0].payload[..], b"b");
    }
}
