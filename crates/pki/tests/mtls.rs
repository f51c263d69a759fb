//! Real TLS handshakes on 127.0.0.1 with the configurations every Palisade process uses:
//! the CA signature says a peer is ours, the role says what it is.

use std::error::Error as StdError;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use palisade_pki::{
    client_config, crypto_provider, init_ca, issue, load_roots, require_role, server_config,
    CaPaths, CertName, ClientAuth, Error, IssuedPaths, Role,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

type TestResult = Result<(), Box<dyn StdError>>;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A PKI directory with a CA and one certificate per role, all named `<role>-1`.
struct Pki {
    _tmp: tempfile::TempDir,
    ca: CaPaths,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Result<Self, Box<dyn StdError>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let ca = init_ca(&dir, false)?;
        for role in Role::ALL {
            issue(&dir, role, &Self::name(role)?, &[], 30, false)?;
        }
        Ok(Pki { _tmp: tmp, ca, dir })
    }

    fn name(role: Role) -> Result<CertName, Error> {
        format!("{role}-1").parse()
    }

    fn cert(&self, role: Role) -> Result<IssuedPaths, Error> {
        Ok(IssuedPaths::in_dir(&self.dir, role, &Self::name(role)?))
    }

    fn server(&self, role: Role, auth: ClientAuth) -> Result<ServerConfig, Error> {
        let own = self.cert(role)?;
        server_config(&self.ca.cert, &own.cert, &own.key, auth)
    }

    fn client(&self, role: Role, server_roles: &[Role]) -> Result<ClientConfig, Error> {
        let own = self.cert(role)?;
        client_config(&self.ca.cert, &own.cert, &own.key, server_roles)
    }
}

/// What each side saw of one connection.
struct Outcome {
    /// The role `require_role` returned on the server, or why the server refused.
    server: Result<Role, String>,
    /// The role `require_role` returned on the client after a full exchange, or why it failed.
    client: Result<Role, String>,
}

/// Runs a server on 127.0.0.1 that completes the handshake, calls `require_role` with
/// `allowed`, and answers one message; connects a client to it as `server_name`.
fn connect(
    server_cfg: ServerConfig,
    allowed: Vec<Role>,
    client_cfg: ClientConfig,
    server_name: &str,
) -> Result<Outcome, Box<dyn StdError>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || -> Result<Role, String> {
        let (mut sock, _) = listener.accept().map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut conn = ServerConnection::new(Arc::new(server_cfg)).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        let role = require_role(conn.peer_certificates(), &allowed).map_err(|e| e.to_string())?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).map_err(|e| e.to_string())?;
        tls.write_all(b"pong").map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        Ok(role)
    });

    let client = (|| -> Result<Role, String> {
        let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let mut conn =
            ClientConnection::new(Arc::new(client_cfg), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).map_err(|e| e.to_string())?;
        if &pong != b"pong" {
            return Err(format!("unexpected answer {pong:?}"));
        }
        // All Palisade servers carry a role; the client can read it the same way.
        require_role(conn.peer_certificates(), &Role::ALL).map_err(|e| e.to_string())
    })();

    let server = server.join().map_err(|_| "server thread panicked")?;
    Ok(Outcome { server, client })
}

/// The agent's server: only the gateway may call it.
fn agent_server(pki: &Pki) -> Result<ServerConfig, Error> {
    pki.server(Role::Agent, ClientAuth::Required(vec![Role::Gateway]))
}

#[test]
fn server_requiring_gateway_accepts_a_gateway_certificate() -> TestResult {
    let pki = Pki::new()?;
    for server_name in ["localhost", "127.0.0.1", "::1", "agent-1"] {
        // The listener is on 127.0.0.1; each name is only checked against the SANs.
        let out = connect(
            agent_server(&pki)?,
            vec![Role::Gateway],
            pki.client(Role::Gateway, &[Role::Agent])?,
            server_name,
        )?;
        assert_eq!(
            out.server,
            Ok(Role::Gateway),
            "server side, name {server_name}"
        );
        assert_eq!(
            out.client,
            Ok(Role::Agent),
            "client side, name {server_name}"
        );
    }
    Ok(())
}

#[test]
fn server_requiring_gateway_refuses_an_operator_certificate_by_role() -> TestResult {
    let pki = Pki::new()?;
    let out = connect(
        agent_server(&pki)?,
        vec![Role::Gateway],
        pki.client(Role::Operator, &[Role::Agent])?,
        "localhost",
    )?;
    let err = out.server.err().unwrap_or_default();
    assert!(
        // rustls shows the verifier's error in Debug form.
        err.contains("RoleNotAllowed") && err.contains("Operator"),
        "the handshake must fail on the role check, got: {err}"
    );
    assert!(out.client.is_err(), "the operator must not get an answer");
    Ok(())
}

