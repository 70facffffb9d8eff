//! Container commands: run, ps, rm.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use strata_run::container::{Container, Status};
use strata_run::runtime::{self as rtmod, Runtime};
use strata_run::spec::{self, MountKind, MountSpec, Network, RunOptions};
use strata_run::{lifecycle, ErrorKind};
use strata_store::Store;

use crate::args::{
    AttachArgs, BuiltinArgs, BuiltinRole, CommitArgs, ContainerInspectArgs, ContainerPruneArgs, CpArgs, ExecArgs,
    ExportArgs, Format, KillArgs, LayerCompression, LogsArgs, MonitorArgs, PsArgs, RenameArgs, RmArgs, RunArgs,
    StartArgs, StopArgs, WaitArgs,
};
use crate::cmd::attach;
use crate::render::{self, Table};
use crate::Outcome;

/// The runtime plugin `name`, its state under the store.
fn runtime(store: &Store, name: &str) -> anyhow::Result<Box<dyn Runtime>> {
    Ok(rtmod::open(name, &store.root().join("runtime"))?)
}

/// `-v HOST:CTR[:ro]` → a bind mount; a missing host directory is created, as docker does.
fn parse_volume(v: &str) -> anyhow::Result<MountSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, mode) = match parts.as_slice() {
        [h, t] => (*h, *t, ""),
        [h, t, m] => (*h, *t, *m),
        _ => bail!("invalid volume specification {v:?}: expected HOST:CONTAINER[:ro]"),
    };
    if !host.starts_with('/') {
        bail!("invalid volume specification {v:?}: the host path must be absolute (or name a volume)");
    }
    if !target.starts_with('/') {
        bail!("invalid volume specification {v:?}: the container path must be absolute");
    }
    let readonly = match mode {
        "" | "rw" => false,
        "ro" => true,
        m => bail!("invalid volume specification {v:?}: unknown mode {m:?} (ro or rw)"),
    };
    std::fs::create_dir_all(host).with_context(|| format!("cannot create host directory {host}"))?;
    Ok(MountSpec { kind: MountKind::Bind, source: PathBuf::from(host), target: target.to_string(), readonly })
}

