//! A leader lease on etcd: one holder per name at a time (each log has one sequencer
//! at a time, chosen by an etcd lease).
//!
//! Taking leadership is one transaction: grant an etcd lease of `ttl`, then
//! `if create_revision(<prefix>/.leaders/<name>) == 0 then put(holder, lease)`. The key
//! goes away when the lease is revoked (the guard is dropped or released) or expires
//! (the holder died, or lost etcd for longer than `ttl`); then the next acquirer wins.
//! `.` cannot start a [`crate::Namespace`], so leader keys never mix with stored data.
//!
//! The guard renews the lease in a background task and stops believing it leads at
//! *last renewal sent* + granted TTL. etcd extends a lease when it *receives* the
//! renewal, later than it was sent, so the guard gives up no later than etcd lets
//! another holder in (with clocks running at the same rate).
//!
//! A lease is not a fence. A holder paused (GC, swap, SIGSTOP) past its TTL may act once
//! more before it notices. Data a stale leader must never write should be guarded by
//! [`LeaderGuard::fencing_revision`], which grows with every new term: the protected
//! records carry it and refuse writes with an older one.

use crate::etcd_store::{describe, REQUEST_TIMEOUT};
use crate::{EtcdStore, StateError};
use etcd_client::{
    Client, Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, WatchFilterType, WatchOptions,
};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The longest leadership name or holder, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Pause before reopening a broken renewal stream.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Takes and watches leader leases. See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Leadership;

