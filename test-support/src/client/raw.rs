//! Below HTTP: raw bytes over TLS (request smuggling and normalization tests) and handshake-only
//! probes (TLS version and ALPN negotiation).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::{CipherSuite, ClientConfig, ProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{conn, ClientError, TestClient, DEFAULT_TIMEOUT};

/// How [`TestClient::raw_with`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct RawOptions {
    /// After writing, send TLS `close_notify` and shut the write side (default false). Many
    /// servers (hyper among them) treat that as a full close and drop the connection without
    /// answering, so by default the read ends when the server closes by itself: send
    /// `Connection: close`, or a request the server must refuse and close on.
    pub close_write: bool,
    /// Bound on the whole exchange (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions { close_write: false, timeout: DEFAULT_TIMEOUT }
    }
}

impl TestClient {
    /// Writes `bytes` verbatim over a new TLS connection (ALPN `http/1.1` only) and returns every
    /// byte the server sent until it closed. SNI is the client's server name, else the IP.
    ///
    /// # Errors
    /// On connection or TLS failure before any response byte, or timeout.
    pub async fn raw(&self, addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.raw_with(addr, bytes, RawOptions::default()).await
    }

    /// [`TestClient::raw`] with options.
    ///
    /// # Errors
    /// As [`TestClient::raw`].
    pub async fn raw_with(
        &self,
        addr: SocketAddr,
        bytes: &[u8],
        options: RawOptions,
    ) -> Result<Vec<u8>, ClientError> {
        let exchange = async {
            // Raw bytes are HTTP/1.x: never let ALPN pick h2 under them.
            let mut config = (*self.config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let tcp = conn::tcp(&addr.ip().to_string(), addr.port()).await?;
            let mut tls = conn::tls(Arc::new(config), tcp, name).await?;
            tls.write_all(bytes).await?;
            tls.flush().await?;
            if options.close_write {
                tls.shutdown().await?;
            }
            read_until_close(&mut tls).await
        };
        tokio::time::timeout(options.timeout, exchange).await.map_err(|_| ClientError::Timeout)?
    }
}

async fn read_until_close<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A server that closes TCP without `close_notify` after answering still answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a completed handshake negotiated, as the client saw it.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// The TLS version.
    pub version: ProtocolVersion,
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<Vec<u8>>,
    /// The cipher suite.
    pub cipher_suite: CipherSuite,
    /// The server's certificate chain.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// Handshake-only probes.
///
/// In TLS 1.3 the client finishes its handshake before the server has judged the client
/// certificate, so a server that rejects the client certificate is seen on the first read, not
/// here: test client-certificate rejection with a request ([`TestClient::get`]) instead.
#[derive(Debug)]
pub struct TlsProbe;

impl TlsProbe {
    /// Handshakes with `addr` using `config`, SNI and verified name being the IP address.
    ///
    /// # Errors
    /// When the handshake fails (see [`ClientError::tls_error`]) or times out.
    pub async fn handshake(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> Result<HandshakeInfo, ClientError> {
        Self::handshake_with_name(addr, config, ServerName::IpAddress(addr.ip().into())).await
    }

    /// Handshakes with `addr`, sending and verifying `name`.
    ///
    /// # Errors
    /// When the handshake fails or times out.
    pub async fn handshake_with_name(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<HandshakeInfo, ClientError> {
        let probe = async {
            let tcp = conn::tcp(&addr.ip().to_string(), addr.port()).await?;
            let tls = conn::tls(config, tcp, name).await?;
            let session = tls.get_ref().1;
            Ok(HandshakeInfo {
                version: session
                    .protocol_version()
                    .ok_or_else(|| ClientError::Config("no protocol version".into()))?,
                alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                cipher_suite: session
                    .negotiated_cipher_suite()
                    .map(|s| s.suite())
                    .ok_or_else(|| ClientError::Config("no cipher suite".into()))?,
                peer_certificates: session.peer_certificates().unwrap_or_default().to_vec(),
            })
        };
        tokio::time::timeout(DEFAULT_TIMEOUT, probe).await.map_err(|_| ClientError::Timeout)?
    }
}
