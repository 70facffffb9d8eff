//! The container lifecycle over a runtime plugin: create the record, prepare the bundle (overlay
//! rootfs over the image's snapshots, `/etc` files, `config.json`), run, record the exit, clean up.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use strata_store::{Image, Store};

use crate::container::{self, Container, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Runtime;
use crate::spec::{self, RunOptions};
use crate::sys::{self, Overlay};

/// How a container is made.
pub struct CreateRequest<'a> {
    /// The image.
    pub image: &'a Image,
    /// What the user called it.
    pub image_name: &'a str,
    /// `--name`, else a generated one.
    pub name: Option<&'a str>,
    /// The run flags.
    pub options: &'a RunOptions,
    /// The runtime plugin's name.
    pub runtime: &'a str,
    /// `--rm`.
    pub auto_remove: bool,
    /// Named volumes mounted.
    pub volumes: Vec<String>,
    /// `-i`: keep its standard input open.
    pub open_stdin: bool,
    /// Close its standard input when the attached client's ends (`run -i` in the foreground).
    pub stdin_once: bool,
}

/// Now, in Unix seconds.
fn now() -> i64 {
    strata_store::store::now_unix()
}

/// Creates a container (status `created`): its record and folders.
pub fn create(store: &Store, req: &CreateRequest<'_>) -> Result<Container> {
    let existing = Container::list(store)?;
    let name = match req.name {
        Some(n) => {
            container::check_name(n)?;
            n.to_string()
        }
        None => {
            let taken: Vec<String> = existing.iter().map(|c| c.name.clone()).collect();
            container::generate_name(&taken)?
        }
    };
    let command = spec::process_args(req.image.config.config().as_ref(), req.options)?;
    let c = Container {
        id: String::new(),
        name,
        image: req.image.digest().to_string(),
        image_id: req.image.id().to_string(),
        image_name: req.image_name.to_string(),
        command,
        created: now(),
        status: Status::Created,
        pid: None,
        started: None,
        exit_code: None,
        finished: None,
        runtime: req.runtime.to_string(),
        auto_remove: req.auto_remove,
        monitor: None,
        volumes: req.volumes.clone(),
        tty: req.options.tty,
        open_stdin: req.open_stdin,
        stdin_once: req.stdin_once,
    };
    container::create_record(store, c, &existing)
}

