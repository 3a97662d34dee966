//! TLS for the tests: a throw-away CA and server certificates written as PEM files (rcgen),
//! and a blocking rustls client that trusts that CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A CA and one server certificate for 127.0.0.1 / localhost, as files.
pub struct TestPki {
    pub cert: PathBuf,
    pub key: PathBuf,
    ca_der: CertificateDer<'static>,
    ca: rcgen::CertifiedKey,
}

impl TestPki {
    /// A new CA, and a server certificate signed by it, written into `dir`.
    pub fn new(dir: &Path) -> TestPki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sipfront test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca_der = ca_cert.der().clone();
        let pki = TestPki {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca_der,
            ca: rcgen::CertifiedKey {
                cert: ca_cert,
                key_pair: ca_key,
            },
        };
        pki.issue("sipfront one");
        pki
    }

    /// Writes a new server certificate (CN `cn`) and key over the files; returns the
    /// certificate (DER) to recognise it in a handshake.
    pub fn issue(&self, cn: &str) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.ca.cert, &self.ca.key_pair)
            .expect("server certificate");
        std::fs::write(&self.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&self.key, key.serialize_pem()).expect("write the key");
        cert.der().clone()
    }

    /// The CA in PEM, e.g. for a real client's trust store.
    pub fn ca_pem(&self) -> String {
        self.ca.cert.pem()
    }

    /// A client configuration trusting this CA (ring provider, like the proxy's).
    #[allow(deprecated)]
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .expect("CA into the root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Connects to `addr` over TLS (blocking, with read timeouts) and completes the
    /// handshake.
    pub fn connect(&self, addr: SocketAddr) -> TlsConn {
        let tcp = TcpStream::connect(addr).expect("TCP connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn = ClientConnection::new(self.client_config(), name).expect("TLS client");
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .expect("TLS handshake with sipfront");
        }
        TlsConn { s }
    }
}

/// A client TLS connection.
pub struct TlsConn {
    pub s: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsConn {
    /// The end-entity certificate the server presented.
    pub fn peer_cert(&self) -> Option<CertificateDer<'static>> {
        self.s
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }
}

impl Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.s.read(buf)
    }
}

impl Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}
