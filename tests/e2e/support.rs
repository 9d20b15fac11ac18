//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_exchange");

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `exchange serve --demo` on a free port and waits for its "listening" line.
    pub fn start(data: &Path) -> Server {
        Server::start_logging(data, "info", None)
    }

    /// Starts `exchange serve --config FILE`.
    pub fn start_with_config(data: &Path, config: &Path) -> Server {
        Server::spawn(&["--config", config.to_str().unwrap()], data, "info", None)
    }

    /// [`Server::start`], at a chosen log level, keeping everything it logs in `logs`.
    pub fn start_logging(
        data: &Path,
        level: &str,
        logs: Option<std::sync::Arc<std::sync::Mutex<String>>>,
    ) -> Server {
        Server::spawn(&["--demo"], data, level, logs)
    }

    fn spawn(
        config: &[&str],
        data: &Path,
        level: &str,
        logs: Option<std::sync::Arc<std::sync::Mutex<String>>>,
    ) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(config)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start exchange");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let keep = move |line: &str| {
            if let Some(l) = &logs {
                let mut l = l.lock().unwrap();
                l.push_str(line);
                l.push('\n');
            }
        };
        let addr = loop {
            let line = lines
                .next()
                .expect("exchange exited before listening")
                .unwrap();
            keep(&line);
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep(&line);
            }
        });
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(args: &[&str], data: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POSTs one JSON body to `/v1/events` as the agency owning `token`.
pub async fn post_event(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
}
