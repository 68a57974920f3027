//! Header hygiene: framing refusals, the strip list, and X-Forwarded-For.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::request::{check_framing, client_ip, headers_to_strip, x_forwarded_for, Ambiguity};

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

/// Header pairs of one case.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn framing_table() {
    use Ambiguity::*;
    let cases: &[(Headers<'_>, Result<(), Ambiguity>)] = &[
        (&[("host", "a")], Ok(())),
        (&[("host", "a"), ("content-length", "0")], Ok(())),
        (&[("content-length", "1234")], Ok(())),
        (&[("transfer-encoding", "chunked")], Ok(())),
        (&[("transfer-encoding", "Chunked")], Ok(())),
        (&[("content-length", "5"), ("transfer-encoding", "chunked")], Err(ContentLengthAndTransferEncoding)),
        (&[("content-length", "5"), ("content-length", "5")], Err(MultipleContentLength)),
        (&[("content-length", "5, 5")], Err(InvalidContentLength)),
        (&[("content-length", "+5")], Err(InvalidContentLength)),
        (&[("content-length", "-1")], Err(InvalidContentLength)),
        (&[("content-length", "0x10")], Err(InvalidContentLength)),
        (&[("content-length", "")], Err(InvalidContentLength)),
        (&[("content-length", "99999999999999999999999")], Err(InvalidContentLength)),
        (&[("transfer-encoding", "gzip, chunked")], Err(UnsupportedTransferEncoding)),
        (&[("transfer-encoding", "chunked, chunked")], Err(UnsupportedTransferEncoding)),
        (
            &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            Err(UnsupportedTransferEncoding),
        ),
        (&[("transfer-encoding", "identity")], Err(UnsupportedTransferEncoding)),
        (&[("transfer-encoding", "xchunked")], Err(UnsupportedTransferEncoding)),
        (&[("host", "a"), ("host", "b")], Err(MultipleHost)),
    ];
    for (headers, want) in cases {
        assert_eq!(check_framing(&map(headers)), *want, "{headers:?}");
    }
}

fn names(v: Vec<HeaderName>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().map(|n| n.as_str().to_owned()).collect();
    v.sort();
    v
}

#[test]
fn hop_by_hop_and_spoofable_identity_headers_are_stripped() {
    let h = map(&[
        ("host", "gw"),
        ("authorization", "Bearer t"),
        ("accept", "application/fhir+json"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("proxy-authenticate", "Basic"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("upgrade", "h2c"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-host", "evil"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=1.2.3.4"),
        ("x-real-ip", "1.2.3.4"),
        ("x-phigate-principal", "admin"),
        ("x-auth-user", "admin"),
        ("x-client-cert", "PEM"),
        ("x-client-cert-chain", "PEM"),
        ("x-ssl-client-verify", "SUCCESS"),
    ]);
    assert_eq!(
        names(headers_to_strip(&h)),
        [
            "connection",
            "forwarded",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "x-auth-user",
            "x-client-cert",
            "x-client-cert-chain",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-phigate-principal",
            "x-real-ip",
            "x-ssl-client-verify",
        ]
    );
}

#[test]
fn connection_nominated_headers_are_stripped_except_framing() {
    let h = map(&[
        ("host", "gw"),
        ("content-length", "3"),
        ("authorization", "Bearer t"),
        ("x-custom", "1"),
        ("X-Other", "2"),
        ("accept", "*/*"),
        ("connection", "close, X-Custom ,x-other"),
        ("connection", "Content-Length, host, transfer-encoding, authorization, not a name"),
    ]);
    assert_eq!(names(headers_to_strip(&h)), ["authorization", "connection", "x-custom", "x-other"]);
}

#[test]
fn clean_request_strips_nothing() {
    let h = map(&[("host", "gw"), ("accept", "application/fhir+json")]);
    assert!(headers_to_strip(&h).is_empty());
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn xff_from_untrusted_peer_is_only_the_peer() {
    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    let trusted = nets(&["10.0.0.0/8"]);
    assert_eq!(x_forwarded_for(peer, Some("1.1.1.1"), &trusted), "203.0.113.7");
    assert_eq!(x_forwarded_for(peer, None, &trusted), "203.0.113.7");
    assert_eq!(x_forwarded_for(peer, Some("1.1.1.1"), &[]), "203.0.113.7");
}

#[test]
fn xff_from_trusted_proxy_keeps_a_valid_chain_and_appends_peer() {
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(
        x_forwarded_for(peer, Some("198.51.100.1,  2001:db8::1"), &trusted),
        "198.51.100.1, 2001:db8::1, 10.1.2.3"
    );
    assert_eq!(x_forwarded_for(peer, None, &trusted), "10.1.2.3");
    assert_eq!(x_forwarded_for(peer, Some("  "), &trusted), "10.1.2.3");
    let v6: IpAddr = "fd00::5".parse().unwrap();
    assert_eq!(x_forwarded_for(v6, Some("192.0.2.1"), &trusted), "192.0.2.1, fd00::5");
}

#[test]
fn xff_chain_with_a_non_ip_element_is_dropped() {
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let trusted = nets(&["10.0.0.0/8"]);
    for bad in
        ["198.51.100.1, unknown", "198.51.100.1:443", "evil.example", "1.1.1.1,,2.2.2.2", "1.1.1.1\r\nx: y"]
    {
        assert_eq!(x_forwarded_for(peer, Some(bad), &trusted), "10.1.2.3", "{bad:?}");
    }
}

#[test]
fn xff_ipv4_mapped_peer_matches_ipv4_networks() {
    let peer: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
    let trusted = nets(&["10.0.0.0/8"]);
    assert_eq!(x_forwarded_for(peer, Some("192.0.2.1"), &trusted), "192.0.2.1, 10.9.9.9");
}

#[test]
fn client_ip_is_the_nearest_untrusted_address_behind_trusted_proxies() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let trusted = nets(&["10.0.0.0/8"]);
    // Not behind a trusted proxy: the peer, whatever the header says.
    assert_eq!(client_ip(ip("203.0.113.7"), Some("1.1.1.1"), &trusted), ip("203.0.113.7"));
    // Behind the load balancer: the address it saw.
    assert_eq!(client_ip(ip("10.0.0.2"), Some("203.0.113.7"), &trusted), ip("203.0.113.7"));
    // A forged leftmost element cannot choose the address: the nearest untrusted one counts.
    assert_eq!(
        client_ip(ip("10.0.0.2"), Some("1.2.3.4, 203.0.113.7, 10.0.0.9"), &trusted),
        ip("203.0.113.7")
    );
    // Only trusted hops: the leftmost.
    assert_eq!(client_ip(ip("10.0.0.2"), Some("10.0.0.8, 10.0.0.9"), &trusted), ip("10.0.0.8"));
    // No chain, or one with garbage: the peer.
    assert_eq!(client_ip(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
    assert_eq!(client_ip(ip("10.0.0.2"), Some("evil, 203.0.113.7"), &trusted), ip("10.0.0.2"));
    assert_eq!(client_ip(ip("::ffff:10.0.0.2"), Some("::ffff:203.0.113.7"), &trusted), ip("203.0.113.7"));
}
