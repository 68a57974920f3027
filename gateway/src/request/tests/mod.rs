//! Table-driven tests of the request model.

mod classify;
mod headers;
mod normalize;
