//! The upstream server: accepts TLS, serves h1 or h2 (whichever ALPN chose), answers from
//! [`Payloads`].

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::fhir::Payloads;

const NOT_FOUND: &[u8] =
    br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}"#;

/// Accepts connections on `listener` until the task is dropped. A failed handshake (a client
/// without a valid certificate) only closes that connection.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, payloads: Arc<Payloads>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else { continue };
        // Small responses must not wait for Nagle: the load generators measure latency.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let payloads = payloads.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(move |req| {
                let payloads = payloads.clone();
                async move { Ok::<_, Infallible>(respond(&payloads, &req)) }
            });
            let _ =
                auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// Accepts OTLP/HTTP trace exports over plain HTTP/1.1 and discards them (an empty protobuf
/// `ExportTraceServiceResponse` is an empty body): the collector of a traced gateway under load.
pub async fn otlp_sink(listener: TcpListener) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let status = match http_body_util::BodyExt::collect(req.into_body()).await {
                    Ok(_) => StatusCode::OK,
                    Err(_) => StatusCode::BAD_REQUEST,
                };
                Ok::<_, Infallible>(reply(status, "application/x-protobuf", Bytes::new()))
            });
            let _ =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// Answers one request: `GET /fhir/Patient/{id}`, `GET /fhir/Observation?patient={id}` (or
/// `subject=Patient/{id}`), `GET /healthz`; anything else is a 404 OperationOutcome.
pub fn respond(payloads: &Payloads, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let body = if path == "/healthz" {
        return reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"));
    } else if let Some(id) = path.strip_prefix("/fhir/Patient/") {
        payloads.patient(id)
    } else if path == "/fhir/Observation" {
        req.uri().query().and_then(patient_param).and_then(|id| payloads.observations(id))
    } else {
        None
    };
    match body {
        Some(body) => reply(StatusCode::OK, "application/fhir+json", body),
        None => reply(StatusCode::NOT_FOUND, "application/fhir+json", Bytes::from_static(NOT_FOUND)),
    }
}

/// The patient id named by `patient=` or `subject=Patient/` in a query string.
fn patient_param(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        match key {
            "patient" => Some(value.strip_prefix("Patient/").unwrap_or(value)),
            "subject" => value.strip_prefix("Patient/"),
            _ => None,
        }
    })
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::patient_param;

    #[test]
    fn patient_param_reads_patient_and_subject_forms() {
        assert_eq!(patient_param("patient=pat-1&_count=50"), Some("pat-1"));
        assert_eq!(patient_param("_count=50&subject=Patient/pat-2"), Some("pat-2"));
        assert_eq!(patient_param("patient=Patient/pat-3"), Some("pat-3"));
        assert_eq!(patient_param("_count=50&code=8867-4"), None);
        assert_eq!(patient_param("subject=Group/g"), None);
    }
}
