//! [`StateStore`] on etcd, shared by gateway replicas.
//!
//! Every key lives at `<prefix>/<namespace>/<key>`. Namespace names cannot contain `/`,
//! so two namespaces never share keys; the prefix (e.g. `/palisade`) lets one etcd hold
//! several deployments.
//!
//! Conditional writes are one etcd transaction each, so the compare and the write
//! happen at one revision and nothing can slip between them:
//!
//! - absent is `create_revision(key) == 0` (etcd's own test for "no such key");
//! - present with value `v` is `value(key) == v`. Comparing values rather than
//!   revisions is safe because the trait's contract *is* value equality — the redb
//!   store compares values too. etcd fails a value compare on a missing key, so an
//!   expected empty value never matches an absent key. A value that went A → B → A
//!   between a caller's read and its swap still matches, on both stores; callers that
//!   must notice put a counter or token in the value. The cost is size: the request
//!   carries both values, so `expected + new` must fit etcd's `--max-request-bytes`
//!   (1.5 MiB by default).
//!
//! Reads are linearizable (etcd's default), and requests go only to members that have
//! a leader, so a partitioned member answers "unavailable" rather than stale data.

use crate::{check_key, Namespace, StateError, StateStore};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOp,
};
use serde::Deserialize;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Client certificate and CA for `https://` endpoints (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificates.
    pub ca: PathBuf,
    /// This process's client certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// How long to wait for a TCP/TLS connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take before the store reports etcd unavailable. Applied
/// per call rather than on the channel, which would also cut the lease's and watch's
/// long-lived streams.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries fetched per range request by `list`; a page stays well under the response
/// limit even with values at etcd's default 1.5 MiB request cap.
const LIST_PAGE: usize = 16;
/// The largest response accepted (gRPC's default is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// The longest prefix accepted.
const MAX_PREFIX_BYTES: usize = 128;

/// etcd-backed store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://` without `tls`, `https://` with it) and checks
    /// that etcd answers, so a wrong address fails here rather than at the first write.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&EtcdTls>,
    ) -> Result<Self, StateError> {
        check_prefix(prefix)?;
        check_endpoints(endpoints, tls.is_some())?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = tls {
            let ca = Certificate::from_pem(read_pem(&tls.ca).await?);
            let identity =
                Identity::from_pem(read_pem(&tls.cert).await?, read_pem(&tls.key).await?);
            options = options.with_tls(TlsOptions::new().ca_certificate(ca).identity(identity));
        }
        let connect_error = |reason: String| StateError::Connect {
            endpoints: endpoints.join(","),
            reason,
        };
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let store = Self {
            client,
            prefix: prefix.to_string(),
        };
        // The client connects lazily; one cheap read proves the endpoints, TLS and
        // read permission on the prefix.
        let mut kv = store.kv();
        let probe = kv.get(
            format!("{prefix}/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(connect_error(describe(&e))),
            Err(_) => Err(connect_error(format!(
                "no answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The prefix every key of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn ns_base(&self, ns: Namespace) -> String {
        format!("{}/{}/", self.prefix, ns.name())
    }

    fn key(&self, ns: Namespace, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.ns_base(ns)))
    }
}

async fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, StateError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| StateError::TlsFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// A prefix is `/` followed by non-empty segments of letters, digits, `-`, `_`, `.`.
fn check_prefix(prefix: &str) -> Result<(), StateError> {
    let bad = |why: &str| {
        Err(StateError::Config(format!(
            "etcd prefix {prefix:?} {why}; use something like \"/palisade\""
        )))
    };
    let Some(rest) = prefix.strip_prefix('/') else {
        return bad("must start with /");
    };
    if prefix.len() > MAX_PREFIX_BYTES {
        return bad("is longer than 128 bytes");
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return bad("has an empty segment (a trailing or doubled /, or is only /)");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad("may hold only letters, digits, -, _, . and /");
        }
    }
    Ok(())
}

fn check_endpoints(endpoints: &[String], tls: bool) -> Result<(), StateError> {
    if endpoints.is_empty() {
        return Err(StateError::Config("no etcd endpoints are given".into()));
    }
    for e in endpoints {
        let https = if e.starts_with("https://") {
            true
        } else if e.starts_with("http://") {
            false
        } else {
            return Err(StateError::Config(format!(
                "etcd endpoint {e:?} must start with https:// (or http:// without tls)"
            )));
        };
        if https && !tls {
            return Err(StateError::Config(format!(
                "etcd endpoint {e} is https but no tls (ca, cert, key) is configured"
            )));
        }
        if !https && tls {
            return Err(StateError::Config(format!(
                "etcd endpoint {e} is plain http but tls is configured; use https://"
            )));
        }
    }
    Ok(())
}

/// A short account of an etcd error, without gRPC metadata.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{} ({:?})", s.message(), s.code()),
        other => other.to_string(),
    }
}

/// Sorts an etcd failure into "could not get an answer" (retry later) and "etcd said
/// no" (the request itself is wrong, e.g. too large or not permitted).
fn classify(op: &'static str, ns: Namespace, e: &etcd_client::Error) -> StateError {
    use tonic::Code;
    let unavailable = match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ) || (s.code() == Code::Unknown && lost_connection(s))
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    };
    if unavailable {
        StateError::Unavailable {
            op,
            ns: ns.name(),
            reason: describe(e),
        }
    } else {
        StateError::Backend {
            op,
            ns: ns.name(),
            reason: format!("etcd refused: {}", describe(e)),
        }
    }
}

