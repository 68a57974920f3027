//! FHIR Bulk Data export through the gateway, bound to the principal that started it.
//!
//! A kick-off (`$export`, `Prefer: respond-async`) answers 202 with the export's status URL in
//! `Content-Location`; the status URL, once complete, answers a manifest listing the output
//! files' URLs. Whoever holds those URLs can read the export: on most servers they are
//! capabilities any valid token opens. The gateway hands the client sealed URLs instead: the
//! upstream target, the route, the principal (issuer, subject, tenant, OAuth client) and an expiry, encrypted
//! and authenticated (ChaCha20-Poly1305, a key from `bulk_export.key_path`), under the route
//! as `<prefix>/$phigate-bulk/<ticket>`. Any replica holding the key can open one; nothing is
//! stored. When a sealed URL comes back, admission restores the upstream target (so routing,
//! classification, policy and audit see the real request) and fills `RequestCtx::bulk`; the
//! policy stage refuses a principal other than the one the URL was issued to. The upstream's own
//! status URL asked for directly is refused: the capability is the sealed one.
//!
//! A manifest naming a file the gateway cannot seal (a URL outside the route: a presigned object
//! store URL) is refused by default: the file would reach the client unchecked and unaudited.
//! `external_files: pass` lets such URLs through as the upstream wrote them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::Method;
use phigate_plugin::{BulkAccess, BulkKind, ConfigIssue, Denial, ErrorCode, RequestCtx, TenantId};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::request::{normalize_target, NormalizedTarget, TargetLimits};
use crate::routing::Route;

/// The path segment (after the route prefix) of the URLs the gateway issues.
pub const SEGMENT: &str = "$phigate-bulk";

/// Bound to every ticket: a ticket sealed for something else never opens here.
const AAD: &[u8] = b"phigate bulk export url v1";

/// Bulk export (FHIR Bulk Data `$export`) through the gateway (section `bulk_export:`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkExportConfig {
    /// Secret key file (at least 32 bytes, raw; relative to the config file) the issued URLs are
    /// sealed with. Every replica behind one load balancer needs the same key, or a poll that
    /// lands on another replica is refused. Absent: a random key per process (one replica only;
    /// a restart invalidates the URLs issued before it).
    #[serde(default)]
    pub key_path: Option<PathBuf>,
    /// Keys URLs issued before a rotation were sealed with (same format): still opened, never
    /// used to seal. Rotate by moving the old key here and a new one to `key_path`; drop it
    /// after `ttl_secs`. Default: none.
    #[serde(default)]
    pub previous_key_paths: Vec<PathBuf>,
    /// How long an issued URL (status or file) stays valid, in seconds. Default 86400 (a day;
    /// the Bulk Data IG asks servers to keep files for at least some hours).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
    /// The upstream's status endpoint, relative to the route's base (HAPI FHIR:
    /// `$export-poll-status`; a server with job ids in the path, such as `bulkstatus/<id>`:
    /// `bulkstatus`). Asked for directly instead of through an issued URL (it or any path under
    /// it, by any method), it is refused with 404 `bulk_url_invalid`. Default
    /// `$export-poll-status`.
    #[serde(default = "default_status_path")]
    pub status_path: String,
    /// A completed export's manifest naming a URL outside the route (files on an object store,
    /// presigned): `refuse` answers 502 `upstream_error` instead of the manifest, since such
    /// files would reach the client without the gateway's line-by-line check, its audit record
    /// or its owner binding; `pass` sends those URLs as the upstream wrote them (the upstream
    /// then answers for who reads them). Default: refuse.
    #[serde(default)]
    pub external_files: ExternalFiles,
}

/// What to do with a manifest URL outside the route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExternalFiles {
    /// Refuse the manifest (502 `upstream_error`).
    #[default]
    Refuse,
    /// Send the URL as the upstream wrote it.
    Pass,
}

fn default_ttl_secs() -> u64 {
    86_400
}

fn default_status_path() -> String {
    "$export-poll-status".into()
}

impl BulkExportConfig {
    /// Problems with the section, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(60..=7 * 86_400).contains(&self.ttl_secs) {
            out.push(("ttl_secs", "must be between 60 and 604800 (a week)".into()));
        }
        let p = &self.status_path;
        if p.is_empty() || p.starts_with('/') || p.contains(['?', '#']) || p.split('/').any(|s| s.is_empty())
        {
            out.push((
                "status_path",
                "must be a path relative to the route's base, like `$export-poll-status`".into(),
            ));
        }
        out
    }
}

/// The sealing key and settings, built once.
pub struct Bulk {
    key: LessSafeKey,
    /// Keys that only open (rotated out).
    previous: Vec<LessSafeKey>,
    rng: SystemRandom,
    ttl_secs: u64,
    /// `/` + the status path: compared with a route's rest.
    status_rest: Box<str>,
    external: ExternalFiles,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// What a sealed URL holds. Short member names: it travels in a URL.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Ticket {
    /// `s` status, `f` file.
    k: char,
    /// The route's name.
    r: String,
    /// The upstream target as the client would address it through the gateway: path (under the
    /// route prefix) and query.
    t: String,
    i: String,
    s: String,
    n: Option<String>,
    /// The OAuth client, when the token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Expiry, seconds since the epoch.
    e: u64,
}