/// Checks that `args[0]` can be executed in the rootfs, as the runtime will look for it: docker
/// answers 127 for a command that does not exist and 126 for one that cannot be run, and the
/// runtimes only print a message and exit 1, so strata finds out first.
pub fn check_command(rootfs: &Path, args: &[String], env: &[String], cwd: &str) -> Result<()> {
    let Some(prog) = args.first() else { return Err(Error::invalid("no command specified")) };
    let candidates: Vec<String> = if prog.contains('/') {
        let p = if prog.starts_with('/') { prog.clone() } else { format!("{}/{prog}", cwd.trim_end_matches('/')) };
        vec![p]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{prog}", d.trim_end_matches('/'))).collect()
    };
    let root =
        rustix::fs::open(rootfs, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
            .map_err(|e| Error::io("open", rootfs, e.into()))?;
    let mut denied = None;
    for c in &candidates {
        // Resolve as the container will see it: symlinks stay inside the rootfs.
        let how = rustix::fs::ResolveFlags::IN_ROOT;
        let f = match rustix::fs::openat2(
            &root,
            c.as_str(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            how,
        ) {
            Ok(f) => f,
            Err(_) => continue,
        };
        let st = rustix::fs::fstat(&f).map_err(|e| Error::io("stat", Path::new(c), e.into()))?;
        let is_file = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        if is_file && st.st_mode & 0o111 != 0 {
            return Ok(());
        }
        denied.get_or_insert_with(|| c.clone());
    }
    match denied {
        Some(p) => Err(Error::new(
            ErrorKind::NotExecutable,
            format!("exec: \"{p}\": permission denied: the command cannot be run (not an executable file)"),
        )),
        None => {
            Err(Error::new(ErrorKind::CommandNotFound, format!("exec: \"{prog}\": executable file not found in $PATH")))
        }
    }
}

/// The containers' init layer, between their image and their writable layer: the mount
/// points the runtime needs (`/proc`, `/sys`, `/dev/*`, the `/etc` files strata binds), made
/// here so the runtime does not create them in the writable layer, where `diff` and `commit`
/// would see them (docker's "-init" layer). It holds only empty mount points, the same for
/// every container, so one read-only copy under the store's `runtime/` serves them all; it is
/// made on first use (idempotently: concurrent first uses agree), its last entry last.
fn init_layer(store: &Store) -> Result<PathBuf> {
    let init = store.root().join("runtime").join("init-layer");
    const LAST: &str = "etc/resolv.conf";
    if init.join(LAST).exists() {
        return Ok(init);
    }
    for d in ["proc", "sys", "dev/pts", "dev/shm", "dev/mqueue", "etc"] {
        let p = init.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    for f in ["etc/hostname", "etc/hosts", LAST] {
        let p = init.join(f);
        if !p.exists() {
            std::fs::write(&p, b"").map_err(|e| Error::io("create", &p, e))?;
        }
    }
    Ok(init)
}

/// Mounts the container's rootfs and writes its bundle; returns the bundle's folder.
pub fn prepare(store: &Store, c: &Container, image: &Image, opts: &RunOptions) -> Result<PathBuf> {
    let dir = c.dir(store);
    let rootfs = c.rootfs(store);
    if !sys::is_mounted(&rootfs) {
        let mut lower = vec![init_layer(store)?];
        lower.extend(store.snapshot_mounts(image)?);
        Overlay { lower, upper: dir.join("upper"), work: dir.join("work") }.mount(&rootfs)?;
    }
    let res = (|| {
        let cfg = image.config.config().as_ref();
        let user = spec::resolve_user(&rootfs, spec::user_spec(cfg, opts))?;
        let hostname = spec::container_hostname(opts, &c.id);
        let env = spec::environment(cfg, opts, &hostname);
        let cwd = spec::working_dir(cfg, opts)?;
        check_command(&rootfs, &c.command, &env, &cwd)?;
        let (etc, mut files) = etc_files(&dir, &hostname);
        let spec = spec::build_spec(cfg, opts, &user, &c.id, &rootfs, &etc)?;
        let bytes = serde_json::to_vec_pretty(&spec)
            .map_err(|e| Error::new(ErrorKind::Runtime, "cannot encode config.json").with_source(e))?;
        files.push(("config.json".to_string(), bytes, 0o600));
        // The bundle's files, durable with one directory fsync; a `--rm` container's need not be
        // (a crash ends it, and prune removes what is left).
        let refs: Vec<(&str, &[u8], u32)> = files.iter().map(|(n, b, m)| (n.as_str(), b.as_slice(), *m)).collect();
        if c.auto_remove {
            strata_store::fsutil::replace_all_volatile(&dir, &refs)?;
        } else {
            strata_store::fsutil::write_atomic_all(&dir, &refs)?;
        }
        Ok(dir.clone())
    })();
    if res.is_err() {
        let _ = sys::unmount(&rootfs);
    }
    res
}

/// The container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`: the (target, source)
/// pairs to bind, and the files to write into its folder.
#[allow(clippy::type_complexity)]
fn etc_files(dir: &Path, hostname: &str) -> (Vec<(String, PathBuf)>, Vec<(String, Vec<u8>, u32)>) {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    );
    // The host's resolver config, without loopback name servers (unreachable from the
    // container's own network namespace), as docker does.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv: String = host_resolv
        .lines()
        .filter(|l| {
            let ns = l.trim().strip_prefix("nameserver").map(str::trim);
            !ns.is_some_and(|a| a.starts_with("127.") || a == "::1")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut binds = Vec::new();
    let mut files = Vec::new();
    for (name, body) in [("hostname", format!("{hostname}\n")), ("hosts", hosts), ("resolv.conf", resolv)] {
        binds.push((format!("/etc/{name}"), dir.join(name)));
        files.push((name.to_string(), body.into_bytes(), 0o644));
    }
    (binds, files)
}

/// Runs a created container in the foreground through `runtime` (without a terminal: a
/// terminal is held by the container's monitor, [`crate::monitor`]): records it running,
/// waits, records the exit, unmounts; removes it when it was created with `--rm`. Returns the
/// exit code.
pub fn run_foreground(
    store: &Store,
    mut c: Container,
    bundle: &Path,
    runtime: &dyn Runtime,
    stdin: bool,
) -> Result<i32> {
    // Output goes to this process's stdout and stderr as it arrives, and into the log, so that
    // `logs` works for foreground containers too.
    let log = crate::monitor::open_log(store, &c)?;
    let input = if stdin {
        std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| Error::io("use", Path::new("stdin"), e))?
    } else {
        std::fs::File::open("/dev/null").map_err(|e| Error::io("open", Path::new("/dev/null"), e))?.into()
    };
    let (out, out_w) = std::io::pipe().map_err(|e| Error::io("make a pipe for", bundle, e))?;
    let (err, err_w) = std::io::pipe().map_err(|e| Error::io("make a pipe for", bundle, e))?;
    let waiter = runtime.spawn(&c.id, bundle, [input, out_w.into(), err_w.into()])?;
    mark_running(store, &mut c)?;
    let (l1, l2) = (log.clone(), log);
    let t1 = std::thread::spawn(move || crate::monitor::pump(out, "stdout", l1, Some(Box::new(std::io::stdout()))));
    let t2 = std::thread::spawn(move || crate::monitor::pump(err, "stderr", l2, Some(Box::new(std::io::stderr()))));
    let res = waiter.wait();
    let _ = t1.join();
    let _ = t2.join();
    finish(store, c, *res.as_ref().unwrap_or(&125))?;
    res
}

/// Records that this process watches `c`, now running.
pub fn mark_running(store: &Store, c: &mut Container) -> Result<()> {
    let me = std::process::id();
    c.status = Status::Running;
    c.started = Some(now());
    c.monitor = strata_store::fsutil::process_start_ticks(me).map(|t| (me, t));
    c.save_volatile(store)
}

/// Records the exit of `c`, unmounts its rootfs, and removes it when it was made with `--rm`.
pub fn finish(store: &Store, mut c: Container, code: i32) -> Result<()> {
    c.status = Status::Exited;
    c.finished = Some(now());
    c.exit_code = Some(code);
    c.pid = None;
    c.monitor = None;
    // `runc run` and `crun run` delete their container when it exits: nothing to tell them.
    let _ = sys::unmount(&c.rootfs(store));
    if c.auto_remove {
        // As docker: `--rm` takes the container's anonymous volumes along.
        let _ = crate::volume::remove_anonymous(store, &c);
        container::remove_dir(store, &c)
    } else {
        c.save(store)
    }
}

/// Brings the records of containers whose monitor died up to date: the container is killed
/// through its runtime and recorded as exited ([`container::LOST_EXIT_CODE`]).
pub fn reap_lost(store: &Store, runtime_root: &Path) -> Result<()> {
    for c in Container::list(store)? {
        if c.lost() {
            if let Ok(rt) = crate::runtime::open(&c.runtime, runtime_root) {
                let _ = rt.kill(&c.id, libc::SIGKILL);
                let _ = rt.delete(&c.id);
            }
            finish(store, c, container::LOST_EXIT_CODE)?;
        }
    }
    Ok(())
}

/// Removes a container that is not running (or, with `force`, kills it first).
pub fn remove(store: &Store, c: &Container, force: bool, runtime: Option<&dyn Runtime>) -> Result<()> {
    if c.status == Status::Running {
        if !force {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name
                ),
            ));
        }
        if let Some(rt) = runtime {
            let _ = rt.kill(&c.id, libc::SIGKILL);
        }
        // Let the monitor record the exit and let go of the folder before it is removed.
        if let Some((pid, start)) = c.monitor.filter(|&(pid, _)| pid != std::process::id()) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while strata_store::fsutil::process_alive(pid, start) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if let Some(rt) = runtime {
            let _ = rt.delete(&c.id);
        }
    }
    container::remove_dir(store, c)
}

