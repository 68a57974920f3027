//! Rewrites serde and YAML parser messages so that they never carry the configured value.
//!
//! serde's messages quote what they found (`invalid type: string "s3cr3t", expected u64`), and a
//! config file is where secrets live. Known message shapes are rewritten to name only the kind of
//! value found; any other message that quotes something is replaced by a fixed text.

/// A parse error message without the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The message.
    pub(crate) message: String,
    /// For an unknown key, the key's name (a key name is not a value: it is safe to show).
    pub(crate) unknown_key: Option<String>,
    /// For a key given twice in one mapping, the key's name.
    pub(crate) duplicate_key: Option<String>,
}

/// Rewrites one raw serde_yaml message (`Display` of the error).
pub(crate) fn rewrite(raw: &str) -> Rewritten {
    let text = strip_marks(raw);
    let text = strip_path_prefix(&text);
    let mut unknown_key = None;
    let mut duplicate_key = None;
    let message = if let Some(rest) = text.strip_prefix("invalid type: ") {
        match split_expected(rest) {
            Some((found, expected)) => {
                let expected = plain_expected(expected);
                format!("wrong type: expected {expected}, found {}", kind(found))
            }
            None => "wrong type".to_owned(),
        }
    } else if let Some(rest) = text.strip_prefix("invalid value: ") {
        match split_expected(rest) {
            Some((_, expected)) => format!("invalid value: expected {}", plain_expected(expected)),
            None => "invalid value".to_owned(),
        }
    } else if let Some(rest) = text.strip_prefix("unknown variant ") {
        match split_expected(rest) {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".to_owned(),
        }
    } else if let Some(rest) = text.strip_prefix("unknown field `") {
        let (name, expected) = split_unknown_field(rest);
        unknown_key = name;
        match expected {
            Some(expected) => format!("unknown key, expected {expected}"),
            None => "unknown key".to_owned(),
        }
    } else if let Some(rest) = text.strip_prefix("missing field ") {
        format!("missing required key {rest}")
    } else if let Some(rest) = text.strip_prefix("duplicate field ") {
        duplicate_key = rest.strip_prefix('`').and_then(|r| r.strip_suffix('`')).map(str::to_owned);
        format!("duplicate key {rest}")
    } else if text.starts_with("invalid length ") {
        text.to_owned()
    } else if text.contains(['`', '"', '\'']) {
        "invalid value".to_owned()
    } else {
        text.to_owned()
    };
    Rewritten { message, unknown_key, duplicate_key }
}

/// Splits `<found>, expected <what>` at the *last* `, expected `: the found value comes first and
/// may itself contain that text.
fn split_expected(rest: &str) -> Option<(&str, &str)> {
    let at = rest.rfind(", expected ")?;
    Some((&rest[..at], &rest[at + ", expected ".len()..]))
}

/// A key name as it may be printed: control characters (terminal escapes) replaced, length
/// bounded.
fn printable_key(name: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out: String =
        name.chars().take(MAX_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
    if name.chars().count() > MAX_CHARS {
        out.push('…');
    }
    out
}

/// Splits ``name`, expected one of ...`` (or ``name`, there are no fields``).
fn split_unknown_field(rest: &str) -> (Option<String>, Option<&str>) {
    if let Some(at) = rest.rfind("`, expected ") {
        let expected = &rest[at + "`, expected ".len()..];
        return (Some(printable_key(&rest[..at])), Some(expected));
    }
    match rest.rfind("`, there are no fields") {
        Some(at) => (Some(printable_key(&rest[..at])), Some("no keys here")),
        None => (None, None),
    }
}

/// serde's expectation in config words: Rust type names mean nothing to an operator.
fn plain_expected(expected: &str) -> &str {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "an integer ≥ 0",
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer",
        "f64" | "f32" => "a number",
        "path string" => "a path (string)",
        e if e.starts_with("struct ") => "a mapping",
        e => e,
    }
}