impl Bulk {
    /// Builds the key from the config (`dir`: the config file's directory).
    ///
    /// # Errors
    /// The key file's problems, under `bulk_export.key_path`.
    pub fn build(cfg: &BulkExportConfig, dir: &Path) -> Result<Bulk, Vec<ConfigIssue>> {
        let rng = SystemRandom::new();
        let mut issues = Vec::new();
        let mut read = |path: &Path, key: &str| {
            let path = if path.is_absolute() { path.to_owned() } else { dir.join(path) };
            phigate_plugin::read_secret_key(&path, key, &mut issues)
        };
        let secret = match &cfg.key_path {
            Some(path) => read(path, "bulk_export.key_path"),
            None => {
                let mut k = vec![0u8; 32];
                rng.fill(&mut k).ok().map(|()| k)
            }
        };
        let previous: Vec<_> = cfg
            .previous_key_paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| read(p, &format!("bulk_export.previous_key_paths[{i}]")))
            .collect();
        let Some(secret) = secret.filter(|_| issues.is_empty()) else {
            if issues.is_empty() {
                issues.push(ConfigIssue::new("bulk_export", "no system randomness for a key"));
            }
            return Err(issues);
        };
        let mut bulk = Bulk::with_secret(&secret, cfg.ttl_secs, &cfg.status_path)
            .ok_or_else(|| vec![ConfigIssue::new("bulk_export.key_path", "no key could be derived")])?;
        bulk.previous = previous.iter().filter_map(|k| derive_key(k)).collect();
        bulk.external = cfg.external_files;
        Ok(bulk)
    }

    fn with_secret(secret: &[u8], ttl_secs: u64, status_path: &str) -> Option<Bulk> {
        Some(Bulk {
            key: derive_key(secret)?,
            previous: Vec::new(),
            rng: SystemRandom::new(),
            ttl_secs,
            status_rest: format!("/{status_path}").into(),
            external: ExternalFiles::Refuse,
        })
    }

    /// Admission of a request on a FHIR route: an issued URL becomes the target it stands for
    /// (normalized like any client target), with what it grants; the upstream's status endpoint
    /// asked for directly is refused; anything else passes unchanged.
    ///
    /// # Errors
    /// 404 `bulk_url_invalid` for a ticket that does not open, has expired, names another route,
    /// or for a direct status request; 405 for a method the URL does not allow.
    pub fn admit(
        &self,
        route: &Route,
        target: NormalizedTarget,
        method: &Method,
        limits: &TargetLimits,
    ) -> Result<(NormalizedTarget, Option<BulkAccess>), Denial> {
        let rest = route.rest(&target.path);
        let Some(token) =
            rest.strip_prefix('/').and_then(|r| r.strip_prefix(SEGMENT)).and_then(|r| r.strip_prefix('/'))
        else {
            // The status endpoint and anything under it (servers that put the job id in the
            // path), whatever the method.
            let status =
                rest.strip_prefix(&*self.status_rest).is_some_and(|r| r.is_empty() || r.starts_with('/'));
            if status {
                return Err(invalid("the upstream's status URL asked for directly"));
            }
            return Ok((target, None));
        };
        if token.contains('/') || !target.query.is_empty() {
            return Err(invalid("not a URL the gateway issued"));
        }
        let ticket = self.open(token, unix_now())?;
        if ticket.r != *route.meta.name {
            return Err(invalid("issued for another route"));
        }
        let kind = if ticket.k == 's' { BulkKind::Status } else { BulkKind::File };
        let allowed = match kind {
            BulkKind::Status => matches!(*method, Method::GET | Method::DELETE),
            BulkKind::File => *method == Method::GET,
        };
        if !allowed {
            return Err(Denial::new(ErrorCode::MethodNotAllowed));
        }
        let restored = normalize_target(ticket.t.as_bytes(), limits)
            .ok()
            .filter(|t| route.matches(&t.path))
            .ok_or_else(|| invalid("the sealed target is not under the route"))?;
        let access = BulkAccess {
            kind,
            issuer: ticket.i.into(),
            subject: ticket.s.into(),
            tenant: ticket.n.map(TenantId::new),
            client_id: ticket.c.map(Into::into),
        };
        Ok((restored, Some(access)))
    }

    /// The URL to give the client in place of `upstream_url` (the status URL of a kick-off, or a
    /// manifest's file URL), or `None` when it is not under `route` (left as the upstream wrote
    /// it) or the request has no principal to bind it to.
    pub fn issue(
        &self,
        kind: BulkKind,
        route: &Route,
        req: &RequestCtx,
        upstream_url: &str,
    ) -> Option<String> {
        let principal = req.principal.as_ref()?;
        let host = req.request.headers.get(http::header::HOST)?.to_str().ok()?;
        let (path, query) = gateway_target(route, host, upstream_url)?;
        let ticket = Ticket {
            k: if kind == BulkKind::Status { 's' } else { 'f' },
            r: route.meta.name.to_string(),
            t: match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            },
            i: principal.issuer.to_string(),
            s: principal.subject.to_string(),
            n: principal.tenant.as_ref().map(|t| t.to_string()),
            c: principal.client_id.clone(),
            e: unix_now().saturating_add(self.ttl_secs),
        };
        let token = self.seal(&ticket)?;
        Some(format!("https://{host}{}/{SEGMENT}/{token}", route.prefix()))
    }

    /// The manifest of a completed export with every `url` under the route replaced by an
    /// issued URL: a file URL for `output`, `error` and `deleted`, a status URL for `link` (the
    /// next page of a large manifest, Bulk Data 2.0); `requiresAccessToken` true once a URL was
    /// issued (the gateway asks the client's token for them); other members as sent. A URL that
    /// cannot be issued (outside the route) is refused, or with `external_files: pass` left as
    /// written.
    ///
    /// # Errors
    /// 502 `upstream_error` when the body is not a JSON object, or names a URL outside the route
    /// (unless passed).
    pub fn rewrite_manifest(&self, route: &Route, req: &RequestCtx, body: &[u8]) -> Result<Bytes, Denial> {
        let bad = || Denial::new(ErrorCode::UpstreamError).with_cause("bulk manifest is not a JSON object");
        let mut manifest: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
        let object = manifest.as_object_mut().ok_or_else(bad)?;
        let mut issued_any = false;
        for (list, kind) in [
            ("output", BulkKind::File),
            ("error", BulkKind::File),
            ("deleted", BulkKind::File),
            ("link", BulkKind::Status),
        ] {
            let Some(items) = object.get_mut(list).and_then(|v| v.as_array_mut()) else { continue };
            for item in items {
                let Some(url) = item.get_mut("url") else { continue };
                let issued = url.as_str().and_then(|u| self.issue(kind, route, req, u));
                match issued {
                    Some(issued) => {
                        *url = serde_json::Value::String(issued);
                        issued_any = true;
                    }
                    None if self.external == ExternalFiles::Pass => {}
                    None => {
                        return Err(Denial::new(ErrorCode::UpstreamError).with_cause(
                            "bulk manifest names a URL outside the route (external_files: refuse)",
                        ))
                    }
                }
            }
        }
        if issued_any {
            // The issued URLs are opened with the client's token (identity runs on them), whatever
            // the upstream's own files needed.
            object.insert("requiresAccessToken".into(), serde_json::Value::Bool(true));
        }
        serde_json::to_vec(&manifest).map(Bytes::from).map_err(|_| bad())
    }

    fn seal(&self, ticket: &Ticket) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = serde_json::to_vec(ticket).ok()?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut data)
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    fn open(&self, token: &str, now: u64) -> Result<Ticket, Denial> {
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid("not a URL the gateway issued"))?;
        if raw.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(invalid("not a URL the gateway issued"));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| invalid("not a URL the gateway issued"))?;
        // The current key, then those rotated out.
        let ticket = std::iter::once(&self.key)
            .chain(&self.previous)
            .find_map(|key| {
                let mut sealed = sealed.to_vec();
                let plain = key
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut sealed)
                    .ok()?;
                serde_json::from_slice::<Ticket>(plain).ok()
            })
            .ok_or_else(|| invalid("not a URL the gateway issued"))?;
        if ticket.e <= now {
            return Err(invalid("expired"));
        }
        Ok(ticket)
    }
}

