//! One probe of a task: an HTTP(S) GET, a TCP connect, or a command.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{CommandOutcome, CommandRunner, HealthSpec, Probe, Target, Verdict};

/// The most of an HTTP answer read to find its status line.
const HEAD_LIMIT: usize = 8192;

pub(crate) async fn run(spec: &HealthSpec, target: &Target, exec: &dyn CommandRunner) -> Verdict {
    let probe = async {
        match &spec.probe {
            Probe::Tcp { port } => TcpStream::connect(SocketAddr::new(target.host, *port))
                .await
                .map(|_| Verdict::Healthy)
                .unwrap_or_else(|e| Verdict::Unhealthy(format!("TCP connect to port {port}: {e}"))),
            Probe::Http {
                tls,
                port,
                path,
                ignore_1xx,
            } => http(target, *tls, *port, path, *ignore_1xx).await,
            Probe::Command { command } => match exec.run(command, spec.timeout).await {
                Ok(CommandOutcome::Exited(0)) => Verdict::Healthy,
                Ok(CommandOutcome::Exited(c)) => {
                    Verdict::Unhealthy(format!("command exited with status {c}"))
                }
                Ok(CommandOutcome::Signaled(s)) => {
                    Verdict::Unhealthy(format!("command was killed by signal {s}"))
                }
                Err(e) => Verdict::Unhealthy(e),
            },
        }
    };
    match tokio::time::timeout(spec.timeout, probe).await {
        Ok(v) => v,
        Err(_) => Verdict::Unhealthy(format!("timed out after {:?}", spec.timeout)),
    }
}

async fn http(target: &Target, tls: bool, port: u16, path: &str, ignore_1xx: bool) -> Verdict {
    let addr = SocketAddr::new(target.host, port);
    let tcp = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Verdict::Unhealthy(format!("connect to {addr}: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let status = if tls {
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let name = rustls::pki_types::ServerName::IpAddress(target.host.into());
        match connector.connect(name, tcp).await {
            Ok(s) => status_of(s, addr, path).await,
            Err(e) => Err(format!("TLS handshake with {addr}: {e}")),
        }
    } else {
        status_of(tcp, addr, path).await
    };
    match status {
        Ok(s) if (200..400).contains(&s) => Verdict::Healthy,
        Ok(s) if (100..200).contains(&s) && ignore_1xx => Verdict::Ignored,
        Ok(s) => Verdict::Unhealthy(format!("HTTP {s}")),
        Err(e) => Verdict::Unhealthy(e),
    }
}

/// Send `GET path` and read the status code of the answer.
async fn status_of<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: meseta-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = head.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&head[..end]);
            let code = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|_| line.starts_with("HTTP/"));
            return code
                .ok_or_else(|| format!("not an HTTP answer from {addr}: {:?}", line.trim()));
        }
        if head.len() > HEAD_LIMIT {
            return Err(format!("no HTTP status line from {addr}"));
        }
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection without answering"));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// TLS that accepts any certificate: tasks serve self-signed ones, and
/// the check is about the task answering, not about its identity.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
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
        cert: &rustls::pki_types::CertificateDer<'_>,
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
