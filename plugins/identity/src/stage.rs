//! The identity stage at request time: extract the bearer token, validate it (or find it in the
//! cache), then the per-request checks that no cache may skip: binding, idle timeout, MFA and
//! freshness.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use moka::sync::Cache;
use phigate_plugin::{
    async_trait, BackgroundTask, Denial, Flow, Interaction, Principal, Readiness, RequestCtx, Stage, TenantId,
};
use prometheus::IntCounter;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::claims::{self, ClaimMap};
use crate::clock::Clock;
use crate::config::{Algorithm, RoutePolicyConfig};
use crate::dpop::{Dpop, Target};
use crate::error::{self, AuthError, Challenges};
use crate::introspect::{self, Introspector};
use crate::jwks::{KeySet, KeyStore};
use crate::nonce::DPOP_NONCE;
use crate::replay::{ReplayFailureMode, SharedReplay};
use crate::session::Sessions;
use crate::{metrics, token};

const X_PHIGATE_SUBJECT: HeaderName = HeaderName::from_static("x-phigate-subject");
const X_PHIGATE_TENANT: HeaderName = HeaderName::from_static("x-phigate-tenant");
/// Upper bound on a cache entry's life, whatever `exp` says.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A configured issuer at run time.
pub(crate) struct IssuerRt {
    pub(crate) iss: Arc<str>,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) leeway: i64,
    pub(crate) map: ClaimMap,
    pub(crate) fixed_tenant: Option<TenantId>,
    pub(crate) require_typ: bool,
    pub(crate) required_claims: Vec<(String, String)>,
    /// The JWKS; none for an issuer of introspected tokens only.
    pub(crate) keys: Option<Arc<KeyStore>>,
    /// Token introspection (RFC 7662), when configured.
    pub(crate) introspection: Option<Introspector>,
}

/// A route's effective requirements.
#[derive(Debug, Clone)]
pub(crate) struct RouteRt {
    pub(crate) policy: RoutePolicyConfig,
    pub(crate) challenges: Challenges,
}

/// A verified token, shared by every request that presents it.
pub(crate) struct Verified {
    principal: Arc<Principal>,
    issuer: usize,
    generation: Option<u64>,
    /// For a token vouched for by introspection: when (Unix seconds) to ask again.
    recheck_at: Option<i64>,
    leeway: i64,
    session_key: [u8; 32],
    subject_hv: Option<HeaderValue>,
    tenant_hv: Option<HeaderValue>,
    ttl: Duration,
}

impl Verified {
    /// An introspection answer is reused for `ttl` at most (how late a revocation is noticed).
    fn recheck_after(&mut self, ttl: Duration, now: i64) {
        self.ttl = self.ttl.min(ttl);
        self.recheck_at = Some(now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)));
    }
}

/// Cache entries live until the token expires (plus leeway), never longer.
pub(crate) struct ByExpiry;

impl moka::Expiry<[u8; 32], Arc<Verified>> for ByExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The identity stage. Build it with [`crate::IdentityConfig::build`].
pub struct IdentityStage {
    pub(crate) issuers: Vec<IssuerRt>,
    pub(crate) by_iss: HashMap<String, usize>,
    /// The issuer whose introspection endpoint takes opaque tokens.
    pub(crate) opaque: Option<usize>,
    pub(crate) max_token_bytes: usize,
    pub(crate) cache: Cache<[u8; 32], Arc<Verified>>,
    pub(crate) sessions: Sessions,
    pub(crate) dpop: Dpop,
    pub(crate) shared_replay: Option<SharedReplay>,
    pub(crate) routes: Vec<RouteRt>,
    pub(crate) default_route: Option<RouteRt>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ok: Option<IntCounter>,
    pub(crate) hit: Option<IntCounter>,
    pub(crate) miss: Option<IntCounter>,
}

