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

    /// `exchange serve --demo` with more arguments (`--nats URL`).
    pub fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--demo"];
        args.extend_from_slice(extra);
        Server::spawn(&args, data, "info", None)
    }

    /// Waits until `/readyz` says `ready` (true or false), and returns its body.
    pub async fn wait_ready(&self, ready: bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let body: serde_json::Value = reqwest::get(format!("{}/readyz", self.base))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["ready"] == ready {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "readyz stayed {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// [`Server::start`], at a chosen log level, keeping everything it logs in `logs`.
    pub fn start_logging(
        data: &Path,
        level: &str,
        logs: Option<std::sync::Arc<std::sync::Mutex<String>>>,
    ) -> Server {
        Server::spawn(&["--demo"], data, level, logs)
    }

    pub fn spawn(
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

/// Runs the binary with these arguments only.
pub fn run_plain(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

/// Reads Server-Sent Events frames (`id:` and `data:`) from a live feed.
pub struct Sse {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    pub fn new(res: reqwest::Response) -> Sse {
        Sse {
            stream: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next `want` frames, as (id, data).
    pub async fn next(&mut self, want: usize) -> Vec<(u64, serde_json::Value)> {
        use futures::StreamExt;
        let mut out = Vec::new();
        // Keep-alive comments arrive every 15 s, so each read alone would never time out.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while out.len() < want {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {want} frames arrived: {out:?}",
                out.len()
            );
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    }
                    if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                if let (Some(id), Some(data)) = (id, data) {
                    out.push((id, data));
                    if out.len() == want {
                        return out;
                    }
                }
            }
            let chunk =
                tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.next())
                    .await
                    .expect("the stream went quiet")
                    .expect("the stream ended")
                    .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        out
    }
}