impl Leadership {
    /// Becomes leader for `name` if nobody is; `Ok(None)` if someone else holds it.
    /// `ttl` is rounded up to whole seconds, and etcd may raise it to its minimum.
    pub async fn acquire(
        store: &EtcdStore,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaderGuard>, StateError> {
        Ok(try_acquire(store, name, holder, ttl).await?.ok())
    }

    /// Waits until `name` is free and takes it. Wrap it in a timeout to bound the wait.
    pub async fn wait(
        store: &EtcdStore,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaderGuard, StateError> {
        loop {
            let seen = match try_acquire(store, name, holder, ttl).await? {
                Ok(guard) => return Ok(guard),
                Err(revision) => revision,
            };
            // Watch for the key's deletion from just after the failed attempt, so a
            // release in between is not missed. The timeout re-checks in case the watch
            // breaks; an unreachable etcd then surfaces as the next attempt's error.
            let key = leader_key(store, name)?;
            let mut watcher = store.client().watch_client();
            let deleted = async {
                let options = WatchOptions::new()
                    .with_start_revision(seen + 1)
                    .with_filters([WatchFilterType::NoPut]);
                let mut stream = watcher.watch(key, Some(options)).await?;
                while let Some(resp) = stream.message().await? {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                    if resp.canceled() {
                        break;
                    }
                }
                Err(etcd_client::Error::WatchError("watch ended".into()))
            };
            let recheck = ttl.max(Duration::from_secs(1));
            if let Ok(Err(_)) = tokio::time::timeout(recheck, deleted).await {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Who holds `name` now, if anyone.
    pub async fn holder(store: &EtcdStore, name: &str) -> Result<Option<String>, StateError> {
        let key = leader_key(store, name)?;
        let mut client = store.client().clone();
        let mut resp = lease_call(name, "read the leader key", client.get(key, None)).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

fn leader_key(store: &EtcdStore, name: &str) -> Result<String, StateError> {
    check_name(name, "name")?;
    Ok(format!("{}/.leaders/{name}", store.prefix()))
}

fn check_name(value: &str, what: &str) -> Result<(), StateError> {
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(StateError::Lease {
            name: value.chars().take(64).collect(),
            reason: format!("the leadership {what} must be 1 to {MAX_NAME_BYTES} bytes"),
        });
    }
    Ok(())
}

fn lease_error(name: &str, what: &str, reason: String) -> StateError {
    StateError::Lease {
        name: name.to_string(),
        reason: format!("cannot {what}: {reason}"),
    }
}

async fn lease_call<T>(
    name: &str,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| lease_error(name, what, describe(&e))),
        Err(_) => Err(lease_error(
            name,
            what,
            format!("etcd did not answer within {}s", REQUEST_TIMEOUT.as_secs()),
        )),
    }
}

/// Whole seconds, rounded up; etcd leases have a one-second grain.
fn ttl_seconds(name: &str, ttl: Duration) -> Result<i64, StateError> {
    if ttl.is_zero() {
        return Err(lease_error(name, "take a lease", "the TTL is zero".into()));
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).map_err(|_| lease_error(name, "take a lease", "the TTL is too long".into()))
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// `Ok(guard)`, or `Err(revision)` at which someone else was seen holding `name`.
async fn try_acquire(
    store: &EtcdStore,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Result<LeaderGuard, i64>, StateError> {
    let key = leader_key(store, name)?;
    check_name(holder, "holder")?;
    let ttl_secs = ttl_seconds(name, ttl)?;
    let mut client = store.client().clone();

    let asked = Instant::now();
    let grant = lease_call(name, "grant a lease", client.lease_grant(ttl_secs, None)).await?;
    let lease = grant.id();
    let granted = seconds(grant.ttl());

    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            holder,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let outcome = lease_call(name, "claim the leader key", client.txn(txn)).await;
    let won = match &outcome {
        Ok(resp) if resp.succeeded() => resp.header().map(|h| h.revision()),
        _ => None,
    };
    let Some(revision) = won else {
        // Lost, or unknown outcome: revoking removes our key if the put did land.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await;
        let resp = outcome?;
        return match resp.header().map(|h| h.revision()) {
            Some(seen) if !resp.succeeded() => Ok(Err(seen)),
            _ => Err(lease_error(
                name,
                "claim the leader key",
                "etcd answered without a revision".into(),
            )),
        };
    };

    let (state, alive) = watch::channel(Some(asked + granted));
    let renewal = Renewal {
        client: client.clone(),
        lease,
        interval: (granted / 3).max(Duration::from_millis(100)),
        state,
    };
    Ok(Ok(LeaderGuard {
        name: name.to_string(),
        key,
        lease,
        revision,
        client,
        alive,
        renewal: Some(tokio::spawn(renewal.run(asked + granted))),
    }))
}

/// Whether a term's deadline (`None`: lost) is still ahead.
fn still_alive(alive: &watch::Receiver<Option<Instant>>) -> bool {
    matches!(*alive.borrow(), Some(deadline) if Instant::now() < deadline)
}

/// See [`LeaderGuard::fence`].
#[derive(Debug, Clone)]
pub struct LeaderFence {
    alive: watch::Receiver<Option<Instant>>,
    revision: i64,
}

impl LeaderFence {
    /// Whether the term may still act: its lease was renewed recently enough that
    /// etcd cannot have expired it.
    pub fn holds(&self) -> bool {
        still_alive(&self.alive)
    }

    /// The term's fencing revision ([`LeaderGuard::fencing_revision`]).
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// Proof of leadership for one name, while it lasts.
///
/// Dropping the guard stops renewing and revokes the lease in the background; call
/// [`LeaderGuard::release`] to wait for the revocation.
pub struct LeaderGuard {
    name: String,
    key: String,
    lease: i64,
    revision: i64,
    client: Client,
    /// `Some(deadline)` while leading: the instant the lease may have expired by.
    alive: watch::Receiver<Option<Instant>>,
    renewal: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("name", &self.name)
            .field("lease", &self.lease)
            .field("revision", &self.revision)
            .field("leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

impl LeaderGuard {
    /// Whether this process may still act as leader: the lease was renewed recently
    /// enough that etcd cannot have expired it.
    pub fn is_leader(&self) -> bool {
        still_alive(&self.alive)
    }

    /// A handle that answers [`LeaderGuard::is_leader`] for as long as this term
    /// lasts, for code that must check leadership right before every write (a
    /// stale leader resumed after a pause finds its deadline passed and writes
    /// nothing).
    pub fn fence(&self) -> LeaderFence {
        LeaderFence {
            alive: self.alive.clone(),
            revision: self.revision,
        }
    }

    /// Resolves once leadership is lost: renewal failed past the deadline, or etcd
    /// reports the lease gone.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        loop {
            let Some(deadline) = *alive.borrow_and_update() else {
                return;
            };
            tokio::select! {
                changed = alive.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The etcd lease id (for diagnostics).
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// The etcd revision at which this term began; strictly greater than any earlier
    /// term's for the same name, so usable as a fencing token.
    pub fn fencing_revision(&self) -> i64 {
        self.revision
    }

    /// Asks etcd (a linearizable read) whether the leader key is still this term's.
    pub async fn still_holds(&self) -> Result<bool, StateError> {
        let mut client = self.client.clone();
        let resp = lease_call(
            &self.name,
            "read the leader key",
            client.get(self.key.as_str(), None),
        )
        .await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.lease() == self.lease && kv.create_revision() == self.revision))
    }

    /// Steps down now: stops renewing and revokes the lease, so the next acquirer need
    /// not wait for the TTL.
    pub async fn release(mut self) -> Result<(), StateError> {
        self.stop_renewing();
        let mut client = self.client.clone();
        lease_call(
            &self.name,
            "revoke the lease",
            client.lease_revoke(self.lease),
        )
        .await?;
        Ok(())
    }

    /// Stops renewing without revoking, as a crashed holder would: leadership passes
    /// only when etcd expires the lease. Meant for tests of expiry.
    pub fn abandon(mut self) {
        self.stop_renewing();
    }

    fn stop_renewing(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let Some(task) = self.renewal.take() else {
            return; // Released or abandoned.
        };
        task.abort();
        // Revoke in the background; if no runtime is left, the lease expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut client = self.client.clone();
            let lease = self.lease;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await;
            });
        }
    }
}

/// The background task that keeps one lease alive.
struct Renewal {
    client: Client,
    lease: i64,
    interval: Duration,
    state: watch::Sender<Option<Instant>>,
}

enum Renewed {
    /// etcd extended the lease; the renewal was sent at `sent` and grants `ttl`.
    Until { sent: Instant, ttl: Duration },
    /// etcd says the lease no longer exists.
    Gone,
    /// No answer (stream broke, etcd unreachable); try again until the deadline.
    Failed,
}

impl Renewal {
    async fn run(mut self, mut deadline: Instant) {
        let mut stream = None;
        loop {
            if Instant::now() >= deadline {
                self.state.send_replace(None);
                return;
            }
            let outcome = tokio::select! {
                outcome = self.renew_once(&mut stream) => outcome,
                () = tokio::time::sleep_until(deadline) => Renewed::Gone,
            };
            let next = match outcome {
                Renewed::Until { sent, ttl } => {
                    deadline = sent + ttl;
                    self.state.send_replace(Some(deadline));
                    sent + self.interval
                }
                Renewed::Gone => {
                    self.state.send_replace(None);
                    return;
                }
                Renewed::Failed => {
                    stream = None;
                    Instant::now() + RETRY_PAUSE
                }
            };
            tokio::time::sleep_until(next.min(deadline)).await;
        }
    }

    async fn renew_once(
        &mut self,
        stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Renewed {
        if stream.is_none() {
            match self.client.lease_keep_alive(self.lease).await {
                Ok(opened) => *stream = Some(opened),
                Err(_) => return Renewed::Failed,
            }
        }
        let Some((keeper, responses)) = stream.as_mut() else {
            return Renewed::Failed;
        };
        let sent = Instant::now();
        if keeper.keep_alive().await.is_err() {
            return Renewed::Failed;
        }
        match responses.message().await {
            Ok(Some(resp)) if resp.ttl() > 0 => Renewed::Until {
                sent,
                ttl: seconds(resp.ttl()),
            },
            Ok(Some(_)) => Renewed::Gone,
            Ok(None) | Err(_) => Renewed::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(ttl_seconds("n", Duration::from_millis(1)).ok(), Some(1));
        assert_eq!(ttl_seconds("n", Duration::from_secs(2)).ok(), Some(2));
        assert_eq!(ttl_seconds("n", Duration::from_millis(2001)).ok(), Some(3));
        assert!(ttl_seconds("n", Duration::ZERO).is_err());
    }
}
