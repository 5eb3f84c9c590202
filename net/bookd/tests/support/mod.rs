//! Shared support for tests that run the real `bookd` binary: start it on port 0, wait until it
//! is ready, send HTTP requests, stop it with a signal.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use bookd::http_client::request;

/// A running `bookd` process.
pub struct Bookd {
    pub child: Child,
    pub http: String,
    /// The binary protocol's address (docs/protocol.md).
    pub binary: String,
}

impl Bookd {
    /// Starts `bookd serve` on `data_dir` with extra `args`, and waits for its ready line.
    pub fn serve(data_dir: &Path, args: &[&str]) -> Bookd {
        Bookd::start("serve", data_dir, args)
    }

    /// Starts `bookd SUBCOMMAND` (`serve`, `standby`) on `data_dir` with extra `args`, and waits
    /// for its ready line. HTTP listens on a port of its own unless `args` names `--http`.
    pub fn start(subcommand: &str, data_dir: &Path, args: &[&str]) -> Bookd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bookd"));
        command
            .arg(subcommand)
            .arg("--data-dir")
            .arg(data_dir)
            .args(if args.contains(&"--http") { &[][..] } else { &["--http", "127.0.0.1:0"][..] })
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("BOOKD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn bookd");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // `bookd ready http=ADDR binary=ADDR`
                if let Some(rest) = line.strip_prefix("bookd ready http=") {
                    let (http, binary) = rest.split_once(' ').unwrap_or((rest, ""));
                    let binary = binary.strip_prefix("binary=").unwrap_or("");
                    let _ = sender.send((http.to_string(), binary.to_string()));
                }
            }
        });
        let (http, binary) = receiver.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
            panic!("bookd did not become ready (exit: {:?})", child.try_wait())
        });
        Bookd { child, http, binary }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, body) = request(&self.http, method, path, None, body).expect("request");
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// SIGKILL: no chance to flush or sync anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        wait_bounded(&mut self.child)
    }
}

impl Drop for Bookd {
    /// A test that fails (panics) before stopping its node must not leave it running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child pid this test spawned and has not yet reaped.
    let sent = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(sent, 0, "kill({signal}) failed");
}

pub fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "bookd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `bookd` with `args` to completion; returns (exit status, stdout, stderr).
pub fn run_bookd(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bookd")).args(args).output().expect("run bookd");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
