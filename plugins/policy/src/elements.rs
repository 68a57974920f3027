//! `_elements` asks a FHIR server for a subset of each resource, and a server may then leave out
//! `meta`, and with it the security labels the response check reads (`_summary` keeps `meta` in
//! every mode). Where a decision withholds labels, `meta` is added to each `_elements` of the
//! forwarded query; what cannot be rewritten that way is refused: an `_elements` with a modifier
//! (`_elements:exclude`), one in a POST `_search` body, or one anywhere in a batch or
//! transaction Bundle (its entries' URLs). `$graphql` answers with whatever fields the query
//! picks, not resources with their `meta`: refused too.

use phigate_plugin::{Denial, ErrorCode, Interaction, QueryParam, RequestCtx};

/// What a POST body holds that could ask for `_elements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// A form-encoded search (`POST _search`).
    SearchForm,
    /// A batch or transaction Bundle (JSON): entry URLs carry their own queries.
    Bundle,
}

/// The kind of body `ctx` carries, when it can ask for `_elements`.
pub(crate) fn body_kind(ctx: &RequestCtx) -> Option<Body> {
    match ctx.fhir.as_ref()?.interaction {
        Interaction::SearchType | Interaction::SearchSystem | Interaction::SearchCompartment => {
            Some(Body::SearchForm)
        }
        Interaction::Batch | Interaction::Transaction => Some(Body::Bundle),
        _ => None,
    }
}

/// Refuses an operation whose answer the label check cannot read (`$graphql`).
pub(crate) fn labels_readable(ctx: &RequestCtx) -> Result<(), Denial> {
    match ctx.fhir.as_ref().and_then(|f| f.operation.as_deref()) {
        Some("graphql") => Err(Denial::new(ErrorCode::PolicyDenied)
            .with_cause("$graphql where security labels are withheld: its answer carries no meta")),
        _ => Ok(()),
    }
}

/// Keeps `meta` in every resource the server returns for `query` (and the POST `body`).
pub(crate) fn keep_meta(query: &mut [QueryParam], body: Option<(&[u8], Body)>) -> Result<(), Denial> {
    let refused = |cause: &'static str| Denial::new(ErrorCode::BadRequest).with_cause(cause);
    for p in query.iter_mut() {
        if p.name == "_elements" {
            if !p.value.split(',').any(|e| e.trim() == "meta") {
                if !p.value.trim().is_empty() {
                    p.value.push(',');
                }
                p.value.push_str("meta");
            }
        } else if p.name.starts_with("_elements:") {
            return Err(refused("_elements with a modifier where security labels are withheld"));
        }
    }
    match body {
        Some((b, Body::SearchForm))
            if form_urlencoded::parse(b).any(|(k, _)| k == "_elements" || k.starts_with("_elements:")) =>
        {
            Err(refused("_elements in a search body where security labels are withheld"))
        }
        // Entry URLs are JSON strings, percent-encoded or not: any mention refuses (fail closed).
        Some((b, Body::Bundle)) if contains(b, b"_elements") || contains(b, b"%5Felements") => {
            Err(refused("_elements in a batch where security labels are withheld"))
        }
        _ => Ok(()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<QueryParam> {
        pairs.iter().map(|(n, v)| QueryParam { name: (*n).to_owned(), value: (*v).to_owned() }).collect()
    }

    #[test]
    fn meta_is_added_to_each_elements_list_once() {
        let mut query = q(&[
            ("patient", "a-p1"),
            ("_elements", "code,subject"),
            ("_elements", "meta,code"),
            ("_elements", ""),
        ]);
        keep_meta(&mut query, None).unwrap();
        assert_eq!(
            query,
            q(&[
                ("patient", "a-p1"),
                ("_elements", "code,subject,meta"),
                ("_elements", "meta,code"),
                ("_elements", "meta")
            ])
        );
        let mut plain = q(&[("code", "x"), ("_summary", "true")]);
        keep_meta(&mut plain, None).unwrap();
        assert_eq!(plain, q(&[("code", "x"), ("_summary", "true")]), "nothing else changes");
    }

    #[test]
    fn what_cannot_be_rewritten_is_refused() {
        let denial = keep_meta(&mut q(&[("_elements:exclude", "meta")]), None).unwrap_err();
        assert_eq!(denial.code, ErrorCode::BadRequest);
        let form = |b: &'static [u8]| Some((b, Body::SearchForm));
        let denial = keep_meta(&mut q(&[]), form(b"patient=a-p1&_elements=code")).unwrap_err();
        assert_eq!(denial.code, ErrorCode::BadRequest);
        assert!(
            keep_meta(&mut q(&[]), form(b"patient=a-p1&_elements%3Aexclude=meta")).is_err(),
            "an encoded key too"
        );
        assert!(keep_meta(&mut q(&[]), form(b"patient=a-p1&code=x")).is_ok());
        let bundle = |b: &'static [u8]| Some((b, Body::Bundle));
        let batch = br#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?patient=a-p1&_elements=code"}}]}"#;
        assert!(keep_meta(&mut q(&[]), bundle(batch)).is_err());
        assert!(keep_meta(&mut q(&[]), bundle(b"Observation?%5felements=code")).is_err(), "percent-encoded");
        let plain = br#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?patient=a-p1"}}]}"#;
        assert!(keep_meta(&mut q(&[]), bundle(plain)).is_ok());
    }
}
