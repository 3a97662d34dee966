//! TLS for the stream listen addresses (`[listen] tls`), with rustls (ring provider; TLS 1.2
//! and 1.3, no OpenSSL).
//!
//! One [`TlsContext`] serves every worker: its `rustls::ServerConfig` resolves the server
//! certificate through a [`CertStore`] whose current key is swapped atomically by
//! [`TlsContext::reload`] (SIGHUP, `sipfront ctl reload`): handshakes that start after a
//! reload get the new certificate, established connections keep their session. A reload
//! that cannot read, parse or match the new certificate and key fails with a [`TlsError`]
//! and leaves the old one in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

/// `[tls]`: the certificate of the TLS listen addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, end-entity certificate first.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM file with CA certificates: when set, clients must present a certificate signed
    /// by one of them.
    pub ca: Option<PathBuf>,
    /// Oldest protocol version accepted: `"1.2"` or `"1.3"`.
    pub min_version: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            ca: None,
            min_version: "1.2".to_owned(),
        }
    }
}

/// Why a TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("config key `tls.{0}` is needed by the TLS listen addresses")]
    Missing(&'static str),
    #[error("config key `tls.min_version`: {0:?} is not \"1.2\" or \"1.3\"")]
    MinVersion(String),
    #[error("config key `tls.{key}`: cannot read {path}: {source}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("config key `tls.{key}`: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error(
        "config keys `tls.cert` and `tls.key`: the key does not belong to the certificate ({0})"
    )]
    Mismatch(rustls::Error),
    #[error("config key `tls.ca`: {0}")]
    Ca(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// Checks what can be checked without reading the files.
    pub fn validate(&self) -> Result<(), TlsError> {
        match self.min_version.as_str() {
            "1.2" | "1.3" => Ok(()),
            other => Err(TlsError::MinVersion(other.to_owned())),
        }
    }

    fn paths(&self) -> Result<(&Path, &Path), TlsError> {
        let cert = self.cert.as_deref().ok_or(TlsError::Missing("cert"))?;
        let key = self.key.as_deref().ok_or(TlsError::Missing("key"))?;
        Ok((cert, key))
    }
}

/// The ring provider: it builds with a C compiler alone (aws-lc-rs, rustls' default, needs
/// cmake). rustls 0.23.48 deprecates it for lacking post-quantum key exchange, which SIP
/// phones do not offer yet; revisit when they do.
///
/// Key exchange groups in the order phones' TLS stacks (OpenSSL, mbedTLS, GnuTLS) prefer:
/// X25519 first. ring's default list puts P-384 first, whose ECDH costs about ten times
/// X25519's here (docs/benchmarks.md, "Transports"); the order decides only for a client that
/// sends key shares for several groups — a client's single share is taken as it is.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    Arc::new(CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    })
}

/// The certificate chain and key of `cfg`, checked to belong together.
fn load_key(cfg: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (cert_path, key_path) = cfg.paths()?;
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            key: "cert",
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            key: "cert",
            path: cert_path.to_owned(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Pem {
        key: "key",
        path: key_path.to_owned(),
        source,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Mismatch)?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(TlsError::Mismatch)?;
    Ok(ck)
}

/// A certificate and key read and checked by [`TlsContext::prepare`], not served yet.
#[derive(Debug)]
pub struct NewCert(Arc<CertifiedKey>);

/// The server certificate in force: what every handshake is given.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The TLS server side shared by every worker.
#[derive(Debug)]
pub struct TlsContext {
    config: Arc<ServerConfig>,
    certs: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
}

impl TlsContext {
    /// Reads the certificate, key and (optionally) client CA files of `cfg`.
    pub fn load(cfg: &TlsConfig) -> Result<TlsContext, TlsError> {
        cfg.validate()?;
        let provider = provider();
        let key = load_key(cfg, &provider)?;
        let certs = Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        });
        let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version.as_str() {
            "1.3" => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?;
        let builder = match &cfg.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|source| TlsError::Pem {
                        key: "ca",
                        path: ca.clone(),
                        source,
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::Empty {
                        key: "ca",
                        path: ca.clone(),
                        what: "usable CA certificate",
                    });
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_cert_resolver(certs.clone());
        Ok(TlsContext {
            config: Arc::new(config),
            certs,
            provider,
        })
    }

    /// Reads `cfg`'s certificate and key again and checks they match, without using them
    /// yet: [`TlsContext::install`] serves them. (`min_version` and `ca` need a restart.)
    pub fn prepare(&self, cfg: &TlsConfig) -> Result<NewCert, TlsError> {
        Ok(NewCert(Arc::new(load_key(cfg, &self.provider)?)))
    }

    /// Serves `cert` to every handshake from now on; established connections keep theirs.
    pub fn install(&self, cert: NewCert) {
        self.certs.current.store(cert.0);
    }

    /// [`TlsContext::prepare`] then [`TlsContext::install`]: on error the certificate in
    /// force stays.
    pub fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let cert = self.prepare(cfg)?;
        self.install(cert);
        Ok(())
    }

    /// The server configuration every connection is built with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The end-entity certificate in force (DER), e.g. to check a reload in tests.
    pub fn current_cert(&self) -> Option<CertificateDer<'static>> {
        self.certs.current.load().cert.first().cloned()
    }
}