#[test]
fn require_role_refuses_a_wrong_role_even_when_the_handshake_admits_it() -> TestResult {
    // A server that admits any CA-signed client still refuses the role after the handshake.
    let pki = Pki::new()?;
    let out = connect(
        pki.server(Role::Gateway, ClientAuth::Optional)?,
        vec![Role::Gateway],
        pki.client(Role::Operator, &[Role::Gateway])?,
        "localhost",
    )?;
    let err = out.server.err().unwrap_or_default();
    assert!(err.contains("role `operator`"), "got: {err}");
    assert!(out.client.is_err());
    Ok(())
}

#[test]
fn server_requiring_gateway_refuses_a_gateway_certificate_from_another_ca() -> TestResult {
    let pki = Pki::new()?;
    let stranger = Pki::new()?;
    // The stranger trusts our CA for the server, but its own certificate is from its CA.
    let own = stranger.cert(Role::Gateway)?;
    let client = client_config(&pki.ca.cert, &own.cert, &own.key, &[Role::Agent])?;
    let out = connect(
        agent_server(&pki)?,
        vec![Role::Gateway],
        client,
        "localhost",
    )?;
    let err = out.server.err().unwrap_or_default();
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature") || err.contains("issuer"),
        "the chain check must fail, got: {err}"
    );
    assert!(out.client.is_err());
    Ok(())
}

#[test]
fn server_requiring_gateway_refuses_a_client_without_certificate() -> TestResult {
    let pki = Pki::new()?;
    let anonymous = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(&pki.ca.cert)?)
        .with_no_client_auth();
    let out = connect(
        agent_server(&pki)?,
        vec![Role::Gateway],
        anonymous,
        "localhost",
    )?;
    let err = out.server.err().unwrap_or_default();
    assert!(err.to_lowercase().contains("no certificate"), "got: {err}");
    assert!(out.client.is_err());
    Ok(())
}

#[test]
fn optional_client_auth_admits_no_certificate_but_require_role_refuses_it() -> TestResult {
    let pki = Pki::new()?;
    let anonymous = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(&pki.ca.cert)?)
        .with_no_client_auth();
    let out = connect(
        pki.server(Role::Gateway, ClientAuth::Optional)?,
        vec![Role::Operator],
        anonymous,
        "localhost",
    )?;
    let err = out.server.err().unwrap_or_default();
    assert!(err.contains("no client certificate"), "got: {err}");
    Ok(())
}

#[test]
fn client_refuses_a_server_of_the_wrong_role() -> TestResult {
    // Every serving certificate names localhost; the role tells the log from the agent.
    let pki = Pki::new()?;
    let out = connect(
        pki.server(Role::Log, ClientAuth::Required(vec![Role::Gateway]))?,
        vec![Role::Gateway],
        pki.client(Role::Gateway, &[Role::Agent])?,
        "localhost",
    )?;
    let err = out.client.err().unwrap_or_default();
    assert!(
        err.contains("RoleNotAllowed") && err.contains("Log"),
        "got: {err}"
    );
    assert!(out.server.is_err());
    Ok(())
}

#[test]
fn client_refuses_a_server_name_not_in_the_certificate() -> TestResult {
    let pki = Pki::new()?;
    let out = connect(
        agent_server(&pki)?,
        vec![Role::Gateway],
        pki.client(Role::Gateway, &[Role::Agent])?,
        "agent-2",
    )?;
    assert!(out.client.is_err());
    assert!(out.server.is_err());
    Ok(())
}

#[test]
fn configurations_refuse_certificates_for_the_wrong_side_and_empty_role_lists() -> TestResult {
    let pki = Pki::new()?;
    assert!(matches!(
        pki.server(Role::Operator, ClientAuth::Optional),
        Err(Error::WrongSide {
            role: Role::Operator,
            side: "server",
            ..
        })
    ));
    assert!(matches!(
        pki.client(Role::Witness, &[Role::Log]),
        Err(Error::WrongSide {
            role: Role::Witness,
            side: "client",
            ..
        })
    ));
    assert!(matches!(
        pki.server(Role::Agent, ClientAuth::Required(vec![])),
        Err(Error::NoRolesAllowed)
    ));
    assert!(matches!(
        pki.client(Role::Log, &[]),
        Err(Error::NoRolesAllowed)
    ));
    // A key that is not the certificate's is refused when the configuration is built.
    let log = pki.cert(Role::Log)?;
    let witness = pki.cert(Role::Witness)?;
    let mismatched = server_config(&pki.ca.cert, &log.cert, &witness.key, ClientAuth::Optional);
    assert!(matches!(mismatched, Err(Error::Tls(_))), "{mismatched:?}");
    let missing = server_config(
        Path::new("/nonexistent/ca.crt"),
        &log.cert,
        &log.key,
        ClientAuth::Optional,
    );
    assert!(matches!(missing, Err(Error::Io { .. })));
    Ok(())
}