/// What `exec` runs in a container.
pub struct ExecRequest<'a> {
    /// Command and arguments.
    pub args: &'a [String],
    /// Extra `KEY=VAL` variables.
    pub env: &'a [String],
    /// Working directory (default: the container's).
    pub workdir: Option<&'a str>,
    /// User (default: the container's).
    pub user: Option<&'a str>,
    /// Do not wait.
    pub detach: bool,
    /// `-i`: this process's stdin is the command's.
    pub stdin: bool,
    /// `-t`: the command gets a terminal, relayed to this process's.
    pub tty: bool,
}

/// Runs a command in running container `c` (joining its namespaces and cgroup, through the
/// runtime), with this process's stdio; returns its exit code. Docker's 126/127 as for `run`.
pub fn exec(store: &Store, c: &Container, req: &ExecRequest<'_>, runtime: &dyn Runtime) -> Result<i32> {
    if c.status != Status::Running || c.lost() {
        return Err(Error::new(ErrorKind::InvalidState, format!("container {} is not running", c.name)));
    }
    let dir = c.dir(store);
    let cfg_path = dir.join("config.json");
    let bytes = std::fs::read(&cfg_path).map_err(|e| Error::io("read", &cfg_path, e))?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::Runtime, format!("{} is not a runtime config", cfg_path.display())).with_source(e)
    })?;
    let mut process =
        spec.process().clone().ok_or_else(|| Error::new(ErrorKind::Runtime, "the container has no process"))?;
    let mut env = process.env().clone().unwrap_or_default();
    for e in req.env {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let cwd = req.workdir.map(str::to_string).unwrap_or_else(|| process.cwd().to_string_lossy().into_owned());
    if !cwd.starts_with('/') {
        return Err(Error::invalid(format!("the working directory {cwd:?} is not an absolute path")));
    }
    check_command(&c.rootfs(store), req.args, &env, &cwd)?;
    if let Some(u) = req.user {
        let user = spec::resolve_user(&c.rootfs(store), Some(u))?;
        let mut pu = process.user().clone();
        pu.set_uid(user.uid);
        pu.set_gid(user.gid);
        pu.set_additional_gids(Some(user.additional_gids.clone()));
        process.set_user(pu);
    }
    process.set_args(Some(req.args.to_vec()));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(&cwd));
    if req.tty && req.detach {
        return Err(Error::invalid("exec -t needs a terminal to relay: it cannot be combined with -d"));
    }
    process.set_terminal(Some(req.tty));
    // The caller's terminal size, applied by the runtime before the command starts.
    let size = if req.tty { terminal_size() } else { None };
    let size = size.and_then(|(rows, cols)| {
        oci_spec::runtime::BoxBuilder::default().height(u64::from(rows)).width(u64::from(cols)).build().ok()
    });
    process.set_console_size(size);
    let p = dir.join(format!("exec-{}.json", strata_store::fsutil::unique()));
    let bytes = serde_json::to_vec(&process)
        .map_err(|e| Error::new(ErrorKind::Runtime, "cannot encode the process").with_source(e))?;
    std::fs::write(&p, bytes).map_err(|e| Error::io("write", &p, e))?;
    let r = runtime.exec(&c.id, &p, req.detach, req.stdin);
    let _ = std::fs::remove_file(&p);
    r
}

