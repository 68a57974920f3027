//! One request/response exchange with an upstream on the gateway's own connector (same pool,
//! same mTLS peer, same client certificate as forwarded traffic), with the response body read
//! whole up to `limits.max_response_buffer_bytes`. Used where the gateway must see an upstream
//! answer before it decides: the verified fetch and the pre-read. The endpoint is chosen as for
//! forwarded traffic (round robin over the healthy ones, another one after a connect failure).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use phigate_plugin::{Denial, ErrorCode};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::runtime::{Runtime, Upstream};

/// Sends `head` (and `body`) to `upstream` and reads the whole answer.
///
/// # Errors
/// A denial with the upstream error code (`upstream_unavailable`, `upstream_tls_error`,
/// `upstream_timeout`, `upstream_error`); a body over the cap is `upstream_error`; no healthy
/// endpoint is `upstream_unavailable`.
pub(super) async fn exchange(
    rt: &Runtime,
    connector: &Connector,
    upstream: &Upstream,
    mut head: RequestHeader,
    body: Option<Bytes>,
) -> Result<(ResponseHeader, Bytes), Denial> {
    let (mut up, peer) = connect(rt, connector, upstream).await?;
    let upstream_err = |e: Box<pingora::Error>| {
        let code = super::error_code_for(&e).unwrap_or(ErrorCode::UpstreamError);
        Denial::new(code).with_cause(e.etype().as_str().to_owned())
    };
    // The client may speak HTTP/2; this upstream connection speaks what it negotiated.
    head.set_version(if up.as_http2().is_some() { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
    up.write_request_header(Box::new(head)).await.map_err(upstream_err)?;
    if let Some(body) = body {
        up.write_request_body(body, true).await.map_err(upstream_err)?;
    }
    up.finish_request_body().await.map_err(upstream_err)?;
    up.read_response_header().await.map_err(upstream_err)?;
    let resp = up.response_header().cloned().ok_or_else(|| Denial::new(ErrorCode::UpstreamError))?;
    let mut buf = BytesMut::new();
    while let Some(chunk) = up.read_response_body().await.map_err(upstream_err)? {
        if buf.len() + chunk.len() > rt.limits.max_response_buffer_bytes {
            return Err(Denial::new(ErrorCode::UpstreamError).with_cause("response too large to verify"));
        }
        buf.extend_from_slice(&chunk);
    }
    connector.release_http_session(up, &*peer, peer.options.idle_timeout).await;
    Ok((resp, buf.freeze()))
}

/// A connection to a healthy endpoint of `upstream`, trying others after connect failures as
/// `max_connect_retries` allows (nothing has been sent yet, so a retry cannot duplicate a request).
async fn connect(
    rt: &Runtime,
    connector: &Connector,
    upstream: &Upstream,
) -> Result<(HttpSession, Arc<HttpPeer>), Denial> {
    let (mut tried, mut retries, mut failed) = (0u64, 0u32, None);
    loop {
        let Some(index) = upstream.select(tried, failed) else {
            let labels = [&*upstream.name, "no_healthy_endpoint"];
            rt.metrics.upstream_connect_errors.with_label_values(&labels).inc();
            return Err(
                Denial::new(ErrorCode::UpstreamUnavailable).with_cause("no healthy upstream endpoint")
            );
        };
        let peer = upstream.endpoints[index].peer.load_full();
        let e = match connector.get_http_session(&*peer).await {
            Ok((session, _reused)) => {
                upstream.connected(index);
                return Ok((session, peer));
            }
            Err(e) => e,
        };
        if upstream.connect_failed(index) {
            crate::upstream::health::published(upstream, &upstream.endpoints[index], &rt.metrics);
        }
        let code = super::error_code_for(&e).unwrap_or(ErrorCode::UpstreamUnavailable);
        let kind = if code == ErrorCode::UpstreamTlsError { "tls" } else { "connect" };
        rt.metrics.upstream_connect_errors.with_label_values(&[&upstream.name, kind]).inc();
        tried |= crate::upstream::tried_bit(index);
        if !upstream.may_retry(tried, retries) {
            return Err(Denial::new(code).with_cause(e.etype().as_str().to_owned()));
        }
        retries += 1;
        failed = Some(index);
    }
}
