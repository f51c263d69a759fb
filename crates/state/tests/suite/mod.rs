//! The behaviour every [`StateStore`] must have, written once and run against each
//! implementation (redb and etcd). Each case uses its own namespace, so they share a
//! store without seeing each other.

#![allow(dead_code)] // The etcd tests use only the counter helpers.

use palisade_state::{Namespace, StateError, StateStore};
use std::sync::Arc;

pub type Store = Arc<dyn StateStore>;

const PUT: Namespace = Namespace::new("put");
const INSERT: Namespace = Namespace::new("insert");
const CAS: Namespace = Namespace::new("cas");
const DEL: Namespace = Namespace::new("del");
const LIST: Namespace = Namespace::new("list");
const ISO_A: Namespace = Namespace::new("iso");
const ISO_B: Namespace = Namespace::new("iso_b");
const BIG: Namespace = Namespace::new("big");
const RACE: Namespace = Namespace::new("race");
const COUNT: Namespace = Namespace::new("count");
const KEYS: Namespace = Namespace::new("keys");

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Runs every case in order.
pub async fn store_behaves(store: Store) {
    put_replaces_and_get_reads(&store).await;
    insert_new_writes_only_when_absent(&store).await;
    compare_and_swap_compares_values(&store).await;
    compare_and_swap_with_none_deletes(&store).await;
    empty_value_is_not_absent(&store).await;
    delete_reports_whether_the_key_existed(&store).await;
    list_is_prefixed_ordered_and_limited(&store).await;
    namespaces_are_isolated(&store).await;
    large_values_round_trip(&store).await;
    concurrent_insert_new_has_exactly_one_winner(&store).await;
    concurrent_cas_increments_are_never_lost(&store, 4, 25).await;
    bad_keys_are_refused(&store).await;
}

async fn put_replaces_and_get_reads(s: &Store) {
    assert_eq!(
        s.get(PUT, "k").await.unwrap(),
        None,
        "absent key reads None"
    );
    s.put(PUT, "k", v("1")).await.unwrap();
    assert_eq!(s.get(PUT, "k").await.unwrap(), Some(v("1")));
    s.put(PUT, "k", v("2")).await.unwrap();
    assert_eq!(s.get(PUT, "k").await.unwrap(), Some(v("2")), "put replaces");
    // Keys are opaque strings: slashes, spaces and non-ASCII are just bytes.
    for key in ["a/b/c", "with space", "ünïcødé", "/leading", "trailing/"] {
        s.put(PUT, key, v(key)).await.unwrap();
        assert_eq!(s.get(PUT, key).await.unwrap(), Some(v(key)), "{key}");
    }
}

async fn insert_new_writes_only_when_absent(s: &Store) {
    assert!(s.insert_new(INSERT, "nonce", v("first")).await.unwrap());
    assert!(!s.insert_new(INSERT, "nonce", v("second")).await.unwrap());
    assert_eq!(s.get(INSERT, "nonce").await.unwrap(), Some(v("first")));
    assert!(s.delete(INSERT, "nonce").await.unwrap());
    assert!(
        s.insert_new(INSERT, "nonce", v("third")).await.unwrap(),
        "a deleted key is absent again"
    );
    assert_eq!(s.get(INSERT, "nonce").await.unwrap(), Some(v("third")));
}

async fn compare_and_swap_compares_values(s: &Store) {
    // Absent expected.
    assert!(!s
        .compare_and_swap(CAS, "lease", Some(v("x")), Some(v("1")))
        .await
        .unwrap());
    assert_eq!(
        s.get(CAS, "lease").await.unwrap(),
        None,
        "a failed CAS writes nothing"
    );
    assert!(s
        .compare_and_swap(CAS, "lease", None, Some(v("1")))
        .await
        .unwrap());
    // Present: None no longer matches.
    assert!(!s
        .compare_and_swap(CAS, "lease", None, Some(v("other")))
        .await
        .unwrap());
    assert!(!s
        .compare_and_swap(CAS, "lease", Some(v("0")), Some(v("2")))
        .await
        .unwrap());
    assert!(s
        .compare_and_swap(CAS, "lease", Some(v("1")), Some(v("2")))
        .await
        .unwrap());
    assert_eq!(s.get(CAS, "lease").await.unwrap(), Some(v("2")));
    // A prefix or extension of the value is not equal to it.
    assert!(!s
        .compare_and_swap(CAS, "lease", Some(v("")), Some(v("3")))
        .await
        .unwrap());
    assert!(!s
        .compare_and_swap(CAS, "lease", Some(v("22")), Some(v("3")))
        .await
        .unwrap());
    // Writing the same value is a successful swap.
    assert!(s
        .compare_and_swap(CAS, "lease", Some(v("2")), Some(v("2")))
        .await
        .unwrap());
    // Absent expected, absent new: succeeds only while the key is absent.
    assert!(!s.compare_and_swap(CAS, "lease", None, None).await.unwrap());
    assert!(s.compare_and_swap(CAS, "never", None, None).await.unwrap());
    assert_eq!(s.get(CAS, "never").await.unwrap(), None);
}

