//! Registry commands: pull, login, logout.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context};
use strata_registry::keychain::{Credential, DockerConfig, Secret};
use strata_registry::pull::PullOptions;
use strata_registry::{Client, Options, Reference};
use strata_store::Store;

use crate::args::{
    CatalogArgs, CopyArgs, Format, LayerCompression, LoginArgs, LogoutArgs, ManifestInspectArgs, PullArgs, PushArgs,
    TagsArgs,
};
use crate::cmd::progress::{Mode, Reporter};
use crate::Outcome;

/// Transport options from the global flags.
pub fn options(insecure: &[String]) -> Options {
    let mut o = Options {
        insecure: insecure.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        ..Options::default()
    };
    if let Some(ms) = std::env::var("STRATA_RETRY_BACKOFF_MS").ok().and_then(|s| s.parse::<u64>().ok()) {
        o.backoff = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = std::env::var("STRATA_RETRY_ATTEMPTS").ok().and_then(|s| s.parse::<u32>().ok()) {
        o.attempts = n.clamp(1, 100);
    }
    if let Some(secs) = std::env::var("STRATA_STALL_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok()) {
        o.stall_timeout = std::time::Duration::from_secs(secs.max(1));
    }
    o
}

/// Parses a reference typed by a user, with docker's message for a bad one.
pub fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Reference::parse(s).map_err(anyhow::Error::from)
}

/// `strata pull`
pub fn pull(store: &Store, insecure: &[String], a: PullArgs, out: &mut dyn Write) -> Outcome {
    let r = parse_ref(&a.image)?;
    let client = Client::from_docker_config(options(insecure))?;
    let rep = Reporter::new(Mode::pick(a.progress, a.quiet), "Download");
    let user_gave_tag = r.digest().is_some() || a.image.rsplit('/').next().is_some_and(|last| last.contains(':'));
    if !user_gave_tag {
        rep.line(&format!("Using default tag: {}", strata_store::reference::DEFAULT_TAG));
    }
    let what = r.digest().map(|d| d.to_string()).or_else(|| r.tag().map(str::to_string)).unwrap_or_default();
    rep.line(&format!("{what}: Pulling from {}", r.repository()));
    let opts =
        PullOptions { platform: a.platform.clone(), concurrency: a.max_concurrent_downloads as usize, tag: true };
    let res = client.pull(store, &r, &opts, &|e| rep.event(e));
    rep.finish();
    let pulled = res?;
    match rep.mode() {
        Mode::Quiet => writeln!(out, "{r}")?,
        Mode::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "event": "done",
                "reference": r.to_string(),
                "digest": pulled.digest.to_string(),
                "id": pulled.image_id.to_string(),
                "updated": pulled.updated,
            })
        )?,
        _ => {
            writeln!(out, "Digest: {}", pulled.digest)?;
            let status = if pulled.updated { "Downloaded newer image for" } else { "Image is up to date for" };
            writeln!(out, "Status: {status} {}", r.familiar())?;
            writeln!(out, "{r}")?;
        }
    }
    Ok(0)
}

/// `strata push`
pub fn push(store: &Store, insecure: &[String], a: PushArgs, out: &mut dyn Write) -> Outcome {
    let r = parse_ref(&a.image)?;
    if r.digest().is_some() {
        bail!("cannot push a digest reference {:?}: push NAME[:TAG]", a.image);
    }
    // By tag only, as docker: an image ID is not a repository to push to.
    let image = store.images()?.into_iter().find(|i| i.tags.contains(&r)).ok_or_else(|| {
        anyhow::anyhow!(
            "an image does not exist locally with the tag: {} (tag one with `strata tag`)",
            r.familiar_name()
        )
    })?;
    let client = Client::from_docker_config(options(insecure))?;
    let rep = Reporter::new(Mode::pick(a.progress, a.quiet), "Push");
    rep.line(&format!("The push refers to repository [{}]", r.name()));
    let mut opts = strata_registry::push::PushOptions {
        compression: a.compression.map(|c| match c {
            LayerCompression::Gzip => strata_store::image::Compression::Gzip,
            LayerCompression::Zstd => strata_store::image::Compression::Zstd,
        }),
        concurrency: a.max_concurrent_uploads as usize,
        ..Default::default()
    };
    if let Some(n) = std::env::var("STRATA_PUSH_CHUNK_SIZE").ok().and_then(|s| crate::render::parse_size(&s)) {
        opts.chunk_size = n;
    }
    let res = client.push(store, &image, &r, &opts, &|e| rep.event(e));
    rep.finish();
    let pushed = res?;
    match rep.mode() {
        Mode::Quiet => writeln!(out, "{}", pushed.digest)?,
        Mode::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"event": "done", "reference": r.to_string(), "digest": pushed.digest.to_string(), "size": pushed.size})
        )?,
        _ => writeln!(
            out,
            "{}: digest: {} size: {}",
            r.tag().unwrap_or(strata_store::reference::DEFAULT_TAG),
            pushed.digest,
            pushed.size
        )?,
    }
    Ok(0)
}

/// Reads the password from stdin (`--password-stdin`), without its trailing newline.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().lock().read_to_string(&mut s).context("cannot read the password from stdin")?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    Ok(s.to_string())
}

