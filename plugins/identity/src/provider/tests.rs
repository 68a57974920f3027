//! The ring provider agrees with jsonwebtoken's RustCrypto one, through jsonwebtoken's own
//! factory interface, on good and bad signatures of every algorithm and key form.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;
use jsonwebtoken::AlgorithmFamily;
use serde_json::{json, Value};

use super::*;
use crate::dev::DevIssuer;

const RSA: &str = include_str!("../../tests/keys/rsa2048.pem");
const RSA_OTHER: &str = include_str!("../../tests/keys/rsa3072.pem");
const ALL: [Algorithm; 12] = {
    use Algorithm::*;
    [HS256, HS384, HS512, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA]
};

/// One algorithm: a signed message, the same message signed by another key of the same type,
/// and every form of the signer's public key.
struct Fixture {
    alg: Algorithm,
    message: String,
    signature: Vec<u8>,
    other_key_signature: Vec<u8>,
    keys: Vec<DecodingKey>,
}

fn split(token: &str) -> (String, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input.to_owned(), URL_SAFE_NO_PAD.decode(sig).unwrap())
}

fn header_and_claims(alg: Algorithm) -> (Value, Value) {
    (
        json!({"alg": format!("{alg:?}"), "typ": "at+jwt", "kid": "k"}),
        json!({"iss": "https://i", "sub": "alice"}),
    )
}

fn asymmetric(alg: Algorithm, idp: &DevIssuer, other: &DevIssuer) -> Fixture {
    let (h, c) = header_and_claims(alg);
    let (message, signature) = split(&idp.sign_raw(&h, &c));
    let (again, other_key_signature) = split(&other.sign_raw(&h, &c));
    assert_eq!(message, again);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(idp.jwk().clone()).unwrap();
    let mut keys = vec![DecodingKey::from_jwk(&jwk).unwrap()];
    keys.extend(pem_form(alg, idp.private_key_pem()));
    Fixture { alg, message, signature, other_key_signature, keys }
}

/// The public key as jsonwebtoken loads it from PEM or DER (P-384 has no such helper here).
fn pem_form(alg: Algorithm, private_pem: &str) -> Option<DecodingKey> {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
    Some(match alg.family() {
        AlgorithmFamily::Rsa => {
            use rsa::pkcs1::EncodeRsaPublicKey;
            let public = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).unwrap().to_public_key();
            DecodingKey::from_rsa_der(public.to_pkcs1_der().unwrap().as_bytes())
        }
        AlgorithmFamily::Ec if alg == Algorithm::ES256 => {
            let public = p256::SecretKey::from_pkcs8_pem(private_pem).unwrap().public_key();
            DecodingKey::from_ec_pem(public.to_public_key_pem(LineEnding::LF).unwrap().as_bytes()).unwrap()
        }
        AlgorithmFamily::Ed => {
            let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(private_pem).unwrap();
            let pem = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
            DecodingKey::from_ed_pem(pem.as_bytes()).unwrap()
        }
        _ => return None,
    })
}

fn hmac(alg: Algorithm) -> Fixture {
    let (h, c) = header_and_claims(alg);
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), URL_SAFE_NO_PAD.encode(c.to_string()));
    let sign = |secret: &[u8]| {
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg).unwrap();
        URL_SAFE_NO_PAD.decode(sig).unwrap()
    };
    let (signature, other_key_signature) = (sign(b"a shared secret"), sign(b"another secret"));
    Fixture {
        alg,
        message,
        signature,
        other_key_signature,
        keys: vec![DecodingKey::from_secret(b"a shared secret")],
    }
}

fn fixtures() -> Vec<Fixture> {
    use Algorithm::*;
    let rsa = |pem, alg| DevIssuer::rsa_from_pem("https://rsa", pem, alg).unwrap();
    let mut out: Vec<Fixture> = [HS256, HS384, HS512].into_iter().map(hmac).collect();
    for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
        out.push(asymmetric(alg, &rsa(RSA, alg), &rsa(RSA_OTHER, alg)));
    }
    let es256 = || DevIssuer::es256("https://es").unwrap();
    let es384 = || DevIssuer::es384("https://es").unwrap();
    let eddsa = || DevIssuer::eddsa("https://ed").unwrap();
    out.push(asymmetric(ES256, &es256(), &es256()));
    out.push(asymmetric(ES384, &es384(), &es384()));
    out.push(asymmetric(EdDSA, &eddsa(), &eddsa()));
    out
}

