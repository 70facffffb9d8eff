//! Containers: `strata run` through the default built-in runtime, and every runtime plugin
//! (builtin, runc, and crun where it works on the host) in [`runtime_plugins_agree`], with
//! images the tests make from busybox-static.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::util::{Run, TestEnv};

/// busybox applets the tests use.
const APPLETS: &[&str] =
    &["sh", "ls", "cat", "echo", "id", "pwd", "hostname", "grep", "touch", "sleep", "true", "false", "env", "mkdir"];

/// Whether containers can run here (root, runc, busybox); in CI they must.
pub(crate) fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && crate::util::have("runc") && Path::new("/bin/busybox").exists();
    assert!(ok || std::env::var("CI").is_err(), "containers need root, runc and busybox-static in CI");
    if !ok {
        println!("skipped: needs root, runc and busybox-static");
    }
    ok
}

/// An image `name` from busybox-static with the applets above, plus a user and group.
pub(crate) fn busybox_image(env: &TestEnv, name: &str) {
    let r = env.busybox_rootfs(&format!("rootfs-{}", name.replace([':', '/'], "_")));
    for a in APPLETS {
        let p = r.join("bin").join(a);
        if !p.exists() {
            symlink("busybox", p).unwrap();
        }
    }
    fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n")
        .unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n").unwrap();
    fs::write(r.join("etc/notes"), "from the image\n").unwrap();
    env.import(&r, name);
}

fn run(env: &TestEnv, args: &[&str]) -> Run {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    env.run(&a)
}

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(&env, &["--rm", "bb:1", "echo", "hello", "world"]);
    assert_eq!(r.ok(), "hello world\n");
    let r = run(&env, &["--rm", "bb:1", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err"), "{r:?}");
    // --rm leaves nothing behind.
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
    env.assert_sound();
}

#[test]
fn run_missing_or_unexecutable_command_gives_docker_codes() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(&env, &["--rm", "bb:1", "no-such-command"]);
    let err = r.fails(127);
    assert!(err.contains("executable file not found"), "{err}");
    let r = run(&env, &["--rm", "bb:1", "/etc/notes"]);
    let err = r.fails(126);
    assert!(err.contains("permission denied"), "{err}");
    let r = run(&env, &["--rm", "bb:1", "/bin"]);
    r.fails(126);
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
}

#[test]
fn run_applies_env_workdir_user_and_entrypoint() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let envfile = env.path("vars.env");
    fs::write(&envfile, "# comment\nFROM_FILE=yes\n\nSHARED=file\n").unwrap();
    let r = env
        .cmd(&[
            "run",
            "--rm",
            "-e",
            "FOO=bar",
            "-e",
            "PASSED",
            "-e",
            "SHARED=flag",
            "--env-file",
            envfile.to_str().unwrap(),
            "-w",
            "/tmp",
            "-u",
            "alice",
            "bb:1",
            "sh",
            "-c",
            "echo $FOO $PASSED $FROM_FILE $SHARED $(pwd) $(id -u):$(id -g) $(id -G) $HOME",
        ])
        .env("PASSED", "through")
        .output()
        .unwrap();
    let r = Run::from_output(r);
    assert_eq!(r.ok(), "bar through yes flag /tmp 1000:1000 1000 50 /home/alice\n");
    let r = run(&env, &["--rm", "-u", "42:43", "bb:1", "sh", "-c", "echo $(id -u):$(id -g)"]);
    assert_eq!(r.ok(), "42:43\n");
    let r = run(&env, &["--rm", "-u", "nobody", "bb:1", "true"]);
    assert!(r.fails(125).contains("unable to find user nobody"), "{r:?}");
    let r = run(&env, &["--rm", "--entrypoint", "/bin/echo", "bb:1", "via", "entrypoint"]);
    assert_eq!(r.ok(), "via entrypoint\n");
    let r = run(&env, &["--rm", "-w", "relative", "bb:1", "true"]);
    r.fails(125);
}

#[test]
fn run_isolates_the_container() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(&env, &["--name", "iso", "bb:1", "sh", "-c", "hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo 1 > /proc/sys/kernel/domainname && echo wrote-proc-sys; cat /etc/hostname; ls /proc | grep -c -E '^[0-9]+$'"]);
    let out = r.ok();
    let ps = env.run(&["ps", "-a", "--no-trunc", "-q"]);
    let id = ps.ok().trim().to_string();
    assert_eq!(id.len(), 64, "{ps:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], &id[..12], "hostname is the short ID: {out}");
    // docker's default capability set, and no_new_privs.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // The default seccomp profile is in force (mode 2: filter).
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(!out.contains("wrote-proc-sys"), "/proc/sys must be read-only: {out}");
    assert_eq!(lines[lines.len() - 2], &id[..12], "/etc/hostname: {out}");
    // A new PID namespace: only the container's own processes.
    let procs: usize = lines.last().unwrap().trim().parse().unwrap();
    assert!(procs <= 3, "{out}");
    let r = run(&env, &["--rm", "--cap-drop", "ALL", "bb:1", "grep", "CapEff", "/proc/self/status"]);
    assert!(r.ok().contains("0000000000000000"), "{r:?}");
    let r = run(&env, &["--rm", "--cap-add", "NOT_A_CAP", "bb:1", "true"]);
    r.fails(125);
    let r = run(&env, &["--rm", "--read-only", "bb:1", "sh", "-c", "touch /x && echo wrote"]);
    assert!(!r.stdout.contains("wrote"), "{r:?}");
}

#[test]
fn run_mounts_volumes_and_tmpfs() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let host = env.path("data");
    let spec = format!("{}:/data", host.display());
    let r = run(&env, &["--rm", "-v", &spec, "bb:1", "sh", "-c", "echo hi > /data/f; cat /data/f"]);
    assert_eq!(r.ok(), "hi\n");
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "hi\n", "a missing host dir is created, and shared");
    let ro = format!("{}:/data:ro", host.display());
    let r = run(&env, &["--rm", "-v", &ro, "bb:1", "sh", "-c", "cat /data/f; echo x > /data/g && echo wrote"]);
    assert_eq!(r.stdout, "hi\n", "{r:?}");
    assert!(!host.join("g").exists());
    let missing = format!("type=bind,source={},target=/m", env.path("nope").display());
    let r = run(&env, &["--rm", "--mount", &missing, "bb:1", "true"]);
    assert!(r.fails(125).contains("bind source path does not exist"), "{r:?}");
    let r = run(
        &env,
        &["--rm", "--mount", "type=tmpfs,target=/scratch", "bb:1", "sh", "-c", "grep ' /scratch ' /proc/mounts"],
    );
    assert!(r.ok().contains("tmpfs"), "{r:?}");
    for bad in ["./relative:/x", "/abs:relative", "/a:/b:zz", "a", "vol:relative"] {
        let r = run(&env, &["--rm", "-v", bad, "bb:1", "true"]);
        r.fails(125);
    }
}