impl std::fmt::Debug for IdentityStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStage")
            .field("issuers", &self.issuers.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// RFC 6750 §2.1 `b64token` characters (JWS compact form is a subset plus `.`).
fn b64token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// How the token was presented: `Bearer` (RFC 6750) or `DPoP` (RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// The scheme and token of the one `Authorization` header.
fn credentials(headers: &HeaderMap) -> Result<(Scheme, &str), AuthError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Err(AuthError::Missing);
    };
    // RFC 6750 §3.1: more than one credential is `invalid_request`; also stops a proxy and the
    // gateway from picking different headers.
    if all.next().is_some() {
        return Err(AuthError::InvalidRequest("more than one Authorization header"));
    }
    let v = v.to_str().map_err(|_| AuthError::InvalidRequest("Authorization is not visible ASCII"))?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(AuthError::Missing);
    };
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::InvalidRequest("empty bearer credentials"));
    }
    if !token.bytes().all(b64token_byte) {
        return Err(AuthError::Malformed("characters outside b64token"));
    }
    Ok((scheme, token))
}

/// A read of the server's capabilities on a FHIR route (`metadata`,
/// `.well-known/smart-configuration`: the gateway classifies both as `capabilities`).
fn discovery(ctx: &RequestCtx) -> bool {
    ctx.fhir.as_ref().is_some_and(|f| f.interaction == Interaction::Capabilities)
        && matches!(ctx.request.method, http::Method::GET | http::Method::HEAD)
}

impl IdentityStage {
    fn route(&self, index: usize) -> Option<&RouteRt> {
        self.routes.get(index).or(self.default_route.as_ref())
    }

    fn still_valid(&self, v: &Verified, now: i64) -> bool {
        // A signature stays good while the key set it was checked against is current.
        let keys_current = match (v.generation, &self.issuers[v.issuer].keys) {
            (Some(g), Some(store)) => store.keys().is_some_and(|k| k.generation == g),
            (None, _) => true,
            (Some(_), None) => false,
        };
        now < v.principal.expires_at.saturating_add(v.leeway)
            && keys_current
            && v.recheck_at.is_none_or(|at| now < at)
    }

    async fn authenticate(&self, ctx: &RequestCtx, route: &RouteRt) -> Result<Arc<Verified>, AuthError> {
        // RFC 6750 §2.3 query transport leaks tokens into logs and histories: not accepted.
        if ctx.request.query.iter().any(|q| q.name == "access_token") {
            return Err(AuthError::InvalidRequest("access_token query parameter"));
        }
        let (scheme, token) = credentials(&ctx.request.headers)?;
        if token.len() > self.max_token_bytes {
            return Err(AuthError::Malformed("token larger than max_token_bytes"));
        }
        let hash = token::token_hash(token);
        let now = self.clock.unix_secs();
        let v = match self.cache.get(&hash) {
            Some(v) if self.still_valid(&v, now) => {
                metrics::inc(&self.hit);
                v
            }
            _ => {
                metrics::inc(&self.miss);
                let v = Arc::new(self.validate(token, hash, now).await?);
                self.cache.insert(hash, Arc::clone(&v));
                v
            }
        };
        self.per_request(ctx, route, &v, now)?;
        let proof = self.proof_of_possession(ctx, &route.policy, &v, scheme, token, now)?;
        // Last, once every local check passed: the claim other replicas see.
        if let (Some(fp), Some(shared)) = (proof, &self.shared_replay) {
            shared.claim(&fp).await?;
        }
        Ok(v)
    }

