//! Who is calling: the [`Principal`] the identity stage derives from a verified token.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                $name(s.into())
            }

            /// The string value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }
    };
}

id_newtype!(
    /// A tenant identifier (one customer organisation; tenant A never sees tenant B).
    TenantId
);
id_newtype!(
    /// The token subject (`sub`), unique within its issuer.
    Subject
);
id_newtype!(
    /// A FHIR Patient logical id (the `X` of `Patient/X`).
    PatientId
);

/// A verified caller. Built once per token by the identity stage and shared (`Arc`) by every
/// request that presents the same token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The issuer (`iss`) that signed the token.
    pub issuer: Arc<str>,
    /// The subject (`sub`).
    pub subject: Subject,
    /// The tenant the principal belongs to, from a claim or fixed per issuer.
    pub tenant: Option<TenantId>,
    /// Roles or groups.
    pub roles: Vec<String>,
    /// OAuth / SMART scopes (`scope` or `scp`).
    pub scopes: Vec<String>,
    /// SMART `fhirUser` (for example `Practitioner/123` or `Patient/456`).
    pub fhir_user: Option<String>,
    /// SMART `patient` launch context: the only patient a patient-facing app may reach.
    pub patient: Option<PatientId>,
    /// Session id (`sid`), when the IdP sets one.
    pub session_id: Option<String>,
    /// OAuth client (`client_id` or `azp`).
    pub client_id: Option<String>,
    /// Authentication methods (`amr`).
    pub amr: Vec<String>,
    /// Authentication context class (`acr`).
    pub acr: Option<String>,
    /// When the user authenticated (`auth_time`, seconds since the epoch).
    pub auth_time: Option<i64>,
    /// Token expiry (`exp`, seconds since the epoch).
    pub expires_at: i64,
    /// RFC 8705 certificate binding (`cnf.x5t#S256`), when the token is bound.
    pub cert_thumbprint: Option<String>,
    /// RFC 9449 DPoP binding (`cnf.jkt`, the client key's RFC 7638 thumbprint), when the token
    /// is bound; the identity stage then has checked this request's proof by that key.
    pub dpop_jkt: Option<String>,
}

impl Principal {
    /// A principal with only an issuer and a subject: no tenant, roles, scopes or other claims,
    /// expiring at the epoch. A base for struct-update syntax (`Principal { roles, ..new }`).
    pub fn new(issuer: impl Into<Arc<str>>, subject: impl Into<Subject>) -> Self {
        Principal {
            issuer: issuer.into(),
            subject: subject.into(),
            tenant: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            fhir_user: None,
            patient: None,
            session_id: None,
            client_id: None,
            amr: Vec::new(),
            acr: None,
            auth_time: None,
            expires_at: 0,
            cert_thumbprint: None,
            dpop_jkt: None,
        }
    }

    /// Whether the principal has this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