/// The size (rows, columns) of the terminal on this process's stdout or stdin.
pub fn terminal_size() -> Option<(u16, u16)> {
    [1, 0].into_iter().find_map(|fd| {
        // SAFETY: TIOCGWINSZ fills a plain winsize.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
    })
}

/// Mounts the rootfs of an existing container again (to start it after it exited).
pub fn remount(store: &Store, c: &Container) -> Result<()> {
    let rootfs = c.rootfs(store);
    if sys::is_mounted(&rootfs) {
        return Ok(());
    }
    let digest = container::image_digest(c)
        .ok_or_else(|| Error::new(ErrorKind::Store, format!("container {} names no valid image", c.name)))?;
    let manifest = store.read_manifest(&digest)?;
    let (config, _) = store.read_config(manifest.config().digest())?;
    let dir = c.dir(store);
    let mut lower = vec![init_layer(store)?];
    for d in config.rootfs().diff_ids().iter().rev() {
        let d = strata_store::digest::parse(d)?;
        if !store.has_snapshot(&d) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("layer {d} of the container's image is not in the store"),
            ));
        }
        lower.push(store.snapshot_path(&d)?.join("fs"));
    }
    Overlay { lower, upper: dir.join("upper"), work: dir.join("work") }.mount(&rootfs)
}
