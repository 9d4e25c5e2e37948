//! TLS to Alertmanagers with `https://` URLs: which certificate authorities statecast trusts
//! for them. `--alertmanager-ca FILE` (PEM) when the Alertmanagers' certificates come from a
//! private CA; otherwise the system's store (Debian's `ca-certificates` bundle). Built once at
//! start: an unreadable or empty file is a start error naming the flag, never a sender that
//! fails every POST.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The system's certificate authorities (Debian's `ca-certificates`).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client side of every `https://` Alertmanager connection: the authorities of `ca`
/// (`--alertmanager-ca`), or of [`SYSTEM_CA_FILE`]; HTTP/1.1 offered by ALPN.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let (path, flag) = match ca {
        Some(path) => (path, "--alertmanager-ca"),
        None => (
            Path::new(SYSTEM_CA_FILE),
            "the system's CA store (for an https --alertmanager; --alertmanager-ca names another)",
        ),
    };
    let mut roots = RootCertStore::empty();
    // A bundle may hold a certificate rustls cannot use; the others still count.
    let (added, _) = roots.add_parsable_certificates(crate::tls::read_certs(path, flag)?);
    if added == 0 {
        return Err(format!(
            "{flag} {}: no usable CA certificate in it",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
