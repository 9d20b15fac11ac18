use crate::support::{post_event, run, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

fn registration(id: Uuid) -> Value {
    let mut d = pathway_core::samples::data(pathway_core::EventType::YoungPersonRegistered);
    d["date_of_birth"] = json!("2008-01-01");
    json!({"id": id, "type": "young-person.registered", "occurred_at": "2026-11-02T10:00:00Z", "data": d})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_steady_ingest_loses_no_acknowledged_event() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let acked = Arc::new(Mutex::new(Vec::<(Uuid, u64)>::new()));
    let client = reqwest::Client::new();
    let (enough_tx, enough_rx) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (client, base, acked, enough) = (
            client.clone(),
            server.base.clone(),
            acked.clone(),
            enough_tx.clone(),
        );
        writers.push(tokio::spawn(async move {
            // Bounded: stops at the kill, or after 20,000 attempts at the latest.
            for _ in 0..20_000 {
                let id = Uuid::new_v4();
                let res = post_event(&client, &base, "demo-la-token", &registration(id)).await;
                match res {
                    Ok(r) if r.status() == 201 => {
                        let Ok(body) = r.json::<Value>().await else {
                            return;
                        };
                        let mut a = acked.lock().unwrap();
                        a.push((id, body["seq"].as_u64().unwrap()));
                        if a.len() >= 600 {
                            let _ = enough.send(true);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    let mut enough = enough_rx;
    tokio::time::timeout(Duration::from_secs(120), enough.wait_for(|e| *e))
        .await
        .unwrap()
        .unwrap();
    server.kill(); // mid-flow: writers still have requests in flight
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (ok, out, err) = run(&["verify"], data.path());
    assert!(ok, "verify after SIGKILL: {out} {err}");
    let (ok, out, err) = run(&["export"], data.path());
    assert!(ok, "{err}");
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=entries.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    let ids: HashSet<String> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), entries.len(), "no event twice");
    let missing: Vec<_> = acked
        .iter()
        .filter(|(id, _)| !ids.contains(&id.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost",
        missing.len()
    );
    assert!(entries.len() >= acked.len());

    // It starts again on the same data and carries on from where the log ends.
    let server = Server::start(data.path());
    let res = post_event(
        &client,
        &server.base,
        "demo-la-token",
        &registration(Uuid::new_v4()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["seq"].as_u64().unwrap(), entries.len() as u64 + 1);

    // Every acknowledged event sent again is a repeat, answered as the first time: the
    // ids of the groups the indexer had not reached when the process died were indexed
    // again when it started.
    for (id, seq) in &acked {
        let res = post_event(&client, &server.base, "demo-la-token", &registration(*id))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "event {id} sent again");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["seq"].as_u64(), Some(*seq), "event {id} sent again");
    }
}

async fn frames(res: reqwest::Response, want: usize) -> Vec<(u64, Value)> {
    crate::support::Sse::new(res).next(want).await
}

#[tokio::test]
async fn the_live_feed_streams_disclosures_and_resumes_from_last_event_id() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let client = reqwest::Client::new();
    let stream = client
        .get(format!("{}/v1/feed/stream", server.base))
        .bearer_auth("demo-college-token")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let post = |token: &'static str, body: Value| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let r = post_event(&client, &base, token, &body).await.unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let reg = post("demo-la-token", registration(Uuid::new_v4())).await;
    let yp = reg["young_person"].clone();
    let envelope = |ty: &str| {
        let data = pathway_core::samples::data(pathway_core::EventType::parse(ty).unwrap());
        json!({"id": Uuid::new_v4(), "type": ty, "young_person": yp, "occurred_at": "2026-11-02T10:00:00Z", "data": data})
    };
    post("demo-la-token", envelope("consent.granted")).await;
    post("demo-careers-token", envelope("destination.recorded")).await;
    post("demo-college-token", envelope("enrolment.started")).await; // its own: not in its feed
    post("demo-careers-token", envelope("neet.onset")).await;

    let got = frames(stream, 3).await;
    let types: Vec<&str> = got
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["consent.granted", "destination.recorded", "neet.onset"]
    );

    let resumed = client
        .get(format!("{}/v1/feed/stream", server.base))
        .bearer_auth("demo-college-token")
        .header("Last-Event-ID", got[0].0.to_string())
        .send()
        .await
        .unwrap();
    let again = frames(resumed, 2).await;
    assert_eq!(
        again.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![got[1].0, got[2].0]
    );
}

#[test]
fn verify_names_a_tampered_entry_and_exits_non_zero() {
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        // The housekeeping pass at start signs the head if it finds entries: let it finish
        // on the empty log first, so the only checkpoint is the one `checkpoint` signs.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let server = Server::start_logging(
            data.path(),
            "info,exchange::housekeeping=debug",
            Some(logs.clone()),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !logs.lock().unwrap().contains("housekeeping pass done") {
            assert!(std::time::Instant::now() < deadline, "no housekeeping pass");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let client = reqwest::Client::new();
        rt.block_on(async {
            for _ in 0..3 {
                let r = post_event(
                    &client,
                    &server.base,
                    "demo-la-token",
                    &registration(Uuid::new_v4()),
                )
                .await
                .unwrap();
                assert_eq!(r.status(), 201);
            }
        });
        server.kill();
    }
    let (ok, out, _) = run(&["checkpoint"], data.path());
    assert!(
        ok && out.contains("signed a checkpoint at entry 3"),
        "{out}"
    );
    let (ok, out, _) = run(&["verify"], data.path());
    assert!(ok && out.contains("3 entries"), "{out}");
    assert!(
        out.contains("1 signed checkpoints (the last at entry 3)"),
        "{out}"
    );
    {
        let db = sled::open(data.path().join("log")).unwrap();
        let tree = db.open_tree("log").unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(&2u64.to_be_bytes());
        let mut v = tree.get(&key).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 3] ^= 0x01; // one flipped bit in the record
        tree.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let (ok, _, err) = run(&["verify"], data.path());
    assert!(!ok);
    assert!(err.contains("entry 2"), "{err}");
}

#[test]
fn rebuild_needs_to_be_told_which_agreements_apply() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&["rebuild"], data.path());
    assert!(!ok);
    assert!(err.contains("--config FILE"), "{err}");
    let (ok, out, err) = run(&["rebuild", "--demo"], data.path());
    assert!(ok, "{err}");
    assert!(out.contains("rebuilt projections from 0 entries"), "{out}");
}

/// The allocator's options are compiled into the binary (`.cargo/config.toml`): no huge
/// pages, which held sled's sparsely touched tables resident 2 MiB at a time, one arena,
/// and freed pages returned within a second. jemalloc prints the options in force when asked to print its statistics
/// at exit.
#[cfg(feature = "jemalloc")]
#[test]
fn the_binary_runs_with_its_allocator_options() {
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("opt.thp: \"default\""), "{printed}");
    assert!(printed.contains("opt.narenas: 1\n"), "{printed}");
    assert!(printed.contains("opt.dirty_decay_ms: 1000 "), "{printed}");
    assert!(printed.contains("opt.muzzy_decay_ms: 0 "), "{printed}");
}

/// `exchange report quarterly` fetches the review from a running exchange with the agency's
/// token: CSV for the MI officer's spreadsheet, and a clear failure with a wrong token.
#[tokio::test]
async fn the_quarterly_report_command_fetches_the_review_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = reqwest::Client::new();
    // Someone who is 17 today and has been looked after for three years: eligible.
    let today = time::OffsetDateTime::now_utc().date();
    let dob = today.replace_year(today.year() - 17).unwrap_or(today) - time::Duration::days(1);
    let mut reg = registration(Uuid::new_v4());
    reg["data"]["date_of_birth"] = json!(dob.to_string());
    let res = post_event(&client, &server.base, "demo-la-token", &reg)
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let yp = res.json::<Value>().await.unwrap()["young_person"].clone();
    let since = today.replace_year(today.year() - 3).unwrap_or(today);
    let started = json!({"id": Uuid::new_v4(), "type": "looked-after.started", "young_person": yp,
        "occurred_at": format!("{since}T09:00:00Z"),
        "data": {"start_date": since.to_string(), "legal_status": "C2"}});
    let res = post_event(&client, &server.base, "demo-la-token", &started)
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let report = |token: &str| {
        std::process::Command::new(crate::support::BIN)
            .args([
                "report",
                "quarterly",
                "--url",
                &server.base,
                "--token",
                token,
            ])
            .args(["--format", "csv", "--section", "cohort"])
            .output()
            .unwrap()
    };
    let out = report("demo-la-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        csv,
        "age_band,care_status,count,previous_quarter\r\n16-17,eligible,1,1\r\n"
    );
    let out = report("not-a-token");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// `exchange import destinations` sends the careers service's file and prints the summary;
/// the second time nothing changes.
#[test]
fn the_import_command_sends_a_destinations_file_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let file = dir.path().join("q3.csv");
    std::fs::write(
        &file,
        "YoungPersonsID,DOB,GivenName,FamilyName,LEACode,ActivityCode,StartDate,DateAscertained\r\n\
         0000000000042,2008-04-04,Gil,Import,878,230,2026-09-01,2026-09-20\r\n",
    )
    .unwrap();
    let import = || {
        let out = std::process::Command::new(crate::support::BIN)
            .args(["import", "destinations", "--url", &server.base])
            .args(["--token", "demo-careers-token"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            stderr,
        )
    };
    let (first, shown) = import();
    assert_eq!(
        (first["registered"].clone(), first["changed"].clone()),
        (json!(1), json!(1))
    );
    assert!(
        shown.contains("[########################] 100%"),
        "a finished progress bar: {shown}"
    );
    assert!(
        shown.contains("1 rows, 1 registered, 0 linked, 1 changed, 0 unchanged"),
        "a summary for people: {shown}"
    );
    let (second, _) = import();
    assert_eq!(
        (second["registered"].clone(), second["unchanged"].clone()),
        (json!(0), json!(1))
    );
}

/// `exchange import looked-after` sends the SSDA903 files by name and prints the summary.
#[test]
fn the_import_command_sends_a_looked_after_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let samples = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../reference/samples/ssda903"
    );
    let out = std::process::Command::new(crate::support::BIN)
        .args(["import", "looked-after", "--url", &server.base])
        .args(["--token", "demo-la-token", "--year", "2021"])
        .args(["header.csv", "episodes.csv", "oc3.csv"].map(|f| format!("{samples}/{f}")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["registered"], 99);
    assert!(!summary["rejected"].as_array().unwrap().is_empty());
}

