//! Command handlers: parse → library call → render.

pub mod archive;
#[cfg(feature = "runtime")]
pub mod attach;
pub mod compare;
#[cfg(feature = "runtime")]
pub mod container;
pub mod images;
pub mod progress;
pub mod registry;
pub mod system;
pub mod tree;

use std::io::{BufRead, IsTerminal, Write};

/// Asks a yes/no question on stderr and reads the answer from stdin; anything but y/yes is no.
pub fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Whether stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}
