//! `exchange bench --only import`: both imports, rows per second, and the server's peak
//! memory while it takes a destinations file of a million rows.
//!
//! The server is this binary (`exchange serve --demo`) in its own process, so its peak
//! resident memory (`VmHWM` in /proc) is the server's alone. Files are generated and sent as
//! the CLI sends them (streamed from disk). The destinations file goes three times: first
//! everyone is new (a registration and a destination per row), then nothing has changed,
//! then a quarter later everyone has a new destination (and a quarter of them a NEET onset),
//! then a typical quarter: most rows as before, a fifth changed and a tenth new people.
//! The looked-after list goes twice, new and unchanged.

use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Server {
    child: std::process::Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `config`, or on the built-in demo.
fn start(data: &Path, config: Option<&Path>) -> anyhow::Result<Server> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("serve");
    match config {
        Some(file) => command.arg("--config").arg(file),
        None => command.arg("--demo"),
    };
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "info,sled=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
    let addr = loop {
        let line = lines.next().context("the server stopped")??;
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // The server's warnings and errors are the bench's too: an import that fails says why.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") || line.contains("panicked") {
                eprintln!("server: {line}");
            }
        }
    });
    Ok(Server {
        child,
        base: format!("http://{addr}"),
    })
}

/// The server's peak resident memory so far, in MB.
fn peak_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// A name per number: matching by name ignores digits, so generated names differ in letters.
pub fn letters(mut n: usize) -> String {
    let mut s = String::from("P");
    loop {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// Which quarter's destinations file to write.
#[derive(Clone, Copy)]
enum Quarter {
    /// Everyone's first destination.
    Autumn,
    /// Everyone has moved on to the next activity code (so a quarter of them, from 310 to
    /// 540, into NEET), with later dates.
    Winter,
    /// A typical quarter after it: seven rows in ten say again what winter said, two move on
    /// again, one is someone new, spread through the file as a real export's would be.
    Spring,
}

/// The careers service's file for `rows` rows, of the young people `0..rows` (and, in
/// spring, newcomers after them).
fn destinations_file(path: &Path, rows: usize, quarter: Quarter) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "YoungPersonsID,DOB,GivenName,FamilyName,ActivityCode,StartDate,DateAscertained,LEACode,UniqueLearnerNo"
    )?;
    let codes = ["230", "310", "540", "619"];
    const AUTUMN: (usize, &str, &str) = (0, "2026-09-01", "2026-09-20");
    const WINTER: (usize, &str, &str) = (1, "2026-12-01", "2026-12-15");
    const SPRING: (usize, &str, &str) = (2, "2027-03-01", "2027-03-15");
    for i in 0..rows {
        let (person, (shift, start, ascertained)) = match (quarter, i % 10) {
            (Quarter::Autumn, _) => (i, AUTUMN),
            (Quarter::Winter, _) => (i, WINTER),
            (Quarter::Spring, 0..7) => (i, WINTER),
            (Quarter::Spring, 7..9) => (i, SPRING),
            (Quarter::Spring, _) => (rows + i, AUTUMN),
        };
        writeln!(
            f,
            "{person:013},{}-{:02}-{:02},{},Example,{},{start},{ascertained},878,{}",
            2006 + person % 4,
            1 + person % 12,
            1 + person % 28,
            letters(person),
            codes[(person + shift) % 4],
            1_000_000_000 + person
        )?;
    }
    f.flush()?;
    Ok(())
}

/// SSDA903 header and episodes for `children` children, one episode each.
fn looked_after_files(dir: &Path, children: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (h, e) = (dir.join("header.csv"), dir.join("episodes.csv"));
    let mut header = std::io::BufWriter::new(std::fs::File::create(&h)?);
    let mut episodes = std::io::BufWriter::new(std::fs::File::create(&e)?);
    writeln!(header, "CHILD,SEX,DOB,ETHNIC,UPN,GIVEN_NAME,FAMILY_NAME")?;
    writeln!(episodes, "CHILD,DECOM,RNE,LS,CIN,PLACE,PLACE_PROVIDER,DEC,REC,REASON_PLACE_CHANGE,HOME_POST,PL_POST,URN")?;
    for i in 0..children {
        writeln!(
            header,
            "{},{},{:02}/{:02}/{},WBRI,,{},Looked",
            100_000 + i,
            ["M", "F"][i % 2],
            1 + i % 28,
            1 + i % 12,
            2008 + i % 6,
            letters(i)
        )?;
        writeln!(
            episodes,
            "{},{:02}/{:02}/2025,S,C2,N3,A3,PR3,,X1,,,,",
            100_000 + i,
            1 + i % 28,
            1 + i % 12,
        )?;
    }
    header.flush()?;
    episodes.flush()?;
    Ok((h, e))
}

