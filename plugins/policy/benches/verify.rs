//! Response verification of a search result page: 50 Observations (US Core-like, each with
//! `meta` and a tenant tag, as the demo upstream writes them), checked against a care team,
//! without and with withheld security labels (the shipped data's five), and a page where one
//! entry carries a withheld label (cut out and checked again); with labels withheld, the page's
//! `total` removed too. And a bulk export file: 1,000
//! such Observations as NDJSON, checked line by line as the policy stage checks a streamed file
//! (reported in bytes per second).
//!
//! `cargo bench -p phigate-policy --bench verify`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phigate_policy::{
    verify_collect, without_counts, without_entries, Labels, Permit, Verdict, Withheld, WithheldNotice,
};

const LABELS: [&str; 5] = [
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|ETH",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV",
];

fn page(labelled: Option<usize>) -> Vec<u8> {
    let entries: Vec<String> = (0..50)
        .map(|i| {
            let security = if Some(i) == labelled {
                r#","security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]"#
            } else {
                ""
            };
            format!(
                r#"{{"fullUrl":"https://fhir.example/fhir/Observation/o{i}","resource":{{"resourceType":"Observation","id":"o{i}","meta":{{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z","tag":[{{"system":"https://phigate.dev/tenant","code":"tenant-a"}}]{security}}},"status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}}],"text":"Heart rate"}},"subject":{{"reference":"Patient/a-p{}"}},"encounter":{{"reference":"Encounter/a-p1-enc-1"}},"effectiveDateTime":"2025-02-02T09:02:00Z","valueQuantity":{{"value":71.5,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}}},"search":{{"mode":"match"}}}}"#,
                1 + i % 2
            )
        })
        .collect();
    format!(r#"{{"resourceType":"Bundle","type":"searchset","total":50,"entry":[{}]}}"#, entries.join(","))
        .into_bytes()
}

fn verify(c: &mut Criterion) {
    let clean = page(None);
    let labelled = page(Some(17));
    let plain = Permit::patients(["a-p1", "a-p2"]);
    let withholding = plain.clone().withholding(Labels::from_tokens(LABELS));
    assert_eq!(verify_collect(&clean, &withholding).withheld, Withheld::Nothing);
    assert_eq!(verify_collect(&labelled, &withholding).withheld, Withheld::Entries(vec![17]));
    c.bench_function("verify/50_entries/no_labels_withheld", |b| {
        b.iter(|| black_box(verify_collect(black_box(&clean), &plain)))
    });
    c.bench_function("verify/50_entries/five_labels_withheld", |b| {
        b.iter(|| black_box(verify_collect(black_box(&clean), &withholding)))
    });
    // What a principal with labels withheld gets on every page: the check, then the total out.
    c.bench_function("verify/50_entries/five_labels_withheld_count_hidden", |b| {
        b.iter(|| {
            let v = verify_collect(black_box(&clean), &withholding);
            let hidden = without_counts(&clean, &v.root).expect("an object").expect("a total");
            black_box((v, hidden))
        })
    });
    c.bench_function("verify/50_entries/one_entry_cut_out", |b| {
        b.iter(|| {
            let v = verify_collect(black_box(&labelled), &withholding);
            let Withheld::Entries(drop) = &v.withheld else { unreachable!() };
            let cut = without_entries(&labelled, drop, WithheldNotice::Outcome).expect("cut");
            let again = verify_collect(&cut, &withholding);
            assert_eq!(again.verdict, Verdict::Clean);
            black_box(again)
        })
    });
}

/// 1,000 Observations, one per line, as a bulk export file holds them.
fn ndjson_file() -> Vec<u8> {
    let bundle: serde_json::Value = serde_json::from_slice(&page(None)).expect("page");
    let one: Vec<String> =
        bundle["entry"].as_array().expect("entries").iter().map(|e| e["resource"].to_string()).collect();
    (0..20).flat_map(|_| one.iter()).flat_map(|l| [l.as_bytes(), b"\n"]).flatten().copied().collect()
}

fn ndjson(c: &mut Criterion) {
    let file = ndjson_file();
    let permit = Permit::patients(["a-p1", "a-p2"]).withholding(Labels::from_tokens(LABELS));
    let mut group = c.benchmark_group("verify/ndjson");
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("1000_lines", |b| {
        b.iter(|| {
            for line in black_box(&file).split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v = verify_collect(line, &permit);
                assert!(v.verdict == Verdict::Clean && v.withheld == Withheld::Nothing);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, verify, ndjson);
criterion_main!(benches);
