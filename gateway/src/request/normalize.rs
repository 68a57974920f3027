//! Request-target normalization: one canonical, decoded form of path and query, or a refusal.
//!
//! The gateway decodes the target exactly once, here; stages judge the decoded form and the
//! forwarded target is rebuilt from it by [`rebuild_target`], so the upstream receives what policy
//! saw. Anything that two parsers could read differently is an [`Ambiguity`], never a guess.
//! Query decoding follows form semantics (`+` is a space), as servlet FHIR servers do; the rebuilt
//! query never contains a raw `+` or space, so the upstream has nothing left to interpret.

use phigate_plugin::QueryParam;
use schemars::JsonSchema;
use serde::Deserialize;

use super::Ambiguity;

/// The singleton FHIR parameters refused when repeated: a duplicate `_count` lets the gateway
/// cap one copy while the upstream honours the other.
pub const DEFAULT_SINGLETON_PARAMS: &[&str] = &[
    "_count",
    "_offset",
    "_sort",
    "_summary",
    "_total",
    "_format",
    "_pretty",
    "_elements",
    "_contained",
    "_containedType",
    "_page_token",
    "_getpages",
];

/// Limits applied while normalizing a request target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetLimits {
    /// Longest accepted request target (path and query as received), in bytes. Longer targets
    /// are refused with 414 `uri_too_long`. Default: 8192.
    #[serde(default = "default_max_target_bytes")]
    pub max_target_bytes: usize,
    /// Query parameters that may appear at most once; a repeat is refused with 400
    /// `ambiguous_request`. Default: `_count`, `_offset`, `_sort`, `_summary`, `_total`,
    /// `_format`, `_pretty`, `_elements`, `_contained`, `_containedType`, `_page_token`,
    /// `_getpages`.
    #[serde(default = "default_singleton_params")]
    pub singleton_params: Vec<String>,
}

fn default_max_target_bytes() -> usize {
    8192
}

fn default_singleton_params() -> Vec<String> {
    DEFAULT_SINGLETON_PARAMS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            max_target_bytes: default_max_target_bytes(),
            singleton_params: default_singleton_params(),
        }
    }
}

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    /// The percent-decoded path; starts with `/`, has no dot or empty segments (a single
    /// trailing `/` is kept).
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<QueryParam>,
}

/// Normalizes `raw`, the request target exactly as received (origin-form path and optional
/// `?query`), or says why it is ambiguous.
pub fn normalize_target(raw: &[u8], limits: &TargetLimits) -> Result<NormalizedTarget, Ambiguity> {
    if raw.len() > limits.max_target_bytes {
        return Err(Ambiguity::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(Ambiguity::NotOriginForm);
    }
    let (path_raw, query_raw) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let path = decode_path(path_raw)?;
    let mut query = Vec::new();
    if let Some(q) = query_raw {
        parse_query(q, &mut query)?;
        check_singletons(&query, &limits.singleton_params)?;
    }
    Ok(NormalizedTarget { path, query })
}

/// Re-encodes a normalized path and query canonically: uppercase `%XX` for every byte outside a
/// small safe set, space as `%20` and `+` as `%2B` in the query. For every target `x` that
/// [`normalize_target`] accepts, normalizing `rebuild_target(x)` yields `x` again.
pub fn rebuild_target(path: &str, query: &[QueryParam]) -> String {
    let extra: usize = query.iter().map(|p| p.name.len() + p.value.len() + 2).sum();
    let mut out = String::with_capacity(path.len() + extra + 16);
    encode_into(path.as_bytes(), path_safe, &mut out);
    for (i, p) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        encode_into(p.name.as_bytes(), query_safe, &mut out);
        out.push('=');
        encode_into(p.value.as_bytes(), query_safe, &mut out);
    }
    out
}

/// Refuses a repeated singleton parameter.
pub(crate) fn check_singletons<S: AsRef<str>>(
    query: &[QueryParam],
    singletons: &[S],
) -> Result<(), Ambiguity> {
    for s in singletons {
        let s = s.as_ref();
        if query.iter().filter(|p| p.name == s).nth(1).is_some() {
            return Err(Ambiguity::DuplicateSingleton);
        }
    }
    Ok(())
}

