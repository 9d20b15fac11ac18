//! `exchange bench`: the performance targets of the pipeline, measured on this machine.
//!
//! Everything runs in one process (the server on a loopback port, the clients beside it),
//! so the figures include HTTP, JSON, schema validation, the fsync and the projections, and
//! the clients compete for the same cores. Method and results: BENCHMARKS.md.

use crate::{app, config};
use anyhow::Context;
use futures::StreamExt;
use pathway_core::samples;
use pathway_core::EventType;
use pathway_log::NewEvent;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Which measurements: batched, single, sse, rebuild, policy, registry, packed, import,
    /// newcomers, nats, stages (comma-separated), or all (nats only where a nats-server is
    /// found).
    #[arg(long, default_value = "all")]
    only: String,
    /// Events for the batched-ingest run (in batches of 1,000).
    #[arg(long, default_value_t = 200_000)]
    batched_events: usize,
    /// Agencies' senders posting batches at once in the batched run.
    #[arg(long, default_value_t = 2)]
    batched_senders: usize,
    /// Events for the single-event run.
    #[arg(long, default_value_t = 60_000)]
    single_events: usize,
    /// Concurrent clients for the single-event run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Events per second offered in the SSE latency run.
    #[arg(long, default_value_t = 1000)]
    sse_rate: u64,
    /// Events in the SSE latency run.
    #[arg(long, default_value_t = 10_000)]
    sse_events: usize,
    /// Log size for the rebuild run.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_events: usize,
    /// Rebuild the same log this many times (the first opening replays sled's log; later
    /// ones do not), to compare projecting speeds on one machine-state.
    #[arg(long, default_value_t = 1)]
    rebuild_repeat: usize,
    /// The nats-server for the NATS run [default: $NATS_SERVER, or nats-server on PATH;
    /// scripts/install-nats prints one].
    #[arg(long, value_name = "PATH")]
    nats_server: Option<std::path::PathBuf>,
    /// Rows of the generated destinations file for the import run.
    #[arg(long, default_value_t = 1_000_000)]
    import_rows: usize,
    /// New people (a registration and a destination each) in the newcomers run.
    #[arg(long, default_value_t = 500_000)]
    newcomers: usize,
    /// People (one identifier each) in the registry run.
    #[arg(long, default_value_t = 1_000_000)]
    registry_people: u64,
    /// People in the packed-keys run.
    #[arg(long, default_value_t = 1_000_000)]
    packed_people: u64,
    /// Children in the generated looked-after list for the import run.
    #[arg(long, default_value_t = 20_000)]
    import_children: usize,
    /// The import run's server configuration (a TOML file like deploy/demo.toml, whose demo
    /// tokens the run uses), to measure settings such as `service.log_cache_mib`
    /// [default: the built-in demo].
    #[arg(long, value_name = "FILE")]
    import_config: Option<std::path::PathBuf>,
    /// Events for each NATS ingress run.
    #[arg(long, default_value_t = 20_000)]
    nats_events: usize,
    /// Concurrent request/reply publishers in the NATS run.
    #[arg(long, default_value_t = 64)]
    nats_publishers: usize,
    /// Rounds of JetStream ingress in the NATS run, each beside a raw publish of its own
    /// (the broker's raw rate moves by a sixth from one run to the next on this machine).
    #[arg(long, default_value_t = 3)]
    nats_rounds: usize,
    /// Where to put the data (default: a temporary directory on the same disk as /tmp).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

struct Server {
    base: String,
}

