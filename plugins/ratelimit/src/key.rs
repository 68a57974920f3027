//! What a limit counts separately: the key dimensions of a limit and the key of one request.
//!
//! Keys hold shared strings (`Arc`) taken from the principal, so building one allocates nothing.
//! Redis keys name a hash of the whole key instead (caller, address and route together), so
//! nobody reading Redis sees who called; with `hmac_key_path` the hash is keyed, so nobody
//! without the key file can confirm a guess either (subjects are often e-mail addresses, and a
//! client IP address is one of HIPAA's eighteen identifiers).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use phigate_plugin::{RequestCtx, Subject, TenantId};
use sha2::digest::Update;
use sha2::{Digest, Sha256};

/// The dimensions a limit is keyed by (a set; `principal+route` has two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    principal: bool,
    tenant: bool,
    client_ip: bool,
    route: bool,
}

impl Dims {
    /// Parses `principal`, `tenant`, `client_ip`, `route` or a `+`-joined set of them.
    pub(crate) fn parse(s: &str) -> Result<Dims, &'static str> {
        let mut d = Dims { principal: false, tenant: false, client_ip: false, route: false };
        for part in s.split('+') {
            let slot = match part.trim() {
                "principal" => &mut d.principal,
                "tenant" => &mut d.tenant,
                "client_ip" => &mut d.client_ip,
                "route" => &mut d.route,
                _ => return Err("must be principal, tenant, client_ip or route, or several joined by `+`"),
            };
            if std::mem::replace(slot, true) {
                return Err("names the same dimension twice");
            }
        }
        if d.principal && d.tenant {
            return Err("cannot combine principal and tenant (a principal has one tenant)");
        }
        Ok(d)
    }
}

/// Who a request is counted as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// Not keyed by caller (`key: route`).
    Anyone,
    /// A verified principal: issuer and subject (subjects are unique per issuer only).
    Principal(Arc<str>, Subject),
    /// The principal's tenant.
    Tenant(TenantId),
}

/// The key of one request under one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    caller: Caller,
    /// The (prefix-masked) client address, when keyed by it or when falling back to it.
    ip: Option<IpAddr>,
    /// The route index, when keyed by route.
    route: Option<u32>,
}

impl Key {
    /// The key of `ctx` under `dims`. A request without a principal (or tenant) where one is
    /// keyed on falls back to its client address, so anonymous traffic cannot share (and
    /// exhaust) one bucket or escape limiting.
    pub(crate) fn of(ctx: &RequestCtx, dims: Dims, ipv6_prefix_len: u8) -> Key {
        let principal = ctx.principal.as_deref();
        let caller = if dims.principal {
            principal.map(|p| Caller::Principal(Arc::clone(&p.issuer), p.subject.clone()))
        } else if dims.tenant {
            principal.and_then(|p| p.tenant.clone()).map(Caller::Tenant)
        } else {
            Some(Caller::Anyone)
        };
        let fallback = caller.is_none();
        let ip = (dims.client_ip || fallback).then(|| ctx.client.ip.map(|ip| mask(ip, ipv6_prefix_len)));
        Key {
            caller: caller.unwrap_or(Caller::Anyone),
            ip: ip.flatten(),
            route: dims.route.then(|| u32::try_from(ctx.route.index).unwrap_or(u32::MAX)),
        }
    }