#[test]
fn containers_are_listed_and_removed() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(&env, &["--name", "first", "bb:1", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3);
    let ps = env.run(&["ps"]);
    assert!(!ps.ok().contains("first"), "exited containers only with -a: {ps:?}");
    let ps = env.run(&["ps", "-a"]);
    let line = ps.ok().lines().find(|l| l.contains("first")).unwrap_or_default().to_string();
    assert!(line.contains("Exited (3)"), "{ps:?}");
    assert!(line.contains("bb:1"), "{line}");
    // Names are unique.
    let r = run(&env, &["--name", "first", "bb:1", "true"]);
    assert!(r.fails(125).contains("is already in use"), "{r:?}");
    // The image a container uses is kept by prune.
    env.run(&["image", "prune", "-a", "-f"]).ok();
    assert_eq!(env.image_ids().len(), 1);
    assert_eq!(env.run(&["rm", "first"]).ok(), "first\n");
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
    let r = env.run(&["rm", "first"]);
    assert!(r.fails(1).contains("no such container"), "{r:?}");
    // Unknown image, from a registry nobody listens on: a clear error, nothing created.
    let r = run(&env, &["--rm", "127.0.0.1:1/nope:1", "true"]);
    r.fails(125);
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
    env.assert_sound();
}

/// The container's record, from `ps -a --format json`.
pub(crate) fn ps_json(env: &TestEnv, name: &str) -> serde_json::Value {
    let out = env.run(&["ps", "-a", "--format", "json"]);
    out.ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["Names"] == name)
        .unwrap_or(serde_json::Value::Null)
}

/// Polls until `check` holds (up to 10 s).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn detached_containers_log_stop_kill_and_wait() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    // Output to both streams, then a TERM handler: stop ends it at once with 143.
    let r = run(
        &env,
        &[
            "-d",
            "--name",
            "web",
            "bb:1",
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; trap 'echo bye; exit 143' TERM; while true; do sleep 0.05; done",
        ],
    );
    let id = r.ok().trim().to_string();
    assert_eq!(id.len(), 64, "run -d prints the ID: {r:?}");
    assert_eq!(ps_json(&env, "web")["State"], "running");
    assert!(env.run(&["ps"]).ok().contains("Up "), "running containers are listed without -a");
    eventually("the output to be logged", || env.run(&["logs", "web"]).stdout.contains("three"));
    let logs = env.run(&["logs", "web"]);
    assert_eq!(logs.stdout, "one\nthree\n");
    assert_eq!(logs.stderr, "two\n");
    // --tail counts records of both streams (their relative order is the kernel's): use a
    // stdout-only container for it.
    run(&env, &["-d", "--name", "lines", "bb:1", "sh", "-c", "echo a; echo b; echo c"]).ok();
    assert_eq!(env.run(&["wait", "lines"]).ok(), "0\n");
    assert_eq!(env.run(&["logs", "--tail", "2", "lines"]).stdout, "b\nc\n");
    assert_eq!(env.run(&["logs", "--tail", "0", "lines"]).stdout, "");
    assert_eq!(env.run(&["logs", "-f", "lines"]).stdout, "a\nb\nc\n", "-f of an exited container ends");
    env.run(&["logs", "--tail", "x", "lines"]).fails(125);
    let stamped = env.run(&["logs", "-t", "web"]).ok().to_string();
    assert!(stamped.lines().all(|l| l.len() > 30 && l.as_bytes()[4] == b'-' && l.contains('T')), "{stamped}");
    // rm of a running container needs -f.
    let r = env.run(&["rm", "web"]);
    assert!(r.fails(1).contains("container is running"), "{r:?}");
    assert_eq!(env.run(&["stop", "web"]).ok(), "web\n");
    assert_eq!(env.run(&["wait", "web"]).ok(), "143\n");
    assert!(env.run(&["logs", "web"]).stdout.ends_with("bye\n"));
    let st = ps_json(&env, "web");
    assert_eq!((st["State"].as_str(), st["ExitCode"].as_i64()), (Some("exited"), Some(143)));
    let r = env.run(&["kill", "web"]);
    assert!(r.fails(1).contains("is not running"), "{r:?}");

    // A process that ignores SIGTERM (PID 1 without a handler): killed after the timeout, 137.
    run(&env, &["-d", "--name", "stubborn", "bb:1", "sleep", "60"]).ok();
    let t = std::time::Instant::now();
    assert_eq!(env.run(&["stop", "-t", "1", "stubborn"]).ok(), "stubborn\n");
    assert!(t.elapsed() >= std::time::Duration::from_secs(1), "stop waited for the timeout");
    assert_eq!(env.run(&["wait", "stubborn"]).ok(), "137\n");

    // kill -s with a name.
    run(
        &env,
        &["-d", "--name", "kk", "bb:1", "sh", "-c", "trap 'exit 10' USR1; echo ready; while true; do sleep 0.05; done"],
    )
    .ok();
    // PID 1 of a namespace ignores a signal it has no handler for: wait until the trap is set
    // (a fast runtime can deliver the signal before the shell ran `trap`).
    eventually("the trap to be set", || env.run(&["logs", "kk"]).stdout.contains("ready"));
    assert_eq!(env.run(&["kill", "-s", "USR1", "kk"]).ok(), "kk\n");
    assert_eq!(env.run(&["wait", "kk"]).ok(), "10\n");
    let r = env.run(&["kill", "-s", "NOPE", "kk"]);
    r.fails(125);

    // --rm with -d: gone once it exits.
    run(&env, &["-d", "--rm", "--name", "gone", "bb:1", "true"]).ok();
    eventually("the --rm container to be removed", || ps_json(&env, "gone").is_null());
    for name in ["web", "stubborn", "kk", "lines"] {
        assert_eq!(env.run(&["rm", name]).ok(), format!("{name}\n"));
    }
    // rm -f of a running one.
    run(&env, &["-d", "--name", "forced", "bb:1", "sleep", "60"]).ok();
    assert_eq!(env.run(&["rm", "-f", "forced"]).ok(), "forced\n");
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap().matches(env.root.to_str().unwrap()).count(), 0);
}

