//! TLS to the database, for a connection string with `sslmode=require` (a managed
//! PostgreSQL): rustls with the ring provider, as the server's own HTTPS. The database's
//! certificate is verified, name and chain, against Mozilla's roots (webpki-roots) and the PEM
//! certificates in `$VINE_STORE_CA` (a provider's own CA, such as Amazon RDS's bundle) —
//! stricter than libpq's `require`, which encrypts without verifying. Without `require` the
//! connection is not encrypted (`prefer`, the default, and `disable`); a unix socket never is.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The variable naming a PEM file of extra trusted certificates for the database.
pub(crate) const CA_ENV: &str = "VINE_STORE_CA";

/// The TLS connector: Mozilla's roots and `$VINE_STORE_CA`'s certificates.
pub(crate) fn connector() -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = std::env::var_os(CA_ENV).filter(|p| !p.is_empty()) {
        let path = Path::new(&path);
        let bad = |why: String| Error::Invalid(format!("{CA_ENV} {}: {why}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("is not PEM ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("holds a certificate rustls refuses ({e})")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Protocol(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
