//! The admission webhook: pure decisions (`review`, `guard`) and the server that
//! decodes AdmissionReviews and does the I/O between them.

pub mod config;
pub mod guard;
pub mod review;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;