async fn compare_and_swap_with_none_deletes(s: &Store) {
    s.put(CAS, "gone", v("a")).await.unwrap();
    assert!(!s
        .compare_and_swap(CAS, "gone", Some(v("b")), None)
        .await
        .unwrap());
    assert_eq!(s.get(CAS, "gone").await.unwrap(), Some(v("a")));
    assert!(s
        .compare_and_swap(CAS, "gone", Some(v("a")), None)
        .await
        .unwrap());
    assert_eq!(
        s.get(CAS, "gone").await.unwrap(),
        None,
        "CAS to None deletes"
    );
    assert!(!s
        .compare_and_swap(CAS, "gone", Some(v("a")), None)
        .await
        .unwrap());
    assert!(
        s.insert_new(CAS, "gone", v("back")).await.unwrap(),
        "deleted by CAS means absent"
    );
}

async fn empty_value_is_not_absent(s: &Store) {
    assert!(!s
        .compare_and_swap(CAS, "empty", Some(Vec::new()), Some(v("x")))
        .await
        .unwrap());
    assert_eq!(s.get(CAS, "empty").await.unwrap(), None);
    s.put(CAS, "empty", Vec::new()).await.unwrap();
    assert_eq!(s.get(CAS, "empty").await.unwrap(), Some(Vec::new()));
    assert!(!s.insert_new(CAS, "empty", v("x")).await.unwrap());
    assert!(!s
        .compare_and_swap(CAS, "empty", None, Some(v("x")))
        .await
        .unwrap());
    assert!(s
        .compare_and_swap(CAS, "empty", Some(Vec::new()), Some(v("x")))
        .await
        .unwrap());
    let listed = s.list(CAS, "empty", 10).await.unwrap();
    assert_eq!(listed, vec![("empty".to_string(), v("x"))]);
}

async fn delete_reports_whether_the_key_existed(s: &Store) {
    assert!(!s.delete(DEL, "k").await.unwrap());
    s.put(DEL, "k", v("1")).await.unwrap();
    s.put(DEL, "k2", v("2")).await.unwrap();
    assert!(s.delete(DEL, "k").await.unwrap());
    assert!(!s.delete(DEL, "k").await.unwrap());
    assert_eq!(s.get(DEL, "k").await.unwrap(), None);
    assert_eq!(
        s.get(DEL, "k2").await.unwrap(),
        Some(v("2")),
        "delete removes one key, not a prefix"
    );
}

async fn list_is_prefixed_ordered_and_limited(s: &Store) {
    // Written out of order; bytes order is the contract ("B" < "a", "op/1" < "op/10" < "op/2").
    for k in ["op/2", "op/10", "op/1", "op0", "oq", "o", "op/", "B", "a"] {
        s.put(LIST, k, v(k)).await.unwrap();
    }
    let keys = |l: Vec<(String, Vec<u8>)>| {
        for (k, val) in &l {
            assert_eq!(val, &v(k), "listed values belong to their keys");
        }
        l.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(s.list(LIST, "op/", 100).await.unwrap()),
        ["op/", "op/1", "op/10", "op/2"]
    );
    assert_eq!(
        keys(s.list(LIST, "op/", 2).await.unwrap()),
        ["op/", "op/1"],
        "limit keeps the first keys"
    );
    assert_eq!(
        keys(s.list(LIST, "op", 100).await.unwrap()),
        ["op/", "op/1", "op/10", "op/2", "op0"]
    );
    assert_eq!(
        keys(s.list(LIST, "", 100).await.unwrap()),
        ["B", "a", "o", "op/", "op/1", "op/10", "op/2", "op0", "oq"]
    );
    assert!(
        s.list(LIST, "op/", 0).await.unwrap().is_empty(),
        "limit 0 lists nothing"
    );
    assert!(s.list(LIST, "zzz", 10).await.unwrap().is_empty());
    assert!(s.list(LIST, "op/3", 10).await.unwrap().is_empty());
    // More entries than one page of any backend, listed whole and cut exactly.
    for i in 0..75 {
        s.put(LIST, &format!("many/{i:03}"), vec![i as u8])
            .await
            .unwrap();
    }
    let all = s.list(LIST, "many/", 1000).await.unwrap();
    assert_eq!(all.len(), 75);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
    assert_eq!(all[74], ("many/074".to_string(), vec![74]));
    let some = s.list(LIST, "many/", 33).await.unwrap();
    assert_eq!(some.len(), 33);
    assert_eq!(some[..], all[..33]);
}

