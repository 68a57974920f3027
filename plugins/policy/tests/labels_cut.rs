//! Leaving labelled entries out of a search result, over generated Bundles: whatever the
//! spacing, the strings (escapes, brackets and commas inside them) and which entries are
//! labelled, the client gets exactly the unlabelled entries, byte for byte and in order, then
//! one outcome entry, and every other member of the Bundle as the server sent it.

#![allow(clippy::unwrap_used)]

use phigate_policy::{verify_collect, without_entries, Labels, Permit, Verdict, Withheld};
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
    fn the_cut_keeps_exactly_the_unlabelled_entries(entries in prop::collection::vec(entry(), 0..12), ws in "[ \n]{0,2}") {
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
        let cut = without_entries(body.as_bytes(), &labelled).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        let original: serde_json::Value = serde_json::from_str(&body).unwrap();
        let kept: Vec<serde_json::Value> = original["entry"].as_array().unwrap().iter().enumerate()
            .filter(|(i, _)| !labelled.contains(&(*i as u32))).map(|(_, e)| e.clone()).collect();
        let got = sent["entry"].as_array().unwrap();
        prop_assert_eq!(&got[..got.len() - 1], &kept[..]);
        prop_assert_eq!(&got[got.len() - 1]["search"]["mode"], "outcome");
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
