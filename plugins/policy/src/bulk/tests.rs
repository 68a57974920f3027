use std::sync::Arc;

use phigate_plugin::{BulkAccess, BulkKind, ErrorCode, Principal, RequestCtx, TenantId};

use super::*;
use crate::labels::Labels;

const PSY: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY";

fn check() -> NdjsonCheck {
    NdjsonCheck::new(Permit::patients(["a-p1", "a-p2"]).withholding(Labels::from_tokens([PSY])))
}

fn obs(id: &str, patient: &str) -> String {
    format!(r#"{{"resourceType":"Observation","id":"{id}","subject":{{"reference":"Patient/{patient}"}}}}"#)
}

fn psy(id: &str, patient: &str) -> String {
    format!(
        r#"{{"resourceType":"Condition","id":"{id}","meta":{{"security":[{{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}}]}},"subject":{{"reference":"Patient/{patient}"}}}}"#
    )
}

/// Feeds `body` in pieces of `size` bytes; what was sent, or the code of the refusal.
fn stream(c: &mut NdjsonCheck, body: &str, size: usize) -> Result<String, (ErrorCode, String)> {
    let mut sent = String::new();
    let pieces: Vec<&[u8]> = body.as_bytes().chunks(size.max(1)).collect();
    for (i, piece) in pieces.iter().enumerate() {
        match c.feed(piece, i + 1 == pieces.len()) {
            Ok(out) => sent.push_str(std::str::from_utf8(&out).expect("utf-8")),
            Err(d) => return Err((d.code, sent)),
        }
    }
    if pieces.is_empty() {
        c.feed(&[], true).map_err(|d| (d.code, String::new()))?;
    }
    Ok(sent)
}

#[test]
fn permitted_lines_go_out_whole_whatever_the_pieces() {
    let body = format!("{}\n{}\n\n{}", obs("o1", "a-p1"), obs("o2", "a-p2"), obs("o3", "a-p1"));
    for size in [1, 7, 64, 4096] {
        let mut c = check();
        assert_eq!(stream(&mut c, &body, size).as_deref(), Ok(body.as_str()), "pieces of {size}");
        assert_eq!((c.sent, c.withheld), (3, 0));
        let named: Vec<_> = c.named.iter().map(PatientId::as_str).collect();
        assert_eq!(named, ["a-p1", "a-p2"]);
    }
}

#[test]
fn a_line_naming_another_patient_ends_the_file_before_it() {
    let first = format!("{}\n", obs("o1", "a-p1"));
    let body = format!("{first}{}\n{}\n", obs("o2", "b-p1"), obs("o3", "a-p2"));
    for size in [1, 5, first.len(), 4096] {
        let mut c = check();
        let (code, sent) = stream(&mut c, &body, size).unwrap_err();
        assert_eq!(code, ErrorCode::PatientNotPermitted);
        // Only complete, checked lines before the foreign one ever went out.
        assert!(first.starts_with(&sent), "pieces of {size}: sent {sent:?}");
        assert!(!sent.contains("b-p1"));
    }
}

#[test]
fn a_labelled_line_is_left_out_and_counted() {
    let body = format!("{}\n{}\n{}\n", obs("o1", "a-p1"), psy("c1", "a-p1"), obs("o2", "a-p2"));
    let expected = format!("{}\n{}\n", obs("o1", "a-p1"), obs("o2", "a-p2"));
    for size in [3, 4096] {
        let mut c = check();
        assert_eq!(stream(&mut c, &body, size).as_deref(), Ok(expected.as_str()), "pieces of {size}");
        assert_eq!((c.sent, c.withheld), (2, 1));
    }
    // Cleared for it: sent like any other line.
    let mut cleared = NdjsonCheck::new(Permit::patients(["a-p1", "a-p2"]));
    assert_eq!(stream(&mut cleared, &body, 4096).as_deref(), Ok(body.as_str()));
}

#[test]
fn unreadable_or_endless_lines_end_the_file() {
    let mut c = check();
    let body = format!("{}\n{{not json\n", obs("o1", "a-p1"));
    assert_eq!(stream(&mut c, &body, 4096).unwrap_err().0, ErrorCode::PolicyError);
    // A last line without its newline is still checked at the end.
    let mut c = check();
    assert_eq!(stream(&mut c, &obs("o9", "b-p2"), 4096).unwrap_err().0, ErrorCode::PatientNotPermitted);
    // A line that never ends is not held without bound.
    let mut c = check();
    let piece = vec![b' '; 1 << 20];
    let mut refused = None;
    for _ in 0..=MAX_LINE_BYTES >> 20 {
        if let Err(d) = c.feed(&piece, false) {
            refused = Some(d.code);
            break;
        }
    }
    assert_eq!(refused, Some(ErrorCode::PolicyError));
}

#[test]
fn what_was_sent_is_recorded_for_the_audit() {
    let mut c = check();
    let body = format!("{}\n{}\n", psy("c1", "a-p2"), obs("o1", "a-p1"));
    stream(&mut c, &body, 4096).expect("sent");
    let mut ctx = ctx_for("bulk", Some("tenant-a"));
    c.record(&mut ctx);
    let patients: Vec<_> = ctx.response.patients.iter().flatten().map(PatientId::as_str).collect();
    assert_eq!(patients, ["a-p1"], "a patient named only in a line left out was not disclosed");
    assert_eq!((ctx.response.entries, ctx.response.withheld), (Some(1), Some(1)));
}

fn ctx_for(sub: &str, tenant: Option<&str>) -> RequestCtx {
    crate::input::tests::ctx(Principal {
        tenant: tenant.map(TenantId::new),
        client_id: Some("backend-app".into()),
        ..Principal::new("https://idp", sub)
    })
}

#[test]
fn only_the_principal_the_url_was_issued_to_may_use_it() {
    let access = BulkAccess {
        kind: BulkKind::File,
        issuer: "https://idp".into(),
        subject: "bulk".into(),
        tenant: Some(TenantId::new("tenant-a")),
        client_id: Some("backend-app".into()),
    };
    let mut owner = ctx_for("bulk", Some("tenant-a"));
    owner.bulk = Some(access.clone());
    assert!(check_owner(&owner).is_ok());
    // Not a bulk URL: nothing to check.
    assert!(check_owner(&ctx_for("someone", None)).is_ok());
    for (sub, tenant, issuer) in [
        ("other", Some("tenant-a"), "https://idp"),
        ("bulk", Some("tenant-b"), "https://idp"),
        ("bulk", None, "https://idp"),
        ("bulk", Some("tenant-a"), "https://another-idp"),
    ] {
        let mut ctx = ctx_for(sub, tenant);
        ctx.principal = Some(Arc::new(Principal {
            tenant: tenant.map(TenantId::new),
            client_id: Some("backend-app".into()),
            ..Principal::new(issuer, sub)
        }));
        ctx.bulk = Some(access.clone());
        assert_eq!(
            check_owner(&ctx).unwrap_err().code,
            ErrorCode::BulkUrlNotOwner,
            "{sub} {tenant:?} {issuer}"
        );
    }
    // The same subject through another OAuth client (the user's other app).
    let mut other_app = ctx_for("bulk", Some("tenant-a"));
    other_app.principal = Some(Arc::new(Principal {
        tenant: Some(TenantId::new("tenant-a")),
        client_id: Some("another-app".into()),
        ..Principal::new("https://idp", "bulk")
    }));
    other_app.bulk = Some(access.clone());
    assert_eq!(check_owner(&other_app).unwrap_err().code, ErrorCode::BulkUrlNotOwner);
    let mut anonymous = ctx_for("bulk", Some("tenant-a"));
    anonymous.principal = None;
    anonymous.bulk = Some(access);
    assert_eq!(check_owner(&anonymous).unwrap_err().code, ErrorCode::BulkUrlNotOwner);
}

#[test]
fn a_manifest_loses_its_file_counts_and_nothing_else() {
    let body = br#"{"transactionTime":"2026-12-07T17:00:00Z","requiresAccessToken":true,
        "output":[{"type":"Patient","url":"https://gw/fhir/$phigate-bulk/t1","count":2},
                  {"type":"Condition","url":"https://gw/fhir/$phigate-bulk/t2","count":9}],
        "deleted":[{"type":"Bundle","url":"https://gw/fhir/$phigate-bulk/t3","count":1}],
        "error":[{"type":"OperationOutcome","url":"https://gw/fhir/$phigate-bulk/t4","count":1}]}"#;
    let out: serde_json::Value =
        serde_json::from_slice(&manifest_without_counts(body).expect("counts")).unwrap();
    let original: serde_json::Value = serde_json::from_slice(body).unwrap();
    for list in ["output", "deleted"] {
        for (got, was) in out[list].as_array().unwrap().iter().zip(original[list].as_array().unwrap()) {
            assert_eq!(got.get("count"), None, "{list}");
            assert_eq!((&got["type"], &got["url"]), (&was["type"], &was["url"]));
        }
    }
    assert_eq!(out["error"], original["error"], "error files count outcomes, not records");
    assert_eq!(out["transactionTime"], original["transactionTime"]);
    assert_eq!(manifest_without_counts(br#"{"output":[{"type":"Patient","url":"u"}]}"#), None);
    assert_eq!(manifest_without_counts(br#"{"resourceType":"OperationOutcome"}"#), None, "in progress");
    assert_eq!(manifest_without_counts(b"[1]"), None);
}