/// `upstream_url`'s path and query as the client addresses them through the gateway. An
/// absolute URL on `host` (the host the client reached the gateway at: an upstream configured
/// with the gateway's public base URL) is already in the gateway's paths and must lie under the
/// route's prefix; any other (the upstream's own name, or a path alone) is in the upstream's and
/// must lie under the route's upstream prefix.
fn gateway_target(route: &Route, host: &str, upstream_url: &str) -> Option<(String, Option<String>)> {
    let (public, path_and_query) = match upstream_url.split_once("://") {
        Some((_, rest)) => {
            let slash = rest.find('/')?;
            (rest[..slash].eq_ignore_ascii_case(host), &rest[slash..])
        }
        None if upstream_url.starts_with('/') => (false, upstream_url),
        None => return None,
    };
    let path_and_query = path_and_query.split('#').next().unwrap_or_default();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    if public {
        return route.matches(path).then(|| (path.to_owned(), query));
    }
    let rest = route.upstream_rest(path)?;
    Some((format!("{}{rest}", route.prefix()), query))
}

/// The AEAD key made of the key file's bytes (any length) with HKDF-SHA256.
fn derive_key(secret: &[u8]) -> Option<LessSafeKey> {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"phigate bulk export");
    let prk = salt.extract(secret);
    let info = [AAD];
    let okm = prk.expand(&info, &CHACHA20_POLY1305).ok()?;
    let mut key = [0u8; 32];
    okm.fill(&mut key).ok()?;
    UnboundKey::new(&CHACHA20_POLY1305, &key).ok().map(LessSafeKey::new)
}

fn invalid(cause: &'static str) -> Denial {
    Denial::new(ErrorCode::BulkUrlInvalid).with_cause(cause)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