/// `ps` is right after the monitor of a detached container is killed with SIGKILL: the container
/// is reported exited (and stopped), never running forever.
#[test]
fn a_killed_monitor_leaves_the_container_exited() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let id = run(&env, &["-d", "--name", "orphan", "bb:1", "sleep", "60"]).ok().trim().to_string();
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root.join("containers").join(&id).join("state.json")).unwrap()).unwrap();
    let monitor = state["monitor"][0].as_i64().expect("the monitor is recorded");
    // SAFETY: kill(2) on a pid we just read; the worst case is ESRCH.
    assert_eq!(unsafe { libc::kill(monitor as i32, libc::SIGKILL) }, 0);
    eventually("ps to report it exited", || ps_json(&env, "orphan")["State"] == "exited");
    assert_eq!(ps_json(&env, "orphan")["ExitCode"], 137);
    // Its processes are gone and its rootfs unmounted.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "{mounts}");
    assert_eq!(env.run(&["rm", "orphan"]).ok(), "orphan\n");
}

#[test]
fn exec_create_start_and_limits() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    run(&env, &["-d", "--name", "box", "-e", "IN=container", "-w", "/tmp", "bb:1", "sleep", "60"]).ok();
    // exec joins the running container: its env, cwd, namespaces (hostname) and root.
    let r =
        env.run(&["exec", "-e", "EXTRA=1", "box", "sh", "-c", "echo $IN $EXTRA $(pwd) $(hostname) $(cat /etc/notes)"]);
    let short = ps_json(&env, "box")["ID"].as_str().unwrap()[..12].to_string();
    assert_eq!(r.ok(), format!("container 1 /tmp {short} from the image\n"));
    let r = env.run(&["exec", "-u", "alice", "-w", "/", "box", "sh", "-c", "echo $(id -u) $(pwd)"]);
    assert_eq!(r.ok(), "1000 /\n");
    assert_eq!(env.run(&["exec", "box", "sh", "-c", "exit 5"]).code, 5);
    env.run(&["exec", "box", "no-such"]).fails(127);
    env.run(&["exec", "box", "/etc/notes"]).fails(126);
    env.run(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"]).ok();
    eventually("the detached exec to run", || env.run(&["exec", "box", "cat", "/tmp/bg"]).stdout == "bg\n");
    env.run(&["stop", "-t", "0", "box"]).ok();
    let r = env.run(&["exec", "box", "true"]);
    assert!(r.fails(1).contains("is not running"), "{r:?}");
    env.run(&["exec", "nobody-here", "true"]).fails(125);

    // create, then start -a: the output and the exit status; start again (the writable layer
    // survives between runs).
    let id = env.run(&["create", "--name", "later", "bb:1", "sh", "-c", "echo run >> /count; cat /count; exit 4"]);
    let id = id.ok().trim().to_string();
    assert_eq!(ps_json(&env, "later")["State"], "created");
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&id), "a created container holds no mount");
    let r = env.run(&["start", "-a", "later"]);
    assert_eq!((r.code, r.stdout.as_str()), (4, "run\n"));
    let r = env.run(&["start", "-a", "later"]);
    assert_eq!((r.code, r.stdout.as_str()), (4, "run\nrun\n"), "{r:?}");
    assert_eq!(env.run(&["start", "later"]).ok(), "later\n");
    assert_eq!(env.run(&["wait", "later"]).ok(), "4\n");
    env.run(&["start", "nope"]).fails(1);

    // cgroup limits: a fork bomb stopped by --pids-limit, a memory hog killed by --memory.
    let r = run(
        &env,
        &[
            "--rm",
            "--pids-limit",
            "10",
            "bb:1",
            "sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do sleep 5 & i=$((i+1)); done; echo all-started",
        ],
    );
    assert!(!r.stdout.contains("all-started") && r.stderr.contains("can't fork"), "{r:?}");
    let r = run(&env, &["--rm", "-m", "32m", "bb:1", "sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"]);
    assert_eq!(r.code, 137, "OOM-killed: {r:?}");
    env.run(&["rm", "box", "later"]).ok();
}

#[test]
fn diff_and_commit_round_trip() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    // An image with files to change, delete, chmod and chown.
    let r = env.busybox_rootfs("rootfs-rt");
    for a in APPLETS.iter().chain(["rm", "chmod", "chown", "ln", "stat", "rmdir", "tr", "readlink", "test"].iter()) {
        let p = r.join("bin").join(a);
        if !p.exists() {
            symlink("busybox", p).unwrap();
        }
    }
    fs::create_dir_all(r.join("data/tree/deep")).unwrap();
    for (f, body) in [
        ("data/keep", "old\n"),
        ("data/gone", "x\n"),
        ("data/mode", "m\n"),
        ("data/owner", "o\n"),
        ("data/tree/deep/f", "f\n"),
    ] {
        fs::write(r.join(f), body).unwrap();
    }
    env.import(&r, "rt:1");
    let script = "echo new > /data/new; echo changed > /data/keep; rm /data/gone; rm -rf /data/tree; \
                  mkdir /data/tree; echo fresh > /data/tree/fresh; chmod 600 /data/mode; chown 7:8 /data/owner; \
                  ln -s keep /data/link; ln /data/new /data/hard";
    run(&env, &["--name", "work", "rt:1", "sh", "-c", script]).ok();
    // busybox has no setfattr: give the new file an xattr in the writable layer from outside.
    let cid = ps_json(&env, "work")["ID"].as_str().unwrap().to_string();
    let upper_new = env.root.join("containers").join(&cid).join("upper/data/new");
    rustix::fs::setxattr(&upper_new, "user.note", b"hello", rustix::fs::XattrFlags::empty()).unwrap();
    let diff = env.run(&["diff", "work"]);
    assert_eq!(
        diff.ok(),
        "C /data\nD /data/gone\nA /data/hard\nC /data/keep\nA /data/link\nC /data/mode\nA /data/new\nC /data/owner\nC /data/tree\nD /data/tree/deep\nA /data/tree/fresh\n",
        "docker's A/C/D lines, sorted; no runtime mount points"
    );
    let id =
        env.run(&["commit", "-m", "the change", "-a", "me", "-c", "CMD [\"cat\", \"/data/keep\"]", "work", "rt:2"]);
    let id = id.ok().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // The committed image runs with the change applied.
    assert_eq!(run(&env, &["--rm", "rt:2"]).ok(), "changed\n");
    let check = "ls /data | tr '\\n' ' '; ls /data/tree; stat -c '%n %a %u:%g %h' /data/mode /data/owner /data/new /data/hard; \
                 readlink /data/link; test -e /data/gone || echo no-gone; test -e /data/tree/deep || echo no-deep";
    let out = run(&env, &["--rm", "rt:2", "sh", "-c", check]);
    assert_eq!(
        out.ok(),
        "hard keep link mode new owner tree fresh\n/data/mode 600 0:0 1\n/data/owner 644 7:8 1\n/data/new 644 0:0 2\n/data/hard 644 0:0 2\nkeep\nno-gone\nno-deep\n"
    );
    // The xattr is in the committed layer's snapshot.
    let top = env.inspect("rt:2")["RootFS"]["Layers"][1].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut val = [0u8; 16];
    let n = rustix::fs::lgetxattr(env.root.join("snapshots").join(&top).join("fs/data/new"), "user.note", &mut val[..])
        .unwrap();
    assert_eq!(&val[..n], b"hello");
    let img = env.inspect("rt:2");
    assert_eq!(img["Author"], "me");
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["cat", "/data/keep"]));
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    let hist = env.run(&["history", "rt:2"]);
    assert!(hist.ok().contains("the change"), "{hist:?}");
    // A zstd commit of the same container gives the same diff IDs.
    env.run(&["commit", "--compression", "zstd", "work", "rt:3"]).ok();
    assert_eq!(env.inspect("rt:3")["RootFS"], img["RootFS"]);
    // The ecosystem reads it: the store is an OCI layout.
    if crate::util::have("skopeo") {
        let out = crate::util::sh(&format!(
            "skopeo --policy /dev/stdin inspect oci:{}:docker.io/library/rt:2 <<'E'\n{{\"default\":[{{\"type\":\"insecureAcceptAnything\"}}]}}\nE",
            env.root.display()
        ));
        assert!(out.contains("\"Layers\""), "{out}");
    }
    let r = env.run(&["commit", "work", "bad ref"]);
    r.fails(125);
    env.run(&["commit", "nobody", "x:1"]).fails(125);
    env.run(&["diff", "nobody"]).fails(125);
    env.assert_sound();
}

