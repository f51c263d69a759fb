//! Instance actions: `instance.resources` (totals only) and `certs.expiry` (names and
//! dates of the certificates named in the agent's configuration — never their
//! subject, extensions, keys or bytes).

use crate::config::NamedCert;
use palisade_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const RESOURCES_SCHEMA: &str = "palisade.dev/output/instance-resources/v1";
pub const CERTS_SCHEMA: &str = "palisade.dev/output/certs-expiry/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesOutput {
    pub cpus: u64,
    /// 1, 5 and 15 minute load averages, times 1000.
    pub load_avg_milli: Vec<u64>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub uptime_secs: u64,
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// Whole days until `not_after` (negative once expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// Why the file could not be read as a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertsOutput {
    pub certs: Vec<CertExpiry>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {what}: {reason}")]
    Read { what: String, reason: String },
}

fn read_proc(path: &str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|e| HostError::Read {
        what: path.to_string(),
        reason: e.to_string(),
    })
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn milli(field: &str) -> u64 {
    // "0.42" → 420, without floating point.
    let (whole, frac) = field.split_once('.').unwrap_or((field, "0"));
    let whole: u64 = whole.parse().unwrap_or(0);
    let mut frac_digits: String = frac.chars().take(3).collect();
    while frac_digits.len() < 3 {
        frac_digits.push('0');
    }
    whole.saturating_mul(1000) + frac_digits.parse::<u64>().unwrap_or(0)
}

/// `instance.resources`.
pub fn resources(disks: &[PathBuf]) -> Result<ResourcesOutput, HostError> {
    let meminfo = read_proc("/proc/meminfo")?;
    let loadavg = read_proc("/proc/loadavg")?;
    let uptime = read_proc("/proc/uptime")?;
    let mut out_disks = Vec::new();
    for d in disks {
        let st = rustix::fs::statvfs(d).map_err(|e| HostError::Read {
            what: d.display().to_string(),
            reason: e.to_string(),
        })?;
        let frsize = st.f_frsize;
        let total = st.f_blocks.saturating_mul(frsize);
        let available = st.f_bavail.saturating_mul(frsize);
        let free = st.f_bfree.saturating_mul(frsize);
        out_disks.push(Disk {
            path: d.display().to_string(),
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.saturating_sub(free),
        });
    }
    Ok(ResourcesOutput {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        load_avg_milli: loadavg.split_whitespace().take(3).map(milli).collect(),
        memory_total_bytes: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024,
        memory_available_bytes: meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) * 1024,
        uptime_secs: milli(uptime.split_whitespace().next().unwrap_or("0")) / 1000,
        disks: out_disks,
    })
}

/// `certs.expiry`: for each configured certificate, its validity dates only.
pub fn certs_expiry(certs: &[NamedCert], now: Timestamp) -> CertsOutput {
    let certs = certs
        .iter()
        .map(|c| match validity(&c.path) {
            Ok((nb, na)) => CertExpiry {
                name: c.name.clone(),
                not_before: Some(nb),
                not_after: Some(na),
                days_left: Some((na.unix_seconds() - now.unix_seconds()).div_euclid(86_400)),
                error: None,
            },
            Err(e) => CertExpiry {
                name: c.name.clone(),
                not_before: None,
                not_after: None,
                days_left: None,
                error: Some(e),
            },
        })
        .collect();
    CertsOutput { certs }
}

fn validity(path: &std::path::Path) -> Result<(Timestamp, Timestamp), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {}", e.kind()))?;
    let der = match x509_parser::pem::parse_x509_pem(&bytes) {
        Ok((_, pem)) if pem.label == "CERTIFICATE" => pem.contents,
        Ok(_) => return Err("the first PEM block is not a CERTIFICATE".into()),
        Err(_) => bytes,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| "not an X.509 certificate".to_string())?;
    let v = cert.validity();
    Ok((
        Timestamp::from_unix_seconds(v.not_before.timestamp()),
        Timestamp::from_unix_seconds(v.not_after.timestamp()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields_without_floats() {
        assert_eq!(milli("0.42"), 420);
        assert_eq!(milli("12.5"), 12_500);
        assert_eq!(milli("3"), 3_000);
        let mem = "MemTotal:       16303740 kB\nMemFree: 1 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(meminfo_kib(mem, "MemTotal"), Some(16_303_740));
        assert_eq!(meminfo_kib(mem, "MemAvailable"), Some(12_000_000));
        assert_eq!(meminfo_kib(mem, "Missing"), None);
    }

    #[test]
    fn reports_this_machine() {
        let r = resources(&[std::env::temp_dir()]).expect("resources");
        assert!(r.cpus >= 1 && r.memory_total_bytes > 0);
        assert_eq!(r.load_avg_milli.len(), 3);
        assert_eq!(r.disks.len(), 1);
        assert!(r.disks[0].total_bytes > 0);
    }

    #[test]
    fn cert_errors_name_no_content() {
        let dir = tempfile::tempdir().expect("dir");
        let bad = dir.path().join("bad.crt");
        std::fs::write(&bad, b"secret customer bytes").expect("write");
        let out = certs_expiry(
            &[NamedCert {
                name: "apiserver".into(),
                path: bad,
                ..NamedCert::default()
            }],
            Timestamp::now(),
        );
        let text = serde_json::to_string(&out).expect("json");
        assert!(!text.contains("secret"), "{text}");
        assert!(out.certs[0].error.is_some());
    }
}
