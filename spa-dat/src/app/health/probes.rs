//! The HTTP health probes (feature `probes`), Kubernetes-style: `GET /health/live` answers 200
//! while the runtime answers at all; `GET /health/ready` answers 200 when the run is ready
//! ([`Readiness`]) and 503 with what is not ready otherwise. Served by [`super::http`].

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::http::text;
use super::readiness::Readiness;

/// The answer to `GET path`, if `path` is a probe's.
pub(crate) fn answer(path: &str, readiness: &Readiness) -> Option<Response<Full<Bytes>>> {
    let (status, body) = match path {
        "/health/live" => (StatusCode::OK, "live\n".to_owned()),
        "/health/ready" if readiness.is_ready() => (StatusCode::OK, "ready\n".to_owned()),
        "/health/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", readiness.not_ready().join(", ")),
        ),
        _ => return None,
    };
    Some(text(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_is_not_ready_answers_503_saying_why() {
        let status = |path| answer(path, &Readiness::default()).map(|r| r.status());
        assert_eq!(
            status("/health/ready"),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(status("/health/live"), Some(StatusCode::OK));
        assert_eq!(status("/metrics"), None, "not a probe");
    }
}