    /// RFC 9449: a DPoP-bound token needs the DPoP scheme and a valid proof; the DPoP scheme
    /// needs a DPoP-bound token; a route may refuse tokens that are not DPoP-bound. Returns the
    /// accepted proof's fingerprint (for the shared replay memory), if there was a proof.
    fn proof_of_possession(
        &self,
        ctx: &RequestCtx,
        policy: &RoutePolicyConfig,
        v: &Verified,
        scheme: Scheme,
        token: &str,
        now: i64,
    ) -> Result<Option<[u8; 32]>, AuthError> {
        match (v.principal.dpop_jkt.as_deref(), scheme) {
            (Some(jkt), Scheme::Dpop) => {
                let headers = &ctx.request.headers;
                let target = Target {
                    method: ctx.request.method.as_str(),
                    host: headers.get(http::header::HOST).and_then(|h| h.to_str().ok()),
                    path: &ctx.request.path,
                };
                self.dpop.check(headers, token, jkt, &target, policy.require_dpop_nonce, now).map(Some)
            }
            // §7.1: a DPoP-bound token sent as a bearer token is refused (its proof is the point).
            (Some(_), Scheme::Bearer) => Err(AuthError::DpopProof("DPoP-bound token presented as Bearer")),
            (None, Scheme::Dpop) => Err(AuthError::DpopProof("token is not DPoP-bound")),
            (None, Scheme::Bearer) if policy.require_dpop => Err(AuthError::DpopRequired),
            (None, Scheme::Bearer) => Ok(None),
        }
    }

    /// Checks that depend on the connection, the route or time, so never cached.
    fn per_request(
        &self,
        ctx: &RequestCtx,
        route: &RouteRt,
        v: &Verified,
        now: i64,
    ) -> Result<(), AuthError> {
        let p = &v.principal;
        let policy = &route.policy;
        match (&p.cert_thumbprint, &ctx.client.cert_thumbprint) {
            // RFC 8705 §3: the token is only good on a TLS connection with the bound certificate.
            (Some(want), Some(have)) if want.as_bytes() == have.as_bytes() => {}
            (Some(_), Some(_)) => return Err(AuthError::Binding("client certificate differs")),
            (Some(_), None) => return Err(AuthError::Binding("no client certificate")),
            (None, _) if policy.require_bound_token => {
                return Err(AuthError::Binding("route requires a certificate-bound token"))
            }
            (None, _) => {}
        }
        self.sessions.touch(v.session_key, p.auth_time, self.clock.now())?;
        if policy.require_mfa {
            let amr_ok = p.amr.iter().any(|m| policy.mfa_amr.contains(m));
            let acr_ok =
                p.acr.as_deref().is_some_and(|a| a.split(' ').any(|x| policy.mfa_acr.iter().any(|w| w == x)));
            if !(amr_ok || acr_ok) {
                return Err(AuthError::MfaRequired);
            }
        }
        if let Some(max) = policy.max_auth_age_secs {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            match p.auth_time {
                Some(t) if now.saturating_sub(t) <= max.saturating_add(v.leeway) => {}
                _ => return Err(AuthError::AuthTooOld),
            }
        }
        if (policy.forward_subject_header && v.subject_hv.is_none())
            || (policy.forward_tenant_header && p.tenant.is_some() && v.tenant_hv.is_none())
        {
            return Err(AuthError::Malformed("identity not representable in a header"));
        }
        Ok(())
    }

    async fn validate(&self, token: &str, hash: [u8; 32], now: i64) -> Result<Verified, AuthError> {
        let p = match (token::parse(token), self.opaque) {
            (Ok(p), _) => p,
            // Not a JWT: an opaque token, when an issuer introspects them.
            (Err(AuthError::Malformed(_)), Some(idx)) => {
                return self.introspected(idx, token, hash, now).await
            }
            (Err(e), _) => return Err(e),
        };
        let &idx = self.by_iss.get(p.iss.as_str()).ok_or(AuthError::UnknownIssuer)?;
        let is = &self.issuers[idx];
        let introspect_jwt = is.introspection.as_ref().filter(|ix| ix.tokens.jwt());
        let Some(store) = &is.keys else {
            // No JWKS: only the authorization server can vouch for this issuer's JWTs.
            return match introspect_jwt {
                Some(_) => self.introspected(idx, token, hash, now).await,
                None => Err(AuthError::Signature("issuer has no JWKS")),
            };
        };
        if !is.algorithms.contains(&p.alg) {
            return Err(AuthError::Signature("algorithm not allowed for this issuer"));
        }
        if is.require_typ {
            token::check_typ(p.typ.as_deref())?;
        }
        let set = select_keys(store, &p).await?;
        let key = set
            .find(p.kid.as_deref(), p.alg)
            .ok_or(AuthError::Signature("no key for this kid and algorithm"))?;
        token::verify_signature(&p, &key.key)?;
        let exp = token::check_times(&p.claims, now, is.leeway)?;
        let mut v = self.verified(idx, &p.claims, exp, Some(set.generation), hash, now)?;
        // Last, once everything local passed: has the token been revoked since it was signed?
        if let Some(ix) = introspect_jwt {
            ix.ask(hash, token).await?;
            v.recheck_after(ix.cache_ttl, now);
        }
        Ok(v)
    }