/// Sends a file as the CLI does; returns the summary and the seconds taken.
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<(serde_json::Value, f64)> {
    let t = Instant::now();
    let res = request.send().await?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!(
            "the import answered {status}: {}",
            &text[..text.len().min(500)]
        );
    }
    Ok((serde_json::from_str(&text)?, t.elapsed().as_secs_f64()))
}

async fn destinations(server: &Server, file: &Path) -> anyhow::Result<(serde_json::Value, f64)> {
    let body = crate::upload::file_stream(file.to_path_buf(), crate::upload::Sent::default());
    send(
        reqwest::Client::new()
            .post(format!("{}/v1/imports/destinations", server.base))
            .bearer_auth("demo-careers-token")
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(body)),
    )
    .await
}

async fn looked_after(
    server: &Server,
    files: &(PathBuf, PathBuf),
) -> anyhow::Result<(serde_json::Value, f64)> {
    let form = reqwest::multipart::Form::new()
        .part(
            "header",
            reqwest::multipart::Part::bytes(std::fs::read(&files.0)?).file_name("header.csv"),
        )
        .part(
            "episodes",
            reqwest::multipart::Part::bytes(std::fs::read(&files.1)?).file_name("episodes.csv"),
        );
    send(
        reqwest::Client::new()
            .post(format!("{}/v1/imports/looked-after?year=2026", server.base))
            .bearer_auth("demo-la-token")
            .multipart(form),
    )
    .await
}

pub async fn run(
    root: &Path,
    rows: usize,
    children: usize,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(root)?;
    let file = dir.path().join("destinations.csv");
    destinations_file(&file, rows, Quarter::Autumn)?;
    let later = dir.path().join("destinations-later.csv");
    destinations_file(&later, rows, Quarter::Winter)?;
    let typical = dir.path().join("destinations-typical.csv");
    destinations_file(&typical, rows, Quarter::Spring)?;
    let size = std::fs::metadata(&file)?.len();
    let server = start(&dir.path().join("data"), config)?;
    let pid = server.child.id();
    let before = peak_mb(pid)?;
    for (pass, file) in [
        ("new", &file),
        ("unchanged", &file),
        ("changed", &later),
        (
            "a typical quarter: 70% unchanged, 20% changed, 10% new",
            &typical,
        ),
    ] {
        // The server's CPU for the pass: steadier than the wall clock on a shared machine.
        let cpu = crate::bench::cpu_seconds_of(&pid.to_string());
        let (summary, secs) = match destinations(&server, file).await {
            Ok(answer) => answer,
            Err(e) => {
                // Time for the server's last words to reach the console before it is stopped.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        let cpu = crate::bench::cpu_seconds_of(&pid.to_string()) - cpu;
        println!(
            "import destinations ({pass}): {} rows ({:.0} MB) in {secs:.1} s, {:.0} rows/s; {} registered, {} changed, {} unchanged, {} NEET onsets; server peak memory {:.0} MB (at start {before:.0} MB); server CPU {:.1} µs a row",
            summary["rows"],
            size as f64 / 1e6,
            rows as f64 / secs,
            summary["registered"],
            summary["changed"],
            summary["unchanged"],
            summary["neet_onsets"],
            peak_mb(pid)?,
            cpu * 1e6 / rows as f64
        );
    }
    drop(server);

    let files = looked_after_files(dir.path(), children)?;
    let server = start(&dir.path().join("data-la"), config)?;
    for pass in ["new", "unchanged"] {
        let (summary, secs) = looked_after(&server, &files).await?;
        println!(
            "import looked-after ({pass}): {} rows, {} children in {secs:.1} s, {:.0} rows/s; {} registered, {} unchanged, {} problems",
            summary["rows"],
            summary["children"],
            summary["rows"].as_f64().unwrap_or(0.0) / secs,
            summary["registered"],
            summary["unchanged"],
            summary["rejected"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}
