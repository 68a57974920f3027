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
    let mut resp = resp;
    let body = decoded(&mut resp, buf.freeze(), rt.limits.max_response_buffer_bytes)?;
    Ok((resp, body))
}

/// The body of an upstream that compressed it although the gateway asked for identity, decoded
/// (gzip, deflate) up to `limit` bytes, its `Content-Encoding` removed. Any other coding is
/// refused: what cannot be read cannot be verified.
fn decoded(resp: &mut ResponseHeader, body: Bytes, limit: usize) -> Result<Bytes, Denial> {
    use std::io::Read as _;
    let Some(coding) = resp.headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let coding = coding.to_str().unwrap_or("?").trim().to_ascii_lowercase();
    if body.is_empty() || coding.is_empty() || coding == "identity" {
        return Ok(body);
    }
    let refused = |why: &'static str| Denial::new(ErrorCode::UpstreamError).with_cause(why);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = match coding.as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&body[..]).take(cap).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&body[..]).take(cap).read_to_end(&mut out),
        _ => return Err(refused("response in a content coding the gateway cannot read")),
    };
    read.map_err(|_| refused("compressed response not decodable"))?;
    if out.len() > limit {
        return Err(refused("response too large to verify"));
    }
    resp.remove_header(&http::header::CONTENT_ENCODING);
    resp.remove_header(&http::header::CONTENT_LENGTH);
    Ok(out.into())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write as _;

    use super::*;

    fn head(coding: Option<&str>) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/fhir+json").unwrap();
        h.insert_header("content-length", "10").unwrap();
        if let Some(c) = coding {
            h.insert_header("content-encoding", c).unwrap();
        }
        h
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap().into()
    }

    fn deflate(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap().into()
    }

    #[test]
    fn gzip_and_deflate_bodies_are_decoded_and_their_coding_removed() {
        let json = br#"{"resourceType":"Patient","id":"a-p1"}"#;
        for (coding, body) in [("gzip", gzip(json)), ("x-gzip", gzip(json)), ("Deflate", deflate(json))] {
            let mut h = head(Some(coding));
            assert_eq!(&decoded(&mut h, body, 1 << 20).unwrap()[..], json, "{coding}");
            assert!(h.headers.get("content-encoding").is_none() && h.headers.get("content-length").is_none());
        }
        let mut h = head(None);
        assert_eq!(&decoded(&mut h, Bytes::from_static(json), 1 << 20).unwrap()[..], json);
        assert!(h.headers.get("content-length").is_some(), "an identity body is left alone");
    }

    #[test]
    fn a_body_that_inflates_past_the_limit_or_cannot_be_read_is_refused() {
        // 1 MiB of zeros compresses to about a kilobyte: decoded only up to the limit.
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096);
        let refused = decoded(&mut head(Some("gzip")), bomb.clone(), 64 << 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::UpstreamError);
        assert_eq!(decoded(&mut head(Some("gzip")), bomb, 1 << 20).unwrap().len(), 1 << 20, "at the limit");
        for (coding, body) in
            [("br", Bytes::from_static(b"\x0b\x02\x80")), ("gzip", Bytes::from_static(b"not gzip"))]
        {
            let refused = decoded(&mut head(Some(coding)), body, 1 << 20).unwrap_err();
            assert_eq!(refused.code, ErrorCode::UpstreamError, "{coding}");
        }
    }
}
