//! Security labels a decision withholds, and leaving labelled entries out of a search result.
//!
//! FHIR servers mark sensitive records with `meta.security` codings: a confidentiality level
//! (`http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R`, restricted) or a sensitivity
//! (`http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY`, psychiatry; `|ETH`, substance use;
//! `|HIV`). A decision's `withheld_labels` lists those the principal is not cleared for, as FHIR
//! token strings: `system|code` (that system), `|code` (a coding without a system) or `code` (any
//! system). The response verification notes which resources carry one; a search result loses
//! those entries (and says so in an `OperationOutcome` entry, unless kept silent), anything else
//! is refused. Counts that would give the left-out records away (`Bundle.total`, the `last`
//! paging link) are cut out of the Bundle too.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use schemars::JsonSchema;
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

/// Whether a search result that lost entries for their labels says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithheldNotice {
    /// An `OperationOutcome` entry (`search.mode` `outcome`, issue `suppressed`) at the end of
    /// the page says some results were withheld, not which or how many: the clinician knows the
    /// record is incomplete (and may ask for break-glass), and learns that this page had one.
    #[default]
    Outcome,
    /// Nothing says so (as HAPI's consent service leaves it): the page is only shorter, and a
    /// read of such a record, its history or a write to it answers 404 `resource_not_found`.
    /// With `hide_counts`, a client cannot tell that anything was left out.
    Silent,
}

/// The Bundle `body` without the entries at `drop` (ascending indexes), with a `suppressed`
/// outcome entry in their place at the end unless `notice` is silent; everything else byte for
/// byte as it was. `None` when the body is not a Bundle whose `entry` array has the entries
/// named (the caller refuses the response).
pub fn without_entries(body: &[u8], drop: &[u32], notice: WithheldNotice) -> Option<Vec<u8>> {
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
    for (i, (_, item)) in kept.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    if notice == WithheldNotice::Outcome {
        if out.last() != Some(&b'[') {
            out.push(b',');
        }
        out.extend_from_slice(SUPPRESSED.as_bytes());
    }
    out.push(b']');
    out.extend_from_slice(tail);
    Some(out)
}

/// The members of a JSON object, in order (each key unescaped, its value as the server wrote
/// it), collected into `out` until `wanted` of them named `total` or `link` have been read; then
/// reading stops (`stopped` is set and an error ends the parse: serde_json would insist on
/// reading to the end).
struct Leading<'s, 'de> {
    wanted: u32,
    out: &'s RefCell<Vec<(Cow<'de, str>, &'de RawValue)>>,
    stopped: &'s Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Leading<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leading<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            seen += u32::from(matches!(key.as_ref(), "total" | "link"));
            let value = map.next_value::<&'de RawValue>()?;
            self.out.borrow_mut().push((key, value));
            if seen >= self.wanted {
                self.stopped.set(true);
                return Err(serde::de::Error::custom("read enough"));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Link<'a> {
    #[serde(borrow, default)]
    relation: Option<Cow<'a, str>>,
}

/// The members of a JSON document's root object as the verification walk found them: where
/// each starts (the byte offset of its key's opening quote) and whether it is named `total` or
/// `link`. The places are unknown when a root key was written with escapes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootMembers {
    starts: Option<Vec<(usize, bool)>>,
    counts: u32,
}

impl RootMembers {
    /// From the walk's root keys (the address of each key's first character, if borrowed from
    /// `body`) in order.
    pub(crate) fn found(body: &[u8], keys: Vec<(Option<usize>, bool)>) -> RootMembers {
        let counts = keys.iter().filter(|(_, count)| *count).count();
        if counts == 0 {
            // Nothing to cut (a resource read, most answers): the places are not needed.
            return RootMembers::default();
        }
        let base = body.as_ptr() as usize;
        let starts = keys
            .into_iter()
            .map(|(at, count)| Some((at?.checked_sub(base)?.checked_sub(1)?, count)))
            .collect::<Option<Vec<_>>>();
        RootMembers { starts, counts: u32::try_from(counts).unwrap_or(u32::MAX) }
    }

    /// How many root members are named `total` or `link`.
    pub fn counts(&self) -> u32 {
        self.counts
    }
}

