//! `exchange`: the Pathway Exchange service and its tools.

/// jemalloc, not the system's malloc. Every append and every projection step allocates on
/// one thread and frees on another (the HTTP workers, the log writer, its indexer, sled's
/// own threads), which glibc's per-thread arenas handle badly: its `malloc`/`free` were a
/// quarter of a profile. Measured (BENCHMARKS.md, session 9): 1.3-1.6x on single-event,
/// batched and import throughput, and no more memory.
///
/// Its options are compiled in (`.cargo/config.toml`, `JEMALLOC_SYS_WITH_MALLOC_CONF`):
/// - `thp:default`: no transparent huge pages (the kernel's mode here is `madvise`).
///   sled allocates its page tables and metrics zeroed and touches them sparsely, and the
///   allocator's runs of small objects are partly used: with huge pages (`thp:always`, sessions
///   11-17) each touched 4 KiB of those became a resident 2 MiB. The server started at 44 MB
///   rather than 20, and a million-row import peaked 54-70 MB higher (BENCHMARKS.md,
///   session 18). What huge pages bought was fewer page faults: batched ingest about 5%
///   faster, and a rebuild's opening of the log 0.3 s rather than 0.85 s, its projecting as
///   much slower.
/// - `narenas:1`: one arena rather than four a core. Each arena holds memory of its own, and
///   two cores gain nothing from eight: a 200,000-row import peaked at 446 MB with huge
///   pages and two arenas against 498 MB with neither, ingest unchanged (session 11); one
///   arena, with the next two options, took a million rows' peak from 412-421 to 381-384 MB,
///   and batched, single-event, SSE and rebuild figures were no worse (session 15).
/// - `dirty_decay_ms:1000,muzzy_decay_ms:0`: freed pages go back to the kernel after a
///   second rather than ten, and straight away once purged. Returning them at once
///   (`dirty_decay_ms:0`) halved the import's speed.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use exchange::housekeeping::Housekeeper;
use exchange::{app, bench, config};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "exchange",
    version,
    about = "Pathway Exchange: agencies supporting young people in and leaving care share what they must, and nothing more.",
    long_about = "Pathway Exchange records events about young people (placements, destinations, consent, \
NEET onset...) in an append-only, hash-chained log, and shares each event only with the agencies that \
an information-sharing agreement and the young person's consent allow.\n\n\
Try it:  exchange serve --demo     (then see README.md for a five-minute walkthrough)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exchange: HTTP API, log, projections, all in one process.
    Serve {
        /// Use the built-in demo agencies, tokens and flows (deploy/demo.toml).
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// Configuration file (TOML): agencies, hashed tokens, flows. See deploy/demo.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory (log and projections). [default: ./data, or the config's `service.data`]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Address to listen on. [default: 127.0.0.1:8080, or the config's `service.listen`]
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Also run on a NATS broker, e.g. nats://127.0.0.1:4222 (comma-separate a
        /// cluster's nodes). [default: the config's `nats.servers`; none: embedded only]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Recreate read models, feeds and the disclosure log from the log. The service must be stopped.
    Rebuild {
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data: PathBuf,
        /// Configuration whose flows decide the disclosures: the same file the service runs with.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Rebuild with the built-in demo agencies and flows.
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// Page cache for reading the log, in MiB; more than the log's size reads it once.
        #[arg(long, value_name = "MIB", default_value_t = 2048)]
        cache_mib: u64,
    },
    /// Recompute the log's hash chain, check its signed checkpoints, and check every entry
    /// against the id index and its person's stream; names the first bad entry and exits
    /// non-zero if any.
    Verify {
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data: PathBuf,
    },
    /// Erase a young person: append `young-person.erased` and destroy their key, so nothing
    /// about them can be read again (the chain still verifies). The service must be stopped;
    /// its projections drop the person when it next starts.
    Erase {
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data: PathBuf,
        #[arg(long, value_name = "ID")]
        young_person: uuid::Uuid,
        /// Who authorised it (lowercase letters, digits and hyphens).
        #[arg(long, default_value = "exchange-admin")]
        authorised_by: String,
    },
    /// Sign a checkpoint of the log's head with the exchange's key (the service signs one on
    /// each housekeeping pass and at shutdown; this is for now). The service must be stopped.
    Checkpoint {
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data: PathBuf,
    },
    /// Write the log as NDJSON (one entry a line, with its hashes) to standard output.
    Export {
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data: PathBuf,
    },
    /// Print the nats-server `authorization` block for the configuration's agencies: one
    /// user each, confined to its own subjects (see deploy/nats/). Passwords are read from
    /// the broker's environment (NATS_PASSWORD_<AGENCY>); with --demo, the demo's own.
    NatsConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, conflicts_with = "config")]
        demo: bool,
    },
    /// Print the SHA-256 digest of a token, for `token_sha256` in the configuration.
    HashToken { token: String },
    /// Issue or revoke users' tokens in a configuration file (restart the service after).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Measure ingest, fan-out latency and rebuild speed on this machine (see BENCHMARKS.md).
    Bench(bench::Args),
    /// Reports from a running exchange, fetched over its API with your agency's token.
    #[command(subcommand)]
    Report(Report),
    /// Send your own files to a running exchange over its API; only the changes are recorded.
    #[command(subcommand)]
    Import(Import),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token for a user and add the user, with its digest only, to the
    /// configuration. The token is printed once and stored nowhere.
    Issue {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The user's id, e.g. devon-la-mi-jsmith
        #[arg(long)]
        user: String,
        /// mi-officer, personal-adviser, designated-staff, agency-admin, service or admin
        #[arg(long)]
        role: String,
        /// The agency the user belongs to (not for admin).
        #[arg(long)]
        agency: Option<String>,
    },
    /// Remove a user (and so every token it has) from the configuration.
    Revoke {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum Import {
    /// A local authority's looked-after list in SSDA903 layout: the files header.csv,
    /// episodes.csv and optionally oc3.csv (named so, in any folder). Prints the summary.
    LookedAfter {
        /// The exchange's address, e.g. http://127.0.0.1:8080
        #[arg(long, value_name = "URL")]
        url: String,
        /// Your agency's bearer token.
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// The year the collection ends (2021 for 2020-21), for OC3 birthdays [default: the current one]
        #[arg(long)]
        year: Option<i32>,
        /// header.csv, episodes.csv and optionally oc3.csv
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// A careers service's quarterly destinations (CSV in NCCIS layout). Prints the summary:
    /// rows, registered, linked, changed, unchanged, NEET onsets, held for review, rejected.
    Destinations {
        /// The exchange's address, e.g. http://127.0.0.1:8080
        #[arg(long, value_name = "URL")]
        url: String,
        /// Your agency's bearer token.
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum Report {
    /// The quarterly review of the young people your local authority registered: everyone
    /// reaching 19, the NEET list and meetings, cohort counts, outcome rates, NI 147 and 148.
    Quarterly {
        /// The exchange's address, e.g. http://127.0.0.1:8080
        #[arg(long, value_name = "URL")]
        url: String,
        /// Your agency's bearer token.
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// The quarter, e.g. 2026-Q4 [default: the current one]
        #[arg(long, value_name = "QUARTER")]
        quarter: Option<String>,
        /// json, csv or html
        #[arg(long, default_value = "json")]
        format: String,
        /// For csv: turning-19, neet, cohort or rates
        #[arg(long, default_value = "turning-19")]
        section: String,
    },
}

/// Sends a request to a running exchange and returns the body of a successful answer; any
/// other answer is an error quoting it (the exchange's problem details name the field).
fn call_api(request: reqwest::RequestBuilder, endpoint: &str) -> anyhow::Result<String> {
    tokio::runtime::Runtime::new()?.block_on(answer_of(request, endpoint))
}

/// Sends an import with a progress bar; prints the summary in a line (standard error) and
/// in full (JSON, standard output).
fn upload(
    request: reqwest::RequestBuilder,
    endpoint: &str,
    total: u64,
    sent: exchange::upload::Sent,
) -> anyhow::Result<()> {
    let text = tokio::runtime::Runtime::new()?.block_on(exchange::upload::with_progress(
        total,
        sent,
        answer_of(request, endpoint),
    ))?;
    let summary: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the exchange answered something else: {text}"))?;
    eprintln!("{}", exchange::upload::summary_line(&summary));
    println!("{text}");
    Ok(())
}

async fn answer_of(request: reqwest::RequestBuilder, endpoint: &str) -> anyhow::Result<String> {
    let res = request
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("the exchange answered {status}: {text}");
    }
    Ok(text)
}

fn load_config(demo: bool, path: Option<&PathBuf>) -> anyhow::Result<config::Config> {
    match (demo, path) {
        (_, Some(p)) => config::load(p),
        (true, None) => config::parse(config::DEMO, "the demo configuration"),
        (false, None) => {
            bail!("say which configuration to use: --config FILE, or --demo to try it out")
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            demo,
            config,
            data,
            listen,
            nats,
        } => {
            let mut config = load_config(demo, config.as_ref())?;
            if let Some(urls) = nats {
                config.nats.servers = urls.split(',').map(|s| s.trim().to_owned()).collect();
            }
            let data = data
                .or_else(|| config.service.data.as_ref().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("./data"));
            let listen: SocketAddr = match (listen, &config.service.listen) {
                (Some(l), _) => l,
                (None, Some(l)) => l
                    .parse()
                    .with_context(|| format!("service.listen `{l}` is not an address"))?,
                (None, None) => "127.0.0.1:8080".parse().expect("valid default"),
            };
            tokio::runtime::Runtime::new()?.block_on(serve(config, data, listen))
        }
        Command::Rebuild {
            data,
            config,
            demo,
            cache_mib,
        } => {
            let config = load_config(demo, config.as_ref())?;
            rebuild(config, &data, cache_mib)
        }
        Command::Erase {
            data,
            young_person,
            authorised_by,
        } => {
            let log = app::open_log(&data)?;
            let today = time::OffsetDateTime::now_utc().date();
            let notice = serde_json::json!({
                "id": uuid::Uuid::new_v4(),
                "type": "young-person.erased",
                "young_person": young_person,
                "occurred_at": format!("{today}T00:00:00Z"),
                "data": {"erased_on": today.to_string(), "authorised_by": authorised_by},
            });
            let recorder = pathway_recorder::Recorder::new(
                log.clone(),
                std::sync::Arc::new(pathway_core::Agreements::default()),
            );
            let answer = tokio::runtime::Runtime::new()?
                .block_on(recorder.record_own(&[notice]))
                .map_err(|p| anyhow::anyhow!("{}: {:?}", p.title, p.errors))?;
            log.shred(young_person)?;
            log.flush()?;
            println!("erased {young_person} (notice at entry {})", answer[0].seq);
            Ok(())
        }
        Command::Checkpoint { data } => {
            let log = app::open_log(&data)?;
            match log.checkpoint(&app::signing_key(&data)?)? {
                Some(cp) => println!("signed a checkpoint at entry {}: {}", cp.seq, cp.hash),
                None => println!("nothing new to sign (head {})", log.head()),
            }
            Ok(())
        }
        Command::Verify { data } => {
            let log = app::open_log(&data)?;
            let trusted = app::public_key(&data)?;
            match log.verify(trusted.as_deref()) {
                Ok(r) => {
                    println!(
                        "ok: {} entries, chain head {}, {} signed checkpoints{}",
                        r.entries,
                        r.head_hash,
                        r.checkpoints,
                        r.last_checkpoint
                            .map(|s| format!(" (the last at entry {s})"))
                            .unwrap_or_default()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("verify failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Export { data } => export(&data),
        Command::Token(TokenCommand::Issue {
            config,
            user,
            role,
            agency,
        }) => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let mut bytes = [0u8; 24];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| anyhow::anyhow!("no randomness"))?;
            let token: String = format!(
                "px_{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            let mut entry = format!("\n[[user]]\nid = {user:?}\n");
            if let Some(a) = &agency {
                entry.push_str(&format!("agency = {a:?}\n"));
            }
            entry.push_str(&format!(
                "role = {role:?}\ntoken_sha256 = [{:?}]\n",
                pathway_gateway::auth::digest_hex(&token)
            ));
            let updated = format!("{}{entry}", text.trim_end_matches('\n').to_owned() + "\n");
            // The whole file must still be a valid configuration before it is written.
            config::parse(&updated, &config.display().to_string())?;
            config::replace(&config, &updated)?;
            println!("{token}");
            eprintln!("issued a {role} token for {user}; it is shown once, keep it safe");
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { config, user }) => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let updated = config::without_user(&text, &user)
                .with_context(|| format!("{} has no user {user:?}", config.display()))?;
            config::parse(&updated, &config.display().to_string())?;
            config::replace(&config, &updated)?;
            eprintln!("revoked every token of {user}; restart the service for it to take effect");
            Ok(())
        }
        Command::NatsConfig { config, demo } => {
            let loaded = load_config(demo, config.as_ref())?;
            let agencies: Vec<String> =
                loaded.agreements.agencies().map(|a| a.id.clone()).collect();
            print!("{}", nats_authorization(&agencies, demo));
            Ok(())
        }
        Command::HashToken { token } => {
            println!("{}", pathway_gateway::auth::digest_hex(&token));
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
        Command::Import(Import::LookedAfter {
            url,
            token,
            year,
            files,
        }) => {
            let sent = exchange::upload::Sent::default();
            let mut form = reqwest::multipart::Form::new();
            let mut total = 0;
            for file in &files {
                let part = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| matches!(*s, "header" | "episodes" | "oc3"))
                    .with_context(|| {
                        format!(
                            "{}: name the files header.csv, episodes.csv and oc3.csv",
                            file.display()
                        )
                    })?
                    .to_owned();
                let len = std::fs::metadata(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
                    .len();
                total += len;
                let stream = exchange::upload::file_stream(file.clone(), sent.clone());
                form = form.part(
                    part.clone(),
                    reqwest::multipart::Part::stream_with_length(
                        reqwest::Body::wrap_stream(stream),
                        len,
                    )
                    .file_name(format!("{part}.csv"))
                    .mime_str("text/csv")?,
                );
            }
            let mut endpoint = format!("{}/v1/imports/looked-after", url.trim_end_matches('/'));
            if let Some(y) = year {
                endpoint.push_str(&format!("?year={y}"));
            }
            let request = reqwest::Client::new()
                .post(&endpoint)
                .bearer_auth(&token)
                .multipart(form);
            upload(request, &endpoint, total, sent)
        }
        Command::Import(Import::Destinations { url, token, file }) => {
            let total = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            let sent = exchange::upload::Sent::default();
            let endpoint = format!("{}/v1/imports/destinations", url.trim_end_matches('/'));
            let request = reqwest::Client::new()
                .post(&endpoint)
                .bearer_auth(&token)
                .header("content-type", "text/csv")
                .body(reqwest::Body::wrap_stream(exchange::upload::file_stream(
                    file,
                    sent.clone(),
                )));
            upload(request, &endpoint, total, sent)
        }
        Command::Report(Report::Quarterly {
            url,
            token,
            quarter,
            format,
            section,
        }) => {
            let mut query = vec![("format", format), ("section", section)];
            if let Some(q) = quarter {
                query.push(("quarter", q));
            }
            let endpoint = format!("{}/v1/reports/quarterly", url.trim_end_matches('/'));
            let body = call_api(
                reqwest::Client::new()
                    .get(&endpoint)
                    .bearer_auth(&token)
                    .query(&query),
                &endpoint,
            )?;
            print!("{body}");
            Ok(())
        }
    }
}

async fn serve(config: config::Config, data: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    let housekeeping_every = std::time::Duration::from_secs(
        60 * config.service.housekeeping_minutes.unwrap_or(60).max(1),
    );
    let (running, _nats) = app::build_serving(config, &data).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let projector = running.projector.clone();
    projector
        .catch_up()
        .context("cannot bring projections up to date")?;
    tokio::spawn(running.projector.clone().run());
    let housekeeper = Housekeeper::new(running.projector.clone(), running.recorder.clone())
        .signing_with(app::signing_key(&data)?);
    tokio::spawn(housekeeper.run(housekeeping_every));
    tokio::spawn(running.webhooks.clone().run());
    tracing::info!(address = %listener.local_addr()?, log_head = running.log.head(), "exchange listening");
    axum::serve(
        app::without_nagle(listener),
        pathway_gateway::router(running.state),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    running.log.flush()?;
    projector.flush()?;
    if let Some(cp) = running.log.checkpoint(&app::signing_key(&data)?)? {
        tracing::info!(seq = cp.seq, "signed a checkpoint at shutdown");
    }
    Ok(())
}

/// The broker's users for these agencies; the demo's passwords are `<user>-nats`.
pub fn nats_authorization(agencies: &[String], demo: bool) -> String {
    pathway_nats::broker::authorization(agencies, |user| {
        if demo {
            format!("\"{user}-nats\"")
        } else {
            format!("$NATS_PASSWORD_{}", user.to_uppercase().replace('-', "_"))
        }
    })
}

fn rebuild(config: config::Config, data: &std::path::Path, cache_mib: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let applied = app::rebuild(config.agreements, data, cache_mib << 20)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt projections from {applied} entries in {secs:.2} s ({:.0} entries/s)",
        applied as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn export(data: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let log = app::open_log(data)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut after = 0;
    loop {
        let entries = log.read_from(after, 4096)?;
        let Some(last) = entries.last() else { break };
        after = last.record.seq;
        for e in &entries {
            serde_json::to_writer(&mut out, &e.to_export())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
