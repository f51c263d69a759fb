//! Serving an axum router over TLS, with the caller's certificate role available to
//! handlers.
//!
//! Each accepted connection is handshaken with rustls; the peer's certificate (if it
//! sent one — the chain is checked by the `ServerConfig`) is turned into a [`Peer`]
//! and attached to every request of that connection as an extension. Handlers then
//! decide by role: a route for writers requires `Peer::role` to be gateway or agent.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use palisade_pki::{CertName, Role};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// Who is calling, from their client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Role and name from the certificate; `None` if no certificate was sent.
    pub identity: Option<(Role, CertName)>,
    /// The certificates the peer sent, its own first (empty if none): for a service
    /// that checks more than the role (the gateway, for operator certificates).
    pub chain: Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl Peer {
    pub fn role(&self) -> Option<Role> {
        self.identity.as_ref().map(|(r, _)| *r)
    }

    /// `true` if the caller holds a certificate of one of `roles`.
    pub fn is(&self, roles: &[Role]) -> bool {
        self.role().is_some_and(|r| roles.contains(&r))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; connections in flight
/// are then given a moment to finish.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        // Small writes go out at once: with Nagle's algorithm, an answer written after
        // the TLS 1.3 session tickets waits for the client's delayed ACK (40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    // A bare connect-and-close (a port probe) is not worth a line.
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        tracing::debug!(peer = %addr, "connection closed before TLS");
                    } else {
                        tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                    }
                    return;
                }
                Err(_) => return,
            };
            let certs = tls.get_ref().1.peer_certificates();
            let identity = certs
                .and_then(|certs| certs.first())
                .and_then(|leaf| palisade_pki::peer_role(leaf.as_ref()).ok());
            let chain = Arc::new(
                certs
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default(),
            );
            let peer = Peer {
                addr,
                identity,
                chain,
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    let mut router = router.clone();
                    async move { router.call(req).await }
                },
            );
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
}
