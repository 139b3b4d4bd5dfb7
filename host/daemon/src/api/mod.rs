//! The server side of the node's control API: the handlers (what each
//! request does to a [`Node`](shoal_runtime::Node), no HTTP), the routes
//! (HTTP on top of them: paths, methods, body limits, status codes) and the
//! local Unix-socket listener. The route table, the bounds and who may call
//! the local socket are documented once, in `shoal-api`'s crate docs.

pub mod answer;
pub(crate) mod error;
pub mod handlers;
pub mod routes;
pub mod server;

// The wire types, the client and the shared constants live in `shoal-api`,
// which the CLI uses without linking the node; the server side re-exports
// them so routes and handlers name one set of types.
pub use shoal_api::*;

pub use error::ApiError;
pub use server::{ServeError, UnixServer};

#[cfg(test)]
mod tests;
