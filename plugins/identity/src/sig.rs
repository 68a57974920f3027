//! JWS signature checks, one implementation for access tokens (a cache miss) and DPoP proofs
//! (every request). ECDSA, RSA and HMAC use ring, whose P-256 and RSA checks cost a fraction of
//! the pure-Rust ones (P-384 about two thirds); Ed25519 uses ed25519-dalek, which is faster than
//! ring's there (measured in `benches/validate.rs`).
//!
//! The key must fit the algorithm exactly (RFC 7518 §3, RFC 8037 §2): a P-256 point for ES256, a
//! P-384 point for ES384, 32 bytes for Ed25519, an RSA key for RS*/PS*, a secret for HS*. A key
//! that does not fit verifies nothing; it is never truncated or padded into one that does.

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::{hmac, signature as rs};

/// The longest RSA signature accepted: a 4096-bit modulus. A valid RSA signature is exactly as
/// long as the modulus, so this refuses keys above 4096 bits without parsing the key, the limit
/// jsonwebtoken's RustCrypto backend (the `rsa` crate's default) applies; bigger keys only buy an
/// attacker who controls one (a DPoP client) more work per request. ring itself refuses moduli
/// under 2048 bits.
const MAX_RSA_SIGNATURE_BYTES: usize = 512;

/// Public (or, for HMAC, secret) key material in the forms ring takes, borrowed. No `Debug`:
/// an HMAC secret must not reach a log line.
#[derive(Clone, Copy)]
pub(crate) enum Key<'k> {
    /// An uncompressed SEC1 point, `04 ‖ x ‖ y` (65 bytes for P-256, 97 for P-384).
    Ec(&'k [u8]),
    /// A raw Ed25519 public key (32 bytes).
    Ed25519(&'k [u8]),
    /// A DER `RSAPublicKey` (PKCS#1), as a PEM or DER public key gives it.
    RsaDer(&'k [u8]),
    /// An RSA modulus and public exponent, big-endian, as a JWK gives them.
    Rsa {
        /// The modulus.
        n: &'k [u8],
        /// The public exponent.
        e: &'k [u8],
    },
    /// An HMAC secret.
    Secret(&'k [u8]),
}

impl<'k> Key<'k> {
    /// The key inside a `jsonwebtoken` key, without copying or parsing it.
    pub(crate) fn of(key: &'k DecodingKey) -> Self {
        match (key.family(), key.kind()) {
            (_, DecodingKeyKind::RsaModulusExponent { n, e }) => Key::Rsa { n, e },
            (AlgorithmFamily::Rsa, DecodingKeyKind::SecretOrDer(b)) => Key::RsaDer(b),
            (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(b)) => Key::Ec(b),
            (AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(b)) => Key::Ed25519(b),
            (AlgorithmFamily::Hmac, DecodingKeyKind::SecretOrDer(b)) => Key::Secret(b),
        }
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigError {
    /// The key is not of the algorithm's type, curve or size.
    #[error("the key does not fit the algorithm")]
    KeyMismatch,
    /// The signature is not a valid one by this key over this message.
    #[error("the signature does not verify")]
    Invalid,
}

/// Checks `signature` (raw bytes, base64url already removed) over `message` by `key` for `alg`.
pub(crate) fn verify(alg: Algorithm, key: Key<'_>, message: &[u8], signature: &[u8]) -> Result<(), SigError> {
    use Algorithm::*;
    let checked = match (alg, key) {
        (ES256, Key::Ec(point)) if point.len() == 65 => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, point).verify(message, signature)
        }
        (ES384, Key::Ec(point)) if point.len() == 97 => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_FIXED, point).verify(message, signature)
        }
        (EdDSA, Key::Ed25519(x)) => return ed25519(x, message, signature),
        (HS256 | HS384 | HS512, Key::Secret(secret)) => {
            let h = match alg {
                HS256 => hmac::HMAC_SHA256,
                HS384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            // Constant-time comparison of the whole tag.
            hmac::verify(&hmac::Key::new(h, secret), message, signature)
        }
        (alg, Key::Rsa { n, e }) => {
            rs::RsaPublicKeyComponents { n, e }.verify(rsa_parameters(alg, signature)?, message, signature)
        }
        (alg, Key::RsaDer(der)) => {
            rs::UnparsedPublicKey::new(rsa_parameters(alg, signature)?, der).verify(message, signature)
        }
        _ => return Err(SigError::KeyMismatch),
    };
    checked.map_err(|_| SigError::Invalid)
}

/// Ed25519 with ed25519-dalek rather than ring: measured about a quarter faster per check (its
/// precomputed tables and AVX2 backend), and, like ring, it refuses a non-canonical `S` (RFC 8032
/// §5.1.7). The key must be exactly 32 bytes (RFC 8037 §2).
fn ed25519(x: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SigError> {
    use ed25519_dalek::Verifier;
    let x: &[u8; 32] = x.try_into().map_err(|_| SigError::KeyMismatch)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(x).map_err(|_| SigError::Invalid)?;
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| SigError::Invalid)?;
    key.verify(message, &signature).map_err(|_| SigError::Invalid)
}

/// ring's parameters for an RSA algorithm (RFC 7518 §3.3 PKCS#1 v1.5, §3.5 PSS with a salt as
/// long as the hash), once the signature is no longer than a 4096-bit modulus.
fn rsa_parameters(alg: Algorithm, signature: &[u8]) -> Result<&'static rs::RsaParameters, SigError> {
    use Algorithm::*;
    let params: &'static rs::RsaParameters = match alg {
        RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
        RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
        RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        PS256 => &rs::RSA_PSS_2048_8192_SHA256,
        PS384 => &rs::RSA_PSS_2048_8192_SHA384,
        PS512 => &rs::RSA_PSS_2048_8192_SHA512,
        _ => return Err(SigError::KeyMismatch),
    };
    if signature.len() > MAX_RSA_SIGNATURE_BYTES {
        return Err(SigError::Invalid);
    }
    Ok(params)
}

#[cfg(test)]
mod tests;