/// Reads a line from the terminal, with echo off when `secret`.
fn prompt(label: &str, secret: bool) -> anyhow::Result<String> {
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = secret && unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a termios obtained from tcgetattr with ECHO cleared, on the same fd.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        eprintln!();
    }
    r.context("cannot read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `strata login`
pub fn login(insecure: &[String], a: LoginArgs, out: &mut dyn Write) -> Outcome {
    let registry = strata_registry::login::registry_name(a.server.as_deref())?;
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if a.password_stdin && a.username.is_none() {
        bail!("must provide --username with --password-stdin");
    }
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive => prompt("Username: ", false)?,
        None => bail!("cannot perform an interactive login from a non-TTY device; use --username and --password-stdin"),
    };
    if username.trim().is_empty() {
        bail!("username is empty");
    }
    let password = if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if a.password_stdin {
        password_from_stdin()?
    } else if interactive {
        prompt("Password: ", true)?
    } else {
        bail!("cannot perform an interactive login from a non-TTY device; use --password-stdin")
    };
    if password.is_empty() {
        bail!("password is empty");
    }
    let secret = Secret::new(password);
    Client::verify_login(
        &registry,
        Credential::Basic { username: username.clone(), password: secret.clone() },
        options(insecure),
    )?;
    let mut cfg = DockerConfig::load(DockerConfig::default_path())?;
    cfg.store(&registry, &username, &secret)?;
    writeln!(out, "Login Succeeded")?;
    Ok(0)
}

/// `strata logout`
pub fn logout(a: LogoutArgs, out: &mut dyn Write) -> Outcome {
    let registry = strata_registry::login::registry_name(a.server.as_deref())?;
    let mut cfg = DockerConfig::load(DockerConfig::default_path())?;
    if cfg.erase(&registry)? {
        writeln!(out, "Removing login credentials for {}", strata_registry::keychain::auth_key(&registry))?;
    } else {
        writeln!(out, "Not logged in to {registry}")?;
    }
    Ok(0)
}

/// `strata manifest inspect`
pub fn manifest_inspect(insecure: &[String], a: ManifestInspectArgs, out: &mut dyn Write) -> Outcome {
    let r = parse_ref(&a.image)?;
    let client = Client::from_docker_config(options(insecure))?;
    let m = client.manifest(&r, a.platform.as_deref())?;
    if a.raw {
        out.write_all(&m.bytes)?;
        return Ok(0);
    }
    serde_json::from_slice::<serde_json::Value>(&m.bytes).context("the manifest is not JSON")?;
    // docker prints manifests indented by three spaces, keys in the order served.
    out.write_all(reindent(&m.bytes, "   ").as_bytes())?;
    writeln!(out)?;
    Ok(0)
}

/// Pretty-prints valid JSON `bytes` keeping its key order.
fn reindent(bytes: &[u8], indent: &str) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// `strata tags`
pub fn tags(insecure: &[String], a: TagsArgs, out: &mut dyn Write) -> Outcome {
    let r = parse_ref(&a.repository)?;
    if r.digest().is_some() || a.repository.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        bail!("{:?} names an image, not a repository: give NAME without a tag or digest", a.repository);
    }
    let client = Client::from_docker_config(options(insecure))?;
    let tags = client.tags(&r)?;
    match a.format {
        Format::Json => writeln!(out, "{}", serde_json::json!({"name": r.name(), "tags": tags}))?,
        Format::Table => {
            for t in tags {
                writeln!(out, "{t}")?;
            }
        }
    }
    Ok(0)
}

/// `strata catalog`
pub fn catalog(insecure: &[String], a: CatalogArgs, out: &mut dyn Write) -> Outcome {
    let registry = strata_registry::login::registry_name(Some(&a.registry))?;
    let client = Client::from_docker_config(options(insecure))?;
    let repos = client.catalog(&registry)?;
    match a.format {
        Format::Json => writeln!(out, "{}", serde_json::json!({"registry": registry, "repositories": repos}))?,
        Format::Table => {
            for r in repos {
                writeln!(out, "{r}")?;
            }
        }
    }
    Ok(0)
}

/// `strata copy`
pub fn copy(insecure: &[String], a: CopyArgs, out: &mut dyn Write) -> Outcome {
    use strata_registry::copy::{CopyOptions, Endpoint};
    let src = Endpoint::parse(&a.source)?;
    let dst = Endpoint::parse(&a.destination)?;
    let client = Client::from_docker_config(options(insecure))?;
    let rep = Reporter::new(Mode::pick(a.progress, a.quiet), "Copy");
    let opts = CopyOptions { all: a.all, platform: a.platform.clone() };
    let res = client.copy(&src, &dst, &opts, &|e| rep.event(e));
    rep.finish();
    let copied = res?;
    match rep.mode() {
        Mode::Quiet => writeln!(out, "{}", copied.digest)?,
        Mode::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"event": "done", "digest": copied.digest.to_string(), "copied": copied.copied, "skipped": copied.skipped})
        )?,
        _ => writeln!(
            out,
            "Copied {} to {}: digest {} ({} blobs copied, {} already there)",
            a.source, a.destination, copied.digest, copied.copied, copied.skipped
        )?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reindent_keeps_order() {
        let s = super::reindent(br#"{"b":1,"a":[{"x":"q\"{,"},[]],"e":{}}"#, "  ");
        assert_eq!(
            s,
            "{\n  \"b\": 1,\n  \"a\": [\n    {\n      \"x\": \"q\\\"{,\"\n    },\n    []\n  ],\n  \"e\": {}\n}"
        );
    }
}
