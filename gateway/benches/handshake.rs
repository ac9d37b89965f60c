//! The floor under "server CPU per connection set-up": the server's share of a full
//! TLS 1.3 handshake with the appliance's own configuration (ECDSA P-256 certificate,
//! the suite and ticket settings of `tls::server_config`), done in memory — no sockets,
//! no kernel, no login. Only the server's calls are timed; the client runs between
//! them untimed. Also the two public-key operations it cannot avoid.
//!
//! `cargo bench -p gateway --bench handshake`

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConnection};

/// Accepts any certificate: the bench measures the server, not the client's checks.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// One full handshake; returns the time spent in the server's calls.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> Duration {
    let mut c =
        ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut server_time = Duration::ZERO;
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    server_time += t.elapsed();
    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let t = Instant::now();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        server_time += t.elapsed();
        let mut rd = &out[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
            break;
        }
    }
    assert!(!s.is_handshaking(), "handshake did not finish");
    // One application record each way, as a login would.
    c.writer().write_all(&[0u8; 64]).unwrap();
    buf.clear();
    c.write_tls(&mut buf).unwrap();
    let t = Instant::now();
    let mut rd = &buf[..];
    s.read_tls(&mut rd).unwrap();
    s.process_new_packets().unwrap();
    let mut plain = [0u8; 64];
    let _ = s.reader().read(&mut plain);
    s.writer().write_all(&[0u8; 32]).unwrap();
    let mut out = Vec::new();
    s.write_tls(&mut out).unwrap();
    server_time + t.elapsed()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = gateway::tls::Identity::self_signed_in(dir.path(), &[]).unwrap();
    let server = gateway::tls::server_config(id).unwrap();
    let client = client_config();
    c.bench_function("server side of a full TLS 1.3 handshake (in memory)", |b| {
        b.iter_custom(|n| (0..n).map(|_| handshake(&server, &client)).sum())
    });

    use aws_lc_rs::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
    use aws_lc_rs::rand::SystemRandom;
    let rng = SystemRandom::new();
    let peer = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
    let peer_pub = peer.compute_public_key().unwrap().as_ref().to_vec();
    c.bench_function("X25519 key generation + agreement", |b| {
        b.iter(|| {
            let k = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
            let _ = k.compute_public_key().unwrap();
            agree_ephemeral(k, UnparsedPublicKey::new(&X25519, &peer_pub), (), |s| {
                Ok(s.len())
            })
            .unwrap()
        })
    });
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let msg = [7u8; 130];
    c.bench_function("ECDSA P-256 signature", |b| {
        b.iter(|| key.sign(&rng, &msg).unwrap())
    });
}

criterion_group! {
    name = handshake_benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(handshake_benches);
