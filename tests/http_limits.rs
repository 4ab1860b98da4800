//! The HTTP endpoints (health probes and Prometheus metrics) survive a flood of idle
//! connections in a process with few file descriptors: idle connections are closed after
//! `http_timeout_ms`, accepting is not a busy loop when descriptors run out, and a
//! well-behaved client is answered after the flood.
//!
//! The server runs in a child process (this test binary again, running the ignored
//! `child_serving_http` test) started under `ulimit -n 256`, so the parent can hold 300
//! connections and measure the child's CPU time from `/proc/<pid>/stat`.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spa_dat::{Application, Config, SpaMessage};

use spa_dat_test_support as support;

const CHILD_ENV: &str = "SPA_DAT_HTTP_LIMITS_CHILD";
const FLOOD: usize = 300;

/// The server: health probes and metrics on one port, a 1 s timeout, until killed.
#[test]
#[ignore = "the child process of `a_flood_of_idle_connections_neither_starves_nor_spins`"]
fn child_serving_http() {
    let Ok(addr) = std::env::var(CHILD_ENV) else {
        return;
    };
    tracing_subscriber::fmt().with_ansi(false).init();
    let config = Config {
        health_addr: Some(addr.clone()),
        metrics_addr: Some(addr),
        http_timeout_ms: 1_000,
        http_max_connections: 64,
        ..Config::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stopped = runtime.block_on(
        support::test_app(config)
            .add_application(Application::consumer(
                "idle",
                ["nothing/comes/here"],
                |_: SpaMessage| async {},
            ))
            .start_async(),
    );
    panic!("the server stopped: {stopped:?}");
}

/// The child's CPU time (user + system, all threads), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name (which may hold spaces, in parentheses): state is the
    // 3rd field, utime the 14th, stime the 15th; ticks of 1/100 s (USER_HZ on Linux).
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the child with at most 256 open files and waits (at most 60 s) until it answers.
fn start_server() -> Server {
    let exe = std::env::current_exe().expect("test binary");
    let addr: SocketAddr = ([127, 0, 0, 1], support::prometheus::free_port()).into();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" "$@""#)
        .arg(exe)
        .args(["--ignored", "--exact", "child_serving_http", "--nocapture"])
        .env(CHILD_ENV, addr.to_string())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child");
    let mut server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, _)) = get(addr, "/health/live", Duration::from_secs(5)) {
            assert!(status.contains("200"), "{status}");
            return server;
        }
        if let Ok(Some(exit)) = server.child.try_wait() {
            panic!("the server exited: {exit}");
        }
        assert!(
            Instant::now() < deadline,
            "the server did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50)); // polling its readiness
    }
}

/// `GET path`, at most `patience` for the whole exchange: the status line and the body.
fn get(addr: SocketAddr, path: &str, patience: Duration) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, patience)?;
    stream.set_read_timeout(Some(patience))?;
    stream.set_write_timeout(Some(patience))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// Waits (at most until `deadline`) for the server to close `stream`: end of file or reset.
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out
        }
    }
}

#[test]
fn a_flood_of_idle_connections_neither_starves_nor_spins() {
    let server = start_server();
    let pid = server.child.id();

    // 300 connections: half send nothing, half a partial request header.
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| {
            let mut stream =
                TcpStream::connect_timeout(&server.addr, Duration::from_secs(10)).expect("connect");
            if i % 2 == 1 {
                stream
                    .write_all(b"GET /health/live HTTP/1.1\r\nHost: te")
                    .expect("partial header");
            }
            stream
        })
        .collect();
    let flooded = Instant::now();

    // A window of 2 s: the server must not spin (old code: accept failed with EMFILE in a
    // busy loop, a whole core).
    let before = cpu_time(pid);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(2)); // the measurement window, not a readiness wait
    let used = cpu_time(pid) - before;
    let share = used.as_secs_f64() / window.elapsed().as_secs_f64();
    println!(
        "server CPU during the flood: {used:?} ({:.1} % of a core)",
        share * 100.0
    );
    assert!(
        share < 0.2,
        "the server spins during the flood: {:.1} % of a core",
        share * 100.0
    );

    // Every idle connection is closed: 300 / 64 slots, 1 s each, plus slack.
    let deadline = flooded + Duration::from_secs(30);
    let mut open = 0;
    let mut closed_at = Vec::with_capacity(FLOOD);
    for stream in &mut flood {
        if closed_by_server(stream, deadline) {
            closed_at.push(flooded.elapsed());
        } else {
            open += 1;
        }
    }
    println!(
        "flood closed after {:?} (the first read, the 100th, the last: {:?})",
        flooded.elapsed(),
        [closed_at.first(), closed_at.get(99), closed_at.last()]
    );
    assert_eq!(open, 0, "idle connections left open after 30 s");

    // One idle connection on the quiet server is closed after the timeout (1 s), not before.
    for partial in [&b""[..], b"GET / HTTP/1.1\r\n"] {
        let mut idle =
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(10)).expect("connect");
        idle.write_all(partial).expect("partial header");
        let opened = Instant::now();
        assert!(closed_by_server(
            &mut idle,
            opened + Duration::from_secs(10)
        ));
        let after = opened.elapsed();
        println!("an idle connection sending {partial:?} closed after {after:?}");
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(3)).contains(&after),
            "closed after {after:?}, the timeout is 1 s"
        );
    }

    // And the server still answers.
    let (status, _) =
        get(server.addr, "/health/live", Duration::from_secs(10)).expect("live after the flood");
    assert!(status.contains("200"), "{status}");
    let (status, body) =
        get(server.addr, "/metrics", Duration::from_secs(10)).expect("metrics after the flood");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("spa_connection_up"), "{body}");
}
