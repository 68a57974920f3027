//! jsonwebtoken's process-wide crypto provider, verifying with [`crate::sig`] (ring; Ed25519
//! with ed25519-dalek).
//!
//! jsonwebtoken 11 picks its crypto through a process default (`CryptoProvider`), which the
//! crate's `rust_crypto` feature would otherwise fix to the pure-Rust backend, several times
//! slower than ring for P-256 and RSA. Building the identity stage installs [`RING`] as that default
//! once. Verification goes through [`crate::sig`], the same code that checks DPoP proofs; signing
//! and the JWK helpers (thumbprints, key components) stay jsonwebtoken's RustCrypto ones: only
//! the dev issuer and tests sign, and thumbprints are a hash.
//!
//! The identity stage itself calls [`crate::sig`] directly, not through the process default, so
//! its checks are these whatever else the process installed, and a verification costs no
//! factory box or key copy. If another provider was installed first (or jsonwebtoken was used
//! before and settled on its feature default), that one is kept and the fact is logged once:
//! failing the build would stop the gateway without making the stage's own checks any safer.

use std::sync::Once;

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{new_error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::sig;

/// [`crate::sig`] verification for every JWS algorithm; RustCrypto signing and JWK helpers.
pub(crate) static RING: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

/// Installs [`RING`] as jsonwebtoken's process default the first time it is called; later
/// calls do nothing. Keeps a provider installed before it, and logs that once.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if RING.install_default().is_err() {
            log::info!(
                target: "phigate::identity",
                "jsonwebtoken already has a process crypto provider; kept it (the identity stage's own signature checks do not use it)"
            );
        }
    });
}

/// A verifier for one algorithm and key. The key is cloned because jsonwebtoken's factory
/// returns an owned `'static` box.
struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        sig::verify(self.alg, sig::Key::of(&self.key), message, signature)
            .map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Refuses a key of another family up front, as the RustCrypto factory does (an RSA key is
/// never an HMAC secret: the RS256→HS256 confusion).
fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if alg.family() != key.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    Ok(Box::new(RingVerifier { alg: *alg, key: key.clone() }))
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key)
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_private_key)(der)
}

fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_public_key)(der)
}

fn ec_components_from_private_key(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    (rust_crypto::DEFAULT_PROVIDER.key_utils.ec_pub_components_from_private_key)(der, alg)
}

fn ed_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    (rust_crypto::DEFAULT_PROVIDER.key_utils.ed_pub_components_from_private_key)(der, curve)
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    (rust_crypto::DEFAULT_PROVIDER.key_utils.compute_digest)(data, hash)
}

#[cfg(test)]
mod tests;
