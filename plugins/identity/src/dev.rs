//! A development token issuer for the demo and for tests: generates a key, publishes its JWKS,
//! and signs tokens shaped like a real IdP's. Never use it as a production IdP.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Why a dev key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    /// The key material could not be encoded or parsed.
    #[error("key: {0}")]
    Key(String),
    /// The algorithm does not fit the key.
    #[error("algorithm does not fit the key")]
    Algorithm,
}

fn key_err(e: impl std::fmt::Display) -> DevIssuerError {
    DevIssuerError::Key(e.to_string())
}

/// A signing key with its JWK and issuer name.
pub struct DevIssuer {
    iss: String,
    kid: String,
    alg: jsonwebtoken::Algorithm,
    key: EncodingKey,
    jwk: Value,
    private_pem: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("iss", &self.iss)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn kid_for(public: &[u8]) -> String {
    format!("dev-{}", &hex_prefix(&Sha256::digest(public)))
}

fn hex_prefix(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl DevIssuer {
    /// A fresh ES256 (P-256) key.
    ///
    /// # Errors
    /// If the key cannot be encoded.
    pub fn es256(iss: impl Into<String>) -> Result<Self, DevIssuerError> {
        Self::es256_from_key(iss, p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// An ES256 issuer from a PKCS#8 PEM private key (the demo's DPoP client key, kept on disk
    /// between commands).
    ///
    /// # Errors
    /// If the PEM is not a P-256 key.
    pub fn es256_from_pem(iss: impl Into<String>, pem: &str) -> Result<Self, DevIssuerError> {
        use p256::pkcs8::DecodePrivateKey;
        Self::es256_from_key(iss, p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(key_err)?)
    }

    fn es256_from_key(iss: impl Into<String>, sk: p256::ecdsa::SigningKey) -> Result<Self, DevIssuerError> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = sk.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?.to_string();
        let point = sk.verifying_key().to_encoded_point(false);
        let (x, y) =
            (point.x().ok_or(DevIssuerError::Algorithm)?, point.y().ok_or(DevIssuerError::Algorithm)?);
        let kid = kid_for(point.as_bytes());
        let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        Ok(DevIssuer {
            key: EncodingKey::from_ec_pem(pem.as_bytes()).map_err(key_err)?,
            iss: iss.into(),
            kid,
            alg: jsonwebtoken::Algorithm::ES256,
            jwk,
            private_pem: pem,
        })
    }

    /// A fresh ES384 (P-384) key.
    ///
    /// # Errors
    /// If the key cannot be generated.
    pub fn es384(iss: impl Into<String>) -> Result<Self, DevIssuerError> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING as P384};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&P384, &rng).map_err(key_err)?;
        let pair = EcdsaKeyPair::from_pkcs8(&P384, pkcs8.as_ref(), &rng).map_err(key_err)?;
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..).ok_or(DevIssuerError::Algorithm)?.split_at(48);
        let kid = kid_for(point);
        let jwk = json!({"kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        Ok(DevIssuer {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            iss: iss.into(),
            kid,
            alg: jsonwebtoken::Algorithm::ES384,
            jwk,
            private_pem: pkcs8_pem(pkcs8.as_ref()),
        })
    }

    /// The RFC 7638 thumbprint of this key: the `cnf.jkt` of tokens bound to it (RFC 9449).
    ///
    /// # Errors
    /// If the key's JWK has no thumbprint.
    pub fn jwk_thumbprint(&self) -> Result<String, DevIssuerError> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk.clone()).map_err(key_err)?;
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).map_err(key_err)
    }

    /// A DPoP proof (RFC 9449) signed by this key, for `method` on `url` (query and fragment
    /// dropped), presenting `token`, issued at `iat`, with a random `jti`.
    pub fn dpop_proof(&self, method: &str, url: &str, token: &str, iat: i64) -> String {
        self.dpop_proof_with_nonce(method, url, token, iat, None)
    }

    /// [`DevIssuer::dpop_proof`] carrying a server `nonce` (RFC 9449 §9) when given.
    pub fn dpop_proof_with_nonce(
        &self,
        method: &str,
        url: &str,
        token: &str,
        iat: i64,
        nonce: Option<&str>,
    ) -> String {
        use rand_core::RngCore;
        use sha2::Digest;
        let mut jti = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut jti);
        let htu = url.split(['?', '#']).next().unwrap_or_default();
        let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk});
        let mut claims = json!({
            "jti": URL_SAFE_NO_PAD.encode(jti), "htm": method, "htu": htu, "iat": iat,
            "ath": URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes())),
        });
        if let Some(n) = nonce {
            claims["nonce"] = Value::from(n);
        }
        self.sign_raw(&header, &claims)
    }

    /// A fresh Ed25519 key (`EdDSA`).
    ///
    /// # Errors
    /// If the key cannot be encoded.
    pub fn eddsa(iss: impl Into<String>) -> Result<Self, DevIssuerError> {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        let sk = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let pem = sk.to_pkcs8_pem(LineEnding::LF).map_err(key_err)?.to_string();
        let public = sk.verifying_key().to_bytes();
        let kid = kid_for(&public);
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(public)});
        Ok(DevIssuer {
            key: EncodingKey::from_ed_pem(pem.as_bytes()).map_err(key_err)?,
            iss: iss.into(),
            kid,
            alg: jsonwebtoken::Algorithm::EdDSA,
            jwk,
            private_pem: pem,
        })
    }

    /// An RSA issuer from a PKCS#8 PEM private key (RSA generation is slow; load a stored key),
    /// signing with `alg` (RS256/384/512 or PS256/384/512).
    ///
    /// # Errors
    /// If the PEM is not an RSA key or `alg` is not an RSA algorithm.
    pub fn rsa_from_pem(
        iss: impl Into<String>,
        pem: &str,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<Self, DevIssuerError> {
        use jsonwebtoken::Algorithm::*;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        if !matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) {
            return Err(DevIssuerError::Algorithm);
        }
        let sk = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(key_err)?;
        let n = sk.n().to_bytes_be();
        let kid = kid_for(&n);
        let jwk = json!({"kty": "RSA", "use": "sig", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(sk.e().to_bytes_be())});
        let der = sk.to_pkcs1_der().map_err(key_err)?;
        Ok(DevIssuer {
            key: EncodingKey::from_rsa_der(der.as_bytes()),
            iss: iss.into(),
            kid,
            alg,
            jwk,
            private_pem: pem.to_owned(),
        })
    }

    /// The `iss` it signs with.
    pub fn issuer(&self) -> &str {
        &self.iss
    }

    /// The key id in the JWKS and in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm name (`ES256`, `EdDSA`, `RS256`, ...).
    pub fn alg(&self) -> &'static str {
        alg_name(self.alg)
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// `{"keys": [jwk]}`.
    pub fn jwks_json(&self) -> String {
        json!({"keys": [self.jwk]}).to_string()
    }

    /// The private key, PKCS#8 PEM (written by the demo as `signing_key_path`).
    pub fn private_key_pem(&self) -> &str {
        &self.private_pem
    }

    /// A claims builder prefilled with `iss`, `sub`, `aud`, `iat` = `now`, `exp` = `now + 3600`.
    pub fn claims(&self, sub: &str, aud: &str, now: i64) -> DevClaims {
        DevClaims::default()
            .set("iss", self.iss.as_str())
            .set("sub", sub)
            .set("aud", aud)
            .set("iat", now)
            .set("exp", now + 3600)
    }

    /// Signs `claims` with header `{alg, typ: "at+jwt", kid}`.
    pub fn sign(&self, claims: &DevClaims) -> String {
        let header = json!({"alg": self.alg(), "typ": "at+jwt", "kid": self.kid});
        self.sign_raw(&header, &Value::Object(claims.0.clone()))
    }

    /// Signs any header and payload JSON as given (for attack tokens in tests).
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).unwrap_or_default();
        format!("{input}.{sig}")
    }
}

