//! `exchange bench --only nats`: the NATS transport against the broker's own speed, in one
//! run on one machine, so our overhead shows as a ratio.
//!
//! It starts a nats-server from deploy/nats/exchange.conf (so `sync_interval: always`, as
//! in production) on free loopback ports, and the exchange in this process. Measured:
//! 1. raw JetStream publish into the ingress stream with nobody consuming (the ceiling),
//!    then the same with a consumer of the recorder's shape that only acknowledges (the
//!    ceiling for any consumer: what the broker does for one, without our work);
//! 2. JetStream ingress: the same publishes while the exchange consumes, until all are in
//!    our log, in rounds (`--nats-rounds`), each just after a raw publish into a reference
//!    stream of the ingress stream's shape (the broker's raw rate moves by a sixth between
//!    runs a minute apart, so a ratio to one raw run taken before the exchange started was
//!    mostly noise); the median of the rounds' ratios is the figure;
//! 3. request/reply ingress with 64 concurrent publishers, and the disclosures those events
//!    cause published out to the recipient's stream;
//! 4. latency from a request/reply publish to the recipient's out-stream subscription at a
//!    steady 1,000 events/s.

use crate::bench::{env, median, percentile};
use crate::{app, config};
use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use pathway_core::EventType;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const EXCHANGE_CONF: &str = include_str!("../../../deploy/nats/exchange.conf");
const DIRECT: &str = "exchange.in.demo-la.young-person.registered";
const AUTHORIZATION: &str = include_str!("../../../deploy/nats/authorization.conf");

pub struct Options {
    pub nats_server: PathBuf,
    pub events: usize,
    pub publishers: usize,
    pub rounds: usize,
    pub rate: u64,
    pub latency_events: usize,
}

/// CPU used by the broker and by this process (the exchange, and the publisher) over a run.
struct Cpu {
    broker_pid: String,
    broker: f64,
    us: f64,
}

impl Cpu {
    fn start(broker: &Broker) -> Cpu {
        let broker_pid = broker.child.id().to_string();
        Cpu {
            broker: crate::bench::cpu_seconds_of(&broker_pid),
            us: crate::bench::cpu_seconds_of("self"),
            broker_pid,
        }
    }

    /// Microseconds of CPU per message, the broker's and ours.
    fn per_message(&self, n: usize) -> String {
        let per = |s: f64| s * 1e6 / n as f64;
        format!(
            "CPU per message: broker {:.0} µs, exchange and publisher {:.0} µs",
            per(crate::bench::cpu_seconds_of(&self.broker_pid) - self.broker),
            per(crate::bench::cpu_seconds_of("self") - self.us)
        )
    }
}

struct Broker {
    child: std::process::Child,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The reference stream the ingress rounds publish into raw, while the exchange runs: the
/// ingress stream's shape under another name, so that the exchange does not consume it.
const REFERENCE: &str = "BENCH_RAW";
const REFERENCE_SUBJECT: &str = "bench.raw.worker.allocated";

/// The deployed users, and one for the benchmark's reference stream.
fn bench_authorization() -> String {
    AUTHORIZATION.replacen(
        "users = [\n",
        "users = [\n    { user: \"bench\", password: \"bench-nats\", permissions: { publish: { allow: [\"bench.>\", \"$JS.API.>\", \"_INBOX.>\"] }, subscribe: { allow: [\"_INBOX.bench.>\"] } } }\n",
        1,
    )
}

fn start_broker(bin: &Path, dir: &Path) -> anyhow::Result<Broker> {
    std::fs::write(dir.join("exchange.conf"), EXCHANGE_CONF)?;
    std::fs::write(dir.join("authorization.conf"), bench_authorization())?;
    let (port, monitor) = (free_port()?, free_port()?);
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(dir.join("exchange.conf"))
        .args(["-p", &port.to_string(), "-m", &monitor.to_string(), "-sd"])
        .arg(dir.join("store"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {} (scripts/install-nats)", bin.display()))?;
    let broker = Broker {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(broker)
}

async fn connect(url: &str, user: &str) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .user_and_password(user.into(), format!("{user}-nats"))
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .connect(url)
        .await?)
}

/// Publishes every body to the ingress stream with `window` acknowledgements outstanding.
async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    bodies: Vec<Vec<u8>>,
    window: usize,
) -> anyhow::Result<()> {
    let mut pending = std::collections::VecDeque::with_capacity(window);
    for body in bodies {
        if pending.len() == window {
            let ack: jetstream::context::PublishAckFuture =
                pending.pop_front().expect("a pending ack");
            ack.await?;
        }
        pending.push_back(js.publish(subject.to_owned(), body.into()).await?);
    }
    for ack in pending {
        ack.await?;
    }
    Ok(())
}

/// Publishes `bodies` as `user` from a thread and runtime of its own, as another agency's
/// system would: the exchange's runtime, busy consuming, must not slow the publisher's
/// own acknowledgements and so the very rate being measured. Returns when publishing
/// started and how long it took.
async fn publish_apart(
    url: String,
    user: &'static str,
    subject: &'static str,
    bodies: Vec<Vec<u8>>,
    window: usize,
) -> anyhow::Result<(Instant, Duration)> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || -> anyhow::Result<Duration> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let js = jetstream::new(connect(&url, user).await?);
            let t = Instant::now();
            let _ = started_tx.send(t);
            publish_all(&js, subject, bodies, window).await?;
            Ok(t.elapsed())
        })
    });
    let started = started_rx
        .await
        .context("the publisher stopped before it started")?;
    let took = tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
    Ok((started, took))
}