/// `--mount type=bind|tmpfs,source=…,target=…[,readonly]`; a missing bind source is an error, as in docker.
fn parse_mount(m: &str) -> anyhow::Result<MountSpec> {
    let (mut kind, mut source, mut target, mut readonly) = (None, None, None, false);
    for field in m.split(',') {
        let (k, v) = field.split_once('=').map_or((field, None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("type", Some(t)) => kind = Some(t.to_string()),
            ("source" | "src", Some(s)) => source = Some(s.to_string()),
            ("target" | "destination" | "dst", Some(t)) => target = Some(t.to_string()),
            ("readonly" | "ro", None | Some("true" | "1")) => readonly = true,
            ("readonly" | "ro", Some("false" | "0")) => readonly = false,
            _ => bail!("invalid --mount {m:?}: unexpected field {field:?}"),
        }
    }
    let target = target
        .filter(|t| t.starts_with('/'))
        .with_context(|| format!("invalid --mount {m:?}: an absolute target= is required"))?;
    match kind.as_deref() {
        Some("bind") => {
            let source =
                source.with_context(|| format!("invalid --mount {m:?}: source= is required for a bind mount"))?;
            if !std::path::Path::new(&source).exists() {
                bail!("invalid mount config for type \"bind\": bind source path does not exist: {source}");
            }
            Ok(MountSpec { kind: MountKind::Bind, source: PathBuf::from(source), target, readonly })
        }
        Some("tmpfs") => Ok(MountSpec { kind: MountKind::Tmpfs, source: PathBuf::new(), target, readonly }),
        Some("volume") => bail!("invalid --mount {m:?}: named volumes are not supported yet"),
        Some(t) => bail!("invalid --mount {m:?}: unknown type {t:?} (bind, tmpfs)"),
        None => bail!("invalid --mount {m:?}: type= is required"),
    }
}

/// A named volume to mount: its name and where.
struct VolumeUse {
    name: String,
    target: String,
}

/// `-v NAME:/path[:ro]` or `--mount type=volume,…`: the volume (created when missing) as a bind.
fn volume_mount(
    store: &Store,
    name: Option<&str>,
    target: &str,
    readonly: bool,
    uses: &mut Vec<VolumeUse>,
) -> anyhow::Result<MountSpec> {
    if !target.starts_with('/') {
        bail!("invalid volume target {target:?}: the container path must be absolute");
    }
    let v = match name {
        Some(n) => strata_run::volume::create(store, Some(n))?,
        None => strata_run::volume::create_anonymous(store)?,
    };
    uses.push(VolumeUse { name: v.name.clone(), target: target.to_string() });
    Ok(MountSpec { kind: MountKind::Bind, source: v.mountpoint, target: target.to_string(), readonly })
}

fn options(store: &Store, a: &RunArgs) -> anyhow::Result<(RunOptions, Vec<VolumeUse>)> {
    if a.init && a.runtime != "builtin" {
        anyhow::bail!(
            "--init needs the built-in runtime (its init is the strata binary): drop --runtime {} or --init",
            a.runtime
        );
    }
    let lookup = |k: &str| std::env::var(k).ok();
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read env file {}", f.display()))?;
        env.extend(spec::parse_env_file(&text, &lookup)?);
    }
    env.extend(spec::parse_env(&a.env, &lookup)?);
    let mut mounts = Vec::new();
    let mut uses = Vec::new();
    for v in &a.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let named = !v.starts_with('/') && parts.len() >= 2 && !parts[0].is_empty() && !parts[0].contains('/');
        if parts.len() == 1 && v.starts_with('/') {
            // `-v /path`: an anonymous volume, as docker makes.
            mounts.push(volume_mount(store, None, v, false, &mut uses)?);
        } else if named {
            let ro = match parts.get(2) {
                None | Some(&"rw") => false,
                Some(&"ro") => true,
                Some(m) => bail!("invalid volume specification {v:?}: unknown mode {m:?} (ro or rw)"),
            };
            if parts.len() > 3 {
                bail!("invalid volume specification {v:?}: expected NAME:CONTAINER[:ro]");
            }
            mounts.push(volume_mount(store, Some(parts[0]), parts[1], ro, &mut uses)?);
        } else {
            mounts.push(parse_volume(v)?);
        }
    }
    for m in &a.mount {
        if m.split(',').any(|f| f == "type=volume") {
            let field = |k: &[&str]| {
                m.split(',').find_map(|f| f.split_once('=').filter(|(fk, _)| k.contains(fk)).map(|(_, v)| v))
            };
            let target = field(&["target", "destination", "dst"])
                .with_context(|| format!("invalid --mount {m:?}: target= is required"))?;
            let ro = m.split(',').any(|f| f == "readonly" || f == "ro" || f == "readonly=true");
            mounts.push(volume_mount(store, field(&["source", "src"]), target, ro, &mut uses)?);
        } else {
            mounts.push(parse_mount(m)?);
        }
    }
    let opts = RunOptions {
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        read_only: a.read_only,
        init: a.init,
        network: if a.network == "host" { Network::Host } else { Network::Private },
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        memory: a.memory.as_deref().map(spec::parse_memory).transpose()?,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        mounts,
        ..Default::default()
    };
    Ok((opts, uses))
}

/// Fills new volumes from the image's content at their targets.
fn fill_volumes(store: &Store, c: &Container, uses: &[VolumeUse]) -> anyhow::Result<()> {
    for u in uses {
        let v = strata_run::volume::inspect(store, &u.name)?;
        strata_run::volume::fill(&c.rootfs(store), &u.target, &v.mountpoint)?;
    }
    Ok(())
}