/// The kind of a serde `Unexpected` value, without the value.
fn kind(found: &str) -> &'static str {
    const KINDS: [(&str, &str); 8] = [
        ("string", "a string"),
        ("character", "a string"),
        ("integer", "a number"),
        ("floating point", "a number"),
        ("boolean", "a boolean"),
        ("map", "a mapping"),
        ("sequence", "a sequence"),
        ("unit", "null"),
    ];
    KINDS.iter().find(|(prefix, _)| found.starts_with(prefix)).map_or("another type", |(_, kind)| kind)
}

/// Removes `at line N column M` and `at position N` (the line is reported separately).
fn strip_marks(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find(" at ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at ".len()..];
        match mark_len(after) {
            Some(len) => rest = &after[len..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of a `line N column M` or `position N` mark at the start of `s`.
fn mark_len(s: &str) -> Option<usize> {
    if let Some(rest) = s.strip_prefix("line ") {
        let digits = leading_digits(rest);
        let rest = rest[digits..].strip_prefix(" column ")?;
        let column = leading_digits(rest);
        (digits > 0 && column > 0).then(|| s.len() - rest.len() + column)
    } else {
        let rest = s.strip_prefix("position ")?;
        let digits = leading_digits(rest);
        (digits > 0).then(|| "position ".len() + digits)
    }
}

fn leading_digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Messages serde and serde_yaml build from a key path and a known shape.
const KNOWN_STARTS: [&str; 7] = [
    "invalid type: ",
    "invalid value: ",
    "unknown variant ",
    "unknown field `",
    "missing field ",
    "duplicate field ",
    "invalid length ",
];

/// serde_yaml prefixes its own key path (`routes[0].name: ...`); the caller reports the path, so
/// cut everything before a known message shape that follows a `: `.
fn strip_path_prefix(text: &str) -> &str {
    KNOWN_STARTS
        .iter()
        .filter_map(|start| text.find(start))
        .filter(|&at| at == 0 || text[..at].ends_with(": "))
        .min()
        .map_or(text, |at| &text[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_type_names_the_kind_not_the_value() {
        let r = rewrite(
            "routes[0].x: invalid type: string \"s3cr3t, expected b\", expected u64 at line 3 column 5",
        );
        assert_eq!(r.message, "wrong type: expected an integer ≥ 0, found a string");
    }

    #[test]
    fn unknown_variant_drops_the_variant() {
        let r = rewrite("unknown variant `hunter2`, expected one of `none`, `optional`");
        assert_eq!(r.message, "unknown variant, expected one of `none`, `optional`");
    }

    #[test]
    fn unknown_field_keeps_the_key_name() {
        let r = rewrite(
            "listeners[0]: unknown field `adress`, expected one of `name`, `address` at line 2 column 3",
        );
        assert_eq!(r.message, "unknown key, expected one of `name`, `address`");
        assert_eq!(r.unknown_key.as_deref(), Some("adress"));
    }

    #[test]
    fn libyaml_marks_are_stripped() {
        let r = rewrite("mapping values are not allowed in this context at line 3 column 9");
        assert_eq!(r.message, "mapping values are not allowed in this context");
        let r = rewrite(
            "did not find expected key at line 5 column 3, while parsing a block mapping at line 1 column 1",
        );
        assert_eq!(r.message, "did not find expected key, while parsing a block mapping");
    }

    #[test]
    fn serde_yaml_path_prefix_is_cut_even_with_spaces_in_keys() {
        let r = rewrite("a.my key: unknown field `my key`, expected `b`");
        assert_eq!(r.message, "unknown key, expected `b`");
        assert_eq!(r.unknown_key.as_deref(), Some("my key"));
        let r = rewrite("routes[0]: duplicate field `name`");
        assert_eq!(r.message, "duplicate key `name`");
    }

    #[test]
    fn unknown_key_names_are_made_printable_and_bounded() {
        let r = rewrite("unknown field `a\u{1b}[31mb`, expected `c`");
        assert_eq!(r.unknown_key.as_deref(), Some("a?[31mb"));
        let long = "k".repeat(100);
        let r = rewrite(&format!("unknown field `{long}`, expected `c`"));
        assert_eq!(r.unknown_key.map(|k| k.chars().count()), Some(65));
    }

    #[test]
    fn unknown_quoting_messages_become_fixed_text() {
        assert_eq!(rewrite("something odd about 'topsecret'").message, "invalid value");
    }
}