/// The Bundle `body` without what would count the entries it cannot show: its `total` and its
/// `last` paging link (whose offset is the total, give or take a page), however often and
/// however escaped; every other member and link as the server wrote it. `members` is where the
/// verification found the root's members ([`crate::Verified::root`]): they are cut apart there,
/// without parsing the body again (with escaped root keys, the members up to the last count are
/// parsed instead). `body` must be one the verification found clean. `Ok(None)` when there is
/// nothing to remove; `Err` when the body is not a JSON object (the caller refuses it).
///
/// A total counts the labelled records a principal is not cleared for (on this page or any
/// other), so it tells whether a patient has, say, a psychiatry note; HAPI's consent service
/// suppresses it for the same reason.
pub fn without_counts(body: &[u8], members: &RootMembers) -> Result<Option<Vec<u8>>, NotAnObject> {
    if members.counts == 0 {
        return Ok(None);
    }
    let Some(starts) = &members.starts else {
        return parsed_without_counts(body, members.counts);
    };
    let Some(brace) = body.iter().rposition(|b| !b.is_ascii_whitespace()) else {
        return Err(NotAnObject);
    };
    let (Some(&(first, _)), Some(b'}')) = (starts.first(), body.get(brace)) else {
        return Err(NotAnObject);
    };
    let mut changed = false;
    let mut kept: Vec<Cow<'_, [u8]>> = Vec::with_capacity(starts.len());
    for (i, &(start, count)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(brace, |next| next.0);
        // `"key": value ,` (or the last member, up to the closing brace).
        let member = body.get(start..end).filter(|m| m.first() == Some(&b'"')).ok_or(NotAnObject)?;
        let member = member.trim_ascii_end();
        let member = member.strip_suffix(b",").unwrap_or(member).trim_ascii_end();
        if !count {
            kept.push(Cow::Borrowed(member));
        } else if member.starts_with(br#""total""#) {
            changed = true;
        } else {
            let value = member.get(br#""link""#.len()..).unwrap_or_default().trim_ascii_start();
            let value = value.strip_prefix(b":").ok_or(NotAnObject)?.trim_ascii_start();
            match without_last(value) {
                Some(links) => {
                    changed = true;
                    let mut rewritten = br#""link":"#.to_vec();
                    rewritten.extend_from_slice(&links);
                    kept.push(Cow::Owned(rewritten));
                }
                None => kept.push(Cow::Borrowed(member)),
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(body.get(..first).ok_or(NotAnObject)?);
    for (i, member) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(member);
    }
    out.extend_from_slice(body.get(brace..).ok_or(NotAnObject)?);
    Ok(Some(out))
}

/// [`without_counts`] for a body whose root keys were escaped: its members parsed, up to the
/// last of the `counts` named `total` or `link`, the rest copied as it is.
fn parsed_without_counts(body: &[u8], counts: u32) -> Result<Option<Vec<u8>>, NotAnObject> {
    let members = RefCell::new(Vec::new());
    let stopped = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = Leading { wanted: counts, out: &members, stopped: &stopped };
    let parsed = serde::de::DeserializeSeed::deserialize(read, &mut de).and_then(|()| de.end());
    if parsed.is_err() && !stopped.get() {
        return Err(NotAnObject);
    }
    let members = members.into_inner();
    // Where the members read end: the rest of the body follows as it is.
    let Some((_, last)) = members.last() else {
        return Ok(None);
    };
    let rest = (last.get().as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .and_then(|start| start.checked_add(last.get().len()))
        .and_then(|end| body.get(end..))
        .ok_or(NotAnObject)?;
    let mut changed = false;
    let mut kept: Vec<(&str, Cow<'_, [u8]>)> = Vec::with_capacity(members.len());
    for (key, value) in &members {
        match key.as_ref() {
            "total" => changed = true,
            "link" => match without_last(value.get().as_bytes()) {
                Some(links) => {
                    changed = true;
                    kept.push((key, Cow::Owned(links)));
                }
                None => kept.push((key, Cow::Borrowed(value.get().as_bytes()))),
            },
            _ => kept.push((key, Cow::Borrowed(value.get().as_bytes()))),
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    for (i, (key, value)) in kept.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).map_err(|_| NotAnObject)?;
        out.push(b':');
        out.extend_from_slice(value);
    }
    // `rest` is `, "next": ... }` or `}`; with nothing kept before it, its comma goes.
    let rest = if kept.is_empty() {
        let trimmed = rest.trim_ascii_start();
        trimmed.strip_prefix(b",").unwrap_or(trimmed)
    } else {
        rest
    };
    out.extend_from_slice(rest);
    Ok(Some(out))
}

/// A body [`without_counts`] could not read as a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

/// A Bundle's `link` array without its `last` links, or `None` when it has none (or is not an
/// array of objects: left as it is, it names no count).
fn without_last(links: &[u8]) -> Option<Vec<u8>> {
    let items = serde_json::from_slice::<Vec<&RawValue>>(links).ok()?;
    let last = |item: &&RawValue| {
        serde_json::from_str::<Link<'_>>(item.get()).is_ok_and(|l| l.relation.as_deref() == Some("last"))
    };
    if !items.iter().any(last) {
        return None;
    }
    let mut out = Vec::with_capacity(links.len());
    out.push(b'[');
    for (i, item) in items.iter().filter(|item| !last(item)).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
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
        let out = without_entries(body, &[1], WithheldNotice::Outcome).unwrap();
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

        let all = without_entries(body, &[0, 1, 2], WithheldNotice::Outcome).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(v["entry"].as_array().unwrap().len(), 1, "only the outcome entry is left");

        // Silent: the page is only shorter.
        let silent = without_entries(body, &[1], WithheldNotice::Silent).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&silent).unwrap();
        let ids: Vec<_> =
            v["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].clone()).collect();
        assert_eq!(ids, [serde_json::json!("o1"), serde_json::json!("o3")]);
        assert!(!String::from_utf8_lossy(&silent).contains("suppressed"));
        let none = without_entries(body, &[0, 1, 2], WithheldNotice::Silent).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert_eq!(v["entry"], serde_json::json!([]));
    }

    /// The counts taken out of `body`, where the verification found its members.
    fn hide(body: &[u8]) -> Result<Option<Vec<u8>>, NotAnObject> {
        let checked = crate::verify_collect(body, &crate::Permit::patients(["a-p1"]));
        assert_eq!(checked.verdict, crate::Verdict::Clean);
        without_counts(body, &checked.root)
    }

    #[test]
    fn counts_are_removed_and_everything_else_kept_as_written() {
        let body = br#"{"resourceType":"Bundle" ,"type":"searchset", "total": 12,
            "link":[{"relation":"self","url":"https://x/fhir/Observation?_count=1"},
                    {"relation":"next","url":"https://x/fhir?_getpages=a&_getpagesoffset=1"},
                    {"relation":"last","url":"https://x/fhir?_getpages=a&_getpagesoffset=11"}],
            "entry":[{"resource":{"resourceType":"Observation","id":"o1","note":[{"text":"total \"last\" ]}"}]}}]}"#;
        let out = hide(body).unwrap().expect("counts to remove");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let original: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v.get("total"), None);
        let relations: Vec<&str> =
            v["link"].as_array().unwrap().iter().map(|l| l["relation"].as_str().unwrap()).collect();
        assert_eq!(relations, ["self", "next"]);
        for member in ["resourceType", "type", "entry"] {
            assert_eq!(v[member], original[member]);
        }
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains(r#""entry":[{"resource":{"resourceType":"Observation","id":"o1","note":[{"text":"total \"last\" ]}"}]}}]"#),
            "values are the server's bytes: {text}"
        );
        assert!(!text.contains("offset=11"));

        // `_summary=count`: the count is all there was.
        let out = hide(br#"{"resourceType":"Bundle","type":"searchset","total":3}"#).unwrap().unwrap();
        assert_eq!(out, br#"{"resourceType":"Bundle","type":"searchset"}"#);
        let first = hide(b"{ \"total\" : 1 ,\n \"type\":\"searchset\" }").unwrap().unwrap();
        assert_eq!(first, b"{ \"type\":\"searchset\"}", "the comma after a first member goes with it");
        let last = hide(b"{\"type\":\"searchset\" ,\"total\":1 }").unwrap().unwrap();
        assert_eq!(last, b"{\"type\":\"searchset\"}", "and the comma before a last one");
    }

    #[test]
    fn counts_are_found_however_written_and_a_bundle_without_them_is_left_alone() {
        // An escaped root key: the members are parsed instead.
        let escaped = hide(br#"{"tot\u0061l":3,"resourceType":"Bundle","total":4}"#).unwrap().unwrap();
        assert_eq!(escaped, br#"{"resourceType":"Bundle"}"#, "an escaped or repeated key is the same member");
        let escaped =
            hide(b"{\"resourceType\":\"Bundle\", \"tot\\u0061l\":3 , \"entry\":[] }").unwrap().unwrap();
        assert_eq!(escaped, b"{\"resourceType\":\"Bundle\" , \"entry\":[] }", "the rest as written");
        let link = hide(br#"{"link":[{"url":"u","relation":"l\u0061st"}],"type":"history"}"#).unwrap();
        assert_eq!(link.unwrap(), br#"{"link":[],"type":"history"}"#);
        let nothing = br#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"u"}],
            "entry":[{"resource":{"resourceType":"Claim","total":{"value":3}}}]}"#;
        assert_eq!(hide(nothing), Ok(None), "a resource's own total is not the Bundle's");
        assert_eq!(
            hide(br#"{"link":{"relation":"last"}}"#),
            Ok(None),
            "a link that is not a list is not paging"
        );
        assert_eq!(hide(b"{}"), Ok(None));
        let misplaced = RootMembers { starts: Some(vec![(0, true)]), counts: 1 };
        assert_eq!(without_counts(b"[1]", &misplaced), Err(NotAnObject));
        assert_eq!(without_counts(b"{\"total\":1", &misplaced), Err(NotAnObject));
        let unplaced = RootMembers { starts: None, counts: 1 };
        assert_eq!(without_counts(b"[1]", &unplaced), Err(NotAnObject));
        assert_eq!(without_counts(b"{\"type\":", &unplaced), Err(NotAnObject));
    }

    #[test]
    fn a_body_the_cut_cannot_place_is_refused() {
        assert_eq!(
            without_entries(br#"{"entry":[{}]}"#, &[1], WithheldNotice::Outcome),
            None,
            "no such entry"
        );
        assert_eq!(
            without_entries(br#"{"resourceType":"Observation"}"#, &[0], WithheldNotice::Outcome),
            None,
            "no entries"
        );
        assert_eq!(
            without_entries(br#"{"entry":[{}],"entry":[{}]}"#, &[0], WithheldNotice::Outcome),
            None,
            "a repeated entry key"
        );
        assert_eq!(without_entries(br#"{"entry":{}}"#, &[0], WithheldNotice::Outcome), None);
        assert_eq!(without_entries(b"not json", &[0], WithheldNotice::Outcome), None);
    }
}
