//! The HTTP health probes (feature `probes`), Kubernetes-style: `GET /health/live` answers 200
//! while the runtime answers at all; `GET /health/ready` answers 200 when the run is ready
//! ([`Readiness`]) and 503 with what is not ready otherwise. Served by [`super::http`].

use hyper::StatusCode;

use super::readiness::Readiness;

/// The answer (status, plain-text body) to `GET path`, if `path` is a probe's.
pub(crate) fn answer(path: &str, readiness: &Readiness) -> Option<(StatusCode, String)> {
    let (status, body) = match path {
        "/health/live" => (StatusCode::OK, "live\n".to_owned()),
        "/health/ready" if readiness.is_ready() => (StatusCode::OK, "ready\n".to_owned()),
        "/health/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", readiness.not_ready().join(", ")),
        ),
        _ => return None,
    };
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_is_not_ready_answers_503_saying_why() {
        let status = |path| answer(path, &Readiness::default()).map(|(status, _)| status);
        assert_eq!(
            status("/health/ready"),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(status("/health/live"), Some(StatusCode::OK));
        assert_eq!(status("/metrics"), None, "not a probe");
    }
}