    /// A token only the issuer's introspection endpoint can vouch for: its answer is read like a
    /// JWT payload. A refusal of an active token is remembered like an inactive one.
    async fn introspected(
        &self,
        idx: usize,
        token: &str,
        hash: [u8; 32],
        now: i64,
    ) -> Result<Verified, AuthError> {
        let is = &self.issuers[idx];
        let Some(ix) = &is.introspection else {
            return Err(AuthError::Malformed("not a compact JWS"));
        };
        let members = ix.ask(hash, token).await?;
        let verified = introspect::check_answer(&members, &is.iss, now, is.leeway, ix.cache_ttl)
            .and_then(|exp| self.verified(idx, &members, exp, None, hash, now));
        match verified {
            Ok(mut v) => {
                v.recheck_after(ix.cache_ttl, now);
                Ok(v)
            }
            Err(e) => {
                ix.remember_refused(hash, e);
                Err(e)
            }
        }
    }

    /// The checks every accepted token's claims pass (audience, required claims, principal),
    /// and the cache entry. `generation` is the JWKS generation the signature was checked
    /// against (none for an introspected token).
    fn verified(
        &self,
        idx: usize,
        claims: &Map<String, Value>,
        exp: i64,
        generation: Option<u64>,
        hash: [u8; 32],
        now: i64,
    ) -> Result<Verified, AuthError> {
        let is = &self.issuers[idx];
        token::check_audience(claims::lookup(claims, &is.map.audience), &is.audiences)?;
        for (name, want) in &is.required_claims {
            if claims.get(name).and_then(|v| v.as_str()) != Some(want.as_str()) {
                return Err(AuthError::Malformed("required claim value missing"));
            }
        }
        let principal = claims::principal(claims, &is.map, &is.iss, is.fixed_tenant.as_ref(), exp)?;
        let session_key = match &principal.session_id {
            Some(sid) => {
                let mut h = Sha256::new();
                h.update((idx as u64).to_be_bytes());
                h.update(sid.as_bytes());
                h.finalize().into()
            }
            None => hash,
        };
        let secs = exp.saturating_add(is.leeway).saturating_sub(now).max(1);
        Ok(Verified {
            subject_hv: HeaderValue::from_bytes(principal.subject.as_str().as_bytes()).ok(),
            tenant_hv: principal
                .tenant
                .as_ref()
                .and_then(|t| HeaderValue::from_bytes(t.as_str().as_bytes()).ok()),
            principal: Arc::new(principal),
            issuer: idx,
            generation,
            recheck_at: None,
            leeway: is.leeway,
            session_key,
            ttl: Duration::from_secs(u64::try_from(secs).unwrap_or(1)).min(MAX_CACHE_TTL),
        })
    }

    fn apply(&self, ctx: &mut RequestCtx, route: &RouteRt, v: &Verified) {
        // RFC 9449 §8.2: a nonce on every successful DPoP response, so the client's next proof
        // has one without a 401 round trip (a DPoP-bound token only succeeds with a proof).
        if let (Some(nonces), Some(_)) = (self.dpop.nonces(), &v.principal.dpop_jkt) {
            ctx.response.add_headers.push((DPOP_NONCE, nonces.current(self.clock.unix_secs())));
        }
        ctx.principal = Some(Arc::clone(&v.principal));
        if ctx.tenant.is_none() {
            ctx.tenant = v.principal.tenant.clone();
        }
        let p = &route.policy;
        if p.strip_authorization {
            ctx.upstream.remove_headers.push(AUTHORIZATION);
            ctx.upstream.remove_headers.push(HeaderName::from_static("dpop"));
        }
        if let (true, Some(h)) = (p.forward_subject_header, &v.subject_hv) {
            ctx.upstream.set_headers.push((X_PHIGATE_SUBJECT, h.clone()));
        }
        if let (true, Some(h)) = (p.forward_tenant_header, &v.tenant_hv) {
            ctx.upstream.set_headers.push((X_PHIGATE_TENANT, h.clone()));
        }
    }
}

