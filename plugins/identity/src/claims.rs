//! Claim mapping: reads the configured claims of a verified payload into a [`Principal`].

use std::sync::Arc;

use phigate_plugin::{PatientId, Principal, Subject, TenantId};
use serde_json::{Map, Value};

use crate::config::{ClaimMappingConfig, ClaimPath};
use crate::error::AuthError;

/// Candidate claim locations per principal field (first present wins).
#[derive(Debug, Clone)]
pub(crate) struct ClaimMap {
    pub(crate) subject: Vec<ClaimPath>,
    pub(crate) audience: Vec<ClaimPath>,
    pub(crate) tenant: Vec<ClaimPath>,
    roles: Vec<ClaimPath>,
    scopes: Vec<ClaimPath>,
    fhir_user: Vec<ClaimPath>,
    patient: Vec<ClaimPath>,
    session_id: Vec<ClaimPath>,
    client_id: Vec<ClaimPath>,
    amr: Vec<ClaimPath>,
    acr: Vec<ClaimPath>,
    auth_time: Vec<ClaimPath>,
}

fn or(p: Option<ClaimPath>, defaults: &[&str]) -> Vec<ClaimPath> {
    match p {
        Some(p) => vec![p],
        None => defaults.iter().map(|d| ClaimPath::Name((*d).to_owned())).collect(),
    }
}

impl ClaimMap {
    /// The mapping with generic defaults for unset fields.
    pub(crate) fn new(m: ClaimMappingConfig) -> Self {
        ClaimMap {
            subject: or(m.subject, &["sub"]),
            audience: or(m.audience, &["aud"]),
            tenant: or(m.tenant, &[]),
            roles: or(m.roles, &["roles"]),
            scopes: or(m.scopes, &["scope", "scp"]),
            fhir_user: or(m.fhir_user, &["fhirUser"]),
            patient: or(m.patient, &["patient"]),
            session_id: or(m.session_id, &["sid"]),
            client_id: or(m.client_id, &["client_id", "azp"]),
            amr: or(m.amr, &["amr"]),
            acr: or(m.acr, &["acr"]),
            auth_time: or(m.auth_time, &["auth_time"]),
        }
    }
}

/// The first present claim among `paths`.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, paths: &[ClaimPath]) -> Option<&'a Value> {
    paths.iter().find_map(|p| match p {
        ClaimPath::Name(n) => claims.get(n),
        ClaimPath::Nested { path } => {
            let (first, rest) = path.split_first()?;
            rest.iter().try_fold(claims.get(first)?, |v, k| v.as_object()?.get(k))
        }
    })
}

fn opt_string(v: Option<&Value>, what: &'static str) -> Result<Option<String>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::Malformed(what)),
    }
}

/// A list claim: an array of strings, or one string split on spaces (RFC 6749 §3.3 scopes).
fn string_list(v: Option<&Value>, what: &'static str) -> Result<Vec<String>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_ascii_whitespace().map(String::from).collect()),
        Some(Value::Array(a)) => {
            a.iter().map(|x| x.as_str().map(String::from).ok_or(AuthError::Malformed(what))).collect()
        }
        Some(_) => Err(AuthError::Malformed(what)),
    }
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly fractional. Strings are refused.
pub(crate) fn numeric_date(v: Option<&Value>, what: &'static str) -> Result<Option<i64>, AuthError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(AuthError::Malformed(what)),
        Some(_) => Err(AuthError::Malformed(what)),
    }
}

/// Builds the principal from a verified payload.
pub(crate) fn principal(
    claims: &Map<String, Value>,
    map: &ClaimMap,
    issuer: &Arc<str>,
    fixed_tenant: Option<&TenantId>,
    exp: i64,
) -> Result<Principal, AuthError> {
    let subject = opt_string(lookup(claims, &map.subject), "subject claim not a string")?
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::Malformed("subject claim missing"))?;
    let tenant = match fixed_tenant {
        Some(t) => Some(t.clone()),
        None => opt_string(lookup(claims, &map.tenant), "tenant claim not a string")?.map(TenantId::new),
    };
    // `acr` is one string in OIDC; Entra's `acrs` is an array: keep all values, space-joined.
    let acr = match lookup(claims, &map.acr) {
        Some(Value::Array(_)) => {
            let v = string_list(lookup(claims, &map.acr), "acr claim malformed")?;
            (!v.is_empty()).then(|| v.join(" "))
        }
        other => opt_string(other, "acr claim not a string")?,
    };
    let (cert_thumbprint, dpop_jkt) = confirmation(claims)?;
    Ok(Principal {
        issuer: Arc::clone(issuer),
        subject: Subject::new(subject),
        tenant,
        roles: string_list(lookup(claims, &map.roles), "roles claim malformed")?,
        scopes: string_list(lookup(claims, &map.scopes), "scope claim malformed")?,
        fhir_user: opt_string(lookup(claims, &map.fhir_user), "fhirUser not a string")?,
        patient: opt_string(lookup(claims, &map.patient), "patient not a string")?.map(PatientId::new),
        session_id: opt_string(lookup(claims, &map.session_id), "session id not a string")?,
        client_id: opt_string(lookup(claims, &map.client_id), "client id not a string")?,
        amr: string_list(lookup(claims, &map.amr), "amr claim malformed")?,
        acr,
        auth_time: numeric_date(lookup(claims, &map.auth_time), "auth_time not numeric")?,
        expires_at: exp,
        cert_thumbprint,
        dpop_jkt,
    })
}

/// The token's proof-of-possession confirmation (RFC 7800 `cnf`): the certificate thumbprint
/// (RFC 8705 `x5t#S256`) and the DPoP key thumbprint (RFC 9449 `jkt`). A confirmation we cannot
/// check (`jwk`, `kid`, ...) must not pass as a bearer token.
fn confirmation(claims: &Map<String, Value>) -> Result<(Option<String>, Option<String>), AuthError> {
    let cnf = match claims.get("cnf") {
        None => return Ok((None, None)),
        Some(Value::Object(cnf)) => cnf,
        Some(_) => return Err(AuthError::Binding("cnf is not an object")),
    };
    let member = |name: &str| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(t)) if !t.is_empty() => Ok(Some(t.clone())),
        Some(_) => Err(AuthError::Binding("cnf member is not a string")),
    };
    let (x5t, jkt) = (member("x5t#S256")?, member("jkt")?);
    if x5t.is_none() && jkt.is_none() {
        return Err(AuthError::Binding("unsupported confirmation method"));
    }
    Ok((x5t, jkt))
}
