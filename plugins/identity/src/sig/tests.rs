//! Keys that do not fit their algorithm, and the RSA and HMAC edges, checked on `sig` directly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;
use crate::dev::DevIssuer;

/// A fresh token of `idp`: (signing input, raw signature).
fn signed(idp: &DevIssuer) -> (String, Vec<u8>) {
    let token = idp.sign(&idp.claims("alice", "aud", 1));
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input.to_owned(), URL_SAFE_NO_PAD.decode(sig).unwrap())
}

fn jwk_bytes(idp: &DevIssuer, member: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(idp.jwk()[member].as_str().unwrap()).unwrap()
}

#[test]
fn an_ed25519_key_that_is_not_32_bytes_fits_nothing_even_if_it_starts_with_the_real_key() {
    let idp = DevIssuer::eddsa("https://ed").unwrap();
    let (input, sig) = signed(&idp);
    let x = jwk_bytes(&idp, "x");
    verify(Algorithm::EdDSA, Key::Ed25519(&x), input.as_bytes(), &sig).unwrap();
    // RustCrypto's verifier takes the first 32 bytes of a longer key and panics on a shorter one.
    let longer = [&x[..], &[0]].concat();
    for key in [&longer[..], &x[..31], &[][..]] {
        assert_eq!(
            verify(Algorithm::EdDSA, Key::Ed25519(key), input.as_bytes(), &sig),
            Err(SigError::KeyMismatch)
        );
    }
}

#[test]
fn an_ec_point_of_the_other_curve_or_size_fits_nothing() {
    let (p256, p384) = (DevIssuer::es256("https://es").unwrap(), DevIssuer::es384("https://es").unwrap());
    let point = |idp: &DevIssuer| [&[4u8][..], &jwk_bytes(idp, "x"), &jwk_bytes(idp, "y")].concat();
    let (a, b) = (point(&p256), point(&p384));
    let (input, sig) = signed(&p256);
    verify(Algorithm::ES256, Key::Ec(&a), input.as_bytes(), &sig).unwrap();
    assert_eq!(verify(Algorithm::ES384, Key::Ec(&a), input.as_bytes(), &sig), Err(SigError::KeyMismatch));
    assert_eq!(verify(Algorithm::ES256, Key::Ec(&b), input.as_bytes(), &sig), Err(SigError::KeyMismatch));
    assert_eq!(
        verify(Algorithm::ES256, Key::Ec(&a[..64]), input.as_bytes(), &sig),
        Err(SigError::KeyMismatch)
    );
    // A compressed point is refused as well: only the uncompressed form is 65 bytes.
    assert_eq!(
        verify(Algorithm::ES256, Key::Ec(&a[..33]), input.as_bytes(), &sig),
        Err(SigError::KeyMismatch)
    );
}

#[test]
fn a_key_of_another_family_fits_no_algorithm_of_this_one() {
    let (es, ed) = (DevIssuer::es256("https://es").unwrap(), DevIssuer::eddsa("https://ed").unwrap());
    let (input, sig) = signed(&es);
    let x = jwk_bytes(&ed, "x");
    let (n, e) = ([0xC5u8; 256], [1u8, 0, 1]);
    let keys = [
        (Algorithm::ES256, Key::Rsa { n: &n, e: &e }),
        (Algorithm::ES256, Key::Ed25519(&x)),
        (Algorithm::ES256, Key::Secret(b"secret")),
        (Algorithm::EdDSA, Key::Ec(&x)),
        (Algorithm::RS256, Key::Ec(&[4u8; 65])),
        (Algorithm::PS256, Key::Secret(&n)),
        (Algorithm::HS256, Key::Rsa { n: &n, e: &e }),
        (Algorithm::HS256, Key::RsaDer(&n)),
    ];
    for (alg, key) in keys {
        assert_eq!(verify(alg, key, input.as_bytes(), &sig), Err(SigError::KeyMismatch), "{alg:?}");
    }
}

#[test]
fn rsa_keys_over_4096_bits_verify_nothing_though_ring_would_take_them() {
    let pem = include_str!("../../tests/keys/rsa4104.pem");
    for alg in [jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::PS512] {
        let idp = DevIssuer::rsa_from_pem("https://rsa", pem, alg).unwrap();
        let (input, sig) = signed(&idp);
        let (n, e) = (jwk_bytes(&idp, "n"), jwk_bytes(&idp, "e"));
        assert_eq!((n.len(), sig.len()), (513, 513));
        assert_eq!(verify(alg, Key::Rsa { n: &n, e: &e }, input.as_bytes(), &sig), Err(SigError::Invalid));
        // The same signature is good as far as ring is concerned: the cap is what refuses it.
        let params = if alg == Algorithm::RS256 {
            &rs::RSA_PKCS1_2048_8192_SHA256
        } else {
            &rs::RSA_PSS_2048_8192_SHA512
        };
        rs::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, input.as_bytes(), &sig).unwrap();
    }
}

#[test]
fn hmac_accepts_the_whole_tag_of_its_own_hash_and_secret_only() {
    let tag = |alg, secret: &[u8], m: &[u8]| hmac::sign(&hmac::Key::new(alg, secret), m).as_ref().to_vec();
    let good = tag(hmac::HMAC_SHA256, b"k1", b"m");
    verify(Algorithm::HS256, Key::Secret(b"k1"), b"m", &good).unwrap();
    let other_secret = tag(hmac::HMAC_SHA256, b"k2", b"m");
    let other_hash = tag(hmac::HMAC_SHA384, b"k1", b"m");
    for t in [&good[..16], &good[..0], &other_secret[..], &other_hash[..]] {
        assert_eq!(verify(Algorithm::HS256, Key::Secret(b"k1"), b"m", t), Err(SigError::Invalid));
    }
    assert_eq!(verify(Algorithm::HS256, Key::Secret(b"k1"), b"n", &good), Err(SigError::Invalid));
    verify(Algorithm::HS384, Key::Secret(b"k1"), b"m", &other_hash).unwrap();
    let sha512 = tag(hmac::HMAC_SHA512, b"k1", b"m");
    verify(Algorithm::HS512, Key::Secret(b"k1"), b"m", &sha512).unwrap();
}

/// The group order ℓ of Ed25519, little-endian (RFC 8032 §5.1).
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn ed25519_agrees_with_ring_and_refuses_a_non_canonical_s() {
    let idp = DevIssuer::eddsa("https://ed").unwrap();
    let (input, sig) = signed(&idp);
    let x = jwk_bytes(&idp, "x");
    let ring_ok = |s: &[u8]| rs::UnparsedPublicKey::new(&rs::ED25519, &x).verify(input.as_bytes(), s).is_ok();
    // S + ℓ is the same scalar mod ℓ: a malleated copy of a valid signature (RFC 8032 §8.4).
    let mut malleated = sig.clone();
    let mut carry = 0u16;
    for (b, l) in malleated[32..].iter_mut().zip(ED25519_L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    let mut flipped = sig.clone();
    flipped[10] ^= 1;
    for (s, good) in [(&sig, true), (&malleated, false), (&flipped, false), (&sig[..63].to_vec(), false)] {
        let ours = verify(Algorithm::EdDSA, Key::Ed25519(&x), input.as_bytes(), s).is_ok();
        assert_eq!((ours, ring_ok(s)), (good, good));
    }
}
