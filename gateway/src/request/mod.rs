//! PLACEHOLDER until the request-model branch lands: minimal normalization with the same API.
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

use phigate_plugin::{FhirRequest, Interaction, QueryParam};

#[derive(Debug, Clone)]
pub struct TargetLimits {
    pub max_target_bytes: usize,
    pub singleton_params: Vec<&'static str>,
}
impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits { max_target_bytes: 8192, singleton_params: Vec::new() }
    }
}
#[derive(Debug)]
pub enum Ambiguity {
    TooLong,
    Other,
}
impl Ambiguity {
    pub fn reason(&self) -> &'static str {
        "placeholder"
    }
}
pub struct NormalizedTarget {
    pub path: String,
    pub query: Vec<QueryParam>,
}
pub fn normalize_target(raw: &[u8], limits: &TargetLimits) -> Result<NormalizedTarget, Ambiguity> {
    if raw.len() > limits.max_target_bytes {
        return Err(Ambiguity::TooLong);
    }
    let s = std::str::from_utf8(raw).map_err(|_| Ambiguity::Other)?;
    let (p, q) = s.split_once('?').unwrap_or((s, ""));
    if p.contains("..") || p.contains('%') || p.contains("//") || !p.starts_with('/') {
        return Err(Ambiguity::Other);
    }
    let query = q
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            QueryParam { name: k.to_owned(), value: v.to_owned() }
        })
        .collect();
    Ok(NormalizedTarget { path: p.to_owned(), query })
}
pub fn rebuild_target(path: &str, query: &[QueryParam]) -> String {
    let mut s = path.to_owned();
    for (i, p) in query.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(&p.name);
        s.push('=');
        s.push_str(&p.value);
    }
    s
}
pub fn check_framing(h: &http::HeaderMap) -> Result<(), Ambiguity> {
    if h.contains_key(http::header::CONTENT_LENGTH) && h.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(Ambiguity::Other);
    }
    Ok(())
}
pub fn headers_to_strip(h: &http::HeaderMap) -> Vec<http::HeaderName> {
    h.keys().filter(|k| k.as_str().starts_with("x-forwarded")).cloned().collect()
}
pub fn x_forwarded_for(peer: std::net::IpAddr, _inbound: Option<&str>, _trusted: &[ipnet::IpNet]) -> String {
    peer.to_string()
}
#[derive(Debug)]
pub struct ClassifyError;
pub fn classify(
    _m: &http::Method,
    _p: &str,
    _q: &[QueryParam],
    _b: Option<&[u8]>,
    _ct: Option<&str>,
) -> Result<FhirRequest, ClassifyError> {
    Ok(FhirRequest::new(Interaction::Read))
}
