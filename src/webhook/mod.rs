//! The admission webhook: pure decisions (`route` before classification,
//! `review`, `guard`), the packet a held
//! change creates (`packet`), the webhook configuration (`config`), and the server
//! that decodes AdmissionReviews and does the I/O between them.

pub mod config;
pub mod guard;
pub mod packet;
pub mod requests;
pub mod review;
pub mod route;
pub mod server;

#[cfg(test)]
mod router_tests;
#[cfg(test)]
mod tests;