/// The benchmark's events: workers allocated to people already registered, as in the HTTP
/// single-event run, so the two transports do the same work per event.
fn allocations(people: &[Uuid], n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            serde_json::to_vec(&env(
                EventType::WorkerAllocated,
                Some(people[i % people.len()]),
            ))
            .unwrap()
        })
        .collect()
}

/// `total` request/reply round trips on `subject` from `publishers` concurrent tasks over
/// eight connections as demo-la; returns the rate and the sorted reply latencies (ms).
async fn request_load(
    url: &str,
    subject: &'static str,
    people: Arc<Vec<Uuid>>,
    total: usize,
    publishers: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(url, "demo-la").await?);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (client, next, people) = (
            clients[p % clients.len()].clone(),
            next.clone(),
            people.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let body = serde_json::to_vec(&env(
                    EventType::WorkerAllocated,
                    Some(people[i % people.len()]),
                ))?;
                let sent = Instant::now();
                let reply = client.request(subject, body.into()).await?;
                let status = reply.headers.as_ref().and_then(|h| h.get("Pathway-Status"));
                if status.map(|s| s.as_str()) != Some("201") {
                    bail!("request/reply answered {status:?}");
                }
                lat.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((rate, lat))
}

const ACK_ONLY: &str = "bench-ack-only";

/// Starts a consumer of the recorder's shape on the ingress stream that acknowledges each
/// message and does nothing else; the task ends once it has acknowledged `n`.
async fn ack_only(
    stream: &jetstream::stream::Stream,
    n: usize,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pathway_nats::ingress::consumer_config(ACK_ONLY))
        .await?;
    let mut messages = pathway_nats::ingress::pull(&consumer).await?;
    Ok(tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            let m = messages
                .next()
                .await
                .context("the consumer's messages ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            acked += 1;
        }
        Ok(())
    }))
}

