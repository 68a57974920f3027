//! [`ClassifyError`]: why a FHIR request could not be classified.

use phigate_plugin::ErrorCode;

use crate::request::Ambiguity;

/// Why a request could not be classified. Messages never contain request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// A resource type (path, `_type`, reference) that is not an R4 type.
    #[error("unknown FHIR resource type")]
    UnknownResourceType,
    /// A path that is not part of the FHIR REST grammar.
    #[error("path is not a FHIR REST interaction")]
    InvalidPath,
    /// A method the addressed FHIR path does not support.
    #[error("method not supported on this FHIR path")]
    MethodNotAllowed,
    /// A logical or version id outside `[A-Za-z0-9-.]{1,64}`.
    #[error("invalid FHIR id")]
    InvalidId,
    /// A malformed reference in a patient param or element.
    #[error("invalid reference")]
    InvalidReference,
    /// `_count` that is not a non-negative 32-bit integer.
    #[error("invalid _count")]
    InvalidCount,
    /// A body that is not the JSON the interaction needs.
    #[error("invalid request body")]
    InvalidBody,
    /// A Bundle posted to the base whose `type` is not `batch` or `transaction`.
    #[error("bundle type is not batch or transaction")]
    BundleType,
    /// A batch or transaction without its body.
    #[error("request body required")]
    BodyRequired,
    /// A body in a media type the interaction cannot be judged in.
    #[error("unsupported content type")]
    UnsupportedContentType,
    /// A batch or transaction inside a Bundle entry.
    #[error("nested batch or transaction")]
    NestedBundle,
    /// A Bundle entry without a request, or with an unknown method.
    #[error("invalid bundle entry request")]
    InvalidEntry,
    /// An ambiguous Bundle entry URL or form body.
    #[error("ambiguous: {0}")]
    Ambiguous(#[from] Ambiguity),
    /// The embedded compartment definition did not load (fail closed).
    #[error("patient compartment definition unavailable")]
    CompartmentUnavailable,
}

impl ClassifyError {
    /// A fixed snake_case reason for logs and metric labels (never contains request data).
    pub fn reason(&self) -> &'static str {
        match self {
            ClassifyError::UnknownResourceType => "unknown_resource_type",
            ClassifyError::InvalidPath => "invalid_path",
            ClassifyError::MethodNotAllowed => "method_not_allowed",
            ClassifyError::InvalidId => "invalid_id",
            ClassifyError::InvalidReference => "invalid_reference",
            ClassifyError::InvalidCount => "invalid_count",
            ClassifyError::InvalidBody => "invalid_body",
            ClassifyError::BundleType => "bundle_type",
            ClassifyError::BodyRequired => "body_required",
            ClassifyError::UnsupportedContentType => "unsupported_content_type",
            ClassifyError::NestedBundle => "nested_bundle",
            ClassifyError::InvalidEntry => "invalid_entry",
            ClassifyError::Ambiguous(a) => a.reason(),
            ClassifyError::CompartmentUnavailable => "compartment_unavailable",
        }
    }

    /// The stable error code: `ambiguous_request`/`uri_too_long` for ambiguity,
    /// `method_not_allowed`, `internal_error` for the compartment definition, else `bad_request`.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ClassifyError::Ambiguous(a) => a.error_code(),
            ClassifyError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ClassifyError::CompartmentUnavailable => ErrorCode::InternalError,
            _ => ErrorCode::BadRequest,
        }
    }
}