#[test]
fn inspect_rename_restart_and_prune() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    run(&env, &["-d", "--name", "svc", "bb:1", "sleep", "60"]).ok();
    let v: serde_json::Value = serde_json::from_str(env.run(&["container", "inspect", "svc"]).ok()).unwrap();
    assert_eq!(v[0]["Name"], "/svc");
    assert_eq!(v[0]["State"]["Running"], true);
    assert!(v[0]["State"]["Pid"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["sleep", "60"]));
    // `inspect` without a type finds containers too.
    let v2: serde_json::Value = serde_json::from_str(env.run(&["inspect", "svc"]).ok()).unwrap();
    assert_eq!(v2[0]["Id"], v[0]["Id"]);
    env.run(&["inspect", "neither"]).fails(1);

    env.run(&["rename", "svc", "svc2"]).ok();
    assert!(env.run(&["container", "ls"]).ok().contains("svc2"));
    run(&env, &["--name", "other", "bb:1", "true"]).ok();
    let r = env.run(&["rename", "svc2", "other"]);
    assert!(r.fails(125).contains("already in use"), "{r:?}");
    env.run(&["rename", "svc2", "-bad"]).fails(125);

    // restart: stopped (137, sleep ignores TERM) and running again, under a new process.
    let pid = |env: &TestEnv| -> i64 {
        let v: serde_json::Value = serde_json::from_str(env.run(&["container", "inspect", "svc2"]).ok()).unwrap();
        v[0]["State"]["Pid"].as_i64().unwrap()
    };
    let before = pid(&env);
    assert_eq!(env.run(&["restart", "-t", "0", "svc2"]).ok(), "svc2\n");
    assert_eq!(ps_json(&env, "svc2")["State"], "running");
    assert_ne!(pid(&env), before);

    // prune removes the stopped ones only.
    let r = env.run(&["container", "prune", "-f"]);
    assert!(r.ok().contains("Deleted Containers:"), "{r:?}");
    assert!(ps_json(&env, "other").is_null());
    assert_eq!(ps_json(&env, "svc2")["State"], "running");
    env.run(&["container", "rm", "-f", "svc2"]).ok();
    assert_eq!(env.run(&["ps", "-a", "-q"]).ok(), "");
}

#[test]
fn cp_in_and_out_and_export() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    run(
        &env,
        &[
            "--name",
            "box",
            "bb:1",
            "sh",
            "-c",
            "mkdir -p /out/sub; echo a > /out/a; echo b > /out/sub/b; ln -s /etc/passwd /out/abs-link",
        ],
    )
    .ok();
    // Out of a stopped container: a file, a directory (into an existing dir and as a new name).
    let host = env.path("host");
    fs::create_dir_all(&host).unwrap();
    env.run(&["cp", "box:/out/a", host.join("a-copy").to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(host.join("a-copy")).unwrap(), "a\n");
    env.run(&["cp", "box:/out", host.to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(host.join("out/sub/b")).unwrap(), "b\n");
    env.run(&["cp", "box:/out", host.join("renamed").to_str().unwrap()]).ok();
    assert_eq!(fs::read_to_string(host.join("renamed/a")).unwrap(), "a\n");
    // An absolute symlink in the container is copied as a link, never followed to the host's file.
    assert_eq!(fs::read_link(host.join("out/abs-link")).unwrap(), Path::new("/etc/passwd"));
    // A path through that link resolves inside the container's root.
    let p = env.path("pw");
    env.run(&["cp", "box:/out/abs-link", p.to_str().unwrap()]).ok();
    env.run(&["cp", "box:/nope", p.to_str().unwrap()]).fails(125);
    // `-`: a tar stream out.
    let tarball = env.cmd(&["cp", "box:/out/sub", "-"]).output().unwrap();
    assert!(tarball.status.success());
    let names: Vec<String> = tar::Archive::new(&tarball.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["sub/", "sub/b"]);
    // Into a running container: a file, a directory, a tar stream.
    run(&env, &["-d", "--name", "live", "bb:1", "sleep", "60"]).ok();
    fs::write(host.join("in.txt"), "in\n").unwrap();
    env.run(&["cp", host.join("in.txt").to_str().unwrap(), "live:/tmp"]).ok();
    env.run(&["cp", host.join("out").to_str().unwrap(), "live:/tmp/tree"]).ok();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "streamed", &b"st\n"[..]).unwrap();
    let data = b.into_inner().unwrap();
    env.run_stdin(&["cp", "-", "live:/tmp"], &data).ok();
    let r = env.run(&["exec", "live", "sh", "-c", "cat /tmp/in.txt /tmp/tree/sub/b /tmp/streamed"]);
    assert_eq!(r.ok(), "in\nb\nst\n");
    // A hostile archive cannot write outside the container.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../escaped");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let evil = b.into_inner().unwrap();
    env.run_stdin(&["cp", "-", "live:/tmp"], &evil).fails(125);
    assert!(!env.root.join("containers/escaped").exists());
    // export: the merged file system as a tar.
    let out = env.path("fs.tar");
    env.run(&["export", "-o", out.to_str().unwrap(), "box"]).ok();
    let names: Vec<String> = tar::Archive::new(fs::File::open(&out).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "out/sub/b") && names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    env.run(&["rm", "-f", "live", "box"]).ok();
}

