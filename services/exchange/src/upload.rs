//! Sending files to a running exchange from the command line: streamed from disk (a
//! million-row file is never held in memory), with a progress bar on standard error and a
//! one-line summary when the exchange answers. The exchange applies the file as it reads
//! it, so the bytes sent are also how far the import has got.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes sent so far, shared by the file streams and the progress bar.
#[derive(Clone, Default)]
pub struct Sent(Arc<AtomicU64>);

impl Sent {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A file as a stream of pieces, counting each one into `sent` as it goes out.
pub fn file_stream(
    path: PathBuf,
    sent: Sent,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::try_unfold(
        (None::<tokio::fs::File>, path, sent),
        |(file, path, sent)| async move {
            use tokio::io::AsyncReadExt;
            let mut file = match file {
                Some(f) => f,
                None => tokio::fs::File::open(&path).await?,
            };
            let mut buf = vec![0u8; 256 * 1024];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            sent.0.fetch_add(n as u64, Ordering::Relaxed);
            Ok(Some((buf, (Some(file), path, sent))))
        },
    )
}

/// One line of the bar: `[#####---------------]  25%  12.0 of 48.0 MB  3.1 MB/s`.
pub fn bar(sent: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 24;
    let share = if total == 0 {
        1.0
    } else {
        (sent.min(total) as f64) / total as f64
    };
    let filled = (share * WIDTH as f64).round() as u64;
    let mb = |b: u64| b as f64 / 1e6;
    format!(
        "[{}{}] {:>3.0}%  {:.1} of {:.1} MB  {:.1} MB/s",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        share * 100.0,
        mb(sent),
        mb(total),
        mb(sent) / elapsed.as_secs_f64().max(1e-3)
    )
}

/// Redraws the bar on standard error until `done` resolves; returns its output.
pub async fn with_progress<T>(
    total: u64,
    sent: Sent,
    done: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let draw = |final_: bool| {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}", bar(sent.get(), total, started.elapsed()));
        if final_ {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    };
    tokio::pin!(done);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            out = &mut done => {
                draw(true);
                return out;
            }
            _ = tick.tick() => draw(false),
        }
    }
}

/// The import summary in one line for people (the full JSON goes to standard output).
pub fn summary_line(summary: &serde_json::Value) -> String {
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    let listed = |k: &str| summary[k].as_array().map_or(0, Vec::len) as u64;
    let mut parts = vec![format!("{} rows", n("rows"))];
    for (k, label) in [
        ("registered", "registered"),
        ("linked", "linked"),
        ("changed", "changed"),
        ("unchanged", "unchanged"),
        ("superseded", "older than held"),
        ("neet_onsets", "NEET onsets"),
        ("children", "children"),
    ] {
        if summary.get(k).is_some() {
            parts.push(format!("{} {label}", n(k)));
        }
    }
    parts.push(format!("{} held for review", listed("held_for_review")));
    parts.push(format!(
        "{} problems",
        listed("rejected") + n("unlisted_problems")
    ));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_bytes_sent() {
        let half = bar(50, 100, Duration::from_secs(1));
        assert!(
            half.starts_with("[############------------]  50%"),
            "{half}"
        );
        assert!(bar(0, 0, Duration::ZERO).contains("100%"));
    }

    #[test]
    fn the_summary_line_counts_listed_and_unlisted_problems() {
        let s = serde_json::json!({"rows": 10, "changed": 7, "unchanged": 1,
            "rejected": [{"line": 3}], "unlisted_problems": 2, "held_for_review": [{}]});
        let line = summary_line(&s);
        assert!(
            line.starts_with("10 rows, 7 changed, 1 unchanged"),
            "{line}"
        );
        assert!(line.ends_with("1 held for review, 3 problems"), "{line}");
    }
}