/// What jsonwebtoken's `crypto::verify` answers with `provider` as the default.
fn accepts(provider: &CryptoProvider, alg: Algorithm, key: &DecodingKey, message: &[u8], sig: &[u8]) -> bool {
    (provider.verifier_factory)(&alg, key).is_ok_and(|v| v.verify(message, &sig.to_vec()).is_ok())
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

/// (what, message, signature, accepted?) for one fixture.
fn cases(f: &Fixture) -> Vec<(String, Vec<u8>, Vec<u8>, bool)> {
    let (m, s) = (f.message.as_bytes().to_vec(), f.signature.clone());
    let mut out = vec![("valid".to_owned(), m.clone(), s.clone(), true)];
    for at in [0, s.len() / 2, s.len() - 1] {
        out.push((format!("signature byte {at} flipped"), m.clone(), flipped(&s, at), false));
    }
    out.push(("message byte flipped".into(), flipped(&m, m.len() / 2), s.clone(), false));
    out.push(("signed by another key".into(), m.clone(), f.other_key_signature.clone(), false));
    out.push(("signature truncated".into(), m.clone(), s[..s.len() - 1].to_vec(), false));
    out.push(("signature extended".into(), m.clone(), [&s[..], &[0]].concat(), false));
    out.push(("signature empty".into(), m, Vec::new(), false));
    out
}

#[test]
fn ring_and_rust_crypto_agree_on_good_and_bad_signatures_of_every_algorithm_and_key_form() {
    let mut checked = 0;
    for f in fixtures() {
        for (k, key) in f.keys.iter().enumerate() {
            for (what, message, sig, expected) in cases(&f) {
                let ring = accepts(&RING, f.alg, key, &message, &sig);
                let rust = accepts(&RUST_CRYPTO, f.alg, key, &message, &sig);
                assert_eq!((ring, rust), (expected, expected), "{:?} key form {k}: {what}", f.alg);
                checked += 1;
            }
        }
    }
    // 3 HMAC + 6 RSA (JWK, DER) + ES256 (JWK, PEM) + ES384 (JWK) + EdDSA (JWK, PEM) key forms.
    assert_eq!(checked, (3 + 12 + 2 + 1 + 2) * 9);
}

#[test]
fn a_valid_signature_checked_under_any_other_algorithm_is_refused_by_both() {
    for f in fixtures() {
        for key in &f.keys {
            for alg in ALL.into_iter().filter(|a| *a != f.alg) {
                let m = f.message.as_bytes();
                let (ring, rust) = (
                    accepts(&RING, alg, key, m, &f.signature),
                    accepts(&RUST_CRYPTO, alg, key, m, &f.signature),
                );
                assert_eq!((ring, rust), (false, false), "{:?} signature checked as {alg:?}", f.alg);
            }
        }
    }
}

#[test]
fn a_key_of_another_family_is_refused_by_the_factory_as_rust_crypto_refuses_it() {
    let rsa = DecodingKey::from_rsa_raw_components(&[0xC5; 256], &[1, 0, 1]);
    let secret = DecodingKey::from_secret(b"s");
    for (alg, key) in [(Algorithm::HS256, &rsa), (Algorithm::ES256, &rsa), (Algorithm::RS256, &secret)] {
        let ring = (RING.verifier_factory)(&alg, key).err().map(jsonwebtoken::errors::Error::into_kind);
        let rust =
            (RUST_CRYPTO.verifier_factory)(&alg, key).err().map(jsonwebtoken::errors::Error::into_kind);
        assert!(matches!(ring, Some(ErrorKind::InvalidKeyFormat)), "{alg:?}");
        assert!(matches!(rust, Some(ErrorKind::InvalidKeyFormat)), "{alg:?}");
    }
}

#[test]
fn both_refuse_a_valid_signature_by_an_rsa_key_over_4096_bits() {
    let pem = include_str!("../../tests/keys/rsa4104.pem");
    let idp = DevIssuer::rsa_from_pem("https://rsa", pem, Algorithm::RS256).unwrap();
    let f = asymmetric(Algorithm::RS256, &idp, &idp);
    for key in &f.keys {
        let m = f.message.as_bytes();
        assert!(!accepts(&RING, f.alg, key, m, &f.signature));
        assert!(!accepts(&RUST_CRYPTO, f.alg, key, m, &f.signature));
    }
}

#[test]
fn signing_and_jwk_helpers_are_rust_cryptos() {
    let idp = DevIssuer::es256("https://es").unwrap();
    let key = EncodingKey::from_ec_pem(idp.private_key_pem().as_bytes()).unwrap();
    let signer = (RING.signer_factory)(&Algorithm::ES256, &key).unwrap();
    let sig = jsonwebtoken::signature::Signer::try_sign(&*signer, b"m").unwrap();
    let public = DecodingKey::from_jwk(&serde_json::from_value(idp.jwk().clone()).unwrap()).unwrap();
    assert!(accepts(&RING, Algorithm::ES256, &public, b"m", &sig));
    assert!(accepts(&RUST_CRYPTO, Algorithm::ES256, &public, b"m", &sig));
    let hashes = || [ThumbprintHash::SHA256, ThumbprintHash::SHA384, ThumbprintHash::SHA512];
    for (a, b) in hashes().into_iter().zip(hashes()) {
        assert_eq!((RING.key_utils.compute_digest)(b"d", a), (RUST_CRYPTO.key_utils.compute_digest)(b"d", b));
    }
}
