//! Renders transfer progress events: a bar with per-layer lines on a terminal, docker's status
//! lines plus a periodic summary otherwise, JSON lines for machines, nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_registry::{Event, LayerStatus};
use strata_store::Digest;

use crate::args::ProgressMode;
use crate::render::size as human_size;

/// Which way of showing progress is in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    pub fn pick(m: ProgressMode, quiet: bool) -> Mode {
        match (m, quiet) {
            (_, true) | (ProgressMode::Quiet, _) => Mode::Quiet,
            (ProgressMode::Json, _) => Mode::Json,
            (ProgressMode::Plain, _) => Mode::Plain,
            (ProgressMode::Auto, _) if std::io::stderr().is_terminal() => Mode::Bar,
            (ProgressMode::Auto, _) => Mode::Plain,
        }
    }
}

struct LayerState {
    size: u64,
    done: u64,
    /// Bytes this process transferred (resumed bytes excluded), for the speed.
    from: u64,
    bar: Option<ProgressBar>,
    last_json: Option<Instant>,
}

struct State {
    layers: HashMap<Digest, LayerState>,
    order: Vec<Digest>,
    last_summary: Instant,
    total_bar: Option<ProgressBar>,
}

/// Turns events into output. `verb` is "Download" or "Push".
pub struct Reporter {
    mode: Mode,
    verb: &'static str,
    start: Instant,
    multi: Option<MultiProgress>,
    state: Mutex<State>,
}

/// The short ID docker shows for a layer.
pub fn short(d: &Digest) -> String {
    d.digest().chars().take(12).collect()
}

const SUMMARY_EVERY: Duration = Duration::from_secs(2);