/// The image, pulled first when the store does not have it (as `docker run` does).
fn image_for_run(store: &Store, insecure: &[String], name: &str) -> anyhow::Result<strata_store::Image> {
    match store.resolve_image(name) {
        Ok(i) => Ok(i),
        Err(e) if e.kind() == strata_store::ErrorKind::NotFound => {
            let r = strata_registry::Reference::parse(name)?;
            eprintln!("Unable to find image '{}' locally", r.familiar());
            let client = strata_registry::Client::from_docker_config(crate::cmd::registry::options(insecure))?;
            let pulled = client.pull(store, &r, &Default::default(), &|_| {})?;
            eprintln!("Digest: {}", pulled.digest);
            eprintln!("Status: Downloaded newer image for {}", r.familiar());
            Ok(store.resolve_image(&r.to_string())?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What `run` and `create` make before starting anything.
struct Made {
    container: Container,
    image: strata_store::Image,
    options: RunOptions,
    volumes: Vec<VolumeUse>,
    runtime: Box<dyn Runtime>,
}

/// Parses the flags, finds (or pulls) the image and creates the container's record; an error
/// that docker reports with its own exit code comes back as `Err(Ok(code))`.
fn make(store: &Store, insecure: &[String], a: &RunArgs) -> Result<Made, Outcome> {
    type Parts = (RunOptions, Vec<VolumeUse>, Box<dyn Runtime>, strata_store::Image);
    let inner = || -> anyhow::Result<Parts> {
        let (opts, uses) = options(store, a)?;
        let rt = runtime(store, &a.runtime)?;
        let image = image_for_run(store, insecure, &a.image)?;
        Ok((opts, uses, rt, image))
    };
    let (options, volumes, runtime, image) = inner().map_err(Err)?;
    let req = lifecycle::CreateRequest {
        image: &image,
        image_name: &a.image,
        name: a.name.as_deref(),
        options: &options,
        runtime: runtime.name(),
        auto_remove: a.rm,
        volumes: volumes.iter().map(|u| u.name.clone()).collect(),
        open_stdin: a.interactive,
        // As docker: an attached `run -i` closes the container's input when its own ends.
        stdin_once: a.interactive && !a.detach,
    };
    let container = lifecycle::create(store, &req).map_err(exec_error)?;
    Ok(Made { container, image, options, volumes, runtime })
}

/// `strata run`: creates the container, runs it (in the foreground, or detached with its
/// monitor), exits with its status.
pub fn run(store: &Store, insecure: &[String], a: RunArgs) -> Outcome {
    let Made { container: c, image, options: opts, volumes: uses, runtime: rt } = match make(store, insecure, &a) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let bundle = match lifecycle::prepare(store, &c, &image, &opts) {
        Ok(b) => b,
        Err(e) => {
            // The container exists (docker keeps it as "Created" after a failed start) unless --rm.
            let mut c = c;
            if a.rm {
                let _ = strata_run::container::remove_dir(store, &c);
            } else {
                c.status = Status::Exited;
                c.exit_code = Some(exit_code_for(e.kind()));
                c.finished = Some(render::now());
                let _ = c.save(store);
            }
            return exec_error(e);
        }
    };
    fill_volumes(store, &c, &uses)?;
    if a.detach {
        return detach(store, &c);
    }
    if a.tty {
        // A terminal is held by the container's monitor and this process attaches to it, so
        // that the detach keys leave the container running, as with docker.
        let o = attach::Options {
            stdin: a.interactive,
            sig_proxy: true,
            detach_keys: attach::parse_detach_keys(DETACH_KEYS)?,
        };
        return start_attached(store, &c, &o);
    }
    let code = lifecycle::run_foreground(store, c, &bundle, rt.as_ref(), a.interactive)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// Docker's default detach keys.
const DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Starts created container `c` through its monitor, attached from the first byte; exits with
/// its status (1 after a detach, as docker).
fn start_attached(store: &Store, c: &Container, o: &attach::Options) -> Outcome {
    detach_quiet(store, c, true)?;
    let ended = attach::attach(store, c, o)?;
    finish_attach(ended)
}

/// The exit of an attaching command.
fn finish_attach(ended: attach::Ended) -> Outcome {
    match ended {
        attach::Ended::Exited(code) => Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255)),
        attach::Ended::Detached => {
            eprintln!("read escape sequence");
            Ok(1)
        }
    }
}

/// `strata attach`
pub fn attach(store: &Store, a: AttachArgs) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let c = Container::find(store, &a.container)?;
    if c.status != Status::Running || c.lost() {
        eprintln!("You cannot attach to a stopped container, start it first");
        return Ok(1);
    }
    let o = attach::Options {
        stdin: !a.no_stdin && c.open_stdin,
        sig_proxy: a.sig_proxy,
        detach_keys: attach::parse_detach_keys(&a.detach_keys)?,
    };
    let ended = attach::attach(store, &c, &o)?;
    finish_attach(ended)
}

/// Starts the container's monitor and prints its ID (`run -d`).
fn detach(store: &Store, c: &Container) -> Outcome {
    detach_quiet(store, c, false)?;
    println!("{}", c.id);
    Ok(0)
}

/// Starts the container's monitor (this binary, re-executed in its own session so that it
/// outlives the terminal) and waits until it reports the container running, or, with
/// `wait_attach`, until it listens for the client that it waits for before starting it.
fn detach_quiet(store: &Store, c: &Container, wait_attach: bool) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    // /proc/self/exe names this very binary even if the file on disk was replaced since; the
    // monitor never runs inside the container, so the CVE-2019-5736 concern (a container
    // overwriting the host binary through /proc/self/exe) does not arise here.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("--root").arg(store.root()).arg("__monitor");
    if wait_attach {
        cmd.arg("--wait-attach");
    }
    cmd.arg(&c.id);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and only affects the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the container's monitor")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let socket = c.dir(store).join(strata_run::attach::SOCKET);
    loop {
        if wait_attach && socket.exists() {
            break;
        }
        let now = Container::load(store, &c.id).map(|x| x.status);
        match now {
            Ok(Status::Running) | Ok(Status::Exited) => break,
            Err(_) if !c.auto_remove => break,
            _ => {}
        }
        if let Ok(Some(st)) = child.try_wait() {
            if !st.success() && Container::load(store, &c.id).is_ok_and(|x| x.status == Status::Created) {
                bail!("the container's monitor failed ({st})");
            }
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the container did not start within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// `strata create`: the container and its bundle, not started.
pub fn create(store: &Store, insecure: &[String], a: RunArgs, out: &mut dyn Write) -> Outcome {
    let Made { container: c, image, options: opts, volumes: uses, .. } = match make(store, insecure, &a) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    if let Err(e) = lifecycle::prepare(store, &c, &image, &opts) {
        let _ = strata_run::container::remove_dir(store, &c);
        return exec_error(e);
    }
    fill_volumes(store, &c, &uses)?;
    // `start` mounts it again; a created container holds no mount.
    strata_run::sys::unmount(&c.rootfs(store))?;
    writeln!(out, "{}", c.id)?;
    Ok(0)
}

/// `strata start`
pub fn start(store: &Store, a: StartArgs, out: &mut dyn Write) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let attaching = a.attach || a.interactive;
    if attaching && a.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let keys = attach::parse_detach_keys(&a.detach_keys)?;
    let mut failed = false;
    for name in &a.containers {
        let res = (|| -> anyhow::Result<Option<Container>> {
            let mut c = Container::find(store, name)?;
            if c.status == Status::Running && !c.lost() {
                return Ok(attaching.then_some(c));
            }
            lifecycle::remount(store, &c)?;
            c.status = Status::Created;
            c.exit_code = None;
            c.finished = None;
            c.save(store)?;
            detach_quiet(store, &c, attaching)?;
            Ok(attaching.then_some(c))
        })();
        match res {
            Ok(Some(c)) => {
                let o = attach::Options {
                    stdin: a.interactive && c.open_stdin,
                    sig_proxy: true,
                    detach_keys: keys.clone(),
                };
                return finish_attach(attach::attach(store, &c, &o)?);
            }
            Ok(None) => writeln!(out, "{name}")?,
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `strata exec`
pub fn exec(store: &Store, a: ExecArgs) -> Outcome {
    let c = Container::find(store, &a.container)?;
    let rt = runtime(store, &c.runtime)?;
    let lookup = |k: &str| std::env::var(k).ok();
    let env = spec::parse_env(&a.env, &lookup)?;
    let req = lifecycle::ExecRequest {
        args: &a.command,
        env: &env,
        workdir: a.workdir.as_deref(),
        user: a.user.as_deref(),
        detach: a.detach,
        stdin: a.interactive,
        tty: a.tty,
    };
    match lifecycle::exec(store, &c, &req, rt.as_ref()) {
        Ok(code) => Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255)),
        Err(e) if e.kind() == ErrorKind::InvalidState => {
            eprintln!("Error response from daemon: {e}");
            Ok(1)
        }
        Err(e) => exec_error(e),
    }
}

/// `strata diff CONTAINER`
pub fn diff(store: &Store, container: &str, out: &mut dyn Write) -> Outcome {
    let c = Container::find(store, container)?;
    for (change, path) in strata_run::diff::diff(store, &c)? {
        writeln!(out, "{} {path}", change.letter())?;
    }
    Ok(0)
}

/// `strata commit`
pub fn commit(store: &Store, a: CommitArgs, out: &mut dyn Write) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let c = Container::find(store, &a.container)?;
    let reference = a.reference.as_deref().map(strata_store::Reference::parse).transpose()?;
    let digest = strata_run::container::image_digest(&c).context("the container names no valid image")?;
    let parent = store.images()?.into_iter().find(|i| i.digest() == &digest).map(Ok).unwrap_or_else(|| {
        let d = strata_store::Descriptor::new(strata_store::MediaType::ImageManifest, 0, digest.clone());
        store.load_image(&d)
    })?;
    let opts = strata_store::commit::CommitOptions {
        message: a.message.clone(),
        author: a.author.clone(),
        changes: a.change.clone(),
        compression: match a.compression {
            LayerCompression::Gzip => strata_store::image::Compression::Gzip,
            LayerCompression::Zstd => strata_store::image::Compression::Zstd,
        },
        created_by: c.command.join(" "),
    };
    let running = c.status == Status::Running;
    let rt = if running && a.pause { Some(runtime(store, &c.runtime)?) } else { None };
    if let Some(rt) = &rt {
        rt.pause(&c.id, true)?;
    }
    let res = strata_store::commit::commit(store, &parent, &c.dir(store).join("upper"), reference.as_ref(), &opts);
    if let Some(rt) = &rt {
        let _ = rt.pause(&c.id, false);
    }
    let image = res?;
    writeln!(out, "{}", image.id())?;
    Ok(0)
}

/// `strata __monitor ID`: runs in the background for a detached container.
pub fn monitor(store: &Store, a: MonitorArgs) -> Outcome {
    let c = Container::load(store, &a.id)?;
    let rt = runtime(store, &c.runtime)?;
    let code = strata_run::monitor::monitor(store, &a.id, rt.as_ref(), a.wait_attach)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// `strata __builtin`: the built-in runtime's process; exits with the container's (or the
/// exec'd process's) status.
pub fn builtin(a: BuiltinArgs) -> Outcome {
    let code = match a.role {
        BuiltinRole::Run { bundle, console_socket, id } => {
            strata_run::builtin::run_container(&a.state, &bundle, &id, console_socket.as_deref())?
        }
        BuiltinRole::Exec { process, detach, id } => {
            strata_run::builtin::exec_in_container(&a.state, &id, &process, detach)?
        }
    };
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// A container that must be running.
fn running(store: &Store, name: &str) -> anyhow::Result<Container> {
    let c = Container::find(store, name)?;
    if c.status != Status::Running || c.lost() {
        bail!("container {name} is not running");
    }
    Ok(c)
}

/// Waits until `id` is no longer running (or its record is gone), up to `timeout`.
fn wait_exit(store: &Store, id: &str, timeout: std::time::Duration) -> Option<Container> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match Container::load(store, id) {
            Ok(c) if c.status == Status::Running && !c.lost() => {}
            Ok(c) => return Some(c),
            Err(_) => return None,
        }
        if std::time::Instant::now() > deadline {
            return Container::load(store, id).ok();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let sig = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        _ => bail!("invalid signal: {s}"),
    };
    Ok(sig)
}

/// Runs `f` for each named container as docker's multi-container commands do: the name on
/// stdout when it worked, docker's error line on stderr when not, exit 1 if any failed.
fn each(names: &[String], out: &mut dyn Write, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> Outcome {
    let mut failed = false;
    for name in names {
        match f(name) {
            Ok(()) => writeln!(out, "{name}")?,
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `strata stop`
pub fn stop(store: &Store, a: StopArgs, out: &mut dyn Write) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    each(&a.containers, out, |name| {
        let c = Container::find(store, name)?;
        if c.status != Status::Running {
            return Ok(());
        }
        let rt = runtime(store, &c.runtime)?;
        let _ = rt.kill(&c.id, libc::SIGTERM);
        let left = wait_exit(store, &c.id, std::time::Duration::from_secs(a.time));
        if left.is_some_and(|c| c.status == Status::Running) {
            let _ = rt.kill(&c.id, libc::SIGKILL);
            wait_exit(store, &c.id, std::time::Duration::from_secs(10));
        }
        Ok(())
    })
}

/// `strata kill`
pub fn kill(store: &Store, a: KillArgs, out: &mut dyn Write) -> Outcome {
    let sig = parse_signal(&a.signal)?;
    each(&a.containers, out, |name| {
        let c = running(store, name)?;
        Ok(runtime(store, &c.runtime)?.kill(&c.id, sig)?)
    })
}

/// `strata wait`
pub fn wait(store: &Store, a: WaitArgs, out: &mut dyn Write) -> Outcome {
    let mut failed = false;
    for name in &a.containers {
        match Container::find(store, name) {
            Ok(c) => {
                let done = wait_exit(store, &c.id, std::time::Duration::from_secs(u64::MAX / 4));
                let code = match done {
                    Some(d) if d.lost() => strata_run::container::LOST_EXIT_CODE,
                    Some(d) => d.exit_code.unwrap_or(0),
                    None => c.exit_code.unwrap_or(0),
                };
                writeln!(out, "{code}")?;
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `strata logs`
pub fn logs(store: &Store, a: LogsArgs) -> Outcome {
    let c = Container::find(store, &a.container)?;
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}: a number or \"all\""))?),
    };
    let print = |r: &strata_run::monitor::LogRecord| -> std::io::Result<()> {
        let line = if a.timestamps { format!("{} {}", r.time, r.log) } else { r.log.clone() };
        if r.stream == "stderr" {
            std::io::stderr().write_all(line.as_bytes())
        } else {
            let mut o = std::io::stdout();
            o.write_all(line.as_bytes())?;
            o.flush()
        }
    };
    let recs = strata_run::monitor::read_log(store, &c)?;
    let skip = tail.map_or(0, |n| recs.len().saturating_sub(n));
    for r in &recs[skip..] {
        print(r)?;
    }
    if a.follow {
        let mut seen = recs.len();
        loop {
            let running = Container::load(store, &c.id).is_ok_and(|x| x.status == Status::Running && !x.lost());
            let recs = strata_run::monitor::read_log(store, &c)?;
            for r in recs.iter().skip(seen) {
                print(r)?;
            }
            seen = recs.len();
            if !running {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(0)
}

fn exit_code_for(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::CommandNotFound => 127,
        ErrorKind::NotExecutable => 126,
        _ => 125,
    }
}

/// Docker's exit codes for a command that cannot run: 127 not found, 126 not executable.
fn exec_error(e: strata_run::Error) -> Outcome {
    match e.kind() {
        ErrorKind::CommandNotFound | ErrorKind::NotExecutable => {
            eprintln!("Error: failed to create task for container: {e}");
            Ok(exit_code_for(e.kind()) as u8)
        }
        _ => Err(e.into()),
    }
}

/// docker's STATUS column: `Up 5 seconds`, `Exited (143) 3 seconds ago`, `Created`.
fn status_text(c: &Container) -> String {
    match c.status {
        Status::Created => "Created".to_string(),
        Status::Running => format!("Up {}", render::duration(render::now() - c.started.unwrap_or(c.created))),
        Status::Exited => format!("Exited ({}) {}", c.exit_code.unwrap_or(0), render::ago(c.finished)),
    }
}

/// `strata ps`
pub fn ps(store: &Store, a: PsArgs, out: &mut dyn Write) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let filter = PsFilter::parse(store, &a.filter)?;
    let all = Container::list(store)?;
    // As docker: a status filter lists what it names, running or not.
    let every = a.all || !filter.status.is_empty() || !filter.exited.is_empty();
    let shown: Vec<&Container> =
        all.iter().filter(|c| (every || c.status == Status::Running) && filter.matches(store, c)).collect();
    if a.quiet {
        for c in shown {
            writeln!(out, "{}", if a.no_trunc { c.id.as_str() } else { c.short_id() })?;
        }
        return Ok(0);
    }
    if a.format == Format::Json {
        for c in shown {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "ID": c.id, "Names": c.name, "Image": c.image_name, "ImageID": c.image_id,
                    "Command": c.command.join(" "), "CreatedAt": c.created, "State": c.status,
                    "Status": status_text(c), "ExitCode": c.exit_code, "Runtime": c.runtime,
                })
            )?;
        }
        return Ok(0);
    }
    let mut t = Table::new(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]);
    for c in shown {
        let cmd = format!("\"{}\"", c.command.join(" "));
        t.row(vec![
            if a.no_trunc { c.id.clone() } else { c.short_id().to_string() },
            c.image_name.clone(),
            if a.no_trunc { cmd } else { render::ellipsis(&cmd, 22) },
            render::ago(Some(c.created)),
            status_text(c),
            String::new(),
            c.name.clone(),
        ]);
    }
    t.print(out)?;
    Ok(0)
}

/// `strata rm`
pub fn rm(store: &Store, a: RmArgs, out: &mut dyn Write) -> Outcome {
    each(&a.containers, out, |name| {
        let c = Container::find(store, name)?;
        let rt = runtime(store, &c.runtime).ok();
        lifecycle::remove(store, &c, a.force, rt.as_deref())?;
        if a.volumes {
            strata_run::volume::remove_anonymous(store, &c)?;
        }
        Ok(())
    })
}

/// `ps --filter`: docker's keys; values of one key are alternatives, keys all apply.
struct PsFilter {
    status: Vec<String>,
    name: Vec<String>,
    id: Vec<String>,
    exited: Vec<i32>,
    /// (what was asked, its diff IDs when it names an image here).
    ancestor: Vec<(String, Option<Vec<String>>)>,
}

impl PsFilter {
    fn parse(store: &Store, filters: &[String]) -> anyhow::Result<PsFilter> {
        let mut f = PsFilter { status: vec![], name: vec![], id: vec![], exited: vec![], ancestor: vec![] };
        for raw in filters {
            let Some((k, v)) = raw.split_once('=') else {
                bail!("bad format of filter {raw:?} (expected name=value)");
            };
            match k {
                "status" => {
                    const KNOWN: &[&str] =
                        &["created", "restarting", "running", "removing", "paused", "exited", "dead"];
                    if !KNOWN.contains(&v) {
                        bail!("invalid filter 'status={v}': the status is one of {}", KNOWN.join(", "));
                    }
                    f.status.push(v.to_string());
                }
                "name" => f.name.push(v.to_string()),
                "id" => f.id.push(v.to_string()),
                "exited" => f
                    .exited
                    .push(v.parse().map_err(|_| anyhow::anyhow!("invalid filter 'exited={v}': not an exit code"))?),
                "ancestor" => {
                    let layers = store.resolve_image(v).ok().map(|i| i.config.rootfs().diff_ids().clone());
                    f.ancestor.push((v.to_string(), layers));
                }
                _ => bail!("invalid filter '{k}' (ps filters: status, name, id, exited, ancestor)"),
            }
        }
        Ok(f)
    }

    fn matches(&self, store: &Store, c: &Container) -> bool {
        let state = match c.status {
            Status::Created => "created",
            Status::Running if c.lost() => "exited",
            Status::Running => "running",
            Status::Exited => "exited",
        };
        let name_ok = |pat: &str| match (pat.strip_prefix('^'), pat.strip_suffix('$')) {
            (Some(p), _) if p.ends_with('$') => c.name == p[..p.len() - 1],
            (Some(p), _) => c.name.starts_with(p),
            (None, Some(p)) => c.name.ends_with(p),
            (None, None) => c.name.contains(pat),
        };
        let ancestor_ok = |(asked, layers): &(String, Option<Vec<String>>)| {
            if c.image_name == *asked {
                return true;
            }
            // The image or one built on it: its layers start with the ancestor's.
            let Some(want) = layers else { return false };
            let mine = strata_run::container::image_digest(c)
                .and_then(|d| store.read_manifest(&d).ok())
                .and_then(|m| store.read_config(m.config().digest()).ok())
                .map(|(cfg, _)| cfg.rootfs().diff_ids().clone());
            mine.is_some_and(|m| m.len() >= want.len() && m[..want.len()] == want[..])
        };
        (self.status.is_empty() || self.status.iter().any(|s| s == state))
            && (self.name.is_empty() || self.name.iter().any(|n| name_ok(n)))
            && (self.id.is_empty() || self.id.iter().any(|i| c.id.starts_with(i.as_str())))
            && (self.exited.is_empty() || (state == "exited" && self.exited.iter().any(|e| Some(*e) == c.exit_code)))
            && (self.ancestor.is_empty() || self.ancestor.iter().any(ancestor_ok))
    }
}

/// docker's container inspect JSON (the fields strata has).
pub fn inspect_value(store: &Store, c: &Container) -> serde_json::Value {
    let time =
        |t: Option<i64>| t.map(strata_store::time::format_rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let dir = c.dir(store);
    let running = c.status == Status::Running && !c.lost();
    serde_json::json!({
        "Id": c.id,
        "Created": strata_store::time::format_rfc3339(c.created),
        "Path": c.command.first().cloned().unwrap_or_default(),
        "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": if running { "running" } else if c.status == Status::Created { "created" } else { "exited" },
            "Running": running,
            "Pid": if running { c.pid.unwrap_or(0) } else { 0 },
            "ExitCode": c.exit_code.unwrap_or(0),
            "StartedAt": time(c.started),
            "FinishedAt": time(c.finished),
        },
        "Image": c.image_id,
        "Name": format!("/{}", c.name),
        "HostConfig": { "AutoRemove": c.auto_remove, "Runtime": c.runtime },
        "Config": { "Image": c.image_name, "Cmd": c.command },
        "LogPath": strata_run::monitor::log_path(store, c),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("rootfs"),
            }
        },
        "Manifest": c.image,
    })
}

/// `strata container inspect`
pub fn inspect(store: &Store, a: ContainerInspectArgs, out: &mut dyn Write) -> Outcome {
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let mut values = Vec::new();
    let mut failed = false;
    for name in &a.containers {
        match Container::find(store, name) {
            Ok(c) => values.push(inspect_value(store, &c)),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    serde_json::to_writer_pretty(&mut *out, &values)?;
    writeln!(out)?;
    Ok(if failed { 1 } else { 0 })
}

/// `strata rename`
pub fn rename(store: &Store, a: RenameArgs) -> Outcome {
    strata_run::container::check_name(&a.new_name)?;
    let mut c = Container::find(store, &a.container)?;
    if let Some(other) = Container::list(store)?.into_iter().find(|o| o.name == a.new_name && o.id != c.id) {
        bail!(
            "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
            a.new_name,
            other.id
        );
    }
    c.name = a.new_name;
    c.save(store)?;
    Ok(0)
}

/// `strata restart`: stop (with the timeout), then start.
pub fn restart(store: &Store, a: StopArgs, out: &mut dyn Write) -> Outcome {
    let mut sink = Vec::new();
    let names = a.containers.clone();
    let code = stop(store, a, &mut sink)?;
    if code != 0 {
        return Ok(code);
    }
    start(
        store,
        StartArgs { attach: false, interactive: false, detach_keys: DETACH_KEYS.into(), containers: names },
        out,
    )
}

/// `strata container prune`
pub fn prune(store: &Store, a: ContainerPruneArgs, out: &mut dyn Write) -> Outcome {
    if !a.force
        && !crate::cmd::confirm("WARNING! This will remove all stopped containers.\nAre you sure you want to continue?")
    {
        return Ok(0);
    }
    lifecycle::reap_lost(store, &store.root().join("runtime"))?;
    let mut freed = 0u64;
    writeln!(out, "Deleted Containers:")?;
    for c in Container::list(store)? {
        if c.status == Status::Running {
            continue;
        }
        freed += strata_store::gc::du(&c.dir(store).join("upper"));
        lifecycle::remove(store, &c, false, None)?;
        writeln!(out, "{}", c.id)?;
    }
    // What a crash left of containers whose record was not written durably yet (`--rm` ones).
    for dir in strata_run::container::orphans(store, std::time::Duration::from_secs(60)) {
        freed += strata_store::gc::du(&dir.join("upper"));
        strata_run::container::remove_orphan(&dir)?;
        writeln!(out, "{}", dir.file_name().unwrap_or_default().to_string_lossy())?;
    }
    writeln!(out, "\nTotal reclaimed space: {}", render::size(freed))?;
    Ok(0)
}

/// `CONTAINER:PATH` → (container, path); a host path (absolute, relative with `/` or `.`) → None.
fn container_path(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':').filter(|(c, p)| !c.is_empty() && !p.is_empty())
}

/// `strata cp`: a running container is paused during the copy (see `strata_run::copy`).
pub fn cp(store: &Store, a: CpArgs) -> Outcome {
    let name = container_path(&a.source).or(container_path(&a.destination)).map(|(c, _)| c.to_string());
    let paused = match name.as_deref().map(|n| Container::find(store, n)) {
        Some(Ok(c)) if c.status == Status::Running && !c.lost() => {
            let rt = runtime(store, &c.runtime)?;
            rt.pause(&c.id, true)?;
            Some((rt, c.id))
        }
        _ => None,
    };
    let r = cp_paused(store, &a);
    if let Some((rt, id)) = paused {
        let _ = rt.pause(&id, false);
    }
    r
}

fn cp_paused(store: &Store, a: &CpArgs) -> Outcome {
    match (container_path(&a.source), container_path(&a.destination)) {
        (Some((c, src)), None) => {
            let c = Container::find(store, c)?;
            if a.destination == "-" {
                let mut out = std::io::stdout().lock();
                strata_run::copy::archive_out(store, &c, src, &mut out)?;
                out.flush()?;
            } else {
                strata_run::copy::copy_out(store, &c, src, std::path::Path::new(&a.destination))?;
            }
        }
        (None, Some((c, dest))) => {
            let c = Container::find(store, c)?;
            if a.source == "-" {
                strata_run::copy::archive_in(store, &c, &mut std::io::stdin().lock(), dest)?;
            } else {
                strata_run::copy::copy_in(store, &c, std::path::Path::new(&a.source), dest)?;
            }
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source (CONTAINER:PATH)"),
    }
    Ok(0)
}

/// `strata export`
pub fn export(store: &Store, a: ExportArgs) -> Outcome {
    let c = Container::find(store, &a.container)?;
    match &a.output {
        Some(p) => {
            let tmp = p.with_extension("strata-tmp");
            let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            strata_run::copy::export(store, &c, &mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, p).with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            strata_run::copy::export(store, &c, &mut out)?;
            out.flush()?;
        }
    }
    Ok(0)
}

/// `strata volume …`
pub fn volume(store: &Store, cmd: crate::args::VolumeCommand, out: &mut dyn Write) -> Outcome {
    use crate::args::VolumeCommand as V;
    match cmd {
        V::Create(a) => {
            let v = strata_run::volume::create(store, a.name.as_deref())?;
            writeln!(out, "{}", v.name)?;
        }
        V::Ls(a) => {
            let vols = strata_run::volume::list(store)?;
            if a.quiet {
                for v in vols {
                    writeln!(out, "{}", v.name)?;
                }
            } else if a.format == Format::Json {
                for v in vols {
                    writeln!(out, "{}", serde_json::to_string(&v)?)?;
                }
            } else {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in vols {
                    t.row(vec![v.driver, v.name]);
                }
                t.print(out)?;
            }
        }
        V::Inspect(a) => {
            let mut vals = Vec::new();
            let mut failed = false;
            for n in &a.names {
                match strata_run::volume::inspect(store, n) {
                    Ok(v) => vals.push(v),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            serde_json::to_writer_pretty(&mut *out, &vals)?;
            writeln!(out)?;
            return Ok(if failed { 1 } else { 0 });
        }
        V::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                match strata_run::volume::remove(store, n) {
                    Ok(()) => writeln!(out, "{n}")?,
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(if failed { 1 } else { 0 });
        }
        V::Prune(a) => {
            if !a.force && !crate::cmd::confirm("WARNING! This will remove all local volumes not used by at least one container.\nAre you sure you want to continue?") {
                return Ok(0);
            }
            let gone = store.prune_volumes(false)?;
            writeln!(out, "Deleted Volumes:")?;
            let mut total = 0;
            for (n, size) in &gone {
                writeln!(out, "{n}")?;
                total += size;
            }
            writeln!(out, "\nTotal reclaimed space: {}", render::size(total))?;
        }
    }
    Ok(0)
}
