//! The demo's dev token issuer and personas: who can do what in the demo, with a signed token
//! for each (ES256, with `kid`, published as a JWKS file the gateway trusts).

use std::path::{Path, PathBuf};

use phigate_identity::dev::{DevClaims, DevIssuer};
use serde_json::{json, Value};

/// The demo issuer's `iss`.
pub const ISSUER: &str = "https://issuer.phigate.demo";
/// The audience demo tokens are for.
pub const AUDIENCE: &str = "phigate-demo";
/// How long demo tokens live, in seconds.
const TOKEN_TTL_SECS: i64 = 8 * 3600;

/// One demo user.
#[derive(Debug, Clone, Copy)]
pub struct Persona {
    /// Name: also the token subject (`sub`) and the token file name.
    pub name: &'static str,
    /// Tenant claim.
    pub tenant: &'static str,
    /// Roles claim.
    pub roles: &'static [&'static str],
    /// SMART scopes.
    pub scope: &'static str,
    /// Whether the token proves MFA.
    pub mfa: bool,
    /// Whether the token is bound to the demo client certificate (RFC 8705).
    pub bound: bool,
    /// Whether the token is bound to a DPoP key of its own (RFC 9449), written beside it as
    /// `tokens/<name>.dpop-key.pem` for `phigate demo proof`.
    pub dpop: bool,
    /// Patients on the persona's care team (the demo's policy data says the same).
    pub care_team: &'static [&'static str],
    /// What the persona shows.
    pub note: &'static str,
}