#[test]
fn named_volumes() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    assert_eq!(env.run(&["volume", "create", "data"]).ok(), "data\n");
    assert_eq!(env.run(&["volume", "ls", "-q"]).ok(), "data\n");
    let v: serde_json::Value = serde_json::from_str(env.run(&["volume", "inspect", "data"]).ok()).unwrap();
    assert_eq!(v[0]["Name"], "data");
    assert!(Path::new(v[0]["Mountpoint"].as_str().unwrap()).is_dir());
    env.run(&["volume", "create", "-bad"]).fails(125);
    // Shared between containers; a missing named volume is created on first use.
    run(&env, &["--name", "writer", "-v", "data:/data", "bb:1", "sh", "-c", "echo kept > /data/f"]).ok();
    assert_eq!(run(&env, &["--rm", "-v", "data:/d:ro", "bb:1", "cat", "/d/f"]).ok(), "kept\n");
    let r = run(&env, &["--rm", "-v", "data:/d:ro", "bb:1", "sh", "-c", "echo x > /d/g && echo wrote"]);
    assert!(!r.stdout.contains("wrote"), "{r:?}");
    // A new volume over a directory with content in the image starts with that content.
    let r = run(&env, &["--rm", "--mount", "type=volume,source=etcvol,target=/etc", "bb:1", "cat", "/etc/notes"]);
    assert_eq!(r.ok(), "from the image\n");
    let ls = env.run(&["volume", "ls", "-q"]);
    assert_eq!(ls.ok(), "data\netcvol\n");
    // In use (by the stopped container writer): not removable, not pruned.
    let r = env.run(&["volume", "rm", "data"]);
    assert!(r.fails(1).contains("volume is in use"), "{r:?}");
    let r = env.run(&["volume", "prune", "-f"]);
    assert!(r.ok().contains("etcvol") && !r.stdout.contains("data\n"), "{r:?}");
    env.run(&["rm", "writer"]).ok();
    assert_eq!(env.run(&["volume", "rm", "data"]).ok(), "data\n");
    assert_eq!(env.run(&["volume", "ls", "-q"]).ok(), "");
    env.run(&["volume", "rm", "data"]).fails(1);
    env.run(&["volume", "inspect", "nope"]).fails(1);
}

#[test]
fn interactive_and_terminal() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    // Without -i the container's stdin is /dev/null, as in docker; with -i it is ours.
    assert_eq!(env.run_stdin(&["run", "--rm", "bb:1", "cat"], b"piped\n").ok(), "");
    assert_eq!(env.run_stdin(&["run", "--rm", "-i", "bb:1", "cat"], b"piped\n").ok(), "piped\n");
    // -t: a real pty with the caller's window size (`script` gives us a terminal).
    if !crate::util::have("script") {
        return;
    }
    let cmd = env.cmd(&["run", "--rm", "-it", "bb:1", "sh", "-c", "tty; stty size"]);
    let line = format!(
        "stty cols 91 rows 33; {} {}",
        crate::util::STRATA,
        cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())).collect::<Vec<_>>().join(" ")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("DOCKER_CONFIG", env.path("docker-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("33 91"), "{text}");
}

/// `logs` works for containers run in the foreground too (their output is shown and logged).
#[test]
fn foreground_output_is_logged() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(&env, &["--name", "fg", "bb:1", "sh", "-c", "echo to-out; echo to-err >&2; printf partial"]);
    assert_eq!(r.stdout, "to-out\npartial");
    assert_eq!(r.stderr, "to-err\n");
    let logs = env.run(&["logs", "fg"]);
    assert_eq!((logs.stdout.as_str(), logs.stderr.as_str()), ("to-out\npartial", "to-err\n"));
    env.run(&["rm", "fg"]).ok();
}

/// The runtime plugins available here: runc always in CI, the built-in one always, crun when
/// it works on this host (crun 1.8 refuses a cgroup v1/v2 hybrid that still has controllers
/// in v2, which Debian's CI host has).
pub(crate) fn runtimes(env: &TestEnv) -> Vec<&'static str> {
    let mut out = vec!["runc", "builtin"];
    if crate::util::have("crun") && run(env, &["--rm", "--runtime", "crun", "bb:1", "true"]).code == 0 {
        out.push("crun");
    } else {
        println!("crun skipped: not installed or not working on this host");
    }
    out
}

