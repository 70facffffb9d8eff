//! `strata`: container images and layers with docker's habits.
//!
//! Multi-call: invoked as `docker` it is the same CLI. Errors map to docker's exit codes: 125 for
//! strata's own errors; a closed stdout (`strata images | head -1`) is success.

mod args;
mod cmd;
mod render;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[cfg(feature = "runtime")]
use args::ContainerCommand;
use args::{Cli, Command, ImageCommand, ManifestCommand, SystemCommand};

/// A command's outcome: the exit code to use when nothing failed.
pub type Outcome = anyhow::Result<u8>;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
                c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
                    || c.downcast_ref::<serde_json::Error>()
                        .is_some_and(|j| j.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
            };
            if e.chain().any(broken_pipe) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "Error: {}", error_text(&e));
            ExitCode::from(125)
        }
    }
}

/// The error and its causes, each cause once: the library errors already show their cause in
/// their own message, so a cause is only added when the text so far does not hold it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn default_root() -> PathBuf {
    if rustix_is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("strata");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/strata")
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cli: Cli) -> Outcome {
    let root = cli.root.unwrap_or_else(default_root);
    let insecure = &cli.insecure_registry;
    let store = || strata_store::Store::open(&root).map_err(anyhow::Error::from);
    // Not locked for the whole command: progress is written from transfer threads too.
    let out = &mut io::stdout();
    match cli.command {
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => cmd::archive::load(&store()?, a, out),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => cmd::archive::save(&store()?, a, out),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => cmd::archive::import(&store()?, a, out),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => cmd::images::list(&store()?, a, out),
        Command::Inspect(a) => cmd::images::inspect(&store()?, a, true, out),
        Command::Image(ImageCommand::Inspect(a)) => cmd::images::inspect(&store()?, a, false, out),
        Command::History(a) | Command::Image(ImageCommand::History(a)) => cmd::images::history(&store()?, a, out),
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => cmd::images::tag(&store()?, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => cmd::images::rmi(&store()?, a, out),
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => cmd::registry::pull(&store()?, insecure, a, out),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => cmd::registry::push(&store()?, insecure, a, out),
        Command::Manifest(ManifestCommand::Inspect(a)) => cmd::registry::manifest_inspect(insecure, a, out),
        Command::Copy(a) => cmd::registry::copy(insecure, a, out),
        Command::Tags(a) => cmd::registry::tags(insecure, a, out),
        Command::Catalog(a) => cmd::registry::catalog(insecure, a, out),
        #[cfg(feature = "runtime")]
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => cmd::container::run(&store()?, insecure, *a),
        #[cfg(feature = "runtime")]
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            cmd::container::create(&store()?, insecure, *a, out)
        }
        #[cfg(feature = "runtime")]
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => cmd::container::start(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Attach(a) | Command::Container(ContainerCommand::Attach(a)) => cmd::container::attach(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Exec(a) | Command::Container(ContainerCommand::Exec(a)) => cmd::container::exec(&store()?, a),
        Command::Diff(a) => cmd::compare::diff(&store()?, insecure, a, out),
        #[cfg(feature = "runtime")]
        Command::Container(ContainerCommand::Diff(a)) => cmd::container::diff(&store()?, &a.container, out),
        Command::Layers(a) => cmd::compare::layers(&store()?, insecure, a, out),
        Command::Ls(a) => cmd::compare::ls(&store()?, insecure, a, out),
        Command::Cat(a) => cmd::compare::cat(&store()?, insecure, a, out),
        #[cfg(feature = "runtime")]
        Command::Rename(a) | Command::Container(ContainerCommand::Rename(a)) => cmd::container::rename(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => {
            cmd::container::restart(&store()?, a, out)
        }
        #[cfg(feature = "runtime")]
        Command::Cp(a) => cmd::container::cp(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Volume(v) => cmd::container::volume(&store()?, v, out),
        #[cfg(feature = "runtime")]
        Command::Export(a) => cmd::container::export(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Container(ContainerCommand::Inspect(a)) => cmd::container::inspect(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Container(ContainerCommand::Prune(a)) => cmd::container::prune(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Commit(a) | Command::Container(ContainerCommand::Commit(a)) => {
            cmd::container::commit(&store()?, a, out)
        }
        #[cfg(feature = "runtime")]
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => cmd::container::ps(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => cmd::container::rm(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => cmd::container::stop(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => cmd::container::kill(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Wait(a) | Command::Container(ContainerCommand::Wait(a)) => cmd::container::wait(&store()?, a, out),
        #[cfg(feature = "runtime")]
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => cmd::container::logs(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Monitor(a) => cmd::container::monitor(&store()?, a),
        #[cfg(feature = "runtime")]
        Command::Builtin(a) => cmd::container::builtin(a),
        Command::Login(a) => cmd::registry::login(insecure, a, out),
        Command::Logout(a) => cmd::registry::logout(a, out),
        Command::Image(ImageCommand::Tree(a)) => cmd::tree::tree(&store()?, a.format, out),
        Command::Image(ImageCommand::Prune(a)) => cmd::system::image_prune(&store()?, a, out),
        Command::System(SystemCommand::Df(a)) => cmd::system::df(&store()?, a, out),
        Command::System(SystemCommand::Prune(a)) => cmd::system::system_prune(&store()?, a, out),
        Command::System(SystemCommand::Check(a)) => cmd::system::check(&store()?, a, out),
    }
}