async fn namespaces_are_isolated(s: &Store) {
    // "iso" is a prefix of "iso_b": still separate.
    s.put(ISO_A, "k", v("a")).await.unwrap();
    assert_eq!(s.get(ISO_B, "k").await.unwrap(), None);
    assert!(s.insert_new(ISO_B, "k", v("b")).await.unwrap());
    assert_eq!(s.get(ISO_A, "k").await.unwrap(), Some(v("a")));
    assert!(!s
        .compare_and_swap(ISO_B, "k", Some(v("a")), Some(v("x")))
        .await
        .unwrap());
    assert!(s.delete(ISO_A, "k").await.unwrap());
    assert_eq!(s.get(ISO_B, "k").await.unwrap(), Some(v("b")));
    s.put(ISO_A, "b_k", v("a")).await.unwrap();
    assert_eq!(
        s.list(ISO_A, "", 10).await.unwrap(),
        vec![("b_k".to_string(), v("a"))]
    );
    assert_eq!(
        s.list(ISO_B, "", 10).await.unwrap(),
        vec![("k".to_string(), v("b"))]
    );
}

async fn large_values_round_trip(s: &Store) {
    // 512 KiB each: a CAS carries two, within etcd's default 1.5 MiB request cap.
    let big = |seed: u8| {
        (0..512 * 1024)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>()
    };
    s.put(BIG, "a", big(1)).await.unwrap();
    assert_eq!(s.get(BIG, "a").await.unwrap(), Some(big(1)));
    assert!(!s
        .compare_and_swap(BIG, "a", Some(big(2)), Some(big(3)))
        .await
        .unwrap());
    assert!(s
        .compare_and_swap(BIG, "a", Some(big(1)), Some(big(3)))
        .await
        .unwrap());
    assert!(s.insert_new(BIG, "b", big(4)).await.unwrap());
    for k in ["c", "d", "e", "f", "g", "h", "i", "j"] {
        s.put(BIG, k, big(k.as_bytes()[0])).await.unwrap();
    }
    // 10 × 512 KiB: more than gRPC's default 4 MiB in one answer.
    let listed = s.list(BIG, "", 100).await.unwrap();
    assert_eq!(listed.len(), 10);
    assert_eq!(listed[0], ("a".to_string(), big(3)));
    assert_eq!(listed[9], ("j".to_string(), big(b'j')));
}

async fn concurrent_insert_new_has_exactly_one_winner(s: &Store) {
    for round in 0..3 {
        let key = format!("nonce/{round}");
        let tasks = (0..32)
            .map(|i| {
                let (s, key) = (s.clone(), key.clone());
                tokio::spawn(async move {
                    let won = s
                        .insert_new(RACE, &key, format!("task {i}").into_bytes())
                        .await
                        .unwrap();
                    (i, won)
                })
            })
            .collect::<Vec<_>>();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, won) = t.await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one insert wins: {winners:?}");
        assert_eq!(
            s.get(RACE, &key).await.unwrap(),
            Some(format!("task {}", winners[0]).into_bytes()),
            "the stored value is the winner's"
        );
    }
}

/// Adds one to the counter at `key` with a read + compare-and-swap loop.
pub async fn increment(s: &dyn StateStore, ns: Namespace, key: &str) -> u32 {
    let mut retries = 0;
    loop {
        let current = s.get(ns, key).await.unwrap();
        let n: u64 = current
            .as_deref()
            .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
        let next = (n + 1).to_string().into_bytes();
        if s.compare_and_swap(ns, key, current, Some(next))
            .await
            .unwrap()
        {
            return retries;
        }
        retries += 1;
    }
}

pub async fn read_counter(s: &dyn StateStore, ns: Namespace, key: &str) -> u64 {
    let raw = s.get(ns, key).await.unwrap().expect("counter exists");
    std::str::from_utf8(&raw).unwrap().parse().unwrap()
}

/// `tasks` tasks each add `each` to one counter; every increment must land.
async fn concurrent_cas_increments_are_never_lost(s: &Store, tasks: u64, each: u64) {
    let handles = (0..tasks)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..each {
                    retries += increment(s.as_ref(), COUNT, "counter").await;
                }
                retries
            })
        })
        .collect::<Vec<_>>();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(
        read_counter(s.as_ref(), COUNT, "counter").await,
        tasks * each
    );
}

async fn bad_keys_are_refused(s: &Store) {
    assert!(matches!(
        s.put(KEYS, "", v("x")).await,
        Err(StateError::BadKey { .. })
    ));
    assert!(matches!(
        s.get(KEYS, "").await,
        Err(StateError::BadKey { .. })
    ));
    let long = "k".repeat(palisade_state::MAX_KEY_BYTES + 1);
    assert!(matches!(
        s.get(KEYS, &long).await,
        Err(StateError::BadKey { .. })
    ));
    assert!(matches!(
        s.insert_new(KEYS, &long, v("x")).await,
        Err(StateError::BadKey { .. })
    ));
    assert!(matches!(
        s.compare_and_swap(KEYS, &long, None, Some(v("x"))).await,
        Err(StateError::BadKey { .. })
    ));
    assert!(matches!(
        s.delete(KEYS, &long).await,
        Err(StateError::BadKey { .. })
    ));
    let longest = "k".repeat(palisade_state::MAX_KEY_BYTES);
    s.put(KEYS, &longest, v("ok")).await.unwrap();
    assert_eq!(s.get(KEYS, &longest).await.unwrap(), Some(v("ok")));
}