async fn wait_for(
    what: &str,
    deadline: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !done().await? {
        if Instant::now() > until {
            bail!("{what} did not finish in {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn run(root: &Path, o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?.keep();
    let broker = start_broker(&o.nats_server, &dir)?;
    let subject = "exchange.in.demo-la.jetstream.worker.allocated";
    let strangers: Arc<Vec<Uuid>> = Arc::new((0..1000).map(|_| Uuid::new_v4()).collect());
    let la = connect(&broker.url, "demo-la").await?;
    let la_js = jetstream::new(la.clone());
    let bodies = allocations(&strangers, o.events);
    let size = bodies[0].len();

    // 1. The ceiling: the broker alone, into the ingress stream as the exchange makes it.
    let exchange = connect(&broker.url, "exchange").await?;
    let ex_js = jetstream::new(exchange.clone());
    let stream = ex_js
        .get_or_create_stream(pathway_nats::ingress::in_stream_config(1))
        .await?;
    let cpu = Cpu::start(&broker);
    let (_, took) = publish_apart(broker.url.clone(), "demo-la", subject, bodies, 512).await?;
    let raw = o.events as f64 / took.as_secs_f64();
    println!(
        "nats raw: {} JetStream publishes of {size} bytes, 512 in flight, sync_interval always: {raw:.0}/s; {}",
        o.events,
        cpu.per_message(o.events)
    );
    stream.purge().await?;

    // 1b. The ceiling for any consumer: the same publishes while a consumer of the
    // recorder's shape takes each message and only acknowledges it. What the broker does
    // for a consumer (delivering, taking acknowledgements) shows against raw, without any
    // of the exchange's own work.
    let acker = ack_only(&stream, o.events).await?;
    let cpu = Cpu::start(&broker);
    let bodies = allocations(&strangers, o.events);
    let (t, _) = publish_apart(broker.url.clone(), "demo-la", subject, bodies, 512).await?;
    acker.await??;
    let acked = o.events as f64 / t.elapsed().as_secs_f64();
    println!(
        "nats jetstream, a consumer that only acknowledges: {} publishes, all acknowledged: {acked:.0}/s, {:.0}% of raw; {}",
        o.events,
        100.0 * acked / raw,
        cpu.per_message(o.events)
    );
    stream.delete_consumer(ACK_ONLY).await?;
    stream.purge().await?;

    // The transport's own ceiling for request/reply: a responder that only echoes.
    let echo_sub = exchange
        .queue_subscribe("exchange.in.demo-la.bench-echo", "echo".to_owned())
        .await?;
    let echo_task = tokio::spawn({
        let exchange = exchange.clone();
        async move {
            let mut sub = echo_sub;
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Pathway-Status", "201");
                    let _ = exchange.publish_with_headers(reply, h, m.payload).await;
                }
            }
        }
    });
    let (echo, lat) = request_load(
        &broker.url,
        "exchange.in.demo-la.bench-echo",
        strangers.clone(),
        o.events,
        o.publishers,
    )
    .await?;
    echo_task.abort();
    println!(
        "nats raw request/reply: {} round trips to an echo responder, {} publishers: {echo:.0}/s; p50 {:.2} ms, p99 {:.2} ms",
        o.events,
        o.publishers,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // The exchange, on this broker.
    let data = dir.join("exchange");
    let mut cfg = config::parse(config::DEMO, "demo")?;
    cfg.service.rate_per_second = Some(f64::MAX);
    cfg.service.rate_burst = Some(f64::MAX);
    cfg.nats.servers = vec![broker.url.clone()];
    let (running, transport) = app::build_serving(cfg, &data).await?;
    let transport = transport.expect("a broker is named");
    tokio::spawn(running.projector.clone().run());
    wait_for("NATS readiness", Duration::from_secs(20), async || {
        Ok(pathway_bus::Health::ready(&*transport))
    })
    .await?;
    let log = running.log.clone();
    let people: Arc<Vec<Uuid>> = {
        let events: Vec<Value> = (0..1000).map(crate::bench::registration).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))?;
        let reply = la.request(DIRECT, body.into()).await?;
        let accepted: Vec<Value> = serde_json::from_slice(&reply.payload)
            .with_context(|| String::from_utf8_lossy(&reply.payload).into_owned())?;
        Arc::new(
            accepted
                .iter()
                .map(|a| a["young_person"].as_str().unwrap_or_default().parse())
                .collect::<Result<_, _>>()?,
        )
    };

    // 2. JetStream ingress: publishing while the exchange consumes, until all are logged; in
    // rounds, each just after a raw publish of the same events into a stream of the ingress
    // stream's shape that nobody consumes, so each ratio compares two runs a few seconds
    // apart (the broker's raw rate moves by a sixth from one run to the next here). Before
    // each round the exchange finishes the last one: projections and out stream.
    let careers = connect(&broker.url, "demo-careers").await?;
    let careers_js = jetstream::new(careers.clone());
    let projector = running.projector.clone();
    let mut out_stream = careers_js.get_stream("OUT_demo-careers").await?;
    let mut ingested = 0u64;
    let mut settled = async |ingested: u64| {
        wait_for("catching up", Duration::from_secs(600), async || {
            Ok(projector.checkpoint() >= log.head()
                && out_stream.info().await?.state.messages >= ingested + 1000)
        })
        .await
    };
    let bench_js = jetstream::new(connect(&broker.url, "bench").await?);
    let reference = bench_js
        .get_or_create_stream(jetstream::stream::Config {
            name: REFERENCE.to_owned(),
            subjects: vec!["bench.raw.>".to_owned()],
            ..pathway_nats::ingress::in_stream_config(1)
        })
        .await?;
    let mut rounds = Vec::with_capacity(o.rounds);
    for round in 1..=o.rounds {
        settled(ingested).await?;
        let bodies = allocations(&people, o.events);
        let (_, took) =
            publish_apart(broker.url.clone(), "bench", REFERENCE_SUBJECT, bodies, 512).await?;
        let beside = o.events as f64 / took.as_secs_f64();
        reference.purge().await?;

        let bodies = allocations(&people, o.events);
        let start_head = log.head();
        let cpu = Cpu::start(&broker);
        let publishing = tokio::spawn(publish_apart(
            broker.url.clone(),
            "demo-la",
            subject,
            bodies,
            512,
        ));
        wait_for("JetStream ingress", Duration::from_secs(600), async || {
            Ok(log.head() >= start_head + o.events as u64)
        })
        .await?;
        let (t, published) = publishing.await??;
        let published = published.as_secs_f64();
        let stored = o.events as f64 / t.elapsed().as_secs_f64();
        ingested += o.events as u64;
        println!(
            "nats jetstream ingress, round {round}: raw just before {beside:.0}/s; {} events published in {published:.2} s, all in the log after {:.2} s: {stored:.0}/s, {:.0}% of that raw ({:.0}% of the first raw); {}",
            o.events,
            t.elapsed().as_secs_f64(),
            100.0 * stored / beside,
            100.0 * stored / raw,
            cpu.per_message(o.events)
        );
        rounds.push((beside, stored));
    }
    println!(
        "nats jetstream ingress over {} rounds: median ratio to the raw publish beside it {:.0}%; median ingress {:.0}/s against median raw {:.0}/s",
        rounds.len(),
        100.0 * median(rounds.iter().map(|(r, s)| s / r).collect()),
        median(rounds.iter().map(|(_, s)| *s).collect()),
        median(rounds.iter().map(|(r, _)| *r).collect()),
    );

    // 3. Request/reply, many publishers; and the disclosures they cause, out. First the
    // projections and the out stream finish with run 2, so that it does not share the cores.
    settled(ingested).await?;
    let out_before = out_stream.info().await?.state.messages;
    let t = Instant::now();
    let allocated = "exchange.in.demo-la.worker.allocated";
    let (rr, lat) = request_load(
        &broker.url,
        allocated,
        people.clone(),
        o.events,
        o.publishers,
    )
    .await?;
    println!(
        "nats request/reply ingress: {} events, {} publishers: {rr:.0}/s, {:.0}% of the echo rate; reply p50 {:.2} ms, p99 {:.2} ms",
        o.events,
        o.publishers,
        100.0 * rr / echo,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    wait_for("out publishing", Duration::from_secs(600), async || {
        Ok(out_stream.info().await?.state.messages >= out_before + o.events as u64)
    })
    .await?;
    println!(
        "nats out: {} disclosures to OUT_demo-careers, in the stream {:.2} s after the first publish: {:.0}/s",
        o.events,
        t.elapsed().as_secs_f64(),
        o.events as f64 / t.elapsed().as_secs_f64()
    );

    // 4. Publish to the recipient's subscription, at a steady rate.
    let la_stream = la_js.get_stream("OUT_demo-la").await?;
    let consumer: jetstream::consumer::PullConsumer = la_stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = o.latency_events;
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
            let mut lat = Vec::with_capacity(total);
            while lat.len() < total {
                let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .context("the out stream went quiet")?
                    .context("the out stream ended")??;
                let now = Instant::now();
                let v: Value = serde_json::from_slice(&m.payload)?;
                if let Some(t) = v["id"]
                    .as_str()
                    .and_then(|id| sent.lock().unwrap().get(id).copied())
                {
                    lat.push((now - t).as_secs_f64() * 1000.0);
                }
            }
            Ok::<_, anyhow::Error>(lat)
        })
    };
    let careers_direct = "exchange.in.demo-careers.destination.recorded";
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / o.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let e = env(
            EventType::DestinationRecorded,
            Some(people[i % people.len()]),
        );
        let id = e["id"].as_str().expect("an id").to_owned();
        let body = serde_json::to_vec(&e)?;
        let (careers, sent) = (careers.clone(), sent.clone());
        requests.push(tokio::spawn(async move {
            sent.lock().unwrap().insert(id, Instant::now());
            careers.request(careers_direct, body.into()).await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for r in requests {
        r.await??;
    }
    let mut lat = reader.await??;
    lat.sort_by(f64::total_cmp);
    println!(
        "nats latency: {total} events offered at {}/s, request/reply publish to the recipient's out-stream subscription: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        o.rate,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    drop(broker);
    Ok(())
}
