//! Reading what spa-dat recorded into metrics-util's `DebuggingRecorder` (tests with a recorder
//! of their own).

use metrics_util::debugging::{DebugValue, Snapshotter};

/// One metric as read.
pub struct Recorded {
    /// The metric's name.
    pub name: String,
    /// Its labels, `(key, value)`.
    pub labels: Vec<(String, String)>,
    /// Counters and gauges as numbers, histograms as NaN.
    pub value: f64,
}

/// One read of the recorder. Reading resets the counters read.
pub fn read(snapshotter: &Snapshotter) -> Vec<Recorded> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            Recorded {
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value: match value {
                    DebugValue::Gauge(v) => v.into_inner(),
                    DebugValue::Counter(n) => n as f64,
                    DebugValue::Histogram(_) => f64::NAN,
                },
            }
        })
        .collect()
}

/// The values of `name` in `read` that carry any of the labels `labelled` (`key`, `value`).
pub fn values(read: &[Recorded], name: &str, labelled: &[(&str, &str)]) -> Vec<f64> {
    read.iter()
        .filter(|metric| {
            metric.name == name
                && metric
                    .labels
                    .iter()
                    .any(|(k, v)| labelled.iter().any(|(lk, lv)| k == lk && v == lv))
        })
        .map(|metric| metric.value)
        .collect()
}
