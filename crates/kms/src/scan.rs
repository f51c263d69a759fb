//! `scan-etcd`: checks that every value under a prefix in etcd is KMS v2 envelope
//! encrypted (starts with `k8s:enc:kms:v2:`), the evidence that an etcd backup or a
//! copy of the data directory holds nothing readable. Only keys are ever reported,
//! never values.

use etcd_client::{Client, GetOptions};

/// What kube-apiserver writes before a KMS v2 `EncryptedObject`.
pub const KMS_V2_PREFIX: &[u8] = b"k8s:enc:kms:v2:";

/// How many key-value pairs one page reads.
pub const PAGE: i64 = 500;

/// Why the scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd range read failed: {0}")]
    Read(etcd_client::Error),
}

/// The result of a scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub scanned: u64,
    /// Keys whose values are not KMS v2 envelopes, in key order.
    pub unencrypted_keys: Vec<Vec<u8>>,
}

impl ScanReport {
    pub fn is_clean(&self) -> bool {
        self.unencrypted_keys.is_empty()
    }
}

/// Whether a stored value is a KMS v2 envelope.
pub fn is_kms_v2_envelope(value: &[u8]) -> bool {
    value.starts_with(KMS_V2_PREFIX)
}

/// The end of the range of keys that start with `prefix` (etcd's `WithPrefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range runs to the end.
    vec![0]
}

/// Reads every key under `prefix`, page by page, and reports the unencrypted ones.
pub async fn scan(endpoints: &[String], prefix: &[u8]) -> Result<ScanReport, ScanError> {
    let mut client =
        Client::connect(endpoints, None)
            .await
            .map_err(|source| ScanError::Connect {
                endpoints: endpoints.join(","),
                source,
            })?;
    let end = prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut report = ScanReport::default();
    loop {
        let resp = client
            .get(
                start.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE)),
            )
            .await
            .map_err(ScanError::Read)?;
        let kvs = resp.kvs();
        for kv in kvs {
            report.scanned += 1;
            if !is_kms_v2_envelope(kv.value()) {
                report.unencrypted_keys.push(kv.key().to_vec());
            }
        }
        match kvs.last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn envelopes() {
        assert!(is_kms_v2_envelope(b"k8s:enc:kms:v2:palisade:\x0a\x01x"));
        assert!(!is_kms_v2_envelope(b"k8s:enc:aescbc:v1:key1:"));
        assert!(!is_kms_v2_envelope(b"{\"kind\":\"Secret\"}"));
    }
}
