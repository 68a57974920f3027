//! Header hygiene: message framing checks, the headers removed before forwarding, and the
//! `X-Forwarded-For` the gateway sets itself.
//!
//! Framing: a request carrying both `Content-Length` and `Transfer-Encoding`, or two lengths, is
//! the classic smuggling vector (RFC 9112 §6.3, §6.1); we refuse rather than pick one.
//! Identity: inbound `X-Forwarded-*`, `X-Auth-*`, client-certificate and `X-Phigate-*` headers
//! are attacker-controlled and never trusted (ARCHITECTURE §1); the gateway sets its own.

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use super::Ambiguity;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard `Proxy-Connection` and
/// `Keep-Alive`) that belong to one connection and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Exact names of spoofable identity headers.
const SPOOFABLE_EXACT: &[&str] = &["forwarded", "x-real-ip"];

/// Prefixes of spoofable identity headers (names are lowercase in `http`).
const SPOOFABLE_PREFIXES: &[&str] = &["x-forwarded-", "x-phigate-", "x-auth-", "x-client-cert", "x-ssl-"];

/// Headers pingora needs to frame the message: a `Connection` header may not remove them.
const FRAMING: &[HeaderName] = &[CONTENT_LENGTH, TRANSFER_ENCODING, HOST];

/// Refuses ambiguous message framing: both `Content-Length` and `Transfer-Encoding`; several or
/// non-numeric `Content-Length`; a `Transfer-Encoding` other than a single `chunked`; several
/// `Host` headers.
pub fn check_framing(headers: &HeaderMap) -> Result<(), Ambiguity> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(Ambiguity::MultipleContentLength);
    }
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    let encoding = encodings.next();
    if length.is_some() && encoding.is_some() {
        return Err(Ambiguity::ContentLengthAndTransferEncoding);
    }
    if let Some(v) = length {
        let digits = v.as_bytes();
        // Only 1*DIGIT (RFC 9110 §8.6); `+5`, ` 5`, `5,5` and values beyond u64 are refused.
        let numeric = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
        if !numeric || v.to_str().ok().and_then(|s| s.parse::<u64>().ok()).is_none() {
            return Err(Ambiguity::InvalidContentLength);
        }
    }
    if let Some(v) = encoding {
        if encodings.next().is_some() || !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Ambiguity::UnsupportedTransferEncoding);
        }
    }
    if headers.get_all(HOST).iter().nth(1).is_some() {
        return Err(Ambiguity::MultipleHost);
    }
    Ok(())
}

/// The names the gateway removes before forwarding: hop-by-hop headers, every header a
/// `Connection` header nominates (except the framing headers `Content-Length`,
/// `Transfer-Encoding` and `Host`, which are skipped and logged), and spoofable identity headers.
/// Each name appears once; only names present in `headers` are returned.
pub fn headers_to_strip(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) || is_spoofable(name) {
            out.push(name.clone());
        }
    }
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                continue;
            };
            if FRAMING.contains(&name) {
                // `Connection: content-length` would make us drop the framing the upstream
                // needs; pingora frames the message itself, so the nomination is ignored.
                log::warn!("connection header nominates a framing header; ignored");
                continue;
            }
            if headers.contains_key(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn is_spoofable(name: &HeaderName) -> bool {
    let n = name.as_str();
    SPOOFABLE_EXACT.contains(&n) || SPOOFABLE_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// The client's address: the socket `peer`, or, when the peer is one of the `trusted` proxies,
/// the nearest address of its `inbound` `X-Forwarded-For` chain that is not itself a trusted
/// proxy (read right to left: every element left of it was written by someone the gateway does
/// not trust and may be forged). A chain with a non-IP element is ignored whole, as in
/// [`x_forwarded_for`]. This is the address rate limits key on and the audit trail and alerts
/// record.
pub fn client_ip(peer: IpAddr, inbound: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = inbound.map(str::trim).filter(|c| !c.is_empty()) else {
        return peer;
    };
    // One bad element anywhere voids the chain (as it does for the forwarded header).
    let hops: Result<Vec<IpAddr>, _> =
        chain.split(',').map(|e| e.trim().parse::<IpAddr>().map(|ip| ip.to_canonical())).collect();
    let Ok(hops) = hops else {
        return peer;
    };
    hops.iter().rev().find(|ip| !is_trusted(ip)).or(hops.first()).copied().unwrap_or(peer)
}

/// The `X-Forwarded-For` value to send upstream. When `peer` is inside one of the `trusted` proxy
/// networks, the `inbound` chain is kept (only if every element is an IP address; otherwise it is
/// dropped whole) and `peer` appended; from any other peer, the chain is just `peer`.
/// IPv4-mapped IPv6 peers are written and matched as IPv4.
pub fn x_forwarded_for(peer: IpAddr, inbound: Option<&str>, trusted: &[IpNet]) -> String {
    let peer = peer.to_canonical();
    let peer_text = peer.to_string();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return peer_text;
    }
    let Some(chain) = inbound.map(str::trim).filter(|c| !c.is_empty()) else {
        return peer_text;
    };
    let mut out = String::with_capacity(chain.len() + peer_text.len() + 2);
    for element in chain.split(',') {
        let Ok(ip) = element.trim().parse::<IpAddr>() else {
            return peer_text;
        };
        out.push_str(&ip.to_string());
        out.push_str(", ");
    }
    out.push_str(&peer_text);
    out
}

/// The value of a header sent exactly once: a repeated header that must be single (`Origin`,
/// `Host`, a tenant header) counts as absent rather than picking one of its values.
pub fn single_value<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h http::HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}
