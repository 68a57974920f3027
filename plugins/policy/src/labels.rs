//! Security labels a decision withholds, and leaving labelled entries out of a search result.
//!
//! FHIR servers mark sensitive records with `meta.security` codings: a confidentiality level
//! (`http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R`, restricted) or a sensitivity
//! (`http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY`, psychiatry; `|ETH`, substance use;
//! `|HIV`). A decision's `withheld_labels` lists those the principal is not cleared for, as FHIR
//! token strings: `system|code` (that system), `|code` (a coding without a system) or `code` (any
//! system). The response verification notes which resources carry one; a search result loses
//! those entries (and says so in an `OperationOutcome` entry), anything else is refused.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A set of withheld labels, matched against `meta.security` codings. Shares the decision's
/// list (built once per revision in the common case): nothing is parsed until a coding is seen.
#[derive(Debug, Clone, Default)]
pub struct Labels(Option<Arc<[String]>>);

impl Labels {
    /// The labels named by `tokens` (`system|code`, `|code` or `code`).
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Labels {
        Labels::shared(tokens.into_iter().map(str::to_owned).collect())
    }

    /// The labels of a decision's `withheld_labels`.
    pub fn shared(tokens: Arc<[String]>) -> Labels {
        Labels(Some(tokens))
    }

    /// Whether nothing is withheld.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|t| t.is_empty())
    }

    /// Whether a label written as a token (`system|code`, as on a patient in the data) is
    /// withheld.
    pub fn withholds_token(&self, token: &str) -> bool {
        match token.rsplit_once('|') {
            Some((system, code)) => self.withholds(Some(system).filter(|s| !s.is_empty()), code),
            None => self.withholds(None, token),
        }
    }

    /// Whether a coding with this system and code is withheld.
    pub fn withholds(&self, system: Option<&str>, code: &str) -> bool {
        self.0.iter().flat_map(|t| t.iter()).any(|token| match token.rsplit_once('|') {
            Some((s, c)) => c == code && s == system.unwrap_or(""),
            None => token == code,
        })
    }
}

/// What a verification found labelled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Withheld {
    /// Nothing carries a withheld label.
    #[default]
    Nothing,
    /// These entries (indexes into the root Bundle's `entry`, ascending) carry one, and nothing
    /// outside them does.
    Entries(Vec<u32>),
    /// The response itself (a resource, or a Bundle's own `meta`) carries one.
    Whole,
}

/// The entry that tells the client a search result is incomplete, without saying what or how
/// much was left out.
const SUPPRESSED: &str = r#"{"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"suppressed","details":{"text":"Some results were withheld: their security labels restrict them."}}]},"search":{"mode":"outcome"}}"#;

#[derive(Deserialize)]
struct Entries<'a> {
    #[serde(borrow)]
    entry: &'a RawValue,
}

/// The Bundle `body` without the entries at `drop` (ascending indexes), with a `suppressed`
/// outcome entry in their place at the end; everything else byte for byte as it was. `None`
/// when the body is not a Bundle whose `entry` array has the entries named (the caller refuses
/// the response).
pub fn without_entries(body: &[u8], drop: &[u32]) -> Option<Vec<u8>> {
    let bundle: Entries<'_> = serde_json::from_slice(body).ok()?;
    let items: Vec<&RawValue> = serde_json::from_str(bundle.entry.get()).ok()?;
    if drop.iter().any(|&i| usize::try_from(i).map_or(true, |i| i >= items.len())) {
        return None;
    }
    let start = (bundle.entry.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(bundle.entry.get().len())?;
    let (head, tail) = (body.get(..start)?, body.get(end..)?);
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(head);
    out.push(b'[');
    let kept =
        items.iter().enumerate().filter(|(i, _)| !drop.iter().any(|&d| usize::try_from(d).ok() == Some(*i)));
    for (_, item) in kept {
        out.extend_from_slice(item.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(SUPPRESSED.as_bytes());
    out.push(b']');
    out.extend_from_slice(tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CONF: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

    #[test]
    fn tokens_match_by_system_and_code() {
        let l = Labels::from_tokens([
            "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
            "PSY",
            "|local-secret",
        ]);
        assert!(l.withholds(Some(CONF), "R"));
        assert!(!l.withholds(Some(CONF), "N"), "normal confidentiality is not withheld");
        assert!(!l.withholds(Some("urn:other"), "R"), "another system's R is another label");
        assert!(!l.withholds(None, "R"));
        assert!(l.withholds(Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"), "PSY"));
        assert!(l.withholds(None, "PSY"), "a bare code matches in any system, none included");
        assert!(l.withholds(None, "local-secret"));
        assert!(!l.withholds(Some("urn:x"), "local-secret"), "|code matches codings without a system only");
        assert!(Labels::default().is_empty());
        assert!(!Labels::from_tokens(["x"]).withholds(Some(CONF), "X"), "codes are case-sensitive");
    }

    #[test]
    fn entries_are_cut_out_and_the_rest_kept_byte_for_byte() {
        let body = br#"{"resourceType":"Bundle", "type":"searchset","total":3,
            "entry": [ {"resource":{"resourceType":"Observation","id":"o1"}} ,
                       {"resource":{"resourceType":"Observation","id":"o2", "note":"a \"quoted\" ]}"}},
                       {"resource":{"resourceType":"Observation","id":"o3"}} ],
            "link":[{"relation":"next","url":"https://fhir.example/x"}]}"#;
        let out = without_entries(body, &[1]).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let ids: Vec<_> =
            v["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].clone()).collect();
        assert_eq!(ids, [serde_json::json!("o1"), serde_json::json!("o3"), serde_json::Value::Null]);
        assert_eq!(v["entry"][2]["search"]["mode"], "outcome");
        assert_eq!(v["entry"][2]["resource"]["issue"][0]["code"], "suppressed");
        assert_eq!(v["total"], 3, "the server's total is left as it was");
        assert!(text.starts_with(r#"{"resourceType":"Bundle", "type":"searchset","total":3,"#));
        assert!(text.contains(r#"{"resource":{"resourceType":"Observation","id":"o1"}}"#));
        assert!(text.ends_with(r#""link":[{"relation":"next","url":"https://fhir.example/x"}]}"#));
        assert!(!text.contains("o2"));

        let all = without_entries(body, &[0, 1, 2]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(v["entry"].as_array().unwrap().len(), 1, "only the outcome entry is left");
    }

    #[test]
    fn a_body_the_cut_cannot_place_is_refused() {
        assert_eq!(without_entries(br#"{"entry":[{}]}"#, &[1]), None, "no such entry");
        assert_eq!(without_entries(br#"{"resourceType":"Observation"}"#, &[0]), None, "no entries");
        assert_eq!(without_entries(br#"{"entry":[{}],"entry":[{}]}"#, &[0]), None, "a repeated entry key");
        assert_eq!(without_entries(br#"{"entry":{}}"#, &[0]), None);
        assert_eq!(without_entries(b"not json", &[0]), None);
    }
}