    /// Appends the Redis key suffix: the first 128 bits of a hash of the key, in hex, under
    /// `hash` (no allocation but `out`'s growth). Unambiguous: every field is tagged and
    /// length-prefixed.
    pub(crate) fn write_digest(&self, hash: &KeyHash, out: &mut String) {
        let digest = match hash {
            KeyHash::Sha256 => {
                let mut h = Sha256::new();
                self.feed(&mut h);
                h.finalize()
            }
            KeyHash::Hmac(mac) => {
                let mut m = mac.clone();
                self.feed(&mut m);
                m.finalize().into_bytes()
            }
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &digest[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }

    fn feed(&self, h: &mut impl Update) {
        let mut field = |tag: u8, bytes: &[u8]| {
            h.update(&[tag]);
            h.update(&(bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        match &self.caller {
            Caller::Anyone => field(b'a', b""),
            Caller::Principal(iss, sub) => {
                field(b'i', iss.as_bytes());
                field(b's', sub.as_str().as_bytes());
            }
            Caller::Tenant(t) => field(b't', t.as_str().as_bytes()),
        }
        match self.ip {
            Some(IpAddr::V4(v4)) => field(b'4', &v4.octets()),
            Some(IpAddr::V6(v6)) => field(b'6', &v6.octets()),
            None => field(b'n', b""),
        }
        if let Some(r) = self.route {
            field(b'r', &r.to_be_bytes());
        }
    }
}

/// How Redis keys name a request's key.
#[derive(Clone)]
pub(crate) enum KeyHash {
    /// SHA-256 (no `hmac_key_path`): hides callers from a casual reader only, since anyone can
    /// hash a guessed subject, tenant or address and look for it.
    Sha256,
    /// HMAC-SHA256 under `hmac_key_path` (its key schedule computed once, copied per key):
    /// without the key file, names cannot be tied to callers.
    Hmac(Hmac<Sha256>),
}

impl KeyHash {
    /// The HMAC under `key`, or SHA-256 without one.
    pub(crate) fn new(key: Option<&[u8]>) -> KeyHash {
        match key.map(Hmac::<Sha256>::new_from_slice) {
            Some(Ok(mac)) => KeyHash::Hmac(mac),
            // HMAC takes keys of any length; config validation refused short ones.
            Some(Err(_)) | None => KeyHash::Sha256,
        }
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The HMAC state is derived from the key: never printed.
        f.write_str(match self {
            KeyHash::Sha256 => "Sha256",
            KeyHash::Hmac(_) => "Hmac(<redacted>)",
        })
    }
}

/// Groups IPv6 addresses by prefix; IPv4-mapped IPv6 addresses count as the IPv4 address.
pub(crate) fn mask(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let keep = u32::from(ipv6_prefix_len.min(128));
            let netmask = if keep == 0 { 0 } else { u128::MAX << (128 - keep) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & netmask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_parse_accepts_combinations_and_rejects_nonsense() {
        assert!(Dims::parse("principal+route").is_ok());
        assert!(Dims::parse("client_ip").is_ok());
        assert!(Dims::parse("tenant+client_ip+route").is_ok());
        assert!(Dims::parse("principal+principal").is_err());
        assert!(Dims::parse("principal+tenant").is_err());
        assert!(Dims::parse("user").is_err());
        assert!(Dims::parse("").is_err());
    }

    fn name(key: &Key, hash: &KeyHash) -> String {
        let mut out = String::new();
        key.write_digest(hash, &mut out);
        out
    }

    #[test]
    fn redis_names_are_128_bit_hex_and_keyed_names_depend_on_the_key() {
        let key = Key { caller: Caller::Tenant(TenantId::from("t1")), ip: None, route: Some(3) };
        let (plain, a, b) = (KeyHash::new(None), KeyHash::new(Some(&[1; 32])), KeyHash::new(Some(&[2; 32])));
        let n = name(&key, &plain);
        assert!(n.len() == 32 && n.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(n, name(&key.clone(), &plain), "stable");
        assert_ne!(name(&key, &a), n, "keyed");
        assert_ne!(name(&key, &a), name(&key, &b), "another key, another name");
        assert_eq!(name(&key, &a), name(&key, &KeyHash::new(Some(&[1; 32]))), "same key, same name");
        let other = Key { route: Some(4), ..key.clone() };
        assert_ne!(name(&other, &a), name(&key, &a));
        assert!(!format!("{a:?}").contains('1'), "the key state is never printed");
    }

    #[test]
    fn ipv6_addresses_in_one_prefix_share_a_key_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(mask(a, 64), mask(b, 64));
        assert_ne!(mask(a, 64), mask(c, 64));
        assert_ne!(mask(a, 128), mask(b, 128));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(mask(mapped, 64), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
