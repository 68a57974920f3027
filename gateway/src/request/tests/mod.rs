//! Table-driven tests of the request model.

mod bodies;
mod classify;
mod headers;
mod normalize;
