//! A real `redis-server` on 127.0.0.1 for the fleet tests: a free port, spawned, waited for
//! until it answers `PING`, killed by pid on drop. Nothing is saved (`--save ""
//! --appendonly no`).
//!
//! Without the binary the tests print why they are skipped and how to install it, and
//! return; with `FUSEBOX_REQUIRE_REDIS=1` (set by `.ci/run`) a missing server fails them.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary the tests start.
pub const BINARY: &str = "redis-server";

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port, or says why not: `None` (after printing a
    /// line saying the test is skipped) when `redis-server` is not installed, unless
    /// `FUSEBOX_REQUIRE_REDIS=1`, which makes that a failure.
    pub fn start(test: &str) -> Option<RedisServer> {
        if Command::new(BINARY)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var("FUSEBOX_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("{test}: FUSEBOX_REQUIRE_REDIS=1 but `{BINARY}` is not installed");
            }
            println!(
                "{test}: skipped: `{BINARY}` is not installed (apt-get install -y redis-server)"
            );
            return None;
        }
        let port = free_port();
        let mut server = RedisServer { child: None, port };
        server.spawn();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, by pid): clients see their connections reset. Its data is
    /// gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BINARY)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        // The server says when it accepts connections (its log goes to stdout): wait for
        // that line rather than polling, then keep draining the log so it never blocks.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        self.child = Some(child);
        assert!(
            ready,
            "{BINARY} on port {} exited before accepting connections",
            self.port
        );
        std::thread::spawn(move || lines.for_each(drop));
        assert!(
            ping(&self.url()),
            "{BINARY} on port {} said it was ready but did not answer PING",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now (the OS's choice for an ephemeral bind).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Whether the server at `url` answers `PING`.
fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .is_ok_and(|pong| pong == "PONG")
}