/// The same scenarios through every runtime plugin: they must agree (exit code and output).
#[test]
fn runtime_plugins_agree() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let data = env.path("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "host file\n").unwrap();
    let ro = format!("{}:/data:ro", data.display());
    // (run flags, command)
    let scenarios: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["sh", "-c", "grep -E '^(CapEff|CapBnd|CapPrm|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"]),
        (vec!["-u", "alice", "-w", "/tmp", "-e", "A=1"], vec!["sh", "-c", "id; pwd; echo $A $HOME; grep CapEff /proc/self/status"]),
        (vec![], vec!["sh", "-c", "echo 1 > /proc/sys/kernel/domainname; echo $?; cat /proc/kcore 2>&1 | head -c 1 | wc -c"]),
        (vec!["--read-only"], vec!["sh", "-c", "touch /x 2>/dev/null; echo $?"]),
        (vec!["--cap-drop", "ALL"], vec!["sh", "-c", "grep CapEff /proc/self/status"]),
        // The sleeps outlive the loop even on a loaded machine (they die with PID 1's namespace).
        (
            vec!["--pids-limit", "8"],
            vec!["sh", "-c", "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done 2>/dev/null; echo done"],
        ),
        (vec!["-m", "32m"], vec!["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"]),
        (vec!["--hostname", "box.example"], vec!["sh", "-c", "hostname; cat /etc/hostname"]),
        (vec!["--network", "none"], vec!["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"]),
        (vec!["-v", &ro], vec!["sh", "-c", "cat /data/f; echo x > /data/g; echo $?"]),
        // The device nodes and links of /dev (crun adds /dev/core when the kernel has /proc/kcore).
        (vec![], vec!["sh", "-c", "ls /dev | grep -v '^core$' | tr '\\n' ' '; echo; grep -c . /proc/mounts >/dev/null; n=$(ls /proc | grep -c -E '^[0-9]+$'); [ $n -le 5 ] && echo own-pids-only"]),
        (vec![], vec!["true"]),
        (vec![], vec!["sh", "-c", "exit 3"]),
        (vec![], vec!["sh", "-c", "exit 42"]),
        (vec![], vec!["no-such-command"]),
        (vec![], vec!["/etc/notes"]),
        // A process killed by SIGKILL (not PID 1: the kernel shields a namespace's init from its
        // own namespace's signals) gives 137, as a shell reports it.
        (vec![], vec!["sh", "-c", "sh -c 'kill -9 $$'; exit $?"]),
    ];
    let rts = runtimes(&env);
    let mut results: Vec<Vec<(i32, String)>> = Vec::new();
    for rt in &rts {
        let mut mine = Vec::new();
        for (flags, cmd) in &scenarios {
            let mut args = vec!["--rm", "--runtime", rt];
            args.extend_from_slice(flags);
            args.push("bb:1");
            args.extend_from_slice(cmd);
            let r = run(&env, &args);
            mine.push((r.code, r.stdout.clone()));
        }
        // exec into a detached container: its namespaces, user, privileges; then stop of a
        // PID 1 that ignores SIGTERM ends with SIGKILL, 137.
        let name = format!("agree-{rt}");
        run(&env, &["-d", "--runtime", rt, "--name", &name, "--hostname", "box", "-w", "/tmp", "bb:1", "sleep", "60"])
            .ok();
        for cmd in [
            vec!["sh", "-c", "hostname; pwd; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; n=$(ls /proc | grep -c -E '^[0-9]+$'); [ $n -le 6 ] && echo own-pids-only"],
            vec!["-u", "alice", "sh", "-c", "id; grep CapEff /proc/self/status"],
            vec!["sh", "-c", "exit 5"],
        ] {
            let mut a = vec!["exec", &name];
            a.extend(cmd);
            let r = env.run(&a);
            mine.push((r.code, r.stdout.clone()));
        }
        env.run(&["exec", "-d", &name, "sh", "-c", "echo bg > /tmp/bg"]).ok();
        eventually("the detached exec to run", || env.run(&["exec", &name, "cat", "/tmp/bg"]).stdout == "bg\n");
        assert_eq!(env.run(&["stop", "-t", "1", &name]).ok(), format!("{name}\n"));
        let r = env.run(&["wait", &name]);
        mine.push((r.code, r.stdout.clone()));
        env.run(&["rm", &name]).ok();
        results.push(mine);
    }
    // Sanity of the runc results themselves.
    let r = &results[0];
    assert!(r[0].1.contains("CapEff:\t00000000a80425fb"), "{:?}", r[0]);
    assert!(r[0].1.contains("Seccomp:\t2") && r[0].1.contains("NoNewPrivs:\t1"), "{:?}", r[0]);
    assert_eq!(r[1].1, "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)\n/tmp\n1 /home/alice\nCapEff:\t0000000000000000\n");
    // /proc/sys is read-only; /proc/kcore reads empty (masked) or, on kernels without it, fails.
    assert!(r[2].1.starts_with("1\n"), "{:?}", r[2]);
    assert_eq!(r[6].0, 137, "OOM-killed: {:?}", r[6]);
    assert_eq!(r[7].1, "box.example\nbox.example\n");
    assert_eq!(r[8].1, "lo\n");
    assert_eq!(r[9].1, "host file\n1\n");
    let codes: Vec<i32> = r[11..17].iter().map(|x| x.0).collect();
    assert_eq!(codes, [0, 3, 42, 127, 126, 137]);
    assert!(r[17].1.starts_with("box\n/tmp\nCapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n"), "{:?}", r[17]);
    // A PID namespace of its own (the counts themselves race with the pipeline's processes).
    assert!(r[10].1.ends_with("own-pids-only\n") && r[17].1.ends_with("own-pids-only\n"), "{:?} {:?}", r[10], r[17]);
    assert_eq!(r[19].0, 5);
    assert_eq!(r[20].1, "137\n", "stop of a process ignoring SIGTERM");
    assert!(!data.join("g").exists());
    for (i, other) in results.iter().enumerate().skip(1) {
        for (j, (mine, theirs)) in other.iter().zip(&results[0]).enumerate() {
            assert_eq!(mine, theirs, "{} disagrees with runc on scenario {j}", rts[i]);
        }
    }
}

