//! `phigate_policy_pre_reads_total`: every pre-read outcome is counted by result. Alone in its
//! test binary so that no other test moves the process-wide counter while this one reads it.

#![allow(clippy::unwrap_used)]

mod support;

use http::{Method, StatusCode};
use phigate_plugin::{ErrorCode, Interaction, PreRead, Stage};
use support::*;

fn count(result: &str) -> u64 {
    counter("phigate_policy_pre_reads_total", "result", result)
}

#[tokio::test]
async fn every_pre_read_outcome_is_counted_by_result() {
    let writer = principal("clinician_a", "tenant-a", &["clinician"], &["user/*.cruds"]);
    let mut c = ctx(
        Method::DELETE,
        "/fhir/Observation/o1",
        writer,
        fhir(Interaction::Delete, "Observation", Some("o1"), &[]),
    );
    stage().on_request(&mut c).await.unwrap();
    let results = ["allowed", "denied", "missing", "error"];
    let before: Vec<u64> = results.iter().map(|r| count(r)).collect();
    let reads: [(u16, &[u8]); 5] = [
        (200, br#"{"subject":{"reference":"Patient/a-p1"}}"#),
        (200, br#"{"subject":{"reference":"Patient/a-p3"}}"#),
        (404, b""),
        (502, b""),
        (200, b"{"),
    ];
    for (status, body) in reads {
        let _ = stage()
            .on_pre_read(&mut c, PreRead::Answered { status: StatusCode::from_u16(status).unwrap(), body });
    }
    let _ = stage().on_pre_read(&mut c, PreRead::Failed(ErrorCode::UpstreamTimeout));
    let after: Vec<u64> = results.iter().map(|r| count(r)).collect();
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(deltas, [1, 1, 1, 3], "allowed, denied, missing, error");
}
