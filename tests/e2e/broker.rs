//! Real nats-server processes for the tests: one node or a three-node cluster, on free
//! loopback ports with temporary storage, started from the configurations in deploy/nats.
//! `scripts/install-nats` finds or installs a nats-server 2.10+.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The nats-server binary: `$NATS_SERVER`, or what `scripts/install-nats` finds or installs.
pub fn nats_server() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo().join("scripts/install-nats"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-nats");
        assert!(out.status.success(), "scripts/install-nats failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server process, restartable on the same ports and storage.
pub struct Node {
    child: Option<Child>,
    args: Vec<String>,
    pub port: u16,
    monitor: u16,
}

impl Node {
    fn spawn(args: Vec<String>, port: u16, monitor: u16) -> Node {
        let mut node = Node {
            child: None,
            args,
            port,
            monitor,
        };
        node.start();
        node
    }

    /// A single broker from deploy/nats/exchange.conf, running. A port found free can be
    /// taken by another test before the broker binds it; the broker then exits at once, and
    /// a fresh pair of ports is tried.
    pub fn single(store: &Path) -> Node {
        for _ in 0..3 {
            let mut node = Node::single_stopped(store);
            node.start();
            if node.become_healthy() {
                return node;
            }
        }
        panic!("nats-server exited at start three times, on fresh ports each time");
    }

    /// The same, configured on its ports but not started.
    pub fn single_stopped(store: &Path) -> Node {
        let (port, monitor) = (free_port(), free_port());
        let conf = repo().join("deploy/nats/exchange.conf");
        let args = vec![
            "-c".into(),
            conf.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor.to_string(),
            "-sd".into(),
            store.display().to_string(),
        ];
        Node {
            child: None,
            args,
            port,
            monitor,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(nats_server())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// SIGKILL: the broker gets no chance to tidy up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the node answers its monitoring health check with JetStream up.
    pub fn wait_healthy(&mut self) {
        assert!(
            self.become_healthy(),
            "nats-server on port {} exited before it became healthy",
            self.port
        );
    }

    /// Waits until the node is healthy (true) or its process has exited (false).
    fn become_healthy(&mut self) -> bool {
        // Generous: a cluster node elects its JetStream leader slowly on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor
        );
        while Instant::now() < deadline {
            if http::blocking_get_ok(&url) {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server on port {} did not become healthy", self.port);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes from deploy/nats/cluster, routed to each other on free ports.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Three nodes, healthy. As with a single node, a port found free can be taken before a
    /// node binds it, and the node exits at once; then the whole cluster is started again on
    /// fresh ports (and fresh storage), up to three times. Each node logs to a file beside
    /// its storage, and the last attempt's log is quoted if all three fail.
    pub fn start(store: &Path) -> Cluster {
        let mut exited = PathBuf::new();
        for attempt in 1..=3 {
            match Cluster::try_start(&store.join(format!("attempt-{attempt}"))) {
                Ok(cluster) => return cluster,
                Err(log) => exited = log,
            }
        }
        let text = std::fs::read_to_string(&exited).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        panic!(
            "a cluster node exited at start three times, on fresh ports each time\n{}:\n{}",
            exited.display(),
            lines[lines.len().saturating_sub(5)..].join("\n")
        );
    }

    /// The cluster, or the log of the first node that exited before it became healthy.
    fn try_start(store: &Path) -> Result<Cluster, PathBuf> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        std::fs::create_dir_all(store).expect("the cluster's storage");
        let log = |i: usize| store.join(format!("node-{}.log", i + 1));
        let mut nodes: Vec<Node> = (0..3)
            .map(|i| {
                let (port, monitor, route) = ports[i];
                let routes: Vec<String> = (0..3)
                    .filter(|j| *j != i)
                    .map(|j| format!("nats://127.0.0.1:{}", ports[j].2))
                    .collect();
                let conf = repo().join(format!("deploy/nats/cluster/node-{}.conf", i + 1));
                let args = vec![
                    "-c".into(),
                    conf.display().to_string(),
                    "-p".into(),
                    port.to_string(),
                    "-m".into(),
                    monitor.to_string(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    routes.join(","),
                    "-sd".into(),
                    store.join(format!("node-{}", i + 1)).display().to_string(),
                    "-l".into(),
                    log(i).display().to_string(),
                ];
                Node::spawn(args, port, monitor)
            })
            .collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.become_healthy() {
                return Err(log(i));
            }
        }
        Ok(Cluster { nodes })
    }

    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A demo agency's own NATS client, as a partner would connect: its user, its password, and
/// the inbox prefix its permissions allow.
pub async fn agency_client(urls: &str, agency: &str) -> async_nats::Client {
    let servers: Vec<async_nats::ServerAddr> =
        urls.split(',').map(|u| u.parse().unwrap()).collect();
    async_nats::ConnectOptions::new()
        .user_and_password(agency.into(), format!("{agency}-nats"))
        .custom_inbox_prefix(format!("_INBOX.{agency}"))
        .connect(servers)
        .await
        .expect("connect as an agency")
}

mod http {
    /// A plain HTTP GET over std, so waiting for a node needs no runtime.
    pub fn blocking_get_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
    }
}