/// Errors of the built-in runtime itself: a cgroup value the kernel refuses and a command that
/// is not there when the container starts are reported, with docker's codes.
#[test]
fn builtin_runtime_reports_its_errors() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let patch = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let id = env.run(&["create", "--runtime", "builtin", "--name", name, "bb:1", "true"]).ok().trim().to_string();
        let p = env.root.join("containers").join(&id).join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        id
    };
    // The kernel's minimum CFS quota is 1 ms.
    patch("badcpu", &|v| v["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 500, "period": 100000}));
    let r = env.run(&["start", "-a", "badcpu"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("cpu") && r.stderr.contains("500"), "{r:?}");
    // Nothing is left behind in the cgroup hierarchies.
    let id = ps_json(&env, "badcpu")["ID"].as_str().unwrap().to_string();
    let groups: Vec<_> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("strata"))
        .filter(|p| {
            fs::read_dir(p).is_ok_and(|mut d| d.any(|e| e.unwrap().file_name().to_string_lossy().starts_with(&id)))
        })
        .collect();
    assert!(groups.is_empty(), "{groups:?}");
    patch("gone", &|v| v["process"]["args"] = serde_json::json!(["/no/such/binary"]));
    let r = env.run(&["start", "-a", "gone"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(r.stderr.contains("/no/such/binary"), "{r:?}");
    patch("notexec", &|v| v["process"]["args"] = serde_json::json!(["/etc/notes"]));
    assert_eq!(env.run(&["start", "-a", "notexec"]).code, 126);
    // An rlimit above this process's hard limit is clamped to it rather than failing (a host
    // without CAP_SYS_RESOURCE), as crun does.
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX);
    patch("limits", &|v| {
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": max.saturating_add(1000), "soft": 1024}]);
        v["process"]["args"] = serde_json::json!(["sh", "-c", "ulimit -Hn; ulimit -Sn"]);
    });
    let r = env.run(&["start", "-a", "limits"]);
    assert_eq!(r.stdout, format!("{max}\n1024\n"), "{r:?}");
    // exec into a container that is not running, and kill of one.
    let r = env.run(&["exec", "gone", "true"]);
    assert!(r.fails(1).contains("is not running"), "{r:?}");
    env.run(&["rm", "badcpu", "gone", "notexec", "limits"]).ok();
    assert_eq!(
        fs::read_dir(env.root.join("runtime/builtin"))
            .map_or(0, |d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count()),
        0,
        "no state left"
    );
}

#[test]
fn hostname_network_and_cpu_flags() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let r = run(
        &env,
        &[
            "--rm",
            "--hostname",
            "box.example",
            "bb:1",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; grep box.example /etc/hosts | wc -l",
        ],
    );
    assert_eq!(r.ok(), "box.example\nbox.example\n1\n");
    // Default: a private network namespace with loopback only; --network host: the host's.
    let ifaces = |args: &[&str]| -> usize {
        let mut a = vec!["--rm"];
        a.extend_from_slice(args);
        a.extend(["bb:1", "sh", "-c", "tail -n +3 /proc/net/dev | wc -l"]);
        run(&env, &a).ok().trim().parse().unwrap()
    };
    assert_eq!(ifaces(&[]), 1, "only lo");
    let host = fs::read_to_string("/proc/net/dev").unwrap().lines().count() - 2;
    assert_eq!(ifaces(&["--network", "host"]), host);
    // --cpus 0.5: a CFS quota of half the period, in whichever cgroup hierarchy the host has.
    let r = run(&env, &["--rm", "--cpus", "0.5", "bb:1", "sh", "-c",
        "cat /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null | head -1"]);
    let q = r.ok().trim().to_string();
    assert!(q == "50000" || q.starts_with("50000 100000"), "{q}");
    run(&env, &["--rm", "--cpus", "0.001", "bb:1", "true"]).fails(125);
    run(&env, &["--rm", "--network", "bridge", "bb:1", "true"]).fails(125);
}

/// `--init`: the strata binary is PID 1 (the command is PID 2); it reaps orphans the command's
/// process would leave as zombies, forwards `stop`'s SIGTERM to a command without a handler
/// (143 at once, where PID 1 `sleep` ignores it and is killed after the timeout: 137), and passes
/// the command's exit status through. The OCI runtime plugins have no such init: refused.
#[test]
fn init_reaps_zombies_and_forwards_signals() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    assert_eq!(run(&env, &["--rm", "--init", "bb:1", "sh", "-c", "echo $$"]).ok(), "2\n");
    assert_eq!(run(&env, &["--rm", "bb:1", "sh", "-c", "echo $$"]).ok(), "1\n");

    // An orphan re-parented to PID 1: `sleep` as PID 1 never waits for it, the init does.
    // The orphan outlives the exec (a shell still waiting for its job could reap it first).
    let leaver = "sh -c 'sleep 0.5 &'; exec sleep 60";
    let zombies = "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l";
    for (flags, want) in [(&[][..], "1\n"), (&["--init"][..], "0\n")] {
        let mut args = vec!["-d", "--name", "zz"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["bb:1", "sh", "-c", leaver]);
        run(&env, &args).ok();
        let mut seen = String::new();
        for _ in 0..50 {
            seen = env.run(&["exec", "zz", "sh", "-c", zombies]).ok().to_string();
            if seen == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(seen, want, "zombies with {flags:?}");
        env.run(&["rm", "-f", "zz"]).ok();
    }

    run(&env, &["-d", "--init", "--name", "fw", "bb:1", "sleep", "60"]).ok();
    let t = std::time::Instant::now();
    assert_eq!(env.run(&["stop", "-t", "20", "fw"]).ok(), "fw\n");
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "SIGTERM reached the command: {:?}", t.elapsed());
    assert_eq!(env.run(&["wait", "fw"]).ok(), "143\n");

    assert_eq!(run(&env, &["--rm", "--init", "bb:1", "sh", "-c", "exit 3"]).code, 3);
    assert_eq!(run(&env, &["--rm", "--init", "bb:1", "no-such-command"]).code, 127);
    let r = run(&env, &["--rm", "--init", "--runtime", "runc", "bb:1", "true"]);
    assert!(r.fails(125).contains("--init needs the built-in runtime"), "{r:?}");
}

/// docker's device cgroup rules hold the same in every runtime plugin, whichever mechanism
/// carries them (the v1 `devices` controller, or on cgroup v2 the built-in runtime's eBPF
/// program): the standard nodes open; mknod of any node is allowed (the runtimes' defaults),
/// but the node a container made of a device not in the list does not open, with EPERM.
#[test]
fn device_rules_agree() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    // `true`, not `:`: a redirection error of a special built-in would end the shell. /k is
    // /dev/kmsg opened for writing, which needs no capability (reading it needs CAP_SYSLOG).
    let script = "true < /dev/null && echo null; true > /dev/full && echo full; \
                  busybox mknod /k c 1 11 && echo made; true > /k; echo $?; \
                  busybox mknod /b b 7 0 && echo made; true < /b; echo $?";
    for rt in runtimes(&env) {
        let r = run(&env, &["--rm", "--runtime", rt, "bb:1", "sh", "-c", script]);
        assert_eq!((r.code, r.stdout.as_str()), (0, "null\nfull\nmade\n1\nmade\n1\n"), "{rt}: {}", r.stderr);
        assert_eq!(r.stderr.matches("Operation not permitted").count(), 2, "{rt}: {}", r.stderr);
    }
}

