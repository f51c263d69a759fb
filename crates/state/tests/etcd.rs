//! What only the shared store has to show: several gateway replicas on one etcd see one
//! state, race safely, elect one leader per name, and fail loudly when etcd is gone.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod suite;
mod support;

use palisade_state::{
    EtcdStore, EtcdTls, Leadership, Namespace, StateBackend, StateError, StateStore,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Etcd;

const NS: Namespace = Namespace::new("ops");
const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_see_each_others_writes() {
    let etcd = Etcd::start().await;
    let (a, b) = (etcd.store("/palisade").await, etcd.store("/palisade").await);
    a.put(NS, "op/1", b"queued".to_vec()).await.unwrap();
    assert_eq!(b.get(NS, "op/1").await.unwrap(), Some(b"queued".to_vec()));
    assert!(!b.insert_new(NS, "op/1", b"again".to_vec()).await.unwrap());
    assert!(b
        .compare_and_swap(NS, "op/1", Some(b"queued".to_vec()), Some(b"done".to_vec()))
        .await
        .unwrap());
    assert_eq!(a.get(NS, "op/1").await.unwrap(), Some(b"done".to_vec()));
    assert_eq!(a.list(NS, "op/", 10).await.unwrap().len(), 1);
    assert!(a.delete(NS, "op/1").await.unwrap());
    assert_eq!(b.get(NS, "op/1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_keep_deployments_apart() {
    let etcd = Etcd::start().await;
    let (prod, staging) = (
        etcd.store("/palisade/prod").await,
        etcd.store("/palisade/staging").await,
    );
    prod.put(NS, "k", b"prod".to_vec()).await.unwrap();
    assert_eq!(staging.get(NS, "k").await.unwrap(), None);
    assert!(staging
        .insert_new(NS, "k", b"staging".to_vec())
        .await
        .unwrap());
    assert_eq!(prod.get(NS, "k").await.unwrap(), Some(b"prod".to_vec()));
    assert_eq!(staging.list(NS, "", 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_increments_from_two_clients_all_land() {
    let etcd = Etcd::start().await;
    let clients: [Arc<dyn StateStore>; 2] = [
        Arc::new(etcd.store("/palisade").await),
        Arc::new(etcd.store("/palisade").await),
    ];
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..50 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                suite::increment(c.as_ref(), NS, "rate/tenant-a").await
            }));
        }
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    for client in &clients {
        assert_eq!(
            suite::read_counter(client.as_ref(), NS, "rate/tenant-a").await,
            100
        );
    }
    // Not an assertion of the contract, but proof the race was real.
    eprintln!("100 increments needed {retries} CAS retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_new_across_clients_has_one_winner() {
    let etcd = Etcd::start().await;
    let a: Arc<dyn StateStore> = Arc::new(etcd.store("/palisade").await);
    let b: Arc<dyn StateStore> = Arc::new(etcd.store("/palisade").await);
    let tasks = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.insert_new(NS, "idem/key-1", vec![i]).await.unwrap() })
        })
        .collect::<Vec<_>>();
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_etcd_is_a_clear_error() {
    // Nothing listens on a fresh port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint), "/palisade", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint) && msg.contains("cannot reach etcd"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails in bounded time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_going_down_makes_every_operation_fail_clearly() {
    let mut etcd = Etcd::start().await;
    let store = etcd.store("/palisade").await;
    store.put(NS, "k", b"v".to_vec()).await.unwrap();
    etcd.kill();
    let started = Instant::now();
    let errors = [
        store.get(NS, "k").await.map(|_| ()),
        store.put(NS, "k", b"w".to_vec()).await,
        store.insert_new(NS, "n", b"w".to_vec()).await.map(|_| ()),
        store
            .compare_and_swap(NS, "k", None, None)
            .await
            .map(|_| ()),
        store.delete(NS, "k").await.map(|_| ()),
        store.list(NS, "", 10).await.map(|_| ()),
    ];
    for (op, result) in [
        "get",
        "put",
        "insert_new",
        "compare_and_swap",
        "delete",
        "list",
    ]
    .iter()
    .zip(errors)
    {
        let err = result.unwrap_err();
        assert!(
            matches!(err, StateError::Unavailable { .. }),
            "{op}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("etcd is unavailable") && msg.contains(op) && msg.contains("ops"),
            "{msg}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(70),
        "each op gives up in bounded time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_etcd_times_out_and_costs_the_leader_its_lease() {
    let etcd = Etcd::start().await;
    let store = etcd.store("/palisade").await;
    let guard = Leadership::acquire(&store, "log/1", "gateway-a", TTL)
        .await
        .unwrap()
        .unwrap();
    etcd.pause();
    let paused = Instant::now();
    // Renewals go unanswered: the guard gives up by its own deadline.
    tokio::time::timeout(TTL + Duration::from_secs(1), guard.lost())
        .await
        .expect("lost() resolves by the TTL");
    assert!(!guard.is_leader());
    assert!(
        paused.elapsed() <= TTL + Duration::from_millis(200),
        "{:?}",
        paused.elapsed()
    );
    let err = store.get(NS, "k").await.unwrap_err();
    assert!(
        matches!(&err, StateError::Unavailable { reason, .. } if reason.contains("no answer within")),
        "{err:?}"
    );
    etcd.resume();
    store.put(NS, "k", b"back".to_vec()).await.unwrap();
}

#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    let eps = vec!["http://127.0.0.1:1".to_string()];
    for prefix in ["palisade", "/", "/palisade/", "/a b"] {
        let err = EtcdStore::connect(&eps, prefix, None).await.unwrap_err();
        assert!(matches!(err, StateError::Config(_)), "{prefix}: {err:?}");
        assert!(err.to_string().contains(prefix), "{err}");
    }
    let https = vec!["https://127.0.0.1:1".to_string()];
    let err = EtcdStore::connect(&https, "/p", None).await.unwrap_err();
    assert!(err.to_string().contains("no tls"), "{err}");
    let tls = EtcdTls {
        ca: "/nonexistent/ca.pem".into(),
        cert: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
    };
    let err = EtcdStore::connect(&eps, "/p", Some(&tls))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("plain http"), "{err}");
    let err = EtcdStore::connect(&https, "/p", Some(&tls))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StateError::TlsFile { path, .. } if path.ends_with("ca.pem")),
        "{err:?}"
    );
}