/// The issuer's key set holding the token's key: the current one, or after the rate-limited
/// unknown-`kid` refetch. Keys come only from the issuer's own JWKS.
async fn select_keys(store: &KeyStore, p: &token::Parsed<'_>) -> Result<Arc<KeySet>, AuthError> {
    let set = store.keys().ok_or(AuthError::KeysUnavailable)?;
    match p.kid.as_deref() {
        Some(kid) if set.find(Some(kid), p.alg).is_none() => {
            store.refetch_for_kid(kid).await.ok_or(AuthError::Signature("unknown kid"))
        }
        _ => Ok(set),
    }
}

#[async_trait]
impl Stage for IdentityStage {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn readiness(&self) -> Readiness {
        if self.issuers.iter().any(|i| i.keys.as_ref().is_some_and(|k| k.keys().is_none())) {
            return Readiness::NotReady("an issuer has no usable signing keys".into());
        }
        match &self.shared_replay {
            Some(r) if r.mode == ReplayFailureMode::Deny && !r.ever_up() => {
                Readiness::NotReady("the shared DPoP replay memory (redis) has not answered yet".into())
            }
            _ => Readiness::Ready(None),
        }
    }

    fn background_tasks(&self) -> Vec<BackgroundTask> {
        let mut tasks: Vec<BackgroundTask> = self
            .issuers
            .iter()
            .flat_map(|i| &i.keys)
            .map(|k| Box::pin(Arc::clone(k).run()) as BackgroundTask)
            .collect();
        if let Some(r) = &self.shared_replay {
            tasks.push(Box::pin(r.keeper().run()));
        }
        tasks
    }

    async fn on_request(&self, ctx: &mut RequestCtx) -> Result<Flow, Denial> {
        let Some(route) = self.route(ctx.route.index) else {
            return Err(Denial::new(phigate_plugin::ErrorCode::InternalError)
                .with_cause("identity: no route settings"));
        };
        match self.authenticate(ctx, route).await {
            Ok(v) => {
                metrics::inc(&self.ok);
                self.apply(ctx, route, &v);
                Ok(Flow::Continue)
            }
            Err(AuthError::Missing) if route.policy.anonymous_discovery && discovery(ctx) => {
                // No credentials, for the server's capabilities: on without a principal, for
                // the policy to decide.
                Ok(Flow::Continue)
            }
            Err(e) => {
                metrics::inc(&metrics::validation(e.code().as_str()));
                log::debug!(target: "phigate::identity", "denied route={} code={} cause={e}", ctx.route.name, e.code());
                let denial = error::denial(e, &route.challenges);
                match (e, self.dpop.nonces()) {
                    // RFC 9449 §9: the 401 carries the nonce to retry with. Every DPoP refusal
                    // does (§8.2 lets a server send one on any response): a client whose proof
                    // failed another check, or who sent a bound token as Bearer, needs the nonce
                    // for its next proof too, and gets it without a second round trip.
                    (
                        AuthError::DpopNonce(_) | AuthError::DpopProof(_) | AuthError::DpopRequired,
                        Some(n),
                    ) => Err(denial.with_header(DPOP_NONCE, n.current(self.clock.unix_secs()))),
                    // Redis or the authorization server will most likely answer again shortly;
                    // the client may retry.
                    (AuthError::ReplayUnavailable | AuthError::IntrospectionUnavailable, _) => {
                        Err(denial.with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")))
                    }
                    _ => Err(denial),
                }
            }
        }
    }
}
