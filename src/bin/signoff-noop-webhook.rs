//! The do-nothing baseline for `make bench`: a validating webhook on signoff's
//! own stack (axum, hyper, rustls via `signoff::tls::serve`, kube's
//! AdmissionReview types) that admits everything. Whatever signoff costs above
//! this binary is signoff's own work: policies, caches, the hold path.
//!
//! signoff-noop-webhook --addr 127.0.0.1:8443 --cert-file tls.crt --key-file tls.key

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::Parser;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

/// A webhook that admits every request, for benchmarks.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to serve HTTPS on.
    #[arg(long)]
    addr: SocketAddr,
    /// Serving certificate (PEM).
    #[arg(long)]
    cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(long)]
    key_file: PathBuf,
}

/// Parse the review as signoff does, then admit.
async fn admit(body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("malformed AdmissionReview: {e}")).into_response(),
    };
    let req: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    match req {
        Ok(req) => {
            let mut response = AdmissionResponse::from(&req);
            // A dry run says who answered, so a harness can tell it is registered.
            if req.dry_run {
                response.warnings = Some(vec!["signoff-noop-webhook: admitted".into()]);
            }
            Json(response.into_review()).into_response()
        }
        Err(e) => Json(AdmissionResponse::invalid(e.to_string()).into_review()).into_response(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result: Result<(), String> = runtime.block_on(async {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let store = signoff::tls::CertStore::from_pem(&read(&args.cert_file)?, &read(&args.key_file)?)
            .map_err(|e| e.to_string())?;
        let listener =
            tokio::net::TcpListener::bind(args.addr).await.map_err(|e| format!("binding {}: {e}", args.addr))?;
        let router = axum::Router::new().route("/validate", axum::routing::post(admit));
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        signoff::tls::serve(router, listener, signoff::tls::server_config(store), stop).await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