/// Whether a status of code `Unknown` is the client's own account of a connection
/// that broke mid-request (tonic reports it as "transport error"), not etcd's answer.
fn lost_connection(s: &tonic::Status) -> bool {
    s.message().starts_with("transport error")
}

/// Runs one etcd request with the store's deadline.
async fn call<T>(
    op: &'static str,
    ns: Namespace,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| classify(op, ns, &e)),
        Err(_) => Err(StateError::Unavailable {
            op,
            ns: ns.name(),
            reason: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
        }),
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only reachable for an all-0xff prefix; "\0" means "to the end" to etcd.
    vec![0]
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.key(ns, key)?;
        let mut resp = call("get", ns, self.kv().get(key, None)).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.into_key_value().1))
    }

    async fn put(&self, ns: Namespace, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        let key = self.key(ns, key)?;
        call("put", ns, self.kv().put(key, value, None)).await?;
        Ok(())
    }

    async fn insert_new(
        &self,
        ns: Namespace,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, StateError> {
        let key = self.key(ns, key)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = call("insert_new", ns, self.kv().txn(txn)).await?;
        Ok(resp.succeeded())
    }

    async fn compare_and_swap(
        &self,
        ns: Namespace,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StateError> {
        let key = self.key(ns, key)?;
        let when = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::value(key.clone(), CompareOp::Equal, v),
        };
        // Absent expected and `new = None` writes nothing: it succeeds iff the key is
        // absent, as on redb.
        let then = match new {
            Some(v) => vec![TxnOp::put(key, v, None)],
            None => vec![TxnOp::delete(key, None)],
        };
        let txn = Txn::new().when([when]).and_then(then);
        let resp = call("compare_and_swap", ns, self.kv().txn(txn)).await?;
        Ok(resp.succeeded())
    }

    async fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StateError> {
        let key = self.key(ns, key)?;
        let resp = call("delete", ns, self.kv().delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    async fn list(
        &self,
        ns: Namespace,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        // etcd reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let base = self.ns_base(ns);
        let start = format!("{base}{prefix}").into_bytes();
        let end = prefix_end(&start);
        let kv = self.kv();
        let mut out = Vec::new();
        let mut from = start;
        // Later pages read at the first page's revision: one consistent snapshot.
        let mut revision = 0;
        loop {
            let page = LIST_PAGE.min(limit - out.len());
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(i64::try_from(page).unwrap_or(i64::MAX))
                .with_revision(revision);
            let mut resp = call("list", ns, kv.clone().get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision =
                    resp.header()
                        .map(|h| h.revision())
                        .ok_or_else(|| StateError::Backend {
                            op: "list",
                            ns: ns.name(),
                            reason: "etcd answered without a revision".into(),
                        })?;
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = [last.key(), &[0]].concat();
            for entry in kvs {
                let (k, v) = entry.into_key_value();
                let name = k
                    .strip_prefix(base.as_bytes())
                    .and_then(|k| String::from_utf8(k.to_vec()).ok())
                    .ok_or_else(|| StateError::Backend {
                        op: "list",
                        ns: ns.name(),
                        reason: format!(
                            "etcd holds a key under {base} that is not UTF-8: {}",
                            String::from_utf8_lossy(&k)
                        ),
                    })?;
                out.push((name, v));
            }
            if !more || out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that breaks mid-request (etcd killed) is "unavailable", as a
    /// refused connection is; an answer etcd gave stays etcd's refusal.
    #[test]
    fn a_broken_connection_is_unavailable_and_an_answer_is_not() {
        let status = |s: tonic::Status| etcd_client::Error::GRpcStatus(s);
        for e in [
            status(tonic::Status::unknown("transport error")),
            status(tonic::Status::unavailable("connection refused")),
        ] {
            assert!(
                matches!(
                    classify("get", Namespace::new("ops"), &e),
                    StateError::Unavailable { .. }
                ),
                "{e:?}"
            );
        }
        for e in [
            status(tonic::Status::unknown("etcdserver: request is too large")),
            status(tonic::Status::permission_denied(
                "etcdserver: permission denied",
            )),
        ] {
            assert!(
                matches!(
                    classify("put", Namespace::new("ops"), &e),
                    StateError::Backend { .. }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn prefixes_are_checked() {
        for good in ["/palisade", "/palisade/prod-eu.1", "/a_b"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "palisade",
            "/palisade/",
            "//p",
            "/p//q",
            "/p q",
            "/p\n",
        ] {
            assert!(
                matches!(check_prefix(bad), Err(StateError::Config(_))),
                "{bad:?}"
            );
        }
        assert!(check_prefix(&format!("/{}", "p".repeat(200))).is_err());
    }

    #[test]
    fn endpoints_and_tls_must_agree() {
        let eps = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_endpoints(&eps(&["http://127.0.0.1:2379"]), false).is_ok());
        assert!(check_endpoints(&eps(&["https://a:2379", "https://b:2379"]), true).is_ok());
        assert!(check_endpoints(&[], false).is_err());
        assert!(check_endpoints(&eps(&["127.0.0.1:2379"]), false).is_err());
        assert!(check_endpoints(&eps(&["https://a:2379"]), false).is_err());
        assert!(check_endpoints(&eps(&["http://a:2379"]), true).is_err());
        assert!(check_endpoints(&eps(&["https://a:2379", "http://b:2379"]), true).is_err());
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/p/ns/"), b"/p/ns0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
