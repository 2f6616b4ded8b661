//! TLS to the PostgreSQL server, set in the URL with libpq's parameters, so that a lab writes
//! what it would write for `psql`:
//!
//! | `sslmode`                 | TLS                     | the server's certificate           |
//! |---------------------------|-------------------------|------------------------------------|
//! | `disable`                 | never                   | -                                  |
//! | `prefer` (default on TCP) | when the server has it  | checked against `sslrootcert` if   |
//! | `require`                 | always                  | one is given (as libpq), else not  |
//! | `verify-ca`               | always                  | chains to `sslrootcert`            |
//! | `verify-full`             | always                  | chains to `sslrootcert`, names the host |
//!
//! Over a unix socket PostgreSQL has no TLS: without `sslmode` such a URL connects as before.
//! tokio-postgres knows neither `sslrootcert` nor the `verify-*` modes, so both parameters are
//! taken out of the URL here and only the rest goes to [`postgres::Config`]. The TLS stack is
//! rustls with the ring provider, as for the hub's own gRPC TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::Client;
use postgres::config::Host;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::StoreError;

/// A URL's `sslmode` or `sslrootcert` that cannot work, in words for the person who wrote it.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    /// Not one of libpq's modes.
    #[error("sslmode={0} is not one of disable, prefer, require, verify-ca, verify-full")]
    UnknownMode(String),
    /// `verify-ca` or `verify-full` without the CA to verify against.
    #[error(
        "sslmode={0} checks the server's certificate against the lab's CA, but the URL names no \
         CA: add sslrootcert=FILE, the PEM file of the CA that signed the PostgreSQL server's \
         certificate"
    )]
    NoRootCert(&'static str),
    /// TLS asked for on a unix socket, where PostgreSQL never speaks it.
    #[error(
        "sslmode={0} asks for TLS, but the host is a unix socket, over which PostgreSQL has no \
         TLS: give the server's host name, or leave sslmode out"
    )]
    UnixSocket(&'static str),
    /// The `sslrootcert` file is missing, unreadable or not PEM.
    #[error("cannot read the CA certificate in sslrootcert {}", path.display())]
    ReadRootCert {
        /// The file.
        path: PathBuf,
        /// What reading or decoding it said.
        source: rustls::pki_types::pem::Error,
    },
    /// The `sslrootcert` file holds no certificate, or one that is no usable CA.
    #[error(
        "sslrootcert {} holds no CA certificate (PEM, -----BEGIN CERTIFICATE-----) that can be \
         trusted",
        path.display()
    )]
    NoUsableRootCert {
        /// The file.
        path: PathBuf,
    },
}

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, TlsSettingsError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(TlsSettingsError::UnknownMode(value.to_owned())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where and how the hub connects: parsed from the URL once and used for every connection,
/// so that a reconnect is as encrypted and as verified as the first connection.
#[derive(Clone)]
pub(super) struct Target {
    /// Everything but the TLS parameters, as tokio-postgres reads them; its ssl mode is set
    /// from ours (`verify-*` is `require` there, the verifying is ours).
    pub(super) config: postgres::Config,
    /// The rustls connector; `None` for `sslmode=disable` and plain unix-socket URLs.
    tls: Option<MakeRustlsConnect>,
    /// The mode in effect, for explaining failures.
    mode: SslMode,
    /// The `sslrootcert` file, for explaining failures.
    root_cert: Option<PathBuf>,
}

impl Target {
    /// Parses `db`; `url` is `db` without its password, for errors.
    pub(super) fn parse(db: &str, url: &str) -> Result<Target, StoreError> {
        let settings = |source| StoreError::TlsSettings {
            url: url.to_owned(),
            source,
        };
        let (rest, sslmode, root_cert) = take_tls_params(db);
        let mut config: postgres::Config = rest.parse().map_err(|source| StoreError::Connect {
            url: url.to_owned(),
            source,
        })?;
        let unix = |h: &Host| matches!(h, Host::Unix(_));
        let mode = match sslmode {
            Some(value) => SslMode::parse(&value).map_err(settings)?,
            // libpq's default; a unix socket has no TLS to prefer.
            None if config.get_hosts().iter().all(unix) => SslMode::Disable,
            None => SslMode::Prefer,
        };
        let needs_tls = matches!(
            mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        );
        if needs_tls && config.get_hosts().iter().any(unix) {
            return Err(settings(TlsSettingsError::UnixSocket(mode.name())));
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(settings(TlsSettingsError::NoRootCert(mode.name())));
        }
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let tls = match mode {
            SslMode::Disable => None,
            _ => {
                let roots = root_cert.as_deref().map(read_roots).transpose();
                Some(connector(roots.map_err(settings)?, mode))
            }
        };
        Ok(Target {
            config,
            tls,
            mode,
            root_cert,
        })
    }

    /// Opens a connection.
    pub(super) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }

    /// What went wrong, in words, when a connection failed for TLS (or for the lack of it);
    /// `None` for any other failure.
    pub(super) fn explain(&self, e: &postgres::Error) -> Option<String> {
        if let Some(db) = e.as_db_error() {
            // PostgreSQL's pg_hba.conf rejection names the missing encryption.
            return (db.code() == &postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption"))
            .then(|| {
                "the server refuses connections without TLS; connect with \
                 sslmode=verify-full&sslrootcert=FILE (the CA that signed the server's \
                 certificate)"
                    .to_owned()
            });
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(rustls) = as_rustls(s) {
                return Some(self.explain_rustls(rustls));
            }
            if s.to_string() == "server does not support TLS" {
                return Some(format!(
                    "the server does not support TLS (ssl is off in its postgresql.conf), but \
                     the URL's sslmode={} needs it; turn ssl on there",
                    self.mode.name()
                ));
            }
            source = s.source();
        }
        None
    }

    fn explain_rustls(&self, e: &rustls::Error) -> String {
        let ca = match &self.root_cert {
            Some(path) => format!("the CA in sslrootcert {}", path.display()),
            None => "the CA".to_owned(),
        };
        let rustls::Error::InvalidCertificate(cert) = e else {
            return "the TLS handshake with the server failed".to_owned();
        };
        match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not trusted: {ca} did not sign it; set sslrootcert \
                 to the CA that signed the PostgreSQL server's certificate"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the host in the URL (host name \
                 mismatch; sslmode=verify-full checks it): connect with a name the certificate \
                 lists, or use sslmode=verify-ca to check only that the lab's CA signed it"
                    .to_owned()
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate has expired or is not valid yet: renew it, or check \
                 the clocks"
                    .to_owned()
            }
            _ => "the server's certificate was refused".to_owned(),
        }
    }
}

