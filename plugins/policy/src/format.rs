//! The response format of a request whose response the gateway verifies: FHIR JSON only.
//!
//! Verification reads the response body as FHIR JSON; an XML (or Turtle) answer cannot be
//! checked and would be refused after the upstream did the work. So the client's own choice is
//! judged before anything is forwarded: `_format` (which overrides `Accept` in FHIR, R4 §3.1.0.1.7)
//! must name JSON, and `Accept` must allow a JSON type, or the request is refused with 406
//! `format_not_acceptable`. A client that accepts anything (no `Accept`, `*/*`,
//! `application/*`) gets `Accept: application/fhir+json` upstream, so a server whose default is
//! XML answers in the format the gateway can verify; one accepting JSON among other formats has
//! only its JSON ranges sent.

use http::header::ACCEPT;
use http::HeaderValue;
use phigate_plugin::{Denial, ErrorCode, RequestInfo};

/// The `Accept` sent upstream when the client accepts any format.
pub(crate) const FHIR_JSON: HeaderValue = HeaderValue::from_static("application/fhir+json");

/// JSON as FHIR names it in `_format` and in media types (`application/json+fhir` is DSTU2's).
fn is_json(media: &str) -> bool {
    media.eq_ignore_ascii_case("json")
        || media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("application/json+fhir")
        || media.len() > 5 && media.as_bytes()[media.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// Judges the request's format choice: `Ok(Some(accept))` to send that `Accept` upstream,
/// `Ok(None)` to forward as asked.
///
/// # Errors
/// 406 `format_not_acceptable` when the client asks for no JSON format.
pub(crate) fn judge(req: &RequestInfo) -> Result<Option<HeaderValue>, Denial> {
    let refuse = |why: &'static str| Denial::new(ErrorCode::FormatNotAcceptable).with_cause(why);
    let mut formats = req.query.iter().filter(|p| p.name == "_format").peekable();
    if formats.peek().is_some() {
        return match formats.all(|p| is_json(p.value.trim())) {
            true => Ok(None),
            false => Err(refuse("_format is not JSON")),
        };
    }
    let mut values = req.headers.get_all(ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Ok(Some(FHIR_JSON));
    }
    // The client's JSON ranges (as written), and whether it listed anything else it accepts.
    let (mut json, mut wildcard, mut other) = (Vec::new(), false, false);
    for value in values {
        let Ok(text) = value.to_str() else { return Err(refuse("Accept is not text")) };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            // `q=0` means "not acceptable" (RFC 9110 §12.4.2).
            let refused = parts.any(|p| {
                p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if refused || media.is_empty() {
                continue;
            }
            if is_json(media) {
                json.push(range.trim());
            } else {
                wildcard |= media == "*/*" || media.eq_ignore_ascii_case("application/*");
                other = true;
            }
        }
    }
    match (json.is_empty(), other) {
        // Only JSON asked for: as asked.
        (false, false) => Ok(None),
        // JSON among other formats (XML preferred, say): only its JSON ranges go upstream, so
        // the answer is one the gateway can verify.
        (false, true) => {
            HeaderValue::from_str(&json.join(", ")).map(Some).map_err(|_| refuse("Accept is not text"))
        }
        (true, _) if wildcard => Ok(Some(FHIR_JSON)),
        (true, _) => Err(refuse("Accept names no JSON type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use phigate_plugin::QueryParam;

    fn req(format: Option<&str>, accept: &[&str]) -> RequestInfo {
        let mut headers = HeaderMap::new();
        for a in accept {
            headers.append(ACCEPT, HeaderValue::from_str(a).unwrap_or_else(|_| unreachable!()));
        }
        let query =
            format.map(|f| vec![QueryParam { name: "_format".into(), value: f.into() }]).unwrap_or_default();
        RequestInfo { method: Method::GET, path: "/fhir/Patient/p1".into(), query, headers, body: None }
    }

    fn code(r: Result<Option<HeaderValue>, Denial>) -> Option<ErrorCode> {
        r.err().map(|d| d.code)
    }

    #[test]
    fn json_asked_for_is_forwarded_as_asked() {
        for accept in [
            "application/fhir+json",
            "application/json",
            "application/fhir+json; fhirVersion=4.0",
            "application/json+fhir",
            "application/fhir+json, application/json;q=0.5",
        ] {
            assert_eq!(judge(&req(None, &[accept])).ok(), Some(None), "{accept}");
        }
        // JSON among other formats: only the JSON ranges go upstream.
        for (accept, upstream) in [
            ("application/fhir+xml, application/fhir+json;q=0.9", "application/fhir+json;q=0.9"),
            ("text/html, APPLICATION/FHIR+JSON;q=0.5, */*", "APPLICATION/FHIR+JSON;q=0.5"),
        ] {
            let got = judge(&req(None, &[accept])).ok().flatten();
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap_or_default()), Some(upstream), "{accept}");
        }
        for format in ["json", "application/fhir+json", "application/json", " JSON "] {
            assert_eq!(judge(&req(Some(format), &["application/fhir+xml"])).ok(), Some(None), "{format}");
        }
    }

    #[test]
    fn any_format_becomes_fhir_json_upstream() {
        for accept in [&[][..], &["*/*"], &["application/*"], &["text/plain, */*;q=0.1"], &["*/*", "text/x"]]
        {
            assert_eq!(judge(&req(None, accept)).ok(), Some(Some(FHIR_JSON)), "{accept:?}");
        }
    }

    #[test]
    fn xml_or_turtle_only_is_406() {
        for accept in [
            "application/fhir+xml",
            "application/xml, text/xml",
            "text/turtle",
            "application/fhir+json;q=0, application/fhir+xml",
            "*/*;q=0, application/xml",
            "",
        ] {
            assert_eq!(code(judge(&req(None, &[accept]))), Some(ErrorCode::FormatNotAcceptable), "{accept}");
        }
        for format in ["xml", "application/fhir+xml", "ttl", "html", "ééééé+json!"] {
            assert_eq!(
                code(judge(&req(Some(format), &["application/fhir+json"]))),
                Some(ErrorCode::FormatNotAcceptable),
                "{format}: _format overrides Accept"
            );
        }
    }
}