impl Reporter {
    pub fn new(mode: Mode, verb: &'static str) -> Reporter {
        let multi = (mode == Mode::Bar).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Reporter {
            mode,
            verb,
            start: Instant::now(),
            multi,
            state: Mutex::new(State {
                layers: HashMap::new(),
                order: Vec::new(),
                last_summary: Instant::now(),
                total_bar: None,
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A line of docker's output (on stdout), unless quiet or JSON.
    pub fn line(&self, s: &str) {
        match self.mode {
            Mode::Quiet | Mode::Json => {}
            Mode::Bar => {
                if let Some(m) = &self.multi {
                    let _ = m.println(s);
                }
            }
            Mode::Plain => {
                let _ = writeln!(std::io::stdout(), "{s}");
            }
        }
    }

    fn json(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
    }

    pub fn event(&self, e: Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Resolved { digest } => {
                if self.mode == Mode::Json {
                    self.json(serde_json::json!({"event": "resolved", "digest": digest.to_string()}));
                }
            }
            Event::RateLimit { remaining } => match self.mode {
                Mode::Json => self.json(serde_json::json!({"event": "ratelimit", "remaining": remaining})),
                _ => {
                    let n = remaining.split(';').next().unwrap_or(&remaining).to_string();
                    self.note(&format!("Docker Hub rate limit: {n} pulls remaining"));
                }
            },
            Event::Retry { what, attempt, wait, reason } => match self.mode {
                Mode::Json => self.json(serde_json::json!({
                    "event": "retry", "what": what, "attempt": attempt, "wait_ms": wait.as_millis() as u64, "reason": reason
                })),
                _ => {
                    let what = strata_store::digest::parse(&what).map(|d| short(&d)).unwrap_or(what);
                    self.note(&format!("{what}: {reason}; retrying in {:.1}s (attempt {})", wait.as_secs_f64(), attempt + 1));
                }
            },
            Event::Layer { digest, size, status } => {
                if !st.layers.contains_key(&digest) {
                    st.order.push(digest.clone());
                    let bar = self.multi.as_ref().map(|m| {
                        let b = m.add(ProgressBar::new(size));
                        b.set_style(
                            ProgressStyle::with_template("{prefix}: {msg:<18} {bar:30} {bytes:>10}/{total_bytes}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        b.set_prefix(short(&digest));
                        b
                    });
                    st.layers.insert(digest.clone(), LayerState { size, done: 0, from: 0, bar, last_json: None });
                }
                let text = match &status {
                    LayerStatus::Exists if self.verb == "Push" => "Layer already exists".to_string(),
                    LayerStatus::Exists => "Already exists".to_string(),
                    LayerStatus::Waiting => "Waiting".to_string(),
                    LayerStatus::Transferring { from: 0 } => format!("{}ing", self.verb),
                    LayerStatus::Transferring { from } => format!("Resuming from {}", human_size(*from)),
                    LayerStatus::Mounted { from } => format!("Mounted from {from}"),
                    LayerStatus::Verified => format!("{} complete", self.verb),
                    LayerStatus::Complete if self.verb == "Push" => "Pushed".to_string(),
                    LayerStatus::Complete if self.verb == "Copy" => "Copied".to_string(),
                    LayerStatus::Complete => "Pull complete".to_string(),
                };
                let l = st.layers.get_mut(&digest).expect("inserted above");
                if let LayerStatus::Transferring { from } = status {
                    l.done = from;
                    l.from = from;
                }
                if matches!(
                    status,
                    LayerStatus::Verified | LayerStatus::Exists | LayerStatus::Mounted { .. } | LayerStatus::Complete
                ) {
                    l.done = l.size;
                }
                match self.mode {
                    Mode::Json => self.json(serde_json::json!({
                        "event": "layer", "digest": digest.to_string(), "size": size, "status": text
                    })),
                    Mode::Bar => {
                        if let Some(b) = &l.bar {
                            b.set_position(l.done);
                            b.set_message(text);
                            if matches!(status, LayerStatus::Complete | LayerStatus::Exists) {
                                b.finish();
                            }
                        }
                        self.update_total(&mut st);
                    }
                    Mode::Plain => {
                        let _ = writeln!(std::io::stdout(), "{}: {text}", short(&digest));
                    }
                    Mode::Quiet => {}
                }
            }
            Event::Bytes { digest, done } => {
                let Some(l) = st.layers.get_mut(&digest) else { return };
                l.done = done;
                match self.mode {
                    Mode::Json => {
                        let now = Instant::now();
                        if l.last_json.is_none_or(|t| now - t >= Duration::from_millis(250)) || done == l.size {
                            l.last_json = Some(now);
                            let size = l.size;
                            self.json(serde_json::json!({
                                "event": "progress", "digest": digest.to_string(), "done": done, "size": size
                            }));
                        }
                    }
                    Mode::Bar => {
                        if let Some(b) = &l.bar {
                            b.set_position(done);
                        }
                        self.update_total(&mut st);
                    }
                    Mode::Plain => {
                        if st.last_summary.elapsed() >= SUMMARY_EVERY {
                            st.last_summary = Instant::now();
                            let s = self.summary(&st);
                            let _ = writeln!(std::io::stderr(), "{s}");
                        }
                    }
                    Mode::Quiet => {}
                }
            }
        }
    }

    /// A side note (retries, rate limits) on stderr, above the bars.
    fn note(&self, s: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    fn totals(&self, st: &State) -> (u64, u64, u64) {
        let (mut done, mut total, mut fresh) = (0, 0, 0);
        for l in st.layers.values() {
            done += l.done;
            total += l.size;
            fresh += l.done.saturating_sub(l.from);
        }
        (done, total, fresh)
    }

    /// "Downloading: 45.2MB / 120.3MB, 12.1MB/s, ETA 6s"
    fn summary(&self, st: &State) -> String {
        let (done, total, fresh) = self.totals(st);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let speed = fresh as f64 / secs;
        let eta = if speed > 0.0 {
            format!(", ETA {:.0}s", (total.saturating_sub(done)) as f64 / speed)
        } else {
            String::new()
        };
        format!("{}ing: {} / {}, {}/s{eta}", self.verb, human_size(done), human_size(total), human_size(speed as u64))
    }

    fn update_total(&self, st: &mut State) {
        let (done, total, _) = self.totals(st);
        if st.total_bar.is_none() {
            if let Some(m) = &self.multi {
                let b = m.insert(0, ProgressBar::new(total));
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {bytes:>10}/{total_bytes} {bytes_per_sec:>12} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(format!("{}ing", self.verb));
                st.total_bar = Some(b);
            }
        }
        if let Some(b) = &st.total_bar {
            b.set_length(total);
            b.set_position(done);
        }
    }

    /// Clears the bars before the final lines.
    pub fn finish(&self) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = &st.total_bar {
            b.finish_and_clear();
        }
        for d in &st.order {
            if let Some(b) = st.layers.get(d).and_then(|l| l.bar.as_ref()) {
                b.finish();
            }
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
