//! The one place errors become responses: JSON `{"error":{"code","message","request_id"}}`, or a
//! FHIR `OperationOutcome` carrying the same code on `fhir` routes. The body holds only the stable
//! code, its fixed message and the request id: never tokens, query values or upstream detail.

use bytes::Bytes;
use phigate_plugin::ErrorCode;
use serde_json::json;

/// The system URI of phigate error codes inside an `OperationOutcome`.
pub const CODE_SYSTEM: &str = "https://phigate.dev/error-codes";

/// Content type and body for an error.
pub fn error_body(code: ErrorCode, request_id: &str, fhir: bool) -> (&'static str, Bytes) {
    let value = if fhir {
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": fhir_issue_type(code),
                "details": {
                    "coding": [{ "system": CODE_SYSTEM, "code": code.as_str() }],
                    "text": code.message(),
                },
                "diagnostics": format!("request_id={request_id}"),
            }],
        })
    } else {
        json!({ "error": { "code": code.as_str(), "message": code.message(), "request_id": request_id } })
    };
    let ct = if fhir { "application/fhir+json" } else { "application/json" };
    (ct, Bytes::from(value.to_string()))
}

/// The FHIR R4 `IssueType` closest to a code's meaning.
fn fhir_issue_type(code: ErrorCode) -> &'static str {
    match code.status().as_u16() {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 => "not-supported",
        413 | 414 | 431 => "too-long",
        429 => "throttled",
        502..=504 => "transient",
        400..=499 => "invalid",
        _ => "exception",
    }
}

/// The errors table (Markdown) for `gateway/docs/errors.md`, generated from [`ErrorCode::ALL`].
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Generated from `phigate_plugin::ErrorCode` (`PHIGATE_BLESS=1 cargo test -p phigate errors_table` \
         regenerates it). Every error response carries one of these codes: as JSON \
         `{\"error\":{\"code\",\"message\",\"request_id\"}}`, or on FHIR routes as an `OperationOutcome` \
         whose `issue[0].details.coding[0]` has system `https://phigate.dev/error-codes` and the code. \
         Codes and messages are stable; the cause of an error is logged, never sent.\n\n\
         | code | status | message |\n|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        out.push_str(&format!("| `{}` | {} | {} |\n", code.as_str(), code.status().as_u16(), code.message()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_has_code_message_and_request_id() {
        let (ct, body) = error_body(ErrorCode::RouteNotFound, "rid-1", false);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "route_not_found");
        assert_eq!(v["error"]["message"], ErrorCode::RouteNotFound.message());
        assert_eq!(v["error"]["request_id"], "rid-1");
    }

    #[test]
    fn fhir_error_is_an_operation_outcome_with_the_same_code() {
        let (ct, body) = error_body(ErrorCode::PatientNotPermitted, "rid-2", true);
        assert_eq!(ct, "application/fhir+json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["code"], "forbidden");
        assert_eq!(v["issue"][0]["details"]["coding"][0]["code"], "patient_not_permitted");
        assert_eq!(v["issue"][0]["details"]["coding"][0]["system"], CODE_SYSTEM);
    }

    #[test]
    fn every_code_renders_both_ways() {
        for code in ErrorCode::ALL {
            for fhir in [false, true] {
                let (_, body) = error_body(*code, "r", fhir);
                assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
            }
        }
    }

    #[test]
    fn errors_table_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md");
        let want = errors_markdown();
        if std::env::var_os("PHIGATE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "gateway/docs/errors.md is stale: run PHIGATE_BLESS=1 cargo test -p phigate errors_table"
        );
    }
}
