//! TLS configuration: certificates from PEM files (ECDSA or RSA), or a self-signed
//! ECDSA P-256 certificate generated into the data directory on first start; TLS 1.3
//! and 1.2 with the aws-lc-rs provider; stateless session tickets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

/// Certificate chain and key as loaded.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a PEM chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |e: rustls::pki_types::pem::Error| TlsError::File {
                path,
                why: e.to_string(),
            }
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(file_err(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(file_err(cert))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(file_err(key))?;
        Ok(Identity { chain, key })
    }

    /// `dir/cert.pem` and `dir/key.pem`, generated (self-signed, ECDSA P-256, for
    /// `localhost` and the given names) if they do not exist yet. Returns whether they
    /// were generated.
    pub fn self_signed_in(dir: &Path, names: &[String]) -> Result<(Identity, bool), TlsError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Ok((Identity::from_pem_files(&cert, &key)?, false));
        }
        let mut sans = vec!["localhost".to_string()];
        sans.extend(names.iter().cloned());
        let ck = rcgen::generate_simple_self_signed(sans)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let write = |path: &Path, text: String| {
            std::fs::write(path, text).map_err(|e| TlsError::File {
                path: path.to_owned(),
                why: e.to_string(),
            })
        };
        write(&key, ck.signing_key.serialize_pem())?;
        restrict(&key)?;
        write(&cert, ck.cert.pem())?;
        Ok((Identity::from_pem_files(&cert, &key)?, true))
    }

    /// SHA-256 of the leaf certificate, as clients pin it: 64 hex digits.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(unix)]
fn restrict(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        TlsError::File {
            path: path.to_owned(),
            why: e.to_string(),
        }
    })
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> Result<(), TlsError> {
    Ok(())
}

/// The server configuration every connection of a gateway shares.
pub fn server_config(identity: Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // AES-128-GCM first, whatever the client's order: its SHA-256 key schedule runs on
    // the CPU's SHA extensions, SHA-384's does not. Measured: the handshake's hashing
    // went from ~20 % of the server's set-up CPU to a few percent (BENCHMARKS.md).
    // Every suite the client offers that rustls supports is still accepted.
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    // One resumption ticket per full handshake (rustls sends two by default): a phone
    // reconnects from one place at a time, and each ticket costs a key derivation and
    // an encryption.
    config.send_tls13_tickets = 1;
    // The unbuffered API never buffers: no limits to set on rustls' own buffers.
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, made) = Identity::self_signed_in(dir.path(), &[]).unwrap();
        assert!(made);
        let (b, made) = Identity::self_signed_in(dir.path(), &[]).unwrap();
        assert!(!made);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        server_config(b).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a pem").unwrap();
        let e = Identity::from_pem_files(&cert, &dir.path().join("nope.pem"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let e = Identity::from_pem_files(&dir.path().join("missing.pem"), &cert)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
