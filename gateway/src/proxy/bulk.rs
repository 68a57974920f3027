//! The response side of bulk export (see [`crate::bulk`]): the kick-off's status URL and the
//! completed manifest's file URLs reach the client sealed to the principal.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use phigate_plugin::{BulkKind, Denial, RequestCtx};
use pingora::http::ResponseHeader;
use pingora::Result;

use crate::runtime::Runtime;

/// On a kick-off's 202, `Content-Location` (the upstream's status URL) becomes a URL issued to
/// the principal. One the gateway cannot issue (outside the route, no principal) is removed: a
/// client cannot use it through the gateway, and nobody else should hold it.
pub(super) fn seal_status_location(rt: &Runtime, req: &RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    let Some(bulk) = &rt.bulk else { return Ok(()) };
    let kick_off = req.bulk.is_none()
        && resp.status == StatusCode::ACCEPTED
        && req.fhir.as_ref().and_then(|f| f.operation.as_deref()) == Some("export");
    if !kick_off {
        return Ok(());
    }
    let Some(location) = resp.headers.get(header::CONTENT_LOCATION).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let issued = rt
        .router
        .get(req.route.index)
        .and_then(|route| bulk.issue(BulkKind::Status, route, req, location))
        .and_then(|url| HeaderValue::from_str(&url).ok());
    rt.metrics
        .bulk_urls
        .with_label_values(&["status", if issued.is_some() { "issued" } else { "removed" }])
        .inc();
    match issued {
        Some(url) => resp.insert_header(header::CONTENT_LOCATION, url)?,
        None => {
            log::warn!(
                target: "phigate::bulk",
                "request_id={} export status URL not under route {}: removed",
                req.request_id.as_str(),
                req.route.name
            );
            resp.remove_header(&header::CONTENT_LOCATION);
        }
    }
    Ok(())
}

/// A completed export's manifest (200 on a status URL) with its file URLs issued to the
/// principal (or refused, naming a file off the route); any other answer as it came.
pub(super) fn rewrite_manifest(
    rt: &Runtime,
    req: &RequestCtx,
    status: StatusCode,
    body: Bytes,
) -> Result<Bytes, Denial> {
    let (Some(bulk), Some(access)) = (&rt.bulk, &req.bulk) else { return Ok(body) };
    if access.kind != BulkKind::Status || status != StatusCode::OK {
        return Ok(body);
    }
    let Some(route) = rt.router.get(req.route.index) else { return Ok(body) };
    let rewritten = bulk.rewrite_manifest(route, req, &body);
    let outcome = if rewritten.is_ok() { "issued" } else { "refused" };
    rt.metrics.bulk_urls.with_label_values(&["manifest", outcome]).inc();
    rewritten
}
