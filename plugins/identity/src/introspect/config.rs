//! The `issuers[].introspection` config section and its checks.

use std::path::{Path, PathBuf};

use crate::build::resolve;

use phigate_plugin::ConfigIssue;
use schemars::JsonSchema;
use serde::Deserialize;

/// Token introspection (RFC 7662) at this issuer's authorization server, for access tokens the
/// gateway cannot verify on its own (opaque tokens) and, optionally, to learn that a JWT was
/// revoked before it expires. The endpoint's answer (`active`, `exp`, `aud`, `scope`, `sub`,
/// `cnf`, SMART's `patient` and `fhirUser`, …) is read through the issuer's claim mapping like a
/// JWT payload, and the same checks apply: audience, required claims, binding, MFA, freshness.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint; must be `https`. Redirects are not followed.
    pub endpoint: String,
    /// PEM file of CA certificates trusted for `endpoint` (relative to the config file).
    /// Default: the Mozilla root set.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// How the gateway authenticates to the endpoint (RFC 7662 §2.1 requires it):
    /// `client_secret_basic` (HTTP Basic, RFC 6749 §2.3.1), `client_secret_post` (in the form),
    /// `tls_client_auth` (a client certificate, RFC 8705 §2) or `private_key_jwt` (a JWT the
    /// gateway signs for each call, RFC 7523 §2.2; no shared secret). Default:
    /// `client_secret_basic`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// File holding the client secret (`client_secret_basic`, `client_secret_post`; relative to the
    /// config file; one trailing newline is ignored). Read once at start; never logged.
    #[serde(default)]
    pub client_secret_path: Option<PathBuf>,
    /// PEM certificate chain presented to the endpoint (`tls_client_auth`).
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// PEM private key of `client_cert_path`.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
    /// PKCS#8 PEM private key that signs the client assertion (`private_key_jwt`): P-256 (signs
    /// ES256), RSA of 2048 bits or more (RS256) or Ed25519 (EdDSA); its public key is registered
    /// with the authorization server (as a JWK or in the client's JWKS). Each call sends a fresh
    /// assertion: `iss` and `sub` = `client_id`, `aud` = `endpoint`, a random `jti`, `iat`, and
    /// `exp` 60 seconds later. Never logged.
    #[serde(default)]
    pub assertion_key_path: Option<PathBuf>,
    /// `kid` header of the client assertion, when the authorization server needs it to pick the
    /// key (`private_key_jwt`).
    #[serde(default)]
    pub assertion_kid: Option<String>,
    /// Which tokens are introspected: `opaque` (tokens that are not JWTs), `jwt` (this issuer's
    /// JWTs, after their signature checks when the issuer has a JWKS: a revoked JWT is refused
    /// within `cache_ttl_secs`), or `all`. Opaque tokens name no issuer, so at most one issuer
    /// may take them (`opaque` or `all`). Default: `opaque`.
    #[serde(default)]
    pub tokens: IntrospectTokens,
    /// How long an active answer is reused, in seconds (never beyond the token's `exp`): how
    /// late a revocation is noticed. An answer without `exp` is good for this long. 1..=3600.
    /// Default: 60.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// How long a refused token (inactive, or active but failing a check) is refused without
    /// asking again, in seconds, so a client retrying a dead token does not load the
    /// authorization server. 0..=300. Default: 10.
    #[serde(default = "default_refused_cache_ttl_secs")]
    pub refused_cache_ttl_secs: u64,
    /// Longest a request waits for an answer (queueing, connection, TLS, response), in
    /// milliseconds; past it the request gets 503 `not_ready` with `Retry-After: 1`.
    /// 100..=30000. Default: 2000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Introspection calls in flight at once (also the connections kept to the endpoint);
    /// further calls wait within `timeout_ms`. Requests presenting the same token share one call.
    /// 1..=1024. Default: 32.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl std::fmt::Debug for IntrospectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionConfig")
            .field("endpoint", &self.endpoint)
            .field("client_auth", &self.client_auth)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-encoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A client certificate on the TLS connection; `client_id` in the form body.
    TlsClientAuth,
    /// A signed JWT client assertion in the form body (RFC 7523 §2.2, OpenID Connect Core §9).
    PrivateKeyJwt,
}