/// PKCS#8 DER as a `PRIVATE KEY` PEM (RFC 7468: base64 in lines of 64).
fn pkcs8_pem(der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn alg_name(a: jsonwebtoken::Algorithm) -> &'static str {
    use jsonwebtoken::Algorithm::*;
    match a {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// A claims set under construction.
#[derive(Debug, Clone, Default)]
pub struct DevClaims(pub Map<String, Value>);

impl DevClaims {
    /// Sets any claim.
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn remove(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    /// The tenant, under the claim name the issuer config maps (for example `tenant`).
    pub fn tenant(self, claim: &str, tenant: &str) -> Self {
        self.set(claim, tenant)
    }

    /// `roles` as an array.
    pub fn roles(self, roles: &[&str]) -> Self {
        self.set("roles", roles.to_vec())
    }

    /// `scope`, space-separated.
    pub fn scope(self, scope: &str) -> Self {
        self.set("scope", scope)
    }

    /// `amr` (RFC 8176 values, for example `["pwd", "otp"]`).
    pub fn amr(self, amr: &[&str]) -> Self {
        self.set("amr", amr.to_vec())
    }

    /// `acr`.
    pub fn acr(self, acr: &str) -> Self {
        self.set("acr", acr)
    }

    /// `auth_time`.
    pub fn auth_time(self, t: i64) -> Self {
        self.set("auth_time", t)
    }

    /// `sid`.
    pub fn sid(self, sid: &str) -> Self {
        self.set("sid", sid)
    }

    /// RFC 9449 binding: `cnf: {"jkt": thumbprint}` (RFC 7638 thumbprint of the client's key).
    pub fn cnf_jkt(self, thumbprint: &str) -> Self {
        self.set("cnf", json!({ "jkt": thumbprint }))
    }

    /// RFC 8705 binding: `cnf: {"x5t#S256": thumbprint}` (base64url SHA-256 of the cert DER).
    pub fn cnf_x5t_s256(self, thumbprint: &str) -> Self {
        self.set("cnf", json!({"x5t#S256": thumbprint}))
    }

    /// Evidence of a multi-factor sign-in at `auth_time`: `amr: [pwd, otp]`, `acr: "mfa"`.
    pub fn mfa(self, auth_time: i64) -> Self {
        self.amr(&["pwd", "otp"]).acr("mfa").auth_time(auth_time)
    }

    /// A password-only sign-in at `auth_time` (`amr: [pwd]`): refused on MFA routes.
    pub fn password_only(self, auth_time: i64) -> Self {
        self.amr(&["pwd"]).auth_time(auth_time)
    }

    /// `exp`.
    pub fn exp(self, t: i64) -> Self {
        self.set("exp", t)
    }

    /// `iat`.
    pub fn iat(self, t: i64) -> Self {
        self.set("iat", t)
    }

    /// `nbf`.
    pub fn nbf(self, t: i64) -> Self {
        self.set("nbf", t)
    }
}

/// The RFC 8705 `x5t#S256` of a DER certificate: base64url (no padding) SHA-256.
pub fn cert_thumbprint(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_issuers_publish_a_jwks_with_their_kid_and_sign_verifiable_tokens() {
        for i in [
            DevIssuer::es256("https://dev").unwrap(),
            DevIssuer::es384("https://dev").unwrap(),
            DevIssuer::eddsa("https://dev").unwrap(),
        ] {
            let jwks: Value = serde_json::from_str(&i.jwks_json()).unwrap();
            assert_eq!(jwks["keys"][0]["kid"], i.kid());
            let t = i.sign(&i.claims("alice", "aud", 1).mfa(1).sid("s"));
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let (input, sig) = t.rsplit_once('.').unwrap();
            assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key, i.alg).unwrap());
            assert!(i.private_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        }
    }
}