/// The rustls error `e` is, or wraps as tokio-rustls does (an `io::Error`, whose `source()`
/// skips the wrapped error itself).
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<rustls::Error>()
    })
}

/// `db` without `sslmode` and `sslrootcert`, and their (percent-decoded) values.
fn take_tls_params(db: &str) -> (String, Option<String>, Option<PathBuf>) {
    let Some((base, query)) = db.split_once('?') else {
        return (db.to_owned(), None, None);
    };
    let (mut sslmode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match percent_decode(key).as_str() {
            "sslmode" => sslmode = Some(percent_decode(value)),
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
            _ => kept.push(param),
        }
    }
    let rest = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    (rest, sslmode, root_cert)
}

/// `s` with its `%XX` escapes decoded (a malformed escape stays as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The CA certificates in the PEM file `path`.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsSettingsError> {
    let read = |source| TlsSettingsError::ReadRootCert {
        path: path.to_owned(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
        // A certificate that is no usable trust anchor is skipped, as the OS stores do; none
        // at all is an error below.
        let _ = roots.add(cert.map_err(read)?);
    }
    if roots.is_empty() {
        return Err(TlsSettingsError::NoUsableRootCert {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The rustls connector for `mode`, verifying against `roots` when there are some.
fn connector(roots: Option<RootCertStore>, mode: SslMode) -> MakeRustlsConnect {
    let provider = Arc::new(ring::default_provider());
    let check = ServerCheck {
        roots: roots.map(Arc::new),
        check_name: mode == SslMode::VerifyFull,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's default provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(check))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// Checks the server's certificate as libpq's sslmode does. rustls' own verifier always
/// checks the host name, which `verify-ca` must not, and `prefer`/`require` without
/// `sslrootcert` check nothing but the handshake's signatures (encryption without
/// authentication, as libpq).
struct ServerCheck {
    /// The trusted CAs (`sslrootcert`); `None`: any certificate is accepted.
    roots: Option<Arc<RootCertStore>>,
    /// Whether the certificate must also name the host (`verify-full`).
    check_name: bool,
    /// ring's signature algorithms, for the chain and the handshake.
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ServerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCheck")
            .field("verifies_chain", &self.roots.is_some())
            .field("check_name", &self.check_name)
            .finish()
    }
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            if self.check_name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of [`Target::parse`] for `db`, with its sources.
    fn parse_error(db: &str) -> String {
        let url = super::super::redact(db);
        match Target::parse(db, &url) {
            Ok(_) => panic!("{db} parsed"),
            Err(e) => crate::store::error_chain(&e),
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_rest_is_kept() {
        let (rest, mode, root) = take_tls_params(
            "postgres://hub@db.lab/hub?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20file.pem&connect_timeout=5",
        );
        assert_eq!(
            rest,
            "postgres://hub@db.lab/hub?application_name=x&connect_timeout=5"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/etc/ca file.pem")));
        let (rest, mode, root) = take_tls_params("postgres://hub@db.lab/hub?sslmode=require");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root),
            ("postgres://hub@db.lab/hub", Some("require"), None)
        );
    }

    #[test]
    fn an_unknown_sslmode_is_named_with_the_valid_ones_and_no_password() {
        let err = parse_error("postgres://hub:s3cret@db.lab/hub?sslmode=verify-everything");
        assert!(
            err.contains("sslmode=verify-everything is not one of"),
            "{err}"
        );
        assert!(err.contains("verify-full"), "{err}");
        assert!(err.contains("postgres://hub:***@db.lab/hub"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn verify_modes_without_sslrootcert_say_what_to_add() {
        for mode in ["verify-ca", "verify-full"] {
            let err = parse_error(&format!(
                "postgres://hub@db.lab/hub?password=s3cret&sslmode={mode}"
            ));
            assert!(err.contains(&format!("sslmode={mode}")), "{err}");
            assert!(err.contains("add sslrootcert=FILE"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn a_missing_sslrootcert_file_is_named() {
        let err = parse_error(
            "postgres://hub@db.lab/hub?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        );
        assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn an_sslrootcert_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = parse_error(&format!(
            "postgres://hub@db.lab/hub?sslmode=verify-ca&sslrootcert={}",
            path.display()
        ));
        assert!(err.contains("holds no CA certificate"), "{err}");
    }

    #[test]
    fn tls_over_a_unix_socket_is_refused_and_without_sslmode_none_is_tried() {
        let err = parse_error("postgres://hub@%2Frun%2Fpostgresql/hub?sslmode=require");
        assert!(err.contains("unix socket"), "{err}");
        let target = Target::parse("postgres://hub@%2Frun%2Fpostgresql/hub", "").unwrap();
        assert_eq!(target.mode, SslMode::Disable);
        assert!(target.tls.is_none());
    }

    #[test]
    fn tcp_without_sslmode_prefers_tls() {
        let target = Target::parse("postgres://hub@db.lab/hub", "").unwrap();
        assert_eq!(target.mode, SslMode::Prefer);
        assert!(target.tls.is_some());
        assert_eq!(
            target.config.get_ssl_mode(),
            postgres::config::SslMode::Prefer
        );
    }
}
