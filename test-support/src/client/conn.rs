//! Opening connections: TCP to a host and port, then TLS with the client's config and SNI.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::ClientError;

/// Where a URL points.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) tls: bool,
    /// Host without IPv6 brackets.
    pub(super) host: String,
    pub(super) port: u16,
    /// `host[:port]` as written in the URL (for `Host` / `:authority`).
    pub(super) authority: String,
}

impl Target {
    pub(super) fn parse(uri: &http::Uri) -> Result<Self, ClientError> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ClientError::BadUrl),
        };
        let authority = uri.authority().ok_or(ClientError::BadUrl)?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        Ok(Target {
            tls,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
        })
    }

    /// The SNI / verified name: the override, else the URL host.
    pub(super) fn server_name(
        &self,
        name: Option<&ServerName<'static>>,
    ) -> Result<ServerName<'static>, ClientError> {
        if let Some(n) = name {
            return Ok(n.clone());
        }
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(self.host.clone()).map_err(|_| ClientError::BadUrl),
        }
    }
}

pub(super) async fn tcp(host: &str, port: u16) -> Result<TcpStream, ClientError> {
    let tcp = TcpStream::connect((host, port)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

pub(super) async fn tls(
    config: Arc<ClientConfig>,
    tcp: TcpStream,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, ClientError> {
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}
