//! Operator actions on the admin port: list the exfiltration watch's blocks and lift one, for the
//! SOC analyst who has confirmed a false positive (a clinician legitimately reviewing many
//! charts) and should not make her wait out `block_secs`.
//!
//! The admin port is plain HTTP on loopback (or a private interface), like Envoy's; reading
//! health and metrics there needs nothing, but these actions name workforce members and change
//! what the gateway refuses, so each needs `Authorization: Bearer <token>` with the token of
//! `admin.token_path`. Without that setting they are disabled. The presented token is compared by
//! its SHA-256 (no timing signal about the stored token), and is never logged. Every lift leaves
//! an alert line (who, until when, the operator's reason) for the SIEM.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderValue, StatusCode};
use phigate_audit::AuditStage;
use phigate_exfil::ExfilStage;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::AdminConfig;

/// Shortest token accepted in `admin.token_path`.
const MIN_TOKEN_BYTES: usize = 32;
/// Largest request body an action reads.
const MAX_BODY_BYTES: usize = 4096;

/// An action's answer: status, JSON body, and whether to challenge for the token.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
    pub(super) challenge: bool,
}

impl Reply {
    fn json(status: StatusCode, body: serde_json::Value) -> Reply {
        Reply { status, body: body.to_string().into_bytes(), challenge: false }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Reply {
        Reply::json(status, json!({ "error": { "code": code, "message": message } }))
    }
}

/// The admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("admin.token_path: {0}")]
pub struct AdminTokenError(&'static str);

/// The actions, their token and what they act on.
#[derive(Debug, Clone, Default)]
pub struct AdminActions {
    /// SHA-256 of the token; `None`: actions disabled.
    token_sha256: Option<[u8; 32]>,
    exfil: Option<Arc<ExfilStage>>,
    audit: Option<Arc<AuditStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unblock {
    issuer: String,
    subject: String,
    reason: String,
}

impl AdminActions {
    /// Reads the token file of `cfg` (relative to `dir`); `exfil`: the watch to act on; `audit`:
    /// the trail each lift is recorded in (durably, before it takes effect).
    ///
    /// # Errors
    /// When the file cannot be read or holds fewer than 32 bytes.
    pub fn load(
        cfg: &AdminConfig,
        dir: &Path,
        exfil: Option<Arc<ExfilStage>>,
        audit: Option<Arc<AuditStage>>,
    ) -> Result<Self, AdminTokenError> {
        let token_sha256 = match &cfg.token_path {
            None => None,
            Some(path) => {
                let raw =
                    std::fs::read(dir.join(path)).map_err(|_| AdminTokenError("cannot read the file"))?;
                let token = raw.trim_ascii();
                if token.len() < MIN_TOKEN_BYTES {
                    return Err(AdminTokenError("the token must be at least 32 bytes"));
                }
                if !token.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(AdminTokenError("the token must be printable ASCII without spaces"));
                }
                Some(Sha256::digest(token).into())
            }
        };
        Ok(AdminActions { token_sha256, exfil, audit })
    }

    /// Answers `path` when it is an action's, `None` otherwise.
    pub(super) async fn handle(&self, session: &mut ServerSession, path: &str) -> Option<Reply> {
        let method = session.req_header().method.clone();
        let want = match path {
            "/exfil/blocks" => http::Method::GET,
            "/exfil/unblock" => http::Method::POST,
            _ => return None,
        };
        if method != want {
            return Some(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Use the documented method.",
            ));
        }
        if let Err(reply) = self.authorize(session) {
            return Some(reply);
        }
        let Some(exfil) = &self.exfil else {
            return Some(Reply::error(
                StatusCode::NOT_FOUND,
                "exfil_not_configured",
                "The exfiltration watch is not configured.",
            ));
        };
        Some(match path {
            "/exfil/blocks" => Reply::json(StatusCode::OK, json!({ "blocks": exfil.blocks() })),
            _ => unblock(exfil, self.audit.as_deref(), session).await,
        })
    }

    fn authorize(&self, session: &ServerSession) -> Result<(), Reply> {
        let Some(want) = &self.token_sha256 else {
            return Err(Reply::error(
                StatusCode::FORBIDDEN,
                "admin_actions_disabled",
                "Admin actions are disabled: set admin.token_path.",
            ));
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| Sha256::digest(token.trim().as_bytes()));
        match presented {
            Some(got) if got.as_slice() == want.as_slice() => Ok(()),
            _ => {
                let mut reply = Reply::error(
                    StatusCode::UNAUTHORIZED,
                    "admin_token_invalid",
                    "A valid admin token is required.",
                );
                reply.challenge = true;
                Err(reply)
            }
        }
    }
}

async fn unblock(exfil: &ExfilStage, audit: Option<&AuditStage>, session: &mut ServerSession) -> Reply {
    let bad = |message: &str| Reply::error(StatusCode::BAD_REQUEST, "bad_request", message);
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY_BYTES => body.extend_from_slice(&chunk),
            Ok(Some(_)) => return bad("The body is larger than 4096 bytes."),
            Ok(None) => break,
            Err(_) => return bad("The body could not be read."),
        }
    }
    let Ok(req) = serde_json::from_slice::<Unblock>(&body) else {
        return bad("Expected a JSON object {issuer, subject, reason}.");
    };
    let Ok(reason) = phigate_exfil::checked_reason(&req.reason) else {
        return bad(REASON_RULE);
    };
    // Recorded in the hash-chained trail before it takes effect; no record, no lift.
    if let Some(audit) = audit {
        let admin_client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string());
        let details = json!({
            "issuer": req.issuer, "subject": req.subject, "reason": reason, "admin_client": admin_client,
        });
        if audit.record_operator_action("exfil_unblock", &details).await.is_err() {
            return Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "The action could not be audited and was not taken.",
            );
        }
    }
    match exfil.unblock(&req.issuer, &req.subject, &req.reason) {
        Ok(lifted) => {
            log::warn!(target: "phigate::admin", "exfil block lift requested (lifted here: {lifted})");
            Reply::json(StatusCode::OK, json!({ "lifted": lifted }))
        }
        Err(_) => bad(REASON_RULE),
    }
}