/// Which tokens go to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectTokens {
    /// Tokens that are not JWTs.
    #[default]
    Opaque,
    /// This issuer's JWTs.
    Jwt,
    /// Both.
    All,
}

impl IntrospectTokens {
    /// Whether opaque tokens are sent here.
    pub(crate) fn opaque(self) -> bool {
        matches!(self, IntrospectTokens::Opaque | IntrospectTokens::All)
    }

    /// Whether this issuer's JWTs are sent here.
    pub(crate) fn jwt(self) -> bool {
        matches!(self, IntrospectTokens::Jwt | IntrospectTokens::All)
    }
}

fn default_cache_ttl_secs() -> u64 {
    60
}
fn default_refused_cache_ttl_secs() -> u64 {
    10
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_max_in_flight() -> usize {
    32
}

/// The client credentials, checked and read.
pub(crate) enum Credentials {
    /// The client secret (basic or post).
    Secret(String),
    /// The certificate chain and key (`tls_client_auth`).
    Certificate(Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>),
    /// The key signing client assertions (`private_key_jwt`).
    Assertion(AssertionKey),
}

/// A client-assertion signing key and the algorithm its type implies.
pub(crate) struct AssertionKey {
    pub(crate) key: jsonwebtoken::EncodingKey,
    pub(crate) alg: jsonwebtoken::Algorithm,
    pub(crate) kid: Option<String>,
}

impl IntrospectionConfig {
    /// Checks ranges and reads the credentials. `key` prefixes every issue's path.
    pub(crate) fn check(&self, key: &str, dir: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Credentials> {
        let k = |f: &str| format!("{key}.{f}");
        let before = issues.len();
        let mut range = |field: &str, ok: bool, msg: &str| {
            if !ok {
                issues.push(ConfigIssue::new(k(field), msg.to_owned()));
            }
        };
        range("cache_ttl_secs", (1..=3600).contains(&self.cache_ttl_secs), "must be between 1 and 3600");
        range("refused_cache_ttl_secs", self.refused_cache_ttl_secs <= 300, "must be at most 300");
        range("timeout_ms", (100..=30_000).contains(&self.timeout_ms), "must be between 100 and 30000");
        range("max_in_flight", (1..=1024).contains(&self.max_in_flight), "must be between 1 and 1024");
        range("client_id", !self.client_id.is_empty(), "must not be empty");
        let credentials = self.credentials(&k, dir, issues);
        if issues.len() > before {
            return None;
        }
        credentials
    }

    fn credentials(
        &self,
        k: &dyn Fn(&str) -> String,
        dir: &Path,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Credentials> {
        let secret = self.client_secret_path.as_deref();
        let cert = (self.client_cert_path.as_deref(), self.client_key_path.as_deref());
        if self.client_auth != ClientAuth::PrivateKeyJwt {
            for (field, set) in [
                ("assertion_key_path", self.assertion_key_path.is_some()),
                ("assertion_kid", self.assertion_kid.is_some()),
            ] {
                if set {
                    issues.push(ConfigIssue::new(k(field), "only applies to client_auth: private_key_jwt"));
                }
            }
        }
        match (self.client_auth, secret, cert) {
            (ClientAuth::PrivateKeyJwt, None, (None, None)) => {
                let Some(p) = self.assertion_key_path.as_deref() else {
                    issues.push(ConfigIssue::new(
                        k("assertion_key_path"),
                        "private_key_jwt needs assertion_key_path",
                    ));
                    return None;
                };
                if self.assertion_kid.as_deref().is_some_and(str::is_empty) {
                    issues.push(ConfigIssue::new(k("assertion_kid"), "must not be empty"));
                    return None;
                }
                let (key, alg) = read_assertion_key(&resolve(dir, p), &k("assertion_key_path"), issues)?;
                Some(Credentials::Assertion(AssertionKey { key, alg, kid: self.assertion_kid.clone() }))
            }
            (ClientAuth::PrivateKeyJwt, _, _) => {
                issues.push(ConfigIssue::new(
                    k("client_auth"),
                    "private_key_jwt takes assertion_key_path (no client_secret_path or client certificate)",
                ));
                None
            }
            (ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost, Some(p), (None, None)) => {
                read_secret(&resolve(dir, p), &k("client_secret_path"), issues).map(Credentials::Secret)
            }
            (ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost, _, _) => {
                issues.push(ConfigIssue::new(
                    k("client_secret_path"),
                    "client_secret_basic and client_secret_post need client_secret_path (and no client certificate)",
                ));
                None
            }
            (ClientAuth::TlsClientAuth, None, (Some(c), Some(key))) => {
                let chain = read_chain(&resolve(dir, c), &k("client_cert_path"), issues)?;
                let pkey = read_key(&resolve(dir, key), &k("client_key_path"), issues)?;
                Some(Credentials::Certificate(chain, pkey))
            }
            (ClientAuth::TlsClientAuth, _, _) => {
                issues.push(ConfigIssue::new(
                    k("client_cert_path"),
                    "tls_client_auth needs client_cert_path and client_key_path (and no client_secret_path)",
                ));
                None
            }
        }
    }
}

/// A PKCS#8 PEM signing key: P-256 → ES256, RSA (2048 bits or more) → RS256, Ed25519 → EdDSA.
/// Errors name the key, never the content.
fn read_assertion_key(
    path: &Path,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(jsonwebtoken::EncodingKey, jsonwebtoken::Algorithm)> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    use p256::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let pem = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue::new(key, format!("cannot be read: {}", e.kind())));
            return None;
        }
    };
    let found = if p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).is_ok() {
        EncodingKey::from_ec_pem(pem.as_bytes()).ok().map(|k| (k, Algorithm::ES256))
    } else if let Ok(rsa) = rsa::RsaPrivateKey::from_pkcs8_pem(&pem) {
        if rsa.size() < 256 {
            issues.push(ConfigIssue::new(key, "an RSA key must have at least 2048 bits"));
            return None;
        }
        use rsa::pkcs1::EncodeRsaPrivateKey;
        rsa.to_pkcs1_der().ok().map(|der| (EncodingKey::from_rsa_der(der.as_bytes()), Algorithm::RS256))
    } else if ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).is_ok() {
        EncodingKey::from_ed_pem(pem.as_bytes()).ok().map(|k| (k, Algorithm::EdDSA))
    } else {
        None
    };
    if found.is_none() {
        issues.push(ConfigIssue::new(key, "not a PKCS#8 PEM private key of P-256, RSA or Ed25519"));
    }
    found
}

/// The secret file's text without one trailing newline (how `echo` and Kubernetes secrets write
/// it). Errors name the key, never the content.
fn read_secret(path: &Path, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue::new(key, format!("cannot be read: {}", e.kind())));
            return None;
        }
    };
    let secret = text.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&text);
    if secret.is_empty() {
        issues.push(ConfigIssue::new(key, "the file is empty"));
        return None;
    }
    Some(secret.to_owned())
}

fn read_chain(
    path: &Path,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .unwrap_or_default();
    if chain.is_empty() {
        issues.push(ConfigIssue::new(key, "no readable PEM certificate in the file"));
        return None;
    }
    Some(chain)
}

fn read_key(
    path: &Path,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    match rustls::pki_types::PrivateKeyDer::from_pem_file(path) {
        Ok(k) => Some(k),
        Err(_) => {
            issues.push(ConfigIssue::new(key, "no readable PEM private key in the file"));
            None
        }
    }
}
