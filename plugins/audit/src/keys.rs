//! Key files: the Ed25519 checkpoint signing key, its public half for `verify`, and the HMAC key
//! for query values.
//!
//! Formats accepted for the signing key: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what
//! `openssl genpkey -algorithm ed25519` writes) or the raw 32-byte seed. Public keys: SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`) or the raw 32 bytes. Key material never appears in errors.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

pub use ed25519_dalek::VerifyingKey as PublicKey;

use crate::error::KeyError;

/// The shortest HMAC key accepted: 256 bits, the HMAC-SHA256 block-size guidance of RFC 2104 §3.
pub(crate) const MIN_HMAC_KEY_BYTES: usize = 32;

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}

fn format_err(path: &Path, what: &'static str) -> KeyError {
    KeyError::Format { path: path.to_owned(), what }
}

/// Loads the Ed25519 signing key (PKCS#8 PEM or raw 32-byte seed).
///
/// # Errors
/// The file is unreadable or is not a key in either format.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = read(path)?;
    if bytes.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(&bytes).map_err(|_| format_err(path, "PEM is not UTF-8"))?;
        return SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| format_err(path, "not a PKCS#8 Ed25519 private key"));
    }
    let seed: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format_err(path, "expected PKCS#8 PEM or 32 raw bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads an Ed25519 public key (SPKI PEM or raw 32 bytes), for `phigate audit verify --public-key`.
///
/// # Errors
/// The file is unreadable or is not a key in either format.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = read(path)?;
    if bytes.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(&bytes).map_err(|_| format_err(path, "PEM is not UTF-8"))?;
        return VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| format_err(path, "not an SPKI Ed25519 public key"));
    }
    let raw: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format_err(path, "expected SPKI PEM or 32 raw bytes"))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| format_err(path, "not a valid Ed25519 point"))
}

/// Loads the HMAC key for query values: the file's raw bytes, at least [`MIN_HMAC_KEY_BYTES`].
///
/// # Errors
/// The file is unreadable or too short.
pub(crate) fn load_hmac_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = read(path)?;
    if bytes.len() < MIN_HMAC_KEY_BYTES {
        return Err(format_err(path, "HMAC key shorter than 32 bytes"));
    }
    Ok(bytes)
}

/// Creates `path` with mode 0600, failing if it exists (a key is never overwritten).
fn write_new_0600(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Generates a fresh Ed25519 signing key, writes it to `path` as PKCS#8 PEM with mode 0600, and
/// returns its public key (write it with [`write_public_key`] for an off-host `verify`).
///
/// # Errors
/// `path` exists already or cannot be written.
pub fn generate_signing_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).map_err(|_| format_err(path, "PKCS#8 encoding failed"))?;
    write_new_0600(path, pem.as_bytes())?;
    Ok(key.verifying_key())
}

/// Generates a random 32-byte HMAC key for query values and writes it to `path` (mode 0600).
///
/// # Errors
/// `path` exists already or cannot be written.
pub fn generate_hmac_key(path: &Path) -> Result<(), KeyError> {
    let mut key = [0u8; MIN_HMAC_KEY_BYTES];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    write_new_0600(path, &key)
}

/// Writes a public key as SPKI PEM to a new file (mode 0600; copy it off-host for `verify`).
///
/// # Errors
/// `path` exists already or cannot be written.
pub fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    let pem =
        key.to_public_key_pem(Default::default()).map_err(|_| format_err(path, "SPKI encoding failed"))?;
    write_new_0600(path, pem.as_bytes())
}