const REASON_RULE: &str =
    "The reason must be non-empty text of at most 512 bytes without control characters.";

/// The `WWW-Authenticate` value sent with `admin_token_invalid`.
pub(super) fn challenge() -> HeaderValue {
    HeaderValue::from_static("Bearer realm=\"phigate-admin\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &str) -> AdminConfig {
        AdminConfig { token_path: Some(path.into()), ..AdminConfig::default() }
    }

    #[test]
    fn the_token_file_must_hold_a_long_printable_token() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            |name: &str| AdminActions::load(&cfg(name), dir.path(), None, None).unwrap_err().to_string();
        assert_eq!(err("missing.token"), "admin.token_path: cannot read the file");
        std::fs::write(dir.path().join("short.token"), "s3cret\n").unwrap();
        assert!(err("short.token").contains("at least 32 bytes"));
        std::fs::write(dir.path().join("spaced.token"), "0123456789abcdef 0123456789abcdef").unwrap();
        assert!(err("spaced.token").contains("printable ASCII without spaces"));
        std::fs::write(dir.path().join("good.token"), "0123456789abcdef0123456789abcdef\n").unwrap();
        let actions = AdminActions::load(&cfg("good.token"), dir.path(), None, None).unwrap();
        let want: [u8; 32] = Sha256::digest(b"0123456789abcdef0123456789abcdef").into();
        assert_eq!(actions.token_sha256, Some(want), "the trailing newline is not part of the token");
        assert!(AdminActions::load(&AdminConfig::default(), dir.path(), None, None)
            .unwrap()
            .token_sha256
            .is_none());
    }
}