/// `exchange token issue` adds a user with only the token's digest and prints the token once;
/// `exchange token revoke` removes the user, and after a restart the token no longer works.
#[tokio::test]
async fn tokens_are_issued_and_revoked_with_the_admin_cli() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exchange.toml");
    std::fs::write(
        &config,
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/demo.toml"
        )),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::support::BIN)
            .args(args)
            .output()
            .unwrap()
    };
    let path = config.to_str().unwrap();
    let out = cli(&[
        "token",
        "issue",
        "--config",
        path,
        "--user",
        "la-mi-2",
        "--role",
        "mi-officer",
        "--agency",
        "demo-la",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(!written.contains(&token), "only the digest is stored");
    assert!(written.contains("id = \"la-mi-2\""));
    let bad = cli(&[
        "token",
        "issue",
        "--config",
        path,
        "--user",
        "x",
        "--role",
        "mi-officer",
        "--agency",
        "nowhere",
    ]);
    assert!(!bad.status.success());
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        written,
        "a refused issue writes nothing"
    );

    let feed = |base: String, token: String| async move {
        reqwest::Client::new()
            .get(format!("{base}/v1/feed"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    };
    let server = Server::start_with_config(&dir.path().join("data"), &config);
    assert_eq!(feed(server.base.clone(), token.clone()).await, 200);
    server.kill();
    let out = cli(&["token", "revoke", "--config", path, "--user", "la-mi-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_with_config(&dir.path().join("data"), &config);
    assert_eq!(feed(server.base.clone(), token).await, 401);
    assert_eq!(
        feed(server.base.clone(), "demo-la-mi-token".into()).await,
        200,
        "others keep theirs"
    );
}

/// `exchange erase` on a stopped service's data: the person's key is destroyed, the chain
/// still verifies, and when the service starts again nobody can read them.
#[tokio::test]
async fn the_erase_command_forgets_a_person_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let server = Server::start(dir.path());
    let res = post_event(
        &client,
        &server.base,
        "demo-la-token",
        &registration(Uuid::new_v4()),
    )
    .await
    .unwrap();
    let yp = res.json::<Value>().await.unwrap()["young_person"]
        .as_str()
        .unwrap()
        .to_owned();
    server.kill();

    let (ok, out, err) = run(
        &[
            "erase",
            "--young-person",
            &yp,
            "--authorised-by",
            "demo-admin",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("erased"), "{out}");
    let (ok, out, err) = run(&["verify"], dir.path());
    assert!(ok && out.contains("2 entries"), "{out}{err}");

    let server = Server::start(dir.path());
    let status = client
        .get(format!("{}/v1/young-people/{yp}", server.base))
        .bearer_auth("demo-la-token")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}
