//! The KMIP listener: TLS 1.2 or 1.3 (rustls), client certificates required and verified
//! against the client CA, a thread per connection up to `MAX_CONNECTIONS`, and timeouts so
//! that a silent or slow peer cannot hold a thread for ever.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::policy::{Policy, PolicyError};
use super::ttlv::{self, HEADER_LEN};
use super::Client;
use crate::service::Kms;

/// Connections served at once; one more is closed as soon as it is accepted. Backup
/// products keep a handful open.
pub const MAX_CONNECTIONS: usize = 64;
/// A read or write waits at most this long: the handshake, each part of a request, and the
/// idle time between requests (clients reconnect).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub policy: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("KMIP: cannot read {what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("KMIP: {0}")]
    Tls(String),
    #[error("KMIP: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

fn pem_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Pem {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE in it"));
    }
    Ok(certs)
}

/// The TLS configuration: our certificate, and client certificates required and verified.
pub fn tls_config(o: &Options) -> Result<Arc<ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates("the client CA", &o.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| pem_error("the client CA", &o.client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ServerError::Tls(format!("client CA {}: {e}", o.client_ca.display())))?;
    let certs = certificates("the server certificate", &o.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&o.key).map_err(|e| pem_error("the server key", &o.key, e))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("server certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Everything checked and bound, not yet serving: `kmsfs mount` prepares before it creates
/// or opens anything, so that a bad certificate, policy or address is refused first.
#[derive(Debug)]
pub struct Prepared {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    policy: Arc<Policy>,
    addr: SocketAddr,
}

/// Reads the certificates, key and policy, and binds.
pub fn prepare(o: &Options) -> Result<Prepared, ServerError> {
    let config = tls_config(o)?;
    let policy = match &o.policy {
        Some(p) => Policy::load(p)?,
        None => {
            log::warn!(
                "KMIP: no --kmip-policy: every client certificate signed by {} may read, create and change every key",
                o.client_ca.display()
            );
            Policy::open_to_all()
        }
    };
    let bind_error = |source| ServerError::Bind {
        addr: o.listen,
        source,
    };
    let listener = TcpListener::bind(o.listen).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok(Prepared {
        listener,
        config,
        policy: Arc::new(policy),
        addr,
    })
}

impl Prepared {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves in the background from now on (the socket already listens: a client that
    /// connected since `prepare` is served too).
    pub fn start(self, kms: Arc<Kms>) -> Result<SocketAddr, ServerError> {
        let Prepared {
            listener,
            config,
            policy,
            addr,
        } = self;
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("kmip-accept".into())
            .spawn(move || accept_loop(listener, config, kms, policy, open))
            .map_err(|e| ServerError::Tls(format!("cannot start the listener thread: {e}")))?;
        log::info!("KMIP: listening on {addr}");
        Ok(addr)
    }
}

fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    kms: Arc<Kms>,
    policy: Arc<Policy>,
    open: Arc<AtomicUsize>,
) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("KMIP: accept failed: {e}");
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            log::warn!("KMIP: {MAX_CONNECTIONS} connections open; refused {peer:?}");
            continue;
        }
        let (config, kms, policy, open2) =
            (config.clone(), kms.clone(), policy.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("kmip-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, config, &kms, &policy) {
                    log::info!("KMIP: connection from {peer:?} ended: {e}");
                }
                open2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
            log::warn!("KMIP: cannot start a thread for {peer:?}");
        }
    }
}

/// One connection: the handshake, then request after request until the peer closes.
fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    kms: &Kms,
    policy: &Policy,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let _ = tcp.set_nodelay(true);
    let conn = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        // A certificate the client CA did not sign fails here.
        tls.conn.complete_io(&mut tls.sock).inspect_err(|e| {
            log::warn!(
                "KMIP: TLS handshake with {:?} failed: {e}",
                tls.sock.peer_addr().ok()
            )
        })?;
    }
    let client = client_of(&tls.conn);
    log::debug!("KMIP: client {:?} connected", client.subject);
    loop {
        let mut header = [0u8; HEADER_LEN];
        if !read_full(&mut tls, &mut header)? {
            return Ok(());
        }
        let answer = match ttlv::message_len(&header) {
            Err(e) => {
                log::warn!("KMIP client {:?}: {e}", client.subject);
                super::Answer::unreadable(e)
            }
            Ok(total) => {
                let mut msg = vec![0u8; total];
                msg[..HEADER_LEN].copy_from_slice(&header);
                if !read_full(&mut tls, &mut msg[HEADER_LEN..])? {
                    return Ok(());
                }
                let answer = super::answer(kms, policy, &client, &msg);
                zeroize::Zeroize::zeroize(&mut msg);
                answer
            }
        };
        tls.write_all(&answer.bytes)?;
        tls.flush()?;
        if answer.close {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return Ok(());
        }
    }
}

/// Fills `buf`; false if the peer closed before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            // Most clients close the TCP connection without a TLS close_notify (PyKMIP
            // does): between messages that is an ordinary end.
            Err(e) if at == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn client_of(conn: &ServerConnection) -> Client {
    let cert = conn.peer_certificates().and_then(|c| c.first());
    let (subject, cn) = cert.map_or((None, None), |c| super::subject::of_certificate(c));
    Client {
        subject: subject.unwrap_or_else(|| "(unreadable certificate subject)".into()),
        cn,
    }
}
