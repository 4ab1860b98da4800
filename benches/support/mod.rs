//! What the broker benchmarks share: this process's CPU time and peak memory, percentiles,
//! and the result table (spa-dat, raw client, ratio).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// User + system CPU seconds of this process: the times getrusage reports, read from /proc
/// (the workspace forbids the `unsafe` a getrusage call needs).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / 100.0 // USER_HZ on Linux
}

/// Peak resident memory of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

/// The `p` percentile of `samples`, in µs.
pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6
}

/// The table's header; `raw` names the raw client.
pub fn header(raw: &str) {
    println!(
        "{:<44} {:>12} {:>12} {:>7}",
        "measure", "spa-dat", raw, "ratio"
    );
}

/// One result with its framework/raw ratio.
pub fn row(name: &str, framework: f64, raw: f64) {
    println!(
        "{name:<44} {framework:>12.1} {raw:>12.1} {:>7.2}",
        framework / raw
    );
}

/// Whether the section `name` runs: every section when no filter is given
/// (`cargo bench --bench kafka -- producer request` runs those two).
pub fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// The median of `samples`.
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Latencies of `count` sequential requests on `topic`, each answered within 10 s.
pub async fn request_latencies(
    socket: &std::sync::Arc<dyn spa_dat::socket::spi::SpaSocket>,
    topic: &str,
    count: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let started = std::time::Instant::now();
        let reply = socket
            .request(
                spa_dat::SpaMessage::new(topic, format!("ping {i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("reply");
        std::hint::black_box(reply);
        samples.push(started.elapsed());
    }
    samples
}

/// The multi-threaded runtime every benchmark runs on (2 workers: the machines measured have 2
/// cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}