/// A `--rm` container's record is not written durably (a crash ends it anyway): what a crash
/// can leave, a container folder without a readable record, is removed by `container prune`
/// once it is old enough not to be one being made right now.
#[test]
fn prune_removes_folders_a_crash_left_without_a_record() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    run(&env, &["--rm", "bb:1", "true"]).ok();
    let containers = env.root.join("containers");
    let old = containers.join("a".repeat(64));
    let young = containers.join("b".repeat(64));
    for d in [&old, &young] {
        fs::create_dir_all(d.join("upper")).unwrap();
        fs::write(d.join("upper/left"), b"x").unwrap();
    }
    fs::write(old.join("state.json"), b"").unwrap(); // torn by the crash
    let status = std::process::Command::new("touch").args(["-d", "2 minutes ago"]).arg(&old).status().unwrap();
    assert!(status.success());
    let out = env.run(&["container", "prune", "-f"]);
    assert!(out.ok().contains(&"a".repeat(64)), "{}", out.stdout);
    assert!(!old.exists());
    assert!(young.exists(), "a folder made less than a minute ago may be a container being created");
    assert!(!out.stdout.contains(&"b".repeat(64)));
}

/// `ps --filter` with docker's keys (status, name, id, exited, ancestor; one key's values are
/// alternatives, different keys all apply), and anonymous volumes: `-v /path` makes one, `rm -v`
/// and `run --rm` remove it, a named volume stays.
#[test]
fn ps_filters_and_anonymous_volumes() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["ps", "--format", "json"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = env
            .run(&a)
            .ok()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Names"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    run(&env, &["-d", "--name", "up1", "bb:1", "sleep", "60"]).ok();
    run(&env, &["--name", "ex3", "bb:1", "sh", "-c", "exit 3"]).fails(3);
    run(&env, &["--name", "ex0", "bb:1", "true"]).ok();
    env.run(&["create", "--name", "new1", "bb:1", "true"]).ok();
    // A child image: ancestor= matches containers of images built on it.
    env.run(&["commit", "ex0", "child:1"]).ok();
    env.run(&["create", "--name", "kid", "child:1", "true"]).ok();

    assert_eq!(names(&[]), ["up1"]);
    assert_eq!(names(&["-f", "status=exited"]), ["ex0", "ex3"], "a status filter lists stopped ones without -a");
    assert_eq!(names(&["-f", "status=exited", "-f", "status=created"]), ["ex0", "ex3", "kid", "new1"]);
    assert_eq!(names(&["-a", "-f", "name=ex"]), ["ex0", "ex3"]);
    assert_eq!(names(&["-a", "-f", "name=^ex3$"]), ["ex3"]);
    assert_eq!(names(&["-a", "-f", "name=1", "-f", "status=running"]), ["up1"]);
    assert_eq!(names(&["-a", "-f", "exited=3"]), ["ex3"]);
    assert_eq!(names(&["-a", "-f", "ancestor=child:1"]), ["kid"]);
    assert_eq!(names(&["-a", "-f", "ancestor=bb:1"]), ["ex0", "ex3", "kid", "new1", "up1"]);
    assert!(names(&["-a", "-f", "ancestor=no-such-image"]).is_empty());
    let id = ps_json(&env, "ex3")["ID"].as_str().unwrap().to_string();
    assert_eq!(names(&["-a", "-f", &format!("id={}", &id[..8])]), ["ex3"]);
    assert!(env.run(&["ps", "-f", "colour=red"]).fails(125).contains("invalid filter 'colour'"));
    assert!(env.run(&["ps", "-f", "status=zombie"]).fails(125).contains("status=zombie"));
    assert!(env.run(&["ps", "-f", "status"]).fails(125).contains("name=value"));

    // Anonymous volumes.
    let volumes = || -> Vec<serde_json::Value> {
        let out = env.run(&["volume", "ls", "-q"]);
        out.ok()
            .lines()
            .map(|n| {
                serde_json::from_str::<serde_json::Value>(env.run(&["volume", "inspect", n]).ok()).unwrap()[0].clone()
            })
            .collect()
    };
    env.run(&["create", "--name", "av", "-v", "/anon", "-v", "keep:/named", "bb:1", "true"]).ok();
    let v = volumes();
    assert_eq!(v.len(), 2, "{v:?}");
    let anon: Vec<&serde_json::Value> =
        v.iter().filter(|x| x["Labels"].get("com.docker.volume.anonymous").is_some()).collect();
    assert_eq!(anon.len(), 1, "{v:?}");
    assert_eq!(anon[0]["Name"].as_str().unwrap().len(), 64);
    env.run(&["rm", "-v", "av"]).ok();
    let left: Vec<String> = volumes().iter().map(|x| x["Name"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, ["keep"], "rm -v removes the anonymous volume only");
    // run --rm takes its anonymous volumes along (after writing to one).
    run(&env, &["--rm", "-v", "/scratch", "bb:1", "sh", "-c", "echo x > /scratch/f"]).ok();
    run(&env, &["--rm", "--mount", "type=volume,target=/m", "bb:1", "true"]).ok();
    let left: Vec<String> = volumes().iter().map(|x| x["Name"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, ["keep"]);
    // Without -v, rm leaves it.
    env.run(&["create", "--name", "av2", "-v", "/anon", "bb:1", "true"]).ok();
    env.run(&["rm", "av2"]).ok();
    assert_eq!(volumes().len(), 2);
    env.run(&["rm", "-f", "up1", "ex3", "ex0", "new1", "kid"]).ok();
}

/// The container's processes are in its groups in every hierarchy the host mounts (v1 and the
/// unified one), the init made inside the unified group (clone3 CLONE_INTO_CGROUP) and the v1
/// ones joined thread-wise, an exec'd process the same way, through every runtime plugin.
#[test]
fn processes_are_in_the_containers_groups_everywhere() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    busybox_image(&env, "bb:1");
    for rt in runtimes(&env) {
        let name = format!("cg-{rt}");
        run(&env, &["-d", "--runtime", rt, "--name", &name, "bb:1", "sleep", "60"]).ok();
        let info: serde_json::Value = serde_json::from_str(env.run(&["inspect", &name]).ok()).unwrap();
        let pid = info[0]["State"]["Pid"].as_i64().unwrap();
        let id = info[0]["Id"].as_str().unwrap().to_string();
        let host = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let lines: Vec<&str> = host.lines().collect();
        assert!(lines.len() >= 2, "{host}");
        for l in &lines {
            assert!(l.ends_with(&id), "{rt}: the init is outside the container's group: {l}\n{host}");
        }
        // Inside, its cgroup namespace: every hierarchy's root is the container's group.
        let inside = env.run(&["exec", &name, "cat", "/proc/self/cgroup"]).ok().to_string();
        assert_eq!(inside.lines().count(), lines.len(), "{rt}: {inside}");
        for l in inside.lines() {
            assert!(l.ends_with(":/"), "{rt}: an exec'd process outside the container's group: {l}\n{inside}");
        }
        env.run(&["rm", "-f", &name]).ok();
    }
}
