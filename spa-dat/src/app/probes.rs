//! The HTTP health probes (feature `probes`), Kubernetes-style: `GET /health/live` answers 200
//! while the runtime answers at all; `GET /health/ready` answers 200 when the run is ready
//! ([`Readiness`]) and 503 with what is not ready otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::readiness::Readiness;
use super::shutdown::Shutdown;
use crate::error::{Error, Result};

/// Serves the probes on `addr` until `shutdown`.
pub(crate) async fn serve(addr: &str, readiness: Readiness, shutdown: Shutdown) -> Result<()> {
    let socket: SocketAddr = addr
        .parse()
        .map_err(|e| Error::config(format!("health_addr `{addr}` is not host:port: {e}")))?;
    let listener = tokio::net::TcpListener::bind(socket).await.map_err(|e| {
        Error::runtime(format!("cannot serve health probes on {addr}: {e}")).caused_by(e)
    })?;
    tracing::info!(%addr, "health probes at /health/live and /health/ready");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.triggered() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = answer(request.uri().path(), &readiness);
                        async move { Ok::<_, Infallible>(response) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn answer(path: &str, readiness: &Readiness) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/health/live" => (StatusCode::OK, "live\n".to_owned()),
        "/health/ready" if readiness.is_ready() => (StatusCode::OK, "ready\n".to_owned()),
        "/health/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", readiness.not_ready().join(", ")),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_is_not_ready_answers_503_saying_why() {
        let response = answer("/health/ready", &Readiness::default());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer("/health/live", &Readiness::default()).status(),
            StatusCode::OK
        );
    }
}
