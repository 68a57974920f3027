//! Key files: the PKCS#8 signing key (Ed25519 or ECDSA P-256; the algorithm follows the key) and
//! the SPKI public keys of earlier signing keys, kept in the JWKS during a rotation. Key material
//! never appears in errors or logs.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde_json::{json, Value};

use crate::error::{KeyError, SignError};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4), before the 32-byte key.
const ED25519_SPKI_PREFIX: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER prefix of an EC P-256 SubjectPublicKeyInfo (RFC 5480 §2), before the 65-byte point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A public key as it appears in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Ed25519 (RFC 8037 `OKP`).
    Ed25519([u8; 32]),
    /// P-256 (RFC 7518 `EC`): the affine coordinates.
    P256 { x: [u8; 32], y: [u8; 32] },
}

impl PublicKey {
    /// From an uncompressed SEC1 point (`04 || x || y`), as ring gives it.
    fn from_p256_point(point: &[u8]) -> Option<Self> {
        let rest = point.strip_prefix(&[0x04])?;
        let (x, y) = rest.split_at_checked(32)?;
        Some(PublicKey::P256 { x: x.try_into().ok()?, y: y.try_into().ok()? })
    }

    /// The JWS `alg` this key signs with.
    pub(crate) fn alg(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "EdDSA",
            PublicKey::P256 { .. } => "ES256",
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no
    /// whitespace (RFC 8037 §2 for `OKP`), base64url.
    pub(crate) fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicKey::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x)),
            PublicKey::P256 { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, B64.encode(x), B64.encode(y))
            }
        };
        B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
    }

    /// The JWK, with its `kid`, `alg` and `use: sig`.
    pub(crate) fn jwk(&self, kid: &str) -> Value {
        match self {
            PublicKey::Ed25519(x) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": B64.encode(x),
                "kid": kid, "alg": self.alg(), "use": "sig",
            }),
            PublicKey::P256 { x, y } => json!({
                "kty": "EC", "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y),
                "kid": kid, "alg": self.alg(), "use": "sig",
            }),
        }
    }
}

/// The private half, by algorithm.
enum Private {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair, SystemRandom),
}

/// A loaded signing key with its public half.
pub(crate) struct SigningKey {
    private: Private,
    /// The public half (for the JWKS and the default `kid`).
    pub(crate) public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.public.alg()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Signs `input` (the JWS signing input); the signature in JWS form (ES256: `r || s`).
    pub(crate) fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.private {
            Private::Ed25519(k) => Ok(k.sign(input).as_ref().to_vec()),
            Private::P256(k, rng) => {
                k.sign(rng, input).map(|s| s.as_ref().to_vec()).map_err(|_| SignError::Crypto)
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}

fn format_err(path: &Path, what: &'static str) -> KeyError {
    KeyError::Format { path: path.to_owned(), what }
}

/// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`): Ed25519 or ECDSA P-256.
pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = read(path)?;
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map_err(|_| format_err(path, "not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)"))?;
    let der = der.secret_pkcs8_der();
    // `maybe_unchecked`: accepts PKCS#8 v1 too (what `openssl genpkey` writes), which lacks the
    // public key; ring derives it.
    if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        let public = k.public_key().as_ref().try_into().map(PublicKey::Ed25519);
        let public = public.map_err(|_| format_err(path, "Ed25519 public key of unexpected length"))?;
        return Ok(SigningKey { private: Private::Ed25519(k), public });
    }
    let rng = SystemRandom::new();
    let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        .map_err(|_| format_err(path, "not an Ed25519 or ECDSA P-256 private key"))?;
    let public = PublicKey::from_p256_point(k.public_key().as_ref())
        .ok_or_else(|| format_err(path, "P-256 public key of unexpected form"))?;
    Ok(SigningKey { private: Private::P256(k, rng), public })
}

/// Loads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`): Ed25519 or P-256.
pub(crate) fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = read(path)?;
    let der = SubjectPublicKeyInfoDer::from_pem_slice(&pem)
        .map_err(|_| format_err(path, "not an SPKI PEM public key (-----BEGIN PUBLIC KEY-----)"))?;
    let der: &[u8] = der.as_ref();
    if let Some(x) = der.strip_prefix(ED25519_SPKI_PREFIX) {
        return x.try_into().map(PublicKey::Ed25519).map_err(|_| format_err(path, "bad Ed25519 key length"));
    }
    der.strip_prefix(P256_SPKI_PREFIX)
        .and_then(PublicKey::from_p256_point)
        .ok_or_else(|| format_err(path, "not an Ed25519 or uncompressed P-256 public key"))
}
