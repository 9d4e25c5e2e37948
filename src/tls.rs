//! TLS for the Riemann TCP listener (`--tls-tcp`) and for HTTP (`--https`): loading the PEM
//! certificate, key and optional client CA, the handshake timeout, and reloading them (on SIGHUP,
//! which `server` listens for).
//!
//! One set of files serves both listeners; each gets its own rustls configuration (HTTP
//! advertises `http/1.1` by ALPN, Riemann nothing). A reload builds both anew from the files and
//! swaps them in only when both built: handshakes from then on use the new certificate,
//! connections already established keep the session they have, and a bad new file logs an error
//! and leaves the old certificate serving. The handshake is bounded in time because a connection
//! holds its slot (`--max-tcp-connections`, `--max-http-connections`) from accept on: a client
//! that opens a socket and never finishes the handshake must not keep it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// The files a TLS configuration is built from (read again on every reload).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Failed handshakes are logged at info at most this often (each one at debug).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts TLS on one listener with whatever configuration is current; clones share it.
#[derive(Clone)]
pub struct TlsAcceptor {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    handshake_timeout: Duration,
    /// When a failed handshake was last logged at info, and how many were not since.
    failures: Arc<Mutex<(Option<Instant>, u64)>>,
}

impl TlsAcceptor {
    fn new(config: ServerConfig, handshake_timeout: Duration) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            handshake_timeout,
            failures: Arc::default(),
        }
    }

    fn replace(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }

    /// The server side of a handshake on `io` from `peer`, within the handshake timeout. A
    /// failure is logged (`what` names the listener): at info at most every
    /// [`FAILURE_LOG_INTERVAL`] — a refused client certificate is what an operator setting up
    /// mutual TLS looks for — and each one at debug (scanners knock all day).
    pub async fn accept<IO>(&self, io: IO, peer: SocketAddr, what: &str) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let error = match self.handshake(io).await {
            Ok(stream) => return Some(stream),
            Err(error) => error,
        };
        let now = Instant::now();
        let due = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let (last, skipped) = &mut *failures;
            if last.is_some_and(|last| now.duration_since(last) < FAILURE_LOG_INTERVAL) {
                *skipped += 1;
                None
            } else {
                *last = Some(now);
                Some(std::mem::take(skipped))
            }
        };
        match due {
            Some(skipped) => tracing::info!(
                %peer,
                %error,
                failed_since_last_line = skipped,
                "{what} TLS handshake failed"
            ),
            None => tracing::debug!(%peer, %error, "{what} TLS handshake failed"),
        }
        None
    }

    async fn handshake<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        let accepting = tokio_rustls::TlsAcceptor::from(config).accept(io);
        tokio::time::timeout(self.handshake_timeout, accepting)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no TLS handshake within {:?} (--tls-handshake-timeout)",
                        self.handshake_timeout
                    ),
                ))
            })
    }
}

/// The certificate of both TLS listeners, reloadable.
pub struct Certificates {
    files: TlsFiles,
    riemann: TlsAcceptor,
    http: TlsAcceptor,
}

impl Certificates {
    /// Reads and checks the files; the error is one line naming the file and what is wrong.
    pub fn load(files: TlsFiles, handshake_timeout: Duration) -> Result<Self, String> {
        let (riemann, http) = build(&files)?;
        Ok(Self {
            files,
            riemann: TlsAcceptor::new(riemann, handshake_timeout),
            http: TlsAcceptor::new(http, handshake_timeout),
        })
    }

    /// Reads the files again; on success new handshakes use them, on error nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let (riemann, http) = build(&self.files)?;
        self.riemann.replace(riemann);
        self.http.replace(http);
        Ok(())
    }

    /// [`Self::reload`] for SIGHUP, with one log line saying what happened; whether it worked.
    pub(crate) fn reload_logged(&self) -> bool {
        match self.reload() {
            Ok(()) => {
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "SIGHUP: TLS certificate reloaded; new handshakes use it"
                );
                true
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "SIGHUP: TLS certificate not reloaded; still serving the previous one"
                );
                false
            }
        }
    }

    pub fn riemann(&self) -> TlsAcceptor {
        self.riemann.clone()
    }

    pub fn http(&self) -> TlsAcceptor {
        self.http.clone()
    }
}

/// The Riemann and the HTTP server configurations from the files.
fn build(files: &TlsFiles) -> Result<(ServerConfig, ServerConfig), String> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = crate::startup_file::read(&files.key)
        .map_err(|error| format!("--tls-key {}: {error}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|error| {
        format!(
            "--tls-key {}: no readable PEM private key ({error})",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .map_err(|error| format!("--tls-client-ca {}: {error}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("--tls-client-ca {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let riemann = builder.with_single_cert(certs, key).map_err(|error| {
        format!(
            "--tls-cert {} with --tls-key {}: {error}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let mut http = riemann.clone();
    // statecast serves HTTP/1 only (websockets upgrade from it).
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((riemann, http))
}

/// Every certificate of a PEM file; an unreadable file, one without any, or one past
/// [`crate::startup_file::MAX_STARTUP_FILE_BYTES`] is an error.
pub(crate) fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = crate::startup_file::read(path)
        .map_err(|error| format!("{flag} {}: {error}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{flag} {}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}
