//! Rendering helpers shared by commands: docker's tables, sizes and relative times.

use std::io::{self, Write};

/// A table laid out like docker's (tabwriter: min width 10, padding 3).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Table {
        Table { rows: vec![headers.iter().map(|s| s.to_string()).collect()] }
    }
    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    /// Writes it.
    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let cols = self.rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let w = (widths[i] + 3).max(10);
                    for _ in c.chars().count()..w {
                        line.push(' ');
                    }
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig3(v), UNITS[i])
}

/// Formats with three significant digits, like C's `%.3g` for values below 1000.
fn sig3(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    // %.3g rounding can carry into a fourth digit (999.6 -> "1000"); keep it, docker does too.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Parses sizes like `10GB`, `500MiB`, `1.5g`, `1024` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    (n >= 0.0).then_some((n * mul) as u64)
}

/// docker's `units.HumanDuration`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let h = s / 3600;
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if s / 60 == 1 {
        "About a minute".into()
    } else if s / 60 < 60 {
        format!("{} minutes", s / 60)
    } else if (s as f64 / 3600.0).round() == 1.0 {
        "About an hour".into()
    } else if h < 48 {
        format!("{h} hours")
    } else if h < 24 * 7 * 2 {
        format!("{} days", h / 24)
    } else if h < 24 * 30 * 2 {
        format!("{} weeks", h / 24 / 7)
    } else if h < 24 * 365 * 2 {
        format!("{} months", h / 24 / 30)
    } else {
        format!("{} years", h / 24 / 365)
    }
}

/// "5 minutes ago", or "N/A" when unknown.
pub fn ago(t: Option<i64>) -> String {
    match t {
        Some(t) => format!("{} ago", duration(now() - t)),
        None => "N/A".into(),
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    strata_store::store::now_unix()
}

/// A short image ID (12 hex digits) or the full `sha256:…` with `no_trunc`.
pub fn id(d: &strata_store::Digest, no_trunc: bool) -> String {
    if no_trunc {
        d.to_string()
    } else {
        d.digest().chars().take(12).collect()
    }
}

/// Truncates to `n` characters with an ellipsis, as docker does.
pub fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_261_000), "4.26MB");
        assert_eq!(size(12_340_000), "12.3MB");
        assert_eq!(size(1_200_000_000), "1.2GB");
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
    }
    #[test]
    fn durations_like_docker() {
        assert_eq!(duration(5), "5 seconds");
        assert_eq!(duration(60), "About a minute");
        assert_eq!(duration(3600), "About an hour");
        assert_eq!(duration(3 * 86400), "3 days");
    }
}
