//! Page-size caps (HIPAA minimum necessary; no unbounded patient lists): a search allowed with a
//! `max_page_size` obligation never reaches the upstream asking for more. A search without
//! `_count` gains `_count=<max>`; one asking for more is clamped to the maximum (a FHIR server
//! may always return fewer than `_count`, so clients page on as usual) or refused, per config.
//! A `_count` carried in a POST `_search` body cannot be rewritten without re-encoding the body,
//! so over the maximum it is refused.

use phigate_plugin::{Denial, ErrorCode, FhirRequest, Interaction, QueryParam};
use schemars::JsonSchema;
use serde::Deserialize;

/// What to do with a search asking for more than the maximum page size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OversizedPage {
    /// Rewrite `_count` to the maximum (the client pages on).
    #[default]
    Clamp,
    /// Answer 400 `page_size_exceeded`.
    Refuse,
}

/// What the cap did to the forwarded query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageCap {
    /// `_count` was within the maximum.
    Within,
    /// `_count=<max>` was added.
    Added,
    /// `_count` was lowered to the maximum.
    Clamped,
}

fn is_search(f: &FhirRequest) -> bool {
    matches!(
        f.interaction,
        Interaction::SearchType
            | Interaction::SearchSystem
            | Interaction::SearchCompartment
            | Interaction::History
    )
}

/// Applies a `max_page_size` obligation to the forwarded query, keeping `fhir.count` (what the
/// audit record shows) equal to what the upstream is asked for. Not a search: nothing to do.
pub(crate) fn cap(
    fhir: Option<&mut FhirRequest>,
    query: &mut Vec<QueryParam>,
    max: u32,
    oversized: OversizedPage,
) -> Result<Option<PageCap>, Denial> {
    let Some(f) = fhir.filter(|f| is_search(f)) else {
        return Ok(None);
    };
    let exceeded = |why: &'static str| Denial::new(ErrorCode::PageSizeExceeded).with_cause(why);
    // `_summary=count` asks for the total alone: the cap it gets is `_count=0` (a page of none,
    // which FHIR servers answer with the total), not the maximum, which a server reading the
    // last of the two (Medplum does) would answer with a full page. A server that ignores
    // `_summary` is still bounded.
    let count_only = f.count.is_none() && query.iter().any(|p| p.name == "_summary" && p.value == "count");
    let max = if count_only { 0 } else { max };
    let in_query = query.iter_mut().find(|p| p.name == "_count");
    let outcome = match (f.count, in_query) {
        (Some(n), _) if n <= max => PageCap::Within,
        (Some(_), _) if oversized == OversizedPage::Refuse => {
            return Err(exceeded("_count over the maximum"))
        }
        (Some(_), Some(param)) => {
            param.value = max.to_string();
            PageCap::Clamped
        }
        // The _count is in a POST _search body: a second one in the URL would be ambiguous.
        (Some(_), None) => return Err(exceeded("_count over the maximum in a search body")),
        (None, _) => {
            query.push(QueryParam { name: "_count".to_owned(), value: max.to_string() });
            PageCap::Added
        }
    };
    f.count = Some(f.count.map_or(max, |n| n.min(max)));
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(count: Option<u32>) -> FhirRequest {
        let mut f = FhirRequest::new(Interaction::SearchType);
        f.resource_type = Some("Observation");
        f.count = count;
        f
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<QueryParam> {
        pairs.iter().map(|(n, v)| QueryParam { name: (*n).into(), value: (*v).into() }).collect()
    }

    #[test]
    fn a_count_only_search_asks_for_no_entries() {
        let (mut f, mut query) = (search(None), q(&[("code", "x"), ("_summary", "count")]));
        assert_eq!(cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).unwrap(), Some(PageCap::Added));
        assert_eq!(query, q(&[("code", "x"), ("_summary", "count"), ("_count", "0")]));
        assert_eq!(f.count, Some(0), "the audit record shows what was asked");
        // With a _count of its own the cap applies as usual.
        let (mut f, mut query) = (search(Some(500)), q(&[("_summary", "count"), ("_count", "500")]));
        assert_eq!(cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).unwrap(), Some(PageCap::Clamped));
        // Any other summary is a page.
        let (mut f, mut query) = (search(None), q(&[("_summary", "true")]));
        assert_eq!(cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).unwrap(), Some(PageCap::Added));
    }

    #[test]
    fn search_without_count_gains_the_maximum() {
        let (mut f, mut query) = (search(None), q(&[("code", "x")]));
        assert_eq!(cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).ok(), Some(Some(PageCap::Added)));
        assert_eq!(query, q(&[("code", "x"), ("_count", "100")]));
        assert_eq!(f.count, Some(100));
    }

    #[test]
    fn count_within_the_maximum_is_untouched() {
        let (mut f, mut query) = (search(Some(20)), q(&[("_count", "20")]));
        assert_eq!(
            cap(Some(&mut f), &mut query, 100, OversizedPage::Refuse).ok(),
            Some(Some(PageCap::Within))
        );
        assert_eq!(query, q(&[("_count", "20")]));
    }

    #[test]
    fn oversized_count_is_clamped_or_refused_per_config() {
        let (mut f, mut query) = (search(Some(5000)), q(&[("_count", "5000")]));
        assert_eq!(
            cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).ok(),
            Some(Some(PageCap::Clamped))
        );
        assert_eq!((query, f.count), (q(&[("_count", "100")]), Some(100)));

        let (mut f, mut query) = (search(Some(5000)), q(&[("_count", "5000")]));
        let denial = cap(Some(&mut f), &mut query, 100, OversizedPage::Refuse).unwrap_err();
        assert_eq!(denial.code, ErrorCode::PageSizeExceeded);
        assert_eq!(query, q(&[("_count", "5000")]), "a refused search is not rewritten");
    }

    #[test]
    fn oversized_count_in_a_search_body_is_refused_even_when_clamping() {
        let (mut f, mut query) = (search(Some(5000)), Vec::new());
        let denial = cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).unwrap_err();
        assert_eq!(denial.code, ErrorCode::PageSizeExceeded);
        assert!(query.is_empty());
    }

    #[test]
    fn reads_are_not_paged() {
        let mut f = FhirRequest::new(Interaction::Read);
        let mut query = Vec::new();
        assert_eq!(cap(Some(&mut f), &mut query, 100, OversizedPage::Clamp).ok(), Some(None));
        assert!(query.is_empty());
    }
}
