//! The Unix socket the apiserver dials: address parsing (`unix:///path`,
//! `unix:///@abstract`), binding without stealing a live plugin's socket, and the
//! peer-credential check applied to every connection before any gRPC is spoken.

use futures::Stream;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (`unix:///@name`): no file, so never stale.
    Abstract(String),
}

/// Why an address or socket is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0:?} is not a socket address; use unix:///absolute/path.sock or unix:///@name")]
    Address(String),
    #[error("another process is serving on {0}; refusing to take its socket over")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot find this process's user id: {0}")]
    OwnUid(std::io::Error),
}

impl FromStr for ListenAddr {
    type Err = SocketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SocketError::Address(s.chars().take(200).collect());
        let rest = s.strip_prefix("unix://").ok_or_else(bad)?;
        if let Some(name) = rest.strip_prefix("/@") {
            if name.is_empty() || name.len() > 100 || name.contains('\0') {
                return Err(bad());
            }
            return Ok(ListenAddr::Abstract(name.to_string()));
        }
        let path = Path::new(rest);
        // sun_path holds 108 bytes including the terminating NUL.
        if !path.is_absolute() || rest.len() > 107 || rest.contains('\0') {
            return Err(bad());
        }
        Ok(ListenAddr::Path(path.to_path_buf()))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Path(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Abstract(n) => write!(f, "unix:///@{n}"),
        }
    }
}

/// A bound listener and the guard that removes its socket file.
pub struct BoundSocket {
    pub listener: UnixListener,
    pub guard: SocketGuard,
}

/// Removes the socket file (if any) when dropped.
pub struct SocketGuard {
    path: Option<PathBuf>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds `addr`. A socket file left by a dead plugin (nothing accepts on it) is
/// replaced; a live one is never taken over; anything that is not a socket is left
/// alone. The socket file is made mode 0660 (the peer-credential check is the gate;
/// the mode keeps other users from even connecting).
pub async fn bind(addr: &ListenAddr) -> Result<BoundSocket, SocketError> {
    match addr {
        ListenAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let bind_err = |source| SocketError::Bind {
                path: addr.to_string(),
                source,
            };
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(bind_err)?;
            let std_listener =
                std::os::unix::net::UnixListener::bind_addr(&sa).map_err(bind_err)?;
            std_listener.set_nonblocking(true).map_err(bind_err)?;
            let listener = UnixListener::from_std(std_listener).map_err(bind_err)?;
            Ok(BoundSocket {
                listener,
                guard: SocketGuard { path: None },
            })
        }
        ListenAddr::Path(path) => {
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
                    Ok(_) => return Err(SocketError::InUse(path.clone())),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        tracing::info!(socket = %path.display(), "replacing a stale socket file");
                        std::fs::remove_file(path).map_err(|source| SocketError::Bind {
                            path: path.display().to_string(),
                            source,
                        })?;
                    }
                    Err(source) => {
                        return Err(SocketError::Bind {
                            path: path.display().to_string(),
                            source,
                        })
                    }
                },
                Ok(_) => return Err(SocketError::NotASocket(path.clone())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SocketError::Bind {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
            let bind_err = |source| SocketError::Bind {
                path: path.display().to_string(),
                source,
            };
            let listener = UnixListener::bind(path).map_err(bind_err)?;
            let bound = BoundSocket {
                listener,
                guard: SocketGuard {
                    path: Some(path.clone()),
                },
            };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(bind_err)?;
            Ok(bound)
        }
    }
}

/// Which user ids may call the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    allowed: BTreeSet<u32>,
}

impl PeerPolicy {
    /// Exactly these uids.
    pub fn uids(allowed: impl IntoIterator<Item = u32>) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
        }
    }

    /// The default: this process's own uid and root.
    pub fn own_and_root() -> Result<Self, SocketError> {
        Ok(Self::uids([own_uid()?, 0]))
    }

    pub fn allows(&self, uid: u32) -> bool {
        self.allowed.contains(&uid)
    }

    pub fn allowed(&self) -> impl Iterator<Item = u32> + '_ {
        self.allowed.iter().copied()
    }

    /// Whether the caller of `request` (its connection's peer credentials) may call
    /// the plugin; if not, the `PERMISSION_DENIED` status that says why.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let uid = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        match uid {
            Some(uid) if self.allows(uid) => Ok(request),
            Some(uid) => Err(tonic::Status::permission_denied(format!(
                "uid {uid} may not call this KMS plugin (allowed: {:?}); set allow_uids (--allow-uid) to the uid kube-apiserver runs as",
                self.allowed
            ))),
            None => Err(tonic::Status::permission_denied(
                "the caller's uid is unknown (no peer credentials)",
            )),
        }
    }
}

/// This process's effective uid, without `unsafe` (the owner of `/proc/self`).
pub fn own_uid() -> Result<u32, SocketError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(SocketError::OwnUid)
}

/// Accepted connections. A peer whose uid is not allowed is logged and counted, and
/// its connection kept only so that each request on it is answered
/// `PERMISSION_DENIED` saying why ([`PeerPolicy::check`], applied before any request
/// is handled); a peer without credentials is closed at once. Accept errors are
/// logged and retried; the stream never ends.
pub fn incoming(
    listener: UnixListener,
    policy: PeerPolicy,
    on_reject: Arc<dyn Fn() + Send + Sync>,
) -> impl Stream<Item = Result<UnixStream, std::io::Error>> {
    futures::stream::unfold(
        (listener, policy, on_reject),
        |(listener, policy, on_reject)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match stream.peer_cred() {
                        Ok(cred) if policy.allows(cred.uid()) => {
                            return Some((Ok(stream), (listener, policy, on_reject)));
                        }
                        Ok(cred) => {
                            on_reject();
                            tracing::warn!(
                                uid = cred.uid(),
                                pid = cred.pid(),
                                "refused a caller: its uid is not allowed (allow_uids / --allow-uid); its requests are answered PERMISSION_DENIED"
                            );
                            return Some((Ok(stream), (listener, policy, on_reject)));
                        }
                        Err(e) => {
                            on_reject();
                            tracing::warn!(error = %e, "refused a connection: no peer credentials");
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        },
    )
}

/// Connects to a plugin socket (for the client and for tests).
pub async fn connect(addr: &ListenAddr) -> std::io::Result<UnixStream> {
    match addr {
        ListenAddr::Path(p) => UnixStream::connect(p).await,
        ListenAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let s = std::os::unix::net::UnixStream::connect_addr(&sa)?;
            s.set_nonblocking(true)?;
            UnixStream::from_std(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "unix:///run/kms.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Path("/run/kms.sock".into())
        );
        assert_eq!(
            "unix:///@palisade-kms".parse::<ListenAddr>().unwrap(),
            ListenAddr::Abstract("palisade-kms".into())
        );
        for bad in [
            "/run/kms.sock",
            "unix://relative",
            "tcp://x",
            "unix:///@",
            "",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let addr = ListenAddr::Path(path.clone());
        // A dead plugin's socket: bound with std, then the listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&addr).await.unwrap();
        assert!(matches!(bind(&addr).await, Err(SocketError::InUse(_))));
        drop(live);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(bind(&addr).await, Err(SocketError::NotASocket(_))));
    }
}