/// Every demo persona.
pub const PERSONAS: &[Persona] = &[
    Persona {
        name: "clinician_a",
        tenant: "tenant-a",
        roles: &["clinician"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &["a-p1", "a-p2"],
        note: "treats a-p1 and a-p2: reads them; other patients are refused",
    },
    Persona {
        name: "psychiatrist_a",
        tenant: "tenant-a",
        roles: &["psychiatrist"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &["a-p1", "a-p2"],
        note: "clinician_a's care team, cleared for psychiatry records (security label PSY): sees a-p1-cond-psy",
    },
    Persona {
        name: "writer_a",
        tenant: "tenant-a",
        roles: &["clinician"],
        scope: "user/*.cruds",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &["a-p1", "a-p2"],
        note: "clinician_a's care team with write scopes: records data for a-p1 and a-p2 only",
    },
    Persona {
        name: "clinician_a2",
        tenant: "tenant-a",
        roles: &["clinician"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &["a-p3", "a-p4"],
        note: "treats a-p3 and a-p4; shares no patient with clinician_a",
    },
    Persona {
        name: "clinician_b",
        tenant: "tenant-b",
        roles: &["clinician"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &["b-p1", "b-p2"],
        note: "tenant B: never sees tenant A",
    },
    Persona {
        name: "nurse_nomfa",
        tenant: "tenant-a",
        roles: &["nurse"],
        scope: "user/*.rs",
        mfa: false,
        bound: false,
        dpop: false,
        care_team: &["a-p5"],
        note: "password-only sign-in: refused with the RFC 9470 step-up challenge",
    },
    Persona {
        name: "bound_client",
        tenant: "tenant-a",
        roles: &["clinician"],
        scope: "user/*.rs",
        mfa: true,
        bound: true,
        dpop: false,
        care_team: &["a-p1"],
        note: "token bound to pki/client.crt: works only with that client certificate",
    },
    Persona {
        name: "dpop_app",
        tenant: "tenant-a",
        roles: &["clinician"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: true,
        care_team: &["a-p1"],
        note: "token bound to its own key (DPoP, RFC 9449): each request needs a fresh proof, `phigate demo proof`",
    },
    Persona {
        name: "admin_a",
        tenant: "tenant-a",
        roles: &["admin"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &[],
        note: "tenant A administrator: no patient data",
    },
    Persona {
        name: "er_doctor_a",
        tenant: "tenant-a",
        roles: &["clinician", "break_glass"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &[],
        note: "emergency physician: no care team; break-glass with X-Break-Glass-Reason",
    },
    Persona {
        name: "scraper_a",
        tenant: "tenant-a",
        roles: &["analyst"],
        scope: "user/*.rs",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &[],
        note: "broad tenant-wide role: the exfiltration scenarios' suspect",
    },
    Persona {
        name: "bulk_a",
        tenant: "tenant-a",
        roles: &[],
        scope: "system/*.read",
        mfa: true,
        bound: false,
        dpop: false,
        care_team: &[],
        note: "tenant A's backend service: bulk export, its status and file URLs sealed to it",
    },
];

/// The issuer's files and the personas' tokens, written under `dir`.
pub struct IssuedDemo {
    /// The issuer.
    pub issuer: DevIssuer,
    /// `issuer/jwks.json`.
    pub jwks_path: PathBuf,
    /// `issuer/signing-key.pem`.
    pub signing_key_path: PathBuf,
    /// `demo.json`'s `personas` object.
    pub personas: Value,
    /// The opaque access tokens issued (`tokens/<persona>.opaque`), each with the claims its
    /// authorization server answers for it ([`super::authz`]).
    pub opaque: std::collections::HashMap<String, Value>,
}

/// The persona that also gets an opaque access token (RFC 7662 introspection in the demo).
pub const OPAQUE_PERSONA: &str = "clinician_a";

/// Generates the issuer key, writes its JWKS and private key, and signs one token per persona
/// (`client_cert_thumbprint` binds `bound_client`).
///
/// # Errors
/// When a key cannot be made or a file written.
pub fn issue(dir: &Path, client_cert_thumbprint: &str, now: i64) -> Result<IssuedDemo, String> {
    let issuer = DevIssuer::es256(ISSUER).map_err(|e| e.to_string())?;
    let issuer_dir = dir.join("issuer");
    let tokens_dir = dir.join("tokens");
    for d in [&issuer_dir, &tokens_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let jwks_path = issuer_dir.join("jwks.json");
    let signing_key_path = issuer_dir.join("signing-key.pem");
    write(&jwks_path, issuer.jwks_json().as_bytes())?;
    write(&signing_key_path, issuer.private_key_pem().as_bytes())?;
    let mut personas = serde_json::Map::new();
    let mut opaque = std::collections::HashMap::new();
    for p in PERSONAS {
        let mut c = claims(&issuer, p, client_cert_thumbprint, now);
        if p.name == OPAQUE_PERSONA {
            // 256 random bits, base64url: nothing in it but a handle the issuer can look up.
            use base64::Engine;
            let handle = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
            write(&tokens_dir.join(format!("{}.opaque", p.name)), handle.as_bytes())?;
            opaque.insert(handle, Value::Object(c.0.clone()));
        }
        let mut dpop_key_path = None;
        if p.dpop {
            let key = DevIssuer::es256(p.name).map_err(|e| e.to_string())?;
            let path = dpop_key_path_of(dir, p.name);
            write(&path, key.private_key_pem().as_bytes())?;
            c = c.cnf_jkt(&key.jwk_thumbprint().map_err(|e| e.to_string())?);
            dpop_key_path = Some(path);
        }
        let token_path = tokens_dir.join(format!("{}.jwt", p.name));
        write(&token_path, issuer.sign(&c).as_bytes())?;
        personas.insert(
            p.name.to_owned(),
            json!({
                "token_path": token_path, "sub": p.name, "tenant": p.tenant, "roles": p.roles,
                "care_team": p.care_team, "mfa": p.mfa, "bound_to_client_cert": p.bound,
                "dpop_key_path": dpop_key_path, "note": p.note,
            }),
        );
    }
    Ok(IssuedDemo { issuer, jwks_path, signing_key_path, personas: Value::Object(personas), opaque })
}

fn claims(issuer: &DevIssuer, p: &Persona, thumbprint: &str, now: i64) -> DevClaims {
    let c = issuer
        .claims(p.name, AUDIENCE, now)
        .exp(now + TOKEN_TTL_SECS)
        .tenant("tenant", p.tenant)
        .roles(p.roles)
        .scope(p.scope)
        .sid(&format!("{}-session", p.name));
    let c = if p.mfa { c.mfa(now) } else { c.password_only(now) };
    if p.bound {
        c.cnf_x5t_s256(thumbprint)
    } else {
        c
    }
}

/// Where `issue` keeps a DPoP persona's private key.
pub fn dpop_key_path_of(dir: &Path, persona: &str) -> PathBuf {
    dir.join("tokens").join(format!("{persona}.dpop-key.pem"))
}

/// A fresh DPoP proof (RFC 9449) by `persona`'s key, written by `issue` under `dir`, for `method`
/// on `url` with the persona's token (`phigate demo proof`).
///
/// # Errors
/// When the persona has no DPoP key or token under `dir`.
pub fn dpop_proof(dir: &Path, persona: &str, method: &str, url: &str) -> Result<String, String> {
    let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
    let key = DevIssuer::es256_from_pem(persona, &read(dpop_key_path_of(dir, persona))?)
        .map_err(|e| e.to_string())?;
    let token = read(dir.join("tokens").join(format!("{persona}.jwt")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(key.dpop_proof(&method.to_ascii_uppercase(), url, token.trim(), now))
}

/// The demo's care-team data for the policy stage, from the persona table.
pub fn care_teams_yaml() -> String {
    let mut out = String::from("# Written by `phigate demo` from its personas.\ncare_teams:\n");
    for tenant in ["tenant-a", "tenant-b"] {
        out.push_str(&format!("  {tenant}:\n"));
        for p in PERSONAS.iter().filter(|p| p.tenant == tenant) {
            out.push_str(&format!("    {}: [{}]\n", p.name, p.care_team.join(", ")));
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
