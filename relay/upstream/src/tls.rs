//! TLS to `https://` origins (`relay_config::OriginTls`): one rustls client configuration
//! per origin, its roots (the system's, or the origin's `tls_ca_file`) and the name its
//! certificate must be valid for, sent in SNI. The pooled client's connector
//! ([`Tls::connector`]) and an upload's own connection ([`Tls::connect`]) both use it;
//! sessions are resumed from rustls's in-memory cache, and connections are reused by the
//! pool as for `http://`. rustls on `ring`: no OpenSSL.

use crate::stray::{Guarded, Strays};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use relay_config::OriginTls;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector whose whole connect (TCP, then the TLS handshake) has a time bound, and
/// whose connections are checked for stray bytes before each request
/// ([`crate::stray::Guarded`]).
#[derive(Clone)]
pub struct Timed<C> {
    inner: C,
    timeout: Duration,
    /// Its origin's stray bytes.
    strays: Arc<Strays>,
}

impl<C> tower_service::Service<http::Uri> for Timed<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Guarded<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        let strays = self.strays.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(done) => done.map(|io| Guarded::new(io, strays)).map_err(Into::into),
                Err(_) => Err(format!("no connection within {} ms", timeout.as_millis()).into()),
            }
        })
    }
}

/// Why an origin's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error(
        "no system CA certificate could be loaded (install Debian's ca-certificates, or set \
         tls_ca_file)"
    )]
    NoSystemRoots,
    #[error("tls_server_name {0:?} is not a DNS name or an IP address")]
    Name(String),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An origin's TLS: its client configuration and the name verified.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Tls {
    /// The configuration `tls` asks for: roots read now (a CA file, or the system's).
    pub fn new(tls: &OriginTls) -> Result<Tls, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = if tls.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(tls)?)
                .with_no_client_auth()
        };
        let name = ServerName::try_from(tls.server_name.clone())
            .map_err(|_| TlsError::Name(tls.server_name.clone()))?;
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// The pooled client's connector: TCP as `http` connects it, then TLS with this
    /// origin's name for `https` URIs (an `http` one stays plain), both within `timeout`
    /// (an origin that takes the connection and stalls its handshake fails to connect, and
    /// counts against its health, like one that refuses it).
    pub fn connector(
        tls: Option<&Tls>,
        http: HttpConnector,
        timeout: Duration,
        strays: Arc<Strays>,
    ) -> Timed<HttpsConnector<HttpConnector>> {
        let (config, name) = match tls {
            Some(t) => ((*t.config).clone(), Some(t.name.clone())),
            // (Never used: an http origin's URIs are http.)
            None => (plain_config(), None),
        };
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        Timed {
            inner: builder.enable_http1().wrap_connector(http),
            timeout,
            strays,
        }
    }

    /// TLS over `tcp`, a connection of its own (an upload's).
    pub async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
    }
}

/// rustls's `ring` provider. rustls now prefers `aws-lc-rs`, whose post-quantum key
/// exchange `ring` lacks; it would add a C and CMake build of its own to every machine
/// that builds relay, for a link between a relay and its origin.
#[expect(
    deprecated,
    reason = "ring's provider: no post-quantum key exchange, said above"
)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A configuration trusting nothing, for the connector of an `http://` origin.
fn plain_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            // (ring's provider supports the default versions; not reached.)
            ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// The roots `tls` trusts: every certificate of its CA file, else the system's.
fn roots(tls: &OriginTls) -> Result<rustls::RootCertStore, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match tls.ca_file.as_ref() {
        Some(path) => {
            let ca_error = |message: String| TlsError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ca_error(format!("a certificate it holds: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(roots)
}

/// `tls_insecure_skip_verify`: any certificate, for any name. The handshake's signatures
/// are still checked (the peer holds the key of the certificate it sent); who it is, is not.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
