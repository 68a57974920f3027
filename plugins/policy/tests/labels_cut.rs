//! Leaving labelled entries out of a search result, over generated Bundles: whatever the
//! spacing, the strings (escapes, brackets and commas inside them) and which entries are
//! labelled, the client gets exactly the unlabelled entries, byte for byte and in order, then
//! one outcome entry, and every other member of the Bundle as the server sent it. And taking a
//! Bundle's counts out: wherever its `total` and `link` members are, however many, the client
//! gets every other member and every link but `last`, the entries byte for byte.

#![allow(clippy::unwrap_used)]

use phigate_policy::{
    verify_collect, without_counts, without_entries, Labels, Permit, Verdict, Withheld, WithheldNotice,
};
use proptest::prelude::*;

const PSY: &str = r#"{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}"#;

/// One entry: (labelled, patient number, a note with awkward characters, spacing).
fn entry() -> impl Strategy<Value = (bool, u8, String, String)> {
    (any::<bool>(), 1u8..=2, "[a-z \\[\\]{},:\"\\\\é]{0,12}", "[ \n\t]{0,3}")
}

fn render(i: usize, (labelled, patient, note, ws): &(bool, u8, String, String)) -> String {
    let security = if *labelled { format!(r#","security":[{PSY}]"#) } else { String::new() };
    let note = serde_json::to_string(note).unwrap();
    format!(
        r#"{ws}{{{ws}"resource":{{"resourceType":"Observation","id":"o{i}","meta":{{"versionId":"1"{security}}},"note":[{{"text":{note}}}],"subject":{{"reference":"Patient/a-p{patient}"}}}}{ws},"search":{{"mode":"match"}}}}{ws}"#
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_cut_keeps_exactly_the_unlabelled_entries(
        entries in prop::collection::vec(entry(), 0..12),
        ws in "[ \n]{0,2}",
        silent in any::<bool>(),
    ) {
        let notice = if silent { WithheldNotice::Silent } else { WithheldNotice::Outcome };
        let rendered: Vec<String> = entries.iter().enumerate().map(|(i, e)| render(i, e)).collect();
        let body = format!(
            r#"{{{ws}"resourceType":"Bundle","type":"searchset","total":{},{ws}"entry":[{}],"link":[{{"relation":"self","url":"https://x/fhir/Observation?a=[1]"}}]{ws}}}"#,
            entries.len(),
            rendered.join(&format!(",{ws}"))
        );
        let permit = Permit::patients(["a-p1", "a-p2"]).withholding(Labels::from_tokens(["http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"]));
        let checked = verify_collect(body.as_bytes(), &permit);
        prop_assert_eq!(checked.verdict, Verdict::Clean);
        let labelled: Vec<u32> = entries.iter().enumerate().filter(|(_, e)| e.0).map(|(i, _)| i as u32).collect();
        if labelled.is_empty() {
            prop_assert_eq!(checked.withheld, Withheld::Nothing);
            return Ok(());
        }
        prop_assert_eq!(&checked.withheld, &Withheld::Entries(labelled.clone()));
        let cut = without_entries(body.as_bytes(), &labelled, notice).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        let original: serde_json::Value = serde_json::from_str(&body).unwrap();
        let kept: Vec<serde_json::Value> = original["entry"].as_array().unwrap().iter().enumerate()
            .filter(|(i, _)| !labelled.contains(&(*i as u32))).map(|(_, e)| e.clone()).collect();
        let got = sent["entry"].as_array().unwrap();
        if silent {
            prop_assert_eq!(&got[..], &kept[..]);
        } else {
            prop_assert_eq!(&got[..got.len() - 1], &kept[..]);
            prop_assert_eq!(&got[got.len() - 1]["search"]["mode"], "outcome");
        }
        for member in ["resourceType", "type", "total", "link"] {
            prop_assert_eq!(&sent[member], &original[member]);
        }
        // Kept entries are the server's bytes, not a re-serialization.
        let text = String::from_utf8(cut.clone()).unwrap();
        for (i, r) in rendered.iter().enumerate() {
            prop_assert_eq!(text.contains(r.trim()), !labelled.contains(&(i as u32)));
        }
        // And checked again, nothing withheld is left.
        prop_assert_eq!(verify_collect(&cut, &permit).withheld, Withheld::Nothing);
    }
}

/// A Bundle member: (name, rendered value). `total` and `link` may repeat.
fn member() -> impl Strategy<Value = (String, String)> {
    let relation = prop::sample::select(vec!["self", "next", "previous", "last", "first"]);
    prop_oneof![
        (0u32..500).prop_map(|n| ("total".to_owned(), n.to_string())),
        prop::collection::vec(relation, 0..4).prop_map(|rels| {
            let links: Vec<String> = rels
                .iter()
                .map(|r| format!(r#"{{"relation":"{r}","url":"https://x/fhir?_getpagesoffset=7"}}"#))
                .collect();
            ("link".to_owned(), format!("[{}]", links.join(" , ")))
        }),
        Just(("id".to_owned(), r#""b1""#.to_owned())),
        Just((
            "meta".to_owned(),
            r#"{"lastUpdated":"2026-01-01T00:00:00Z","tag":[{"code":"total"}]}"#.to_owned()
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn counts_come_out_and_nothing_else(
        members in prop::collection::vec(member(), 0..6),
        entries in prop::collection::vec(entry(), 0..4),
        order in Just((0..9).collect::<Vec<usize>>()).prop_shuffle(),
        ws in "[ \n]{0,2}",
        escaped in any::<bool>(),
    ) {
        let rendered: Vec<String> = entries.iter().enumerate().map(|(i, e)| render(i, e)).collect();
        let entry = format!("[{}]", rendered.join(","));
        // A key written with an escape is the same key (and is found another way).
        let key = |k: &str| if escaped && k == "total" { "tot\\u0061l".to_owned() } else { k.to_owned() };
        let mut all: Vec<(String, String)> =
            vec![("resourceType".into(), r#""Bundle""#.into()), ("type".into(), r#""searchset""#.into())];
        all.extend(members);
        all.push(("entry".into(), entry.clone()));
        // Any order: a count may come first, last or between the entries and the rest.
        let mut all: Vec<(usize, (String, String))> = all.into_iter().enumerate().collect();
        all.sort_by_key(|(i, _)| order[*i]);
        let all: Vec<(String, String)> = all.into_iter().map(|(_, m)| m).collect();
        let body = format!(
            "{{{ws}{}{ws}}}",
            all.iter().map(|(k, v)| format!(r#""{}"{ws}:{ws}{v}"#, key(k))).collect::<Vec<_>>().join(&format!("{ws},{ws}"))
        );
        let permit = Permit::patients(["a-p1", "a-p2"]);
        let checked = verify_collect(body.as_bytes(), &permit);
        prop_assert_eq!(checked.verdict, Verdict::Clean);
        let original: serde_json::Value = serde_json::from_str(&body).unwrap();
        let has_last = all.iter().any(|(k, v)| k == "link" && v.contains(r#""last""#));
        let has_total = all.iter().any(|(k, _)| k == "total");
        let out = without_counts(body.as_bytes(), &checked.root).unwrap();
        let Some(out) = out else {
            prop_assert!(!has_last && !has_total, "nothing removed from {}", body);
            return Ok(());
        };
        let sent: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(sent.get("total"), None);
        let mut expected = original.clone();
        let object = expected.as_object_mut().unwrap();
        object.remove("total");
        if let Some(links) = object.get_mut("link").and_then(|l| l.as_array_mut()) {
            links.retain(|l| l["relation"] != "last");
        }
        // serde_json keeps the last of repeated keys; so does every reader of the result.
        prop_assert_eq!(&sent, &expected);
        prop_assert!(String::from_utf8_lossy(&out).contains(&entry), "entries not sent as written");
    }
}
