//! Server-provided DPoP nonces (RFC 9449 §8, §9): a proof must carry a nonce this gateway handed
//! out recently, so a proof cannot be made in advance for later use (an attacker who had the
//! client's key only briefly, for example through XSS, cannot stock up proofs for the future).
//!
//! The nonces are stateless, so every replica accepts every other's without sharing memory: a
//! nonce is `base64url(window || HMAC-SHA256(key, LABEL || window))` where `window` is
//! `unix_time / rotation_secs` (8 bytes, big-endian). The current and the previous window are
//! accepted, so a nonce lives between `rotation_secs` and twice that. The tag is kept whole so
//! `ring::hmac::verify` compares it in constant time. The label keeps tags made here apart from
//! any other use of the same key file.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use ring::hmac;

/// The response header carrying a fresh nonce (RFC 9449 §8.1).
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Domain separation for the HMAC input.
const LABEL: &[u8] = b"phigate dpop-nonce v1\0";
const WINDOW_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
const NONCE_BYTES: usize = WINDOW_BYTES + TAG_BYTES;
/// base64url without padding of `NONCE_BYTES` bytes.
const NONCE_CHARS: usize = (NONCE_BYTES * 8).div_ceil(6);

/// Why a presented nonce was refused (log-only).
pub(crate) type NonceError = &'static str;

/// The current window's nonce, made once per window.
struct Issued {
    window: i64,
    value: HeaderValue,
}

/// Issues and checks nonces with one key.
pub(crate) struct Nonces {
    key: hmac::Key,
    rotation: i64,
    current: ArcSwap<Issued>,
}

impl Nonces {
    /// Nonces keyed by `key` (at least [`phigate_plugin::MIN_SECRET_KEY_BYTES`], checked by the config build) that
    /// rotate every `rotation_secs` (at least 1).
    pub(crate) fn new(key: &[u8], rotation_secs: u64, now: i64) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let rotation = i64::try_from(rotation_secs).unwrap_or(i64::MAX).max(1);
        let window = now.div_euclid(rotation);
        let value = make(&key, window);
        Nonces { key, rotation, current: ArcSwap::from_pointee(Issued { window, value }) }
    }

    /// The nonce to hand out at `now`. One HMAC per window, not per request: otherwise a lock-free
    /// load and a reference-count increment.
    pub(crate) fn current(&self, now: i64) -> HeaderValue {
        let window = now.div_euclid(self.rotation);
        let cached = self.current.load();
        if cached.window == window {
            return cached.value.clone();
        }
        let value = make(&self.key, window);
        // Only ever moves forward; two requests racing at a window's start both store the same value.
        if window > cached.window {
            self.current.store(Arc::new(Issued { window, value: value.clone() }));
        }
        value
    }

    /// Checks a nonce presented in a proof at `now`: made with this key, for this window or the
    /// previous one.
    pub(crate) fn check(&self, nonce: &str, now: i64) -> Result<(), NonceError> {
        if nonce.len() != NONCE_CHARS {
            return Err("nonce has the wrong length");
        }
        // Room for the decoder's conservative estimate; the exact length is checked below.
        let mut raw = [0u8; NONCE_BYTES + 3];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(NONCE_BYTES) => {}
            _ => return Err("nonce is not base64url"),
        }
        let (window_bytes, rest) = raw.split_at(WINDOW_BYTES);
        let mut w = [0u8; WINDOW_BYTES];
        w.copy_from_slice(window_bytes);
        let window = i64::from_be_bytes(w);
        let current = now.div_euclid(self.rotation);
        if window != current && window != current.saturating_sub(1) {
            return Err("nonce expired or from the future");
        }
        hmac::verify(&self.key, &message(window), &rest[..TAG_BYTES])
            .map_err(|_| "nonce was not issued with this key")
    }
}

fn message(window: i64) -> [u8; LABEL.len() + WINDOW_BYTES] {
    let mut m = [0u8; LABEL.len() + WINDOW_BYTES];
    m[..LABEL.len()].copy_from_slice(LABEL);
    m[LABEL.len()..].copy_from_slice(&window.to_be_bytes());
    m
}

fn make(key: &hmac::Key, window: i64) -> HeaderValue {
    let tag = hmac::sign(key, &message(window));
    let mut raw = [0u8; NONCE_BYTES];
    raw[..WINDOW_BYTES].copy_from_slice(&window.to_be_bytes());
    raw[WINDOW_BYTES..].copy_from_slice(tag.as_ref());
    // base64url is visible ASCII, so the header value is always valid.
    HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(raw)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7u8; 32];

    fn text(v: &HeaderValue) -> String {
        v.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_nonce_is_accepted_in_its_window_and_the_next_only() {
        let n = Nonces::new(KEY, 60, 6000);
        let nonce = text(&n.current(6000));
        assert_eq!(nonce.len(), NONCE_CHARS);
        n.check(&nonce, 6000).unwrap();
        n.check(&nonce, 6059).unwrap();
        n.check(&nonce, 6119).unwrap();
        assert!(n.check(&nonce, 6120).is_err());
        assert!(n.check(&nonce, 5999).is_err(), "a nonce from a later window is not accepted early");
    }

    #[test]
    fn the_issued_nonce_changes_with_the_window_and_is_the_same_within_it() {
        let n = Nonces::new(KEY, 60, 6000);
        let a = n.current(6000);
        assert_eq!(a, n.current(6059));
        let b = n.current(6060);
        assert_ne!(a, b);
        assert_eq!(b, n.current(6061));
        // Another replica with the same key issues the same nonce.
        assert_eq!(b, Nonces::new(KEY, 60, 6070).current(6070));
    }

    #[test]
    fn another_key_a_flipped_tag_or_a_moved_window_is_refused() {
        let n = Nonces::new(KEY, 60, 6000);
        let other = Nonces::new(&[8u8; 32], 60, 6000);
        assert!(n.check(&text(&other.current(6000)), 6000).is_err());
        // Window 101 (odd): flipping its last bit names window 100, the accepted previous one.
        let good = text(&n.current(6060));
        n.check(&good, 6060).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw[NONCE_BYTES - 1] ^= 1;
        assert!(n.check(&URL_SAFE_NO_PAD.encode(&raw), 6060).is_err());
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw[WINDOW_BYTES - 1] ^= 1;
        assert!(n.check(&URL_SAFE_NO_PAD.encode(&raw), 6060).is_err());
        for junk in ["", "x", &good[1..], &format!("{good}A"), &good.replace(|_: char| true, "*")] {
            assert!(n.check(junk, 6060).is_err(), "{junk}");
        }
    }
}
