//! [`Ambiguity`]: why a request target or its framing was refused.
//!
//! Every variant is a way two HTTP components (this gateway, the upstream, a cache or WAF in
//! between) could read the same bytes differently: request smuggling (RFC 9112 §6.3), path
//! confusion (`%2F`, dot segments, `;` matrix params), double decoding. The gateway refuses such
//! requests instead of guessing (ARCHITECTURE §1: "rejected, not guessed").

use phigate_plugin::ErrorCode;

/// Why a request was refused as ambiguous. Carries no request data: [`Ambiguity::reason`] is safe
/// to log and to use as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Ambiguity {
    /// The target exceeds `max_target_bytes` (answered with 414, not 400).
    #[error("request target too long")]
    TooLong,
    /// Not origin-form: `*`, absolute-form or authority-form, or no leading `/`.
    #[error("request target is not origin-form")]
    NotOriginForm,
    /// A `#` fragment (clients never send one; a proxy that strips it judges a different path).
    #[error("fragment in request target")]
    Fragment,
    /// `%2F` or `%5C` inside a path segment.
    #[error("encoded separator in path segment")]
    EncodedSeparator,
    /// A raw `\` (some servers treat it as `/`).
    #[error("backslash in request target")]
    Backslash,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("dot segment in path")]
    DotSegment,
    /// An empty segment (`//`) other than a single trailing `/`.
    #[error("empty path segment")]
    EmptySegment,
    /// A `;` path parameter, raw or as `%3B` (servlet containers strip them, others do not).
    #[error("path parameter in path")]
    PathParameter,
    /// `%25` followed by two hex digits: a value that decodes differently once more.
    #[error("double percent-encoding")]
    DoubleEncoding,
    /// `%` not followed by two hex digits.
    #[error("malformed percent escape")]
    MalformedEscape,
    /// A control byte (0x00-0x1F, 0x7F), raw or encoded.
    #[error("control byte in request target")]
    ControlByte,
    /// A raw space or non-ASCII byte (not allowed unencoded in a URI, RFC 3986 §2).
    #[error("invalid raw byte in request target")]
    InvalidCharacter,
    /// The decoded bytes are not UTF-8 (including overlong forms like `%C0%AE`).
    #[error("decoded target is not UTF-8")]
    InvalidUtf8,
    /// A parameter that must appear at most once (`_count`, ...) appears more than once.
    #[error("duplicate singleton query parameter")]
    DuplicateSingleton,
    /// A query parameter with an empty name (`?=x`, `?a=1&&b=2`).
    #[error("empty query parameter name")]
    EmptyParamName,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3: classic smuggling).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding,
    /// More than one `Content-Length` header.
    #[error("multiple Content-Length headers")]
    MultipleContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// A `Transfer-Encoding` other than exactly one `chunked`.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// More than one `Host` header (RFC 9112 §3.2 requires a 400).
    #[error("multiple Host headers")]
    MultipleHost,
}

impl Ambiguity {
    /// A fixed snake_case reason for logs and metric labels (never contains request data).
    pub fn reason(&self) -> &'static str {
        match self {
            Ambiguity::TooLong => "target_too_long",
            Ambiguity::NotOriginForm => "not_origin_form",
            Ambiguity::Fragment => "fragment",
            Ambiguity::EncodedSeparator => "encoded_separator",
            Ambiguity::Backslash => "backslash",
            Ambiguity::DotSegment => "dot_segment",
            Ambiguity::EmptySegment => "empty_segment",
            Ambiguity::PathParameter => "path_parameter",
            Ambiguity::DoubleEncoding => "double_encoding",
            Ambiguity::MalformedEscape => "malformed_escape",
            Ambiguity::ControlByte => "control_byte",
            Ambiguity::InvalidCharacter => "invalid_character",
            Ambiguity::InvalidUtf8 => "invalid_utf8",
            Ambiguity::DuplicateSingleton => "duplicate_singleton_param",
            Ambiguity::EmptyParamName => "empty_param_name",
            Ambiguity::ContentLengthAndTransferEncoding => "content_length_and_transfer_encoding",
            Ambiguity::MultipleContentLength => "multiple_content_length",
            Ambiguity::InvalidContentLength => "invalid_content_length",
            Ambiguity::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Ambiguity::MultipleHost => "multiple_host",
        }
    }

    /// Whether this is [`Ambiguity::TooLong`] (414 rather than 400).
    pub fn is_too_long(&self) -> bool {
        matches!(self, Ambiguity::TooLong)
    }

    /// The stable error code to answer with: `uri_too_long` (414) for [`Ambiguity::TooLong`],
    /// `ambiguous_request` (400) for everything else.
    pub fn error_code(&self) -> ErrorCode {
        if self.is_too_long() {
            ErrorCode::UriTooLong
        } else {
            ErrorCode::AmbiguousRequest
        }
    }
}