#[test]
fn state_tables_parse_from_toml() {
    #[derive(serde::Deserialize)]
    struct Config {
        state: StateBackend,
    }
    let parse = |s: &str| toml::from_str::<Config>(s).map(|c| c.state);
    assert_eq!(
        parse("[state]\nkind = \"redb\"\npath = \"/var/lib/palisade/state.redb\"\n").unwrap(),
        StateBackend::Redb {
            path: "/var/lib/palisade/state.redb".into()
        }
    );
    let etcd = r#"
        [state]
        kind = "etcd"
        endpoints = ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]
        prefix = "/palisade"
        [state.tls]
        ca = "/etc/palisade/etcd/ca.pem"
        cert = "/etc/palisade/etcd/client.pem"
        key = "/etc/palisade/etcd/client-key.pem"
    "#;
    assert_eq!(
        parse(etcd).unwrap(),
        StateBackend::Etcd {
            endpoints: vec![
                "https://10.0.0.11:2379".into(),
                "https://10.0.0.12:2379".into()
            ],
            prefix: "/palisade".into(),
            tls: Some(EtcdTls {
                ca: "/etc/palisade/etcd/ca.pem".into(),
                cert: "/etc/palisade/etcd/client.pem".into(),
                key: "/etc/palisade/etcd/client-key.pem".into(),
            }),
        }
    );
    assert_eq!(
        parse(
            "[state]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/p\"\n"
        )
        .unwrap(),
        StateBackend::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/p".into(),
            tls: None
        }
    );
    for (bad, why) in [
        ("[state]\nkind = \"redb\"\npath = \"/x\"\nprefix = \"/p\"\n", "unknown field"),
        ("[state]\nkind = \"sqlite\"\npath = \"/x\"\n", "unknown variant"),
        ("[state]\npath = \"/x\"\n", "kind"),
        ("[state]\nkind = \"etcd\"\nendpoints = [\"http://a:1\"]\n", "prefix"),
        (
            "[state]\nkind = \"etcd\"\nendpoints = [\"https://a:1\"]\nprefix = \"/p\"\n[state.tls]\nca = \"/c\"\ncert = \"/c\"\nkey = \"/k\"\npassword = \"x\"\n",
            "unknown field",
        ),
    ] {
        let err = parse(bad).err().unwrap_or_else(|| panic!("accepted: {bad}"));
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

// ---- Leadership -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_acquirer_is_refused_while_the_first_holds() {
    let etcd = Etcd::start().await;
    let (a, b) = (etcd.store("/palisade").await, etcd.store("/palisade").await);
    let first = Leadership::acquire(&a, "log/1", "gateway-a", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_leader());
    assert!(Leadership::acquire(&b, "log/1", "gateway-b", TTL)
        .await
        .unwrap()
        .is_none());
    assert!(
        Leadership::acquire(&a, "log/1", "gateway-a", TTL)
            .await
            .unwrap()
            .is_none(),
        "not even the same holder twice"
    );
    assert_eq!(
        Leadership::holder(&b, "log/1").await.unwrap().as_deref(),
        Some("gateway-a")
    );
    // Another name is independent.
    let other = Leadership::acquire(&b, "log/2", "gateway-b", TTL)
        .await
        .unwrap()
        .unwrap();
    // Renewal keeps leadership well past the TTL.
    tokio::time::sleep(TTL * 3).await;
    assert!(first.is_leader() && other.is_leader());
    assert!(first.still_holds().await.unwrap());
    assert!(Leadership::acquire(&b, "log/1", "gateway-b", TTL)
        .await
        .unwrap()
        .is_none());
    // Leadership keys are not state: no namespace lists them.
    assert!(a.list(NS, "", 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_or_dropped_leadership_passes_at_once() {
    let etcd = Etcd::start().await;
    let (a, b) = (etcd.store("/palisade").await, etcd.store("/palisade").await);
    let first = Leadership::acquire(&a, "log/1", "gateway-a", TTL)
        .await
        .unwrap()
        .unwrap();
    let term1 = first.fencing_revision();
    first.release().await.unwrap();
    let second = Leadership::acquire(&b, "log/1", "gateway-b", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(
        second.fencing_revision() > term1,
        "each term has a larger fencing revision"
    );
    assert_eq!(
        Leadership::holder(&a, "log/1").await.unwrap().as_deref(),
        Some("gateway-b")
    );

    // A waiter wakes when the holder drops its guard, without waiting for the TTL.
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { Leadership::wait(&a, "log/1", "gateway-a", Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "waits while gateway-b leads");
    let dropped = Instant::now();
    drop(second);
    let third = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter takes over soon after the drop")
        .unwrap()
        .unwrap();
    assert!(
        dropped.elapsed() < TTL,
        "took over in {:?}, faster than expiry",
        dropped.elapsed()
    );
    assert!(third.is_leader() && third.still_holds().await.unwrap());
    assert_eq!(
        Leadership::holder(&b, "log/1").await.unwrap().as_deref(),
        Some("gateway-a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_holder_is_replaced_when_its_lease_expires() {
    let etcd = Etcd::start().await;
    let (a, b) = (etcd.store("/palisade").await, etcd.store("/palisade").await);
    let first = Leadership::acquire(&a, "log/1", "gateway-a", TTL)
        .await
        .unwrap()
        .unwrap();
    let stopped = Instant::now();
    first.abandon(); // No more renewals, no revoke: as if gateway-a died.
    assert!(
        Leadership::acquire(&b, "log/1", "gateway-b", TTL)
            .await
            .unwrap()
            .is_none(),
        "the lease outlives its holder until the TTL"
    );
    let second = tokio::time::timeout(
        Duration::from_secs(15),
        Leadership::wait(&b, "log/1", "gateway-b", TTL),
    )
    .await
    .expect("taken over after expiry")
    .unwrap();
    let after = stopped.elapsed();
    assert!(
        after >= TTL - Duration::from_millis(100),
        "not before the TTL: {after:?}"
    );
    assert!(second.is_leader());
    assert_eq!(
        Leadership::holder(&a, "log/1").await.unwrap().as_deref(),
        Some("gateway-b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_etcd_knows_it_within_the_ttl() {
    let mut etcd = Etcd::start().await;
    let a = etcd.store("/palisade").await;
    let guard = Leadership::acquire(&a, "log/1", "gateway-a", TTL)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(guard.is_leader());
    let killed = Instant::now();
    etcd.kill();
    tokio::time::timeout(TTL + Duration::from_secs(1), guard.lost())
        .await
        .expect("lost() resolves by the TTL");
    assert!(!guard.is_leader());
    assert!(
        killed.elapsed() <= TTL + Duration::from_millis(200),
        "{:?}",
        killed.elapsed()
    );
    let err = Leadership::acquire(&a, "log/2", "gateway-a", TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Lease { .. }), "{err:?}");
    assert!(err.to_string().contains("log/2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_arguments_are_checked() {
    let etcd = Etcd::start().await;
    let a = etcd.store("/palisade").await;
    assert!(Leadership::acquire(&a, "", "h", TTL).await.is_err());
    assert!(Leadership::acquire(&a, "n", "", TTL).await.is_err());
    assert!(Leadership::acquire(&a, "n", "h", Duration::ZERO)
        .await
        .is_err());
    // A sub-second TTL rounds up and still works.
    let g = Leadership::acquire(&a, "n", "h", Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(g.is_leader() && g.still_holds().await.unwrap());
}
