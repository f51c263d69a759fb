//! Several gateway replicas share their state in a real etcd: an idempotency key
//! used on one replica returns the same operation on the other, per-operator rate
//! limits count across replicas, and each replica lists the operations of both.

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;

use harness::{second_gateway, Stack, StateEtcd};

const TICKET: &str = "INC-7";
const REASON: &str = "disarm after compaction";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_operations_idempotency_and_rate_limits_through_etcd() {
    let stack = Stack::start();
    let etcd = StateEtcd::start();
    let shared = |t: String| etcd.gateway_config(&t, "/palisade-test");
    let (_a, gw_a) = second_gateway(&stack, "replica-a", shared);
    let (_b, gw_b) = second_gateway(&stack, "replica-b", shared);
    let op = stack.operator();
    let (ta, tb) = (gw_a.dev_token(&op).await, gw_b.dev_token(&op).await);

    // The same idempotency key on both replicas: one operation.
    let body = serde_json::json!({"ticket": TICKET, "reason": "looking at etcd status", "instance": "demo-0"});
    let (sa, first) = gw_a
        .call_with_key(
            "/v1/clusters/demo/actions/etcd.status",
            &ta,
            &body,
            "retry-1",
        )
        .await;
    assert_eq!(sa, 200, "{first}");
    let (sb, again) = gw_b
        .call_with_key(
            "/v1/clusters/demo/actions/etcd.status",
            &tb,
            &body,
            "retry-1",
        )
        .await;
    assert_eq!(sb, 200, "{again}");
    assert_eq!(
        first["id"], again["id"],
        "the retry on the other replica ran again"
    );
    // The same key with another request is refused.
    let other = serde_json::json!({"ticket": TICKET, "reason": "something else entirely", "instance": "demo-0"});
    let (s, problem) = gw_b
        .call_with_key(
            "/v1/clusters/demo/actions/etcd.status",
            &tb,
            &other,
            "retry-1",
        )
        .await;
    assert_eq!(s, 422, "{problem}");

    // etcd.alarm-disarm: 5 per hour per operator, counted across replicas.
    for (i, (gw, t)) in [
        (&gw_a, &ta),
        (&gw_b, &tb),
        (&gw_a, &ta),
        (&gw_b, &tb),
        (&gw_a, &ta),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, done) = gw
            .run(t, "demo", "etcd.alarm-disarm", None, &[], TICKET, REASON)
            .await;
        assert_eq!(s, 200, "call {i}: {done}");
    }
    let (s, problem) = gw_b
        .run(&tb, "demo", "etcd.alarm-disarm", None, &[], TICKET, REASON)
        .await;
    assert_eq!(s, 429, "{problem}");

    // Each replica lists the operations made through the other.
    let (s, list) = gw_b
        .call("GET", "/v1/operations?limit=50", Some(&tb), None)
        .await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert!(ids.contains(&first["id"].as_str().expect("id")), "{ids:?}");
    assert_eq!(ids.len(), 6, "1 status + 5 disarms: {ids:?}");
    let (s, shown) = gw_a
        .call(
            "GET",
            &format!("/v1/operations/{}", ids[0]),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(s, 200, "{shown}");
}