async fn start(root: &std::path::Path) -> anyhow::Result<Server> {
    // Kept until `run` has stopped the runtime (and with it this server): deleting a live
    // server's directory would only make its sled threads complain.
    let dir = tempfile::tempdir_in(root)?.keep();
    let mut config = config::parse(config::DEMO, "demo")?;
    // The bench is one agency sending as fast as it can: no rate limit.
    config.service.rate_per_second = Some(f64::MAX);
    config.service.rate_burst = Some(f64::MAX);
    let running = app::build(config, &dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(running.projector.clone().run());
    tokio::spawn(async move {
        axum::serve(
            app::without_nagle(listener),
            pathway_gateway::router(running.state),
        )
        .await
    });
    Ok(Server { base })
}

pub(crate) fn env(ty: EventType, yp: Option<Uuid>) -> Value {
    let mut e = json!({"id": Uuid::new_v4(), "type": ty.name(), "occurred_at": "2026-11-02T10:00:00Z", "data": samples::data(ty)});
    if let Some(yp) = yp {
        e["young_person"] = json!(yp);
    }
    e
}

/// A bench event as the recorder hands it to the log: validated, from `source`.
pub(crate) fn new_event(value: &Value, source: &str) -> NewEvent {
    NewEvent {
        submitted: pathway_core::envelope::validate(value).expect("valid bench event"),
        source: source.into(),
    }
}

/// The `n`th of the bench's young people, with identifiers and a name of their own: real
/// people do not share a child id, and a registry key listing every person in the bench
/// measured the sample data rather than the exchange.
pub(crate) fn registration(n: usize) -> Value {
    let mut e = env(EventType::YoungPersonRegistered, None);
    let data = &mut e["data"];
    data["family_name"] = json!(crate::bench_import::letters(n));
    data["date_of_birth"] = json!(format!("2008-{:02}-{:02}", 1 + n % 12, 1 + n % 28));
    data["identifiers"] = json!({
        "la_child_id": format!("C{n}"),
        "upn": format!("A{:011}0", n % 100_000_000_000),
        "uln": format!("1{:09}", n % 1_000_000_000),
        "nccis_id": format!("{:013}", n),
    });
    e
}

async fn register(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk.iter().map(|k| registration(*k)).collect();
        let body = serde_json::to_vec(&json!({ "events": events }))?;
        let r: Vec<Value> = post(client, base, "demo-la-token", body)
            .await?
            .json()
            .await?;
        out.extend(
            r.iter()
                .map(|a| a["young_person"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
    }
    Ok(out)
}

/// One POST of a prepared JSON body to `/v1/events`, failing on any status but success.
async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: Vec<u8>,
) -> anyhow::Result<reqwest::Response> {
    Ok(client
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .error_for_status()?)
}

/// The middle of `v` (the upper middle for an even count): what the benches report of
/// their rounds, since one slow round on this shared machine would move a mean.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn batched(root: &std::path::Path, total: usize, senders: usize) -> anyhow::Result<()> {
    let server = start(root).await?;
    let client = reqwest::Client::new();
    let people = register(&client, &server.base, 1000).await?;
    let bodies: Vec<Vec<u8>> = (0..total / 1000)
        .map(|b| {
            let events: Vec<Value> = (0..1000)
                .map(|i| {
                    env(
                        EventType::WorkerAllocated,
                        Some(people[(b * 1000 + i) % people.len()]),
                    )
                })
                .collect();
            serde_json::to_vec(&json!({ "events": events })).unwrap()
        })
        .collect();
    let started = Instant::now();
    // At least two senders, so the server always has the next batch while one is being
    // flushed; more (`--batched-senders`) let one batch's validation overlap another's write.
    let bodies = Arc::new(tokio::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..senders.max(1) {
        let (client, base, bodies) = (client.clone(), server.base.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = bodies.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(());
                };
                post(&client, &base, "demo-la-token", body).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "batched: {total} events in batches of 1000 over HTTP, {senders} senders: {secs:.2} s, {:.0} events/s",
        total as f64 / secs
    );
    Ok(())
}

async fn single(root: &std::path::Path, total: usize, clients: usize) -> anyhow::Result<()> {
    let server = start(root).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let people = Arc::new(register(&client, &server.base, 1000).await?);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, people, next) = (
            client.clone(),
            server.base.clone(),
            people.clone(),
            next.clone(),
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
                let t = Instant::now();
                post(&client, &base, "demo-la-token", body).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "single: {total} events, {clients} concurrent clients: {secs:.2} s, {:.0} events/s; request p50 {:.2} ms, p99 {:.2} ms",
        total as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    Ok(())
}

async fn sse(root: &std::path::Path, rate: u64, total: usize) -> anyhow::Result<()> {
    let server = start(root).await?;
    let client = reqwest::Client::new();
    let people = register(&client, &server.base, 100).await?;
    // The local authority receives the careers service's destinations on a statutory basis.
    let stream = client
        .get(format!("{}/v1/feed/stream", server.base))
        .bearer_auth("demo-la-token")
        .send()
        .await?;
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            let mut body = stream.bytes_stream();
            let mut buf = String::new();
            while lat.len() < total {
                let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
                    .await
                    .context("SSE went quiet")?
                    .context("SSE ended")??;
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                        let v: Value = serde_json::from_str(data.trim())?;
                        if let Some(t) = v["id"]
                            .as_str()
                            .and_then(|id| sent.lock().unwrap().get(id).copied())
                        {
                            lat.push((now - t).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        })
    };
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut posts = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let e = env(
            EventType::DestinationRecorded,
            Some(people[i % people.len()]),
        );
        let id = e["id"].as_str().unwrap().to_owned();
        let body = serde_json::to_vec(&e)?;
        let (client, base, sent) = (client.clone(), server.base.clone(), sent.clone());
        posts.push(tokio::spawn(async move {
            let t = Instant::now();
            sent.lock().unwrap().insert(id, t);
            post(&client, &base, "demo-careers-token", body).await?;
            Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut acks = Vec::with_capacity(total);
    for p in posts {
        acks.push(p.await??);
    }
    acks.sort_by(f64::total_cmp);
    let mut lat = reader.await??;
    lat.sort_by(f64::total_cmp);
    println!(
        "sse: POST to its 201 (durable): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!(
        "sse: {total} events offered at {rate}/s, POST to the recipient's SSE stream: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// CPU seconds (user and system, every thread) this process has used so far: steadier than
/// the wall clock on a shared machine, and what two builds' A/B compares.
pub(crate) fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds used so far by process `pid` ("self" for this one).
pub(crate) fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn rebuild(root: &std::path::Path, total: usize, repeat: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?;
    let log = app::open_log(dir.path())?;
    let agreements = config::parse(config::DEMO, "demo")?.agreements;
    // A realistic mix: 10,000 people, each registered, then a spread of every agency's types.
    let people = 10_000usize.min(total);
    let mix = [
        ("demo-la", EventType::PlacementChanged),
        ("demo-la", EventType::WorkerAllocated),
        ("demo-careers", EventType::DestinationRecorded),
        ("demo-la", EventType::LookedAfterStarted),
        ("demo-college", EventType::EnrolmentStarted),
        ("demo-la", EventType::ConsentGranted),
        ("demo-careers", EventType::NeetOnset),
        ("demo-la", EventType::PathwayPlanReviewed),
    ];
    let mut ids = Vec::with_capacity(people);
    let filled = Instant::now();
    let mut appended = 0;
    while appended < total {
        let n = 1000.min(total - appended);
        let batch: Vec<NewEvent> = (0..n)
            .map(|i| {
                let k = appended + i;
                let (source, value) = if k < people {
                    ("demo-la", registration(k))
                } else {
                    let (s, ty) = mix[k % mix.len()];
                    (s, env(ty, Some(ids[k % people])))
                };
                new_event(&value, source)
            })
            .collect();
        let receipts = log.append(batch).await?;
        if ids.len() < people {
            ids.extend(
                receipts
                    .iter()
                    .take(people - ids.len())
                    .map(|r| r.young_person),
            );
        }
        appended += n;
    }
    drop(log);
    // What opening the log replays: sled reads back everything written since its last open.
    println!(
        "rebuild: filled a log of {total} events in {:.1} s ({:.0} MB on disk)",
        filled.elapsed().as_secs_f64(),
        dir_bytes(dir.path()) as f64 / 1e6
    );
    // Closed above; now rebuild exactly as `exchange rebuild` does in a fresh process
    // (the operating system's file cache is warm; the log's own cache is not).
    for _ in 0..repeat.max(1) {
        let data = dir.path().to_path_buf();
        let agreements = agreements.clone();
        let (opened, projected, applied, cpu) = tokio::task::spawn_blocking(move || {
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let log = app::open_log_for_rebuild(&data, 2 << 30)?;
            let opened = started.elapsed();
            let applied = app::rebuild_from(log, agreements, &data)?;
            anyhow::Ok((
                opened,
                started.elapsed() - opened,
                applied,
                cpu_seconds() - cpu,
            ))
        })
        .await??;
        let (opened, projected) = (opened.as_secs_f64(), projected.as_secs_f64());
        let secs = opened + projected;
        println!(
            "rebuild: {applied} events projected in {secs:.2} s, {:.0} events/s \
             (opening the log {opened:.2} s; projecting {projected:.2} s, {:.0} events/s; \
             CPU {cpu:.2} s; projections {:.0} MB on disk)",
            applied as f64 / secs,
            applied as f64 / projected,
            dir_bytes(&app::paths(dir.path()).projections) as f64 / 1e6
        );
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let root = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&root)?;
    let root = scratch.path().to_path_buf();
    let wants = |name: &str| args.only == "all" || args.only.split(',').any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if wants("stages") {
        crate::bench_stages::run();
    }
    let result = rt.block_on(async {
        if wants("batched") {
            batched(&root, args.batched_events, args.batched_senders).await?;
        }
        if wants("single") {
            single(&root, args.single_events, args.clients).await?;
        }
        if wants("sse") {
            sse(&root, args.sse_rate, args.sse_events).await?;
        }
        if wants("rebuild") {
            rebuild(&root, args.rebuild_events, args.rebuild_repeat).await?;
        }
        if wants("policy") {
            crate::bench_policy::run(&root).await?;
        }
        if wants("registry") {
            crate::bench_registry::run(&root, args.registry_people)?;
        }
        if wants("packed") {
            crate::bench_packed::run(&root, args.packed_people)?;
        }
        if wants("import") {
            crate::bench_import::run(
                &root,
                args.import_rows,
                args.import_children,
                args.import_config.as_deref(),
            )
            .await?;
        }
        if wants("newcomers") {
            crate::bench_newcomers::run(&root, args.newcomers).await?;
        }
        let nats_server = args
            .nats_server
            .clone()
            .or_else(|| std::env::var_os("NATS_SERVER").map(Into::into))
            .unwrap_or_else(|| "nats-server".into());
        let found = std::process::Command::new(&nats_server)
            .arg("--version")
            .output()
            .is_ok();
        if args.only.split(',').any(|w| w == "nats") || (args.only == "all" && found) {
            crate::bench_nats::run(
                &root,
                crate::bench_nats::Options {
                    nats_server,
                    events: args.nats_events,
                    publishers: args.nats_publishers,
                    rounds: args.nats_rounds.max(1),
                    rate: args.sse_rate,
                    latency_events: args.sse_events,
                },
            )
            .await?;
        } else if args.only == "all" {
            println!("nats: skipped, no nats-server found (scripts/install-nats)");
        }
        Ok(())
    });
    // Servers stop with the runtime; only then is their data removed.
    drop(rt);
    drop(scratch);
    result
}