/// Parses a raw `application/x-www-form-urlencoded` string (a query, or a `POST _search` body)
/// into `out`.
pub(crate) fn parse_query(raw: &[u8], out: &mut Vec<QueryParam>) -> Result<(), Ambiguity> {
    if raw.is_empty() {
        return Ok(());
    }
    for pair in raw.split(|&b| b == b'&') {
        let (name_raw, value_raw) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if name_raw.is_empty() {
            return Err(Ambiguity::EmptyParamName);
        }
        let name = decode_component(name_raw, Part::Query)?;
        let value = decode_component(value_raw, Part::Query)?;
        out.push(QueryParam { name, value });
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Query,
}

fn decode_path(raw: &[u8]) -> Result<String, Ambiguity> {
    let mut out = Vec::with_capacity(raw.len());
    let mut segments = raw[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        out.push(b'/');
        if seg.is_empty() {
            // Only a single trailing slash (or the root itself) may be empty: `//` is read as one
            // separator by some servers and as an empty segment by others.
            if segments.peek().is_some() {
                return Err(Ambiguity::EmptySegment);
            }
            continue;
        }
        let start = out.len();
        decode_into(seg, Part::Path, &mut out)?;
        if matches!(&out[start..], b"." | b"..") {
            return Err(Ambiguity::DotSegment);
        }
    }
    String::from_utf8(out).map_err(|_| Ambiguity::InvalidUtf8)
}

fn decode_component(raw: &[u8], part: Part) -> Result<String, Ambiguity> {
    let mut out = Vec::with_capacity(raw.len());
    decode_into(raw, part, &mut out)?;
    String::from_utf8(out).map_err(|_| Ambiguity::InvalidUtf8)
}

/// Appends the decoded form of `raw` to `out`, refusing every ambiguous byte.
fn decode_into(raw: &[u8], part: Part, out: &mut Vec<u8>) -> Result<(), Ambiguity> {
    let start = out.len();
    let mut saw_percent = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let decoded = if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(Ambiguity::MalformedEscape);
            };
            i += 3;
            let v = (hi << 4) | lo;
            match v {
                b'/' | b'\\' if part == Part::Path => return Err(Ambiguity::EncodedSeparator),
                b';' if part == Part::Path => return Err(Ambiguity::PathParameter),
                b'%' => saw_percent = true,
                _ => {}
            }
            v
        } else {
            i += 1;
            match b {
                b'#' => return Err(Ambiguity::Fragment),
                b'\\' => return Err(Ambiguity::Backslash),
                b';' if part == Part::Path => return Err(Ambiguity::PathParameter),
                b'+' if part == Part::Query => b' ',
                b' ' | 0x80..=0xFF => return Err(Ambiguity::InvalidCharacter),
                _ => b,
            }
        };
        if decoded < 0x20 || decoded == 0x7F {
            return Err(Ambiguity::ControlByte);
        }
        out.push(decoded);
    }
    if saw_percent && has_escape(&out[start..]) {
        // `%252F` decodes to `%2F`: a component that decodes once more would mean one thing to
        // us and another to anything downstream that decodes again.
        return Err(Ambiguity::DoubleEncoding);
    }
    Ok(())
}

fn has_escape(decoded: &[u8]) -> bool {
    decoded
        .windows(3)
        .any(|w| w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes kept raw in a rebuilt path: unreserved, `/` and the sub-delims FHIR uses (`$` for
/// operations). `;`, `+`, `%` and everything else are encoded.
fn path_safe(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'/' | b'$' | b':' | b'@' | b'!' | b'*' | b',' | b'\'' | b'(' | b')'
        )
}

/// Bytes kept raw in a rebuilt query name or value. `&`, `=`, `+`, `#`, `%`, space and `\`
/// are encoded, so the upstream splits and decodes exactly as we did.
fn query_safe(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'/' | b'$' | b':' | b'@' | b'!' | b'*' | b',' | b'\'' | b'(' | b')' | b'?' | b';'
        )
}

fn encode_into(bytes: &[u8], safe: fn(u8) -> bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}
