//! `strata push` against a real registry (Debian's `docker-registry`, distribution 2.8), with
//! skopeo and `strata pull` as the oracles: byte-identical manifests, blobs the registry already
//! has left alone, cross-repository mounts, chunked and resumed uploads, zstd re-compression, the
//! output formats and the errors.
//!
//! Resuming is tested through [`Gate`], a TCP proxy that holds every request for a while before
//! passing it on: a push killed while a request is held leaves the registry exactly at a chunk
//! boundary, which is what strata's saved session says (distribution refuses to resume an
//! upload whose `_state` offset differs from what it holds).

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::regserver::{
    self, dead_addr, layer, need_tools, ok, raw_manifest, requests, scratch, show, Auth, Registry, Req, Skopeo,
};
use crate::util::{self, Layer, Run, TestEnv};

/// The chunk size strata uses with `STRATA_PUSH_CHUNK_SIZE=1MB` (its floor is 1 MiB).
const CHUNK: u64 = 1 << 20;

const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// An image put in a store by `strata load` of an OCI layout.
struct Local {
    /// The reference it was loaded as.
    name: String,
    /// The layout directory (for skopeo).
    layout: PathBuf,
    /// `sha256:…` of the manifest.
    manifest: String,
    /// The manifest bytes.
    manifest_bytes: Vec<u8>,
    /// Hex digests of the layer blobs (gzip), in order.
    layers: Vec<String>,
    /// Hex digest of the config.
    config: String,
}

impl Local {
    fn blob(&self, hex: &str) -> Vec<u8> {
        fs::read(self.layout.join("blobs/sha256").join(hex)).unwrap()
    }
    /// `oci:LAYOUT:NAME` for skopeo.
    fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.name)
    }
    /// Short IDs of the config and layers, as push prints them.
    fn shorts(&self) -> Vec<String> {
        let mut v = vec![self.config[..12].to_string()];
        v.extend(self.layers.iter().map(|l| l[..12].to_string()));
        v
    }
}

/// Writes an OCI layout of `layers` named `name` (a full reference such as `local/app:1`) and
/// loads it into `env`'s store.
fn load(env: &TestEnv, name: &str, layers: &[Vec<u8>]) -> Local {
    let layout = env.path(&format!("layout-{}", regserver::rand_alnum(10)));
    let m = util::write_oci_layout(&layout, name, layers, None);
    env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    let manifest_bytes = fs::read(layout.join("blobs/sha256").join(&m)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let hex = |d: &serde_json::Value| d["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let local = Local {
        name: name.to_string(),
        layout,
        manifest: format!("sha256:{m}"),
        manifest_bytes,
        layers: v["layers"].as_array().unwrap().iter().map(hex).collect(),
        config: hex(&v["config"]),
    };
    assert_eq!(env.inspect(name)["Descriptor"]["digest"], local.manifest.as_str(), "load kept the manifest");
    local
}

/// `strata push ARGS…` with extra environment variables.
fn push(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut c = env.cmd(&[&["push"], args].concat());
    c.env_remove("STRATA_PUSH_CHUNK_SIZE").env_remove("STRATA_MAX_CONCURRENT_UPLOADS");
    for (k, v) in vars {
        c.env(k, v);
    }
    Run::from_output(c.output().expect("run strata push"))
}

/// The last line of push's output: `TAG: digest: sha256:… size: N`.
#[track_caller]
fn pushed(stdout: &str) -> (String, String, u64) {
    let last = stdout.lines().last().unwrap_or_default();
    let (tag, rest) = last.split_once(": digest: ").unwrap_or_else(|| panic!("no digest line in:\n{stdout}"));
    let (digest, size) = rest.split_once(" size: ").unwrap_or_else(|| panic!("no size in {last:?}"));
    (tag.to_string(), digest.to_string(), size.parse().unwrap_or_else(|_| panic!("bad size in {last:?}")))
}

/// The statuses push printed for the blob whose short ID is `short`, in order.
fn statuses<'a>(stdout: &'a str, short: &str) -> Vec<&'a str> {
    stdout.lines().filter_map(|l| l.strip_prefix(short).and_then(|r| r.strip_prefix(": "))).collect()
}

/// Pulls `image` into a fresh store and checks it: same image ID, same diff IDs, sound store.
#[track_caller]
fn pull_back(image: &str, want: &serde_json::Value) -> TestEnv {
    let other = TestEnv::new();
    other.run(&["pull", "-q", image]).ok();
    let got = other.inspect(image);
    assert_eq!(got["Id"], want["Id"], "the pulled image is the pushed one");
    assert_eq!(got["RootFS"], want["RootFS"], "same layers (diff IDs)");
    other.assert_sound();
    other
}

fn session_files(env: &TestEnv) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(env.root.join("tmp/partial")) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("push-") && n.ends_with(".json")
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------

#[test]
fn registry_push_open_registry_byte_identical() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 64 << 10), layer("b", 16 << 10)]);
    let target = format!("{}/test/app:v1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &[&target], &[]);
    let out = ok(&r, &reg, "push");
    assert_eq!(out.lines().next(), Some(format!("The push refers to repository [{}/test/app]", reg.addr).as_str()));
    for s in local.shorts() {
        let st = statuses(out, &s);
        assert_eq!(st.first(), Some(&"Waiting"), "{s}:\n{out}");
        assert_eq!(st.last(), Some(&"Pushed"), "{s}:\n{out}");
    }
    let (tag, digest, size) = pushed(out);
    assert_eq!(tag, "v1");
    assert_eq!(digest, local.manifest, "push sends the stored manifest as it is");
    assert_eq!(size, local.manifest_bytes.len() as u64);

    // The registry serves exactly those bytes.
    let sk = Skopeo::new();
    let src = format!("docker://{target}");
    let raw = raw_manifest(&sk, &src, None);
    assert_eq!(raw, local.manifest_bytes, "skopeo inspect --raw gives the manifest byte for byte");
    assert_eq!(format!("sha256:{}", util::sha256_hex(&raw)), digest);
    // Blobs are where the registry keeps them, byte for byte.
    for l in &local.layers {
        assert!(fs::read(reg.blob_data_path(l)).unwrap() == local.blob(l), "layer {l} differs on the registry");
    }
    assert!(fs::read(reg.blob_data_path(&local.config)).unwrap() == local.blob(&local.config));

    // skopeo copies it, to another repository and to an OCI layout, without changing it.
    let dst = format!("docker://{}/test/app2:v1", reg.addr);
    let r = sk.run(&["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", &src, &dst]);
    ok(&r, &reg, "skopeo copy to another repository");
    let v: serde_json::Value =
        serde_json::from_str(sk.run(&["inspect", "--tls-verify=false", &dst]).ok()).expect("skopeo inspect JSON");
    assert_eq!(v["Digest"], digest.as_str(), "{v}");
    let tmp = scratch();
    let oci = tmp.path().join("oci");
    let r = sk.run(&["copy", "-q", "--src-tls-verify=false", &src, &format!("oci:{}:app", oci.display())]);
    ok(&r, &reg, "skopeo copy to an OCI layout");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");

    // strata pulls it back: the same image.
    let want = env.inspect("local/app:1");
    let other = pull_back(&target, &want);
    assert_eq!(other.inspect(&target)["Descriptor"]["digest"], digest.as_str());
}

#[test]
fn registry_push_skips_blobs_the_registry_has() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 200 << 10), layer("b", 8 << 10)]);
    let sk = Skopeo::new();
    regserver::push(&sk, &reg, &local.oci_ref(), "test/img:1", &[]);
    let before = requests(&reg);
    assert!(before.iter().any(Req::is_upload), "skopeo's uploads are in the access log:\n{}", reg.log());

    let target = format!("{}/test/img:2", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &[&target], &[]);
    let out = ok(&r, &reg, "push");
    for s in local.shorts() {
        assert_eq!(statuses(out, &s).last(), Some(&"Layer already exists"), "{s}:\n{out}");
        assert!(!statuses(out, &s).contains(&"Pushed"), "{s}:\n{out}");
    }
    let (tag, digest, _) = pushed(out);
    assert_eq!((tag.as_str(), digest.as_str()), ("2", local.manifest.as_str()));
    let after = requests(&reg);
    let new = &after[before.len()..];
    assert!(new.iter().any(|q| q.by_strata()), "strata's requests are logged:\n{}", show(new));
    assert_eq!(
        after.iter().filter(|q| q.target.contains("/blobs/uploads/")).count(),
        before.iter().filter(|q| q.target.contains("/blobs/uploads/")).count(),
        "no upload request:\n{}",
        show(new)
    );
    let heads = new.iter().filter(|q| q.method == "HEAD" && q.target.contains("/blobs/sha256:")).count();
    assert_eq!(heads, 3, "each blob is HEADed once:\n{}", show(new));
    assert!(new.iter().any(|q| q.method == "PUT" && q.target == "/v2/test/img/manifests/2" && q.status == 201));
    // Both tags name the same manifest.
    assert_eq!(raw_manifest(&sk, &format!("docker://{target}"), None), local.manifest_bytes);
}

#[test]
fn registry_push_mounts_from_another_repository() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 100 << 10), layer("b", 10 << 10)]);
    let a = format!("{}/a:1", reg.addr);
    let b = format!("{}/b:1", reg.addr);
    env.run(&["tag", "local/app:1", &a]).ok();
    ok(&push(&env, &[&a], &[]), &reg, "push a");
    env.run(&["tag", "local/app:1", &b]).ok();
    let mark = requests(&reg).len();
    let r = push(&env, &[&b], &[]);
    let out = ok(&r, &reg, "push b");
    for s in local.shorts() {
        assert_eq!(statuses(out, &s).last(), Some(&"Mounted from a"), "{s}:\n{out}");
    }
    assert_eq!(pushed(out).1, local.manifest);
    let new = requests(&reg)[mark..].to_vec();
    let mounts: Vec<&Req> = new.iter().filter(|q| q.target.contains("mount=")).collect();
    assert_eq!(mounts.len(), 3, "one mount per blob:\n{}", show(&new));
    for m in &mounts {
        assert!(m.method == "POST" && m.target.starts_with("/v2/b/blobs/uploads/?") && m.target.contains("from=a"));
        assert_eq!(m.status, 201, "{m:?}");
    }
    assert!(!new.iter().any(|q| q.method == "PATCH" || q.method == "PUT" && q.target.contains("/blobs/")));
    let sk = Skopeo::new();
    assert_eq!(raw_manifest(&sk, &format!("docker://{b}"), None), local.manifest_bytes);

    // A mount source that does not have the blobs: the registry opens an upload instead, which
    // strata uses.
    let other = load(&env, "local/other:1", &[layer("c", 50 << 10)]);
    let never = format!("{}/never:1", reg.addr);
    let d = format!("{}/d:1", reg.addr);
    env.run(&["tag", "local/other:1", &never]).ok();
    env.run(&["tag", "local/other:1", &d]).ok();
    let mark = requests(&reg).len();
    let r = push(&env, &[&d], &[]);
    let out = ok(&r, &reg, "push d");
    for s in other.shorts() {
        assert_eq!(statuses(out, &s).last(), Some(&"Pushed"), "{s}:\n{out}");
    }
    let new = requests(&reg)[mark..].to_vec();
    assert!(new.iter().any(|q| q.target.contains("mount=") && q.target.contains("from=never") && q.status == 202));
    let want = env.inspect("local/other:1");
    pull_back(&d, &want);
}

#[test]
fn registry_push_chunked_upload() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/big:1", &[layer("big", (3 << 20) + (512 << 10))]);
    let blob = local.blob(&local.layers[0]);
    let chunks = (blob.len() as u64).div_ceil(CHUNK);
    assert!(chunks >= 4, "{} bytes", blob.len());
    let target = format!("{}/test/big:1", reg.addr);
    env.run(&["tag", "local/big:1", &target]).ok();
    let r = push(&env, &[&target], &[("STRATA_PUSH_CHUNK_SIZE", "1MB")]);
    let out = ok(&r, &reg, "chunked push");
    assert_eq!(statuses(out, &local.layers[0][..12]).last(), Some(&"Pushed"), "{out}");
    let reqs = requests(&reg);
    let patches: Vec<&Req> =
        reqs.iter().filter(|q| q.method == "PATCH" && q.target.starts_with("/v2/test/big/blobs/uploads/")).collect();
    assert_eq!(patches.len() as u64, chunks, "one PATCH per 1 MiB chunk:\n{}", show(&reqs));
    assert!(patches.iter().all(|q| q.status == 202), "{}", show(&reqs));
    let commit = format!("digest=sha256%3A{}", local.layers[0]);
    let commit2 = format!("digest=sha256:{}", local.layers[0]);
    assert!(
        reqs.iter().any(|q| q.method == "PUT"
            && (q.target.contains(&commit) || q.target.contains(&commit2))
            && q.status == 201),
        "the upload is committed:\n{}",
        show(&reqs)
    );
    assert!(fs::read(reg.blob_data_path(&local.layers[0])).unwrap() == blob, "the registry holds the blob");
    assert!(session_files(&env).is_empty(), "no session file left: {:?}", session_files(&env));
    assert_eq!(pushed(out).1, local.manifest);
    pull_back(&target, &env.inspect("local/big:1"));

    // The default chunk size (32 MiB) sends this blob in one PUT.
    let target2 = format!("{}/test/mono:1", reg.addr);
    env.run(&["tag", "local/big:1", &target2]).ok();
    // (A mount from test/big would skip the upload: untag it first.)
    env.run(&["rmi", &target]).ok();
    let mark = requests(&reg).len();
    ok(&push(&env, &[&target2], &[]), &reg, "monolithic push");
    let new = requests(&reg)[mark..].to_vec();
    assert!(!new.iter().any(|q| q.method == "PATCH"), "{}", show(&new));
}

// ---------------------------------------------------------------------------------------------
// Resume.

/// A TCP proxy that holds the first bytes of every request for `delay` before passing them on,
/// so that a client killed meanwhile has sent nothing of that request to the registry. It can
/// also cut the client→server stream after a byte budget, in the middle of a request.
struct Gate {
    addr: String,
    delay_ms: Arc<AtomicU64>,
    /// Nothing more is forwarded, on any connection, while set.
    frozen: Arc<AtomicBool>,
    /// Client→server bytes still to forward before freezing; negative: no limit.
    budget: Arc<AtomicI64>,
    conns: Arc<Mutex<Vec<GateConn>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct GateConn {
    dead: Arc<AtomicBool>,
    client: TcpStream,
    server: TcpStream,
}

impl Gate {
    fn start(upstream: &str, delay: Duration) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let addr = listener.local_addr().unwrap().to_string();
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let frozen = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicI64::new(-1));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (up, dm, fr, cs, st) =
            (upstream.to_string(), delay_ms.clone(), frozen.clone(), conns.clone(), stop.clone());
        let bu = budget.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&up) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let dead = Arc::new(AtomicBool::new(false));
                cs.lock().unwrap().push(GateConn {
                    dead: dead.clone(),
                    client: client.try_clone().unwrap(),
                    server: server.try_clone().unwrap(),
                });
                // Set when the server has answered: the client's next bytes start a request.
                let fresh = Arc::new(AtomicBool::new(true));
                let (c, s, f, d) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), fresh.clone(), dead.clone());
                std::thread::spawn(move || gate_down(s, c, &f, &d));
                let limits = Limits { delay_ms: dm.clone(), frozen: fr.clone(), budget: bu.clone() };
                std::thread::spawn(move || gate_up(client, server, &fresh, &dead, &limits));
            }
        });
        Gate { addr, delay_ms, frozen, budget, conns, stop, thread: Some(thread) }
    }

    /// Forwards `bytes` more client→server bytes, then freezes.
    fn cut_after(&self, bytes: i64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Stops forwarding anything from now on.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Closes every connection (what they hold is dropped) and lets new ones through at once.
    fn open(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.dead.store(true, Ordering::SeqCst);
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
        self.delay_ms.store(0, Ordering::SeqCst);
        self.budget.store(-1, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr.parse().unwrap(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.dead.store(true, Ordering::SeqCst);
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
    }
}

/// What a gate's client→server pump obeys.
struct Limits {
    delay_ms: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    budget: Arc<AtomicI64>,
}

/// client → server, holding the start of each request.
fn gate_up(mut client: TcpStream, mut server: TcpStream, fresh: &AtomicBool, dead: &AtomicBool, l: &Limits) {
    let stopped = || dead.load(Ordering::SeqCst) || l.frozen.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if fresh.swap(false, Ordering::SeqCst) {
            let until = Instant::now() + Duration::from_millis(l.delay_ms.load(Ordering::SeqCst));
            while Instant::now() < until && !stopped() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if stopped() {
            break;
        }
        // Take what the budget allows of these n bytes.
        let mut take = n;
        let _ = l.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
            take = if b < 0 { n } else { n.min(b as usize) };
            (b >= 0).then(|| b - take as i64)
        });
        if take > 0 && server.write_all(&buf[..take]).is_err() {
            break;
        }
        if take < n {
            l.frozen.store(true, Ordering::SeqCst);
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

/// server → client, marking the end of each answer.
fn gate_down(mut server: TcpStream, mut client: TcpStream, fresh: &AtomicBool, dead: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) || client.write_all(&buf[..n]).is_err() {
            break;
        }
        fresh.store(true, Ordering::SeqCst);
    }
    let _ = client.shutdown(Shutdown::Write);
}

/// A kept upload session (STORE/tmp/partial/push-*.json).
#[derive(Debug, Clone)]
struct Session {
    path: PathBuf,
    location: String,
    offset: u64,
}

fn read_session(path: &Path) -> Option<Session> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    Some(Session {
        path: path.to_path_buf(),
        location: v["location"].as_str()?.to_string(),
        offset: v["offset"].as_u64()?,
    })
}

/// Starts `strata push TARGET` with 1 MiB chunks, its output piped.
fn spawn_chunked_push(env: &TestEnv, target: &str) -> Child {
    env.cmd(&["push", target])
        .env("STRATA_PUSH_CHUNK_SIZE", "1MB")
        .env_remove("STRATA_MAX_CONCURRENT_UPLOADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata push")
}

/// Starts `push` of `target` with 1 MiB chunks and SIGKILLs it as soon as its session file says
/// `kill_at(offset)`. `gate`, if any, is frozen before the kill. Returns the session then, or
/// an error if the push ended (or 20 s passed) first.
fn push_and_kill(
    env: &TestEnv,
    target: &str,
    gate: Option<&Gate>,
    kill_at: &dyn Fn(u64) -> bool,
) -> Result<Session, String> {
    let mut child = spawn_chunked_push(env, target);
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        if let Some(s) = session_files(env).iter().filter_map(|p| read_session(p)).find(|s| kill_at(s.offset)) {
            break Some(s);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if let Some(g) = gate {
        g.freeze();
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    if let Some(g) = gate {
        g.open();
    }
    found.ok_or_else(|| {
        format!(
            "the push ended ({}) before the session reached the point to kill it\nstdout:\n{}\nstderr:\n{}\nsessions: {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            session_files(env).iter().map(|p| fs::read_to_string(p).unwrap_or_default()).collect::<Vec<_>>()
        )
    })
}

/// Where the registry says an upload session stands (`Range` end + 1), asked directly.
fn registry_offset(reg: &Registry, location: &str) -> Result<u64, String> {
    let path = location.find("/v2/").map(|i| &location[i..]).ok_or_else(|| format!("odd location {location}"))?;
    let r = regserver::http_get(&reg.addr, path, &[]).map_err(|e| e.to_string())?;
    if r.status != 204 {
        return Err(format!("upload status {}: {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    let range = r.header("range").ok_or("no Range")?;
    let end: u64 =
        range.trim_start_matches("bytes=").split('-').nth(1).and_then(|e| e.parse().ok()).ok_or("bad Range")?;
    Ok(end + 1)
}

/// One attempt at: push through a gate, kill at `kill_at`, push again. `Err` when the kill did
/// not land where it had to (the caller tries again); panics when strata misbehaves.
fn resume_attempt(payload: usize, kill_at: &dyn Fn(u64, u64) -> bool) -> Result<(), String> {
    let reg = Registry::start(Auth::Open);
    let gate = Gate::start(&reg.addr, Duration::from_millis(120));
    let env = TestEnv::new();
    let local = load(&env, "local/big:1", &[layer("big", payload)]);
    let blob = local.blob(&local.layers[0]);
    let size = blob.len() as u64;
    let chunks = size.div_ceil(CHUNK);
    let target = format!("{}/test/resume:1", gate.addr);
    env.run(&["tag", "local/big:1", &target]).ok();

    let s = push_and_kill(&env, &target, Some(&gate), &|o| kill_at(o, size))?;
    assert!(s.offset % CHUNK == 0 || s.offset == size, "offsets are chunk boundaries: {s:?}");
    // The registry must hold exactly what the session says, or the kill landed mid-request.
    let theirs = registry_offset(&reg, &s.location)?;
    if theirs != s.offset {
        return Err(format!("the registry holds {theirs} bytes, the session says {}", s.offset));
    }
    assert!(!requests(&reg).iter().any(|q| q.method == "PUT"
        && q.target.contains("blobs/uploads")
        && q.by_strata()
        && q.target.contains(&local.layers[0])));

    let mark = requests(&reg).len();
    let r = push(&env, &[&target], &[("STRATA_PUSH_CHUNK_SIZE", "1MB")]);
    let out = ok(&r, &reg, "the second push");
    let new = requests(&reg)[mark..].to_vec();
    let upload_path = s.location.find("/v2/").map(|i| &s.location[i..]).unwrap();
    let upload_path = upload_path.split('?').next().unwrap();
    assert!(
        new.iter().any(|q| q.method == "GET" && q.by_strata() && q.target.starts_with(upload_path) && q.status == 204),
        "strata asks where the session stands ({upload_path}):\n{}",
        show(&new)
    );
    let patches = new.iter().filter(|q| q.method == "PATCH").count() as u64;
    let left = (size - s.offset).div_ceil(CHUNK);
    assert_eq!(
        patches,
        left,
        "the second push sends only the {left} chunks left of {chunks} (killed at {} of {size}):\n{}",
        s.offset,
        show(&new)
    );
    assert!(patches < chunks);
    assert!(
        !new.iter().any(|q| q.method == "POST" && q.target.starts_with("/v2/test/resume/blobs/uploads/")),
        "no new upload session:\n{}",
        show(&new)
    );
    let st = statuses(out, &local.layers[0][..12]);
    assert!(st.iter().any(|s| s.starts_with("Resuming from")), "{out}");
    assert_eq!(st.last(), Some(&"Pushed"), "{out}");
    assert!(!s.path.exists(), "the session file is removed: {}", s.path.display());
    assert!(session_files(&env).is_empty());
    assert!(fs::read(reg.blob_data_path(&local.layers[0])).unwrap() == blob, "the registry holds the blob");
    assert_eq!(pushed(out).1, local.manifest);
    pull_back(&target, &env.inspect("local/big:1"));
    Ok(())
}

fn resume(payload: usize, kill_at: &dyn Fn(u64, u64) -> bool) {
    let mut why = Vec::new();
    for _ in 0..3 {
        match resume_attempt(payload, kill_at) {
            Ok(()) => return,
            Err(e) => {
                println!("resume attempt inconclusive: {e}");
                why.push(e);
            }
        }
    }
    panic!("could not interrupt the push at the right point in 3 attempts:\n{}", why.join("\n---\n"));
}

#[test]
fn registry_push_resumes_an_interrupted_upload() {
    if !need_tools() {
        return;
    }
    // Killed with 3 of 7 chunks sent.
    resume(6 << 20, &|o, size| o >= 3 * CHUNK && o < size);
}

#[test]
fn registry_push_resumes_when_only_the_commit_is_missing() {
    if !need_tools() {
        return;
    }
    // Killed after the last chunk, before the PUT that commits the upload.
    resume((3 << 20) + 1000, &|o, size| o == size);
}

#[test]
fn registry_push_rerun_after_a_cut_mid_chunk() {
    if !need_tools() {
        return;
    }
    // The connection dies in the middle of a PATCH: the registry has taken part of that chunk,
    // more than the saved session says, and distribution then refuses the session. The next
    // push must still get the image there (by starting that blob over).
    let reg = Registry::start(Auth::Open);
    let gate = Gate::start(&reg.addr, Duration::ZERO);
    let env = TestEnv::new();
    let local = load(&env, "local/big:1", &[layer("big", 6 << 20)]);
    let blob = local.blob(&local.layers[0]);
    let target = format!("{}/test/cut:1", gate.addr);
    env.run(&["tag", "local/big:1", &target]).ok();
    let mut child = spawn_chunked_push(&env, &target);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !session_files(&env).iter().filter_map(|p| read_session(p)).any(|s| s.offset >= 2 * CHUNK) {
        assert!(child.try_wait().unwrap().is_none() && Instant::now() < deadline, "the push ended before 2 chunks");
        std::thread::sleep(Duration::from_micros(300));
    }
    // 300 KiB more, then the stream stops: in the middle of a 1 MiB chunk.
    gate.cut_after(300 << 10);
    while !gate.is_frozen() {
        assert!(Instant::now() < deadline, "the gate never reached its budget");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = child.kill();
    let _ = child.wait();
    gate.open();
    let s = read_session(&session_files(&env)[0]).expect("a session is kept");
    assert!(s.offset >= 2 * CHUNK && s.offset < blob.len() as u64, "{s:?}");

    let r = push(&env, &[&target], &[("STRATA_PUSH_CHUNK_SIZE", "1MB")]);
    let out = ok(&r, &reg, "the second push");
    let refused = reg.log().contains("upload resumed at wrong offest");
    println!("session at {}; distribution refused it: {refused}", s.offset);
    assert_eq!(statuses(out, &local.layers[0][..12]).last(), Some(&"Pushed"), "{out}");
    assert_eq!(pushed(out).1, local.manifest);
    assert!(session_files(&env).is_empty(), "{:?}", session_files(&env));
    assert!(fs::read(reg.blob_data_path(&local.layers[0])).unwrap() == blob, "the registry holds the blob");
    pull_back(&target, &env.inspect("local/big:1"));
}

#[test]
fn registry_push_restarts_when_the_registry_forgot_the_session() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let gate = Gate::start(&reg.addr, Duration::from_millis(120));
    let env = TestEnv::new();
    let local = load(&env, "local/big:1", &[layer("big", 4 << 20)]);
    let blob = local.blob(&local.layers[0]);
    let size = blob.len() as u64;
    let target = format!("{}/test/forgot:1", gate.addr);
    env.run(&["tag", "local/big:1", &target]).ok();
    let s = push_and_kill(&env, &target, Some(&gate), &|o| o >= 2 * CHUNK && o < size).unwrap();
    // The registry forgets the upload (as after a restart with other storage, or a purge).
    let uploads = reg.storage.join("docker/registry/v2/repositories/test/forgot/_uploads");
    assert!(uploads.is_dir(), "{}", uploads.display());
    fs::remove_dir_all(&uploads).unwrap();

    let mark = requests(&reg).len();
    let r = push(&env, &[&target], &[("STRATA_PUSH_CHUNK_SIZE", "1MB")]);
    let out = ok(&r, &reg, "the second push");
    let new = requests(&reg)[mark..].to_vec();
    assert!(
        new.iter().any(|q| q.method == "GET" && q.target.contains("/blobs/uploads/") && q.status == 404),
        "strata asked for the session and learnt it was gone:\n{}",
        show(&new)
    );
    let patches = new.iter().filter(|q| q.method == "PATCH").count() as u64;
    assert_eq!(patches, size.div_ceil(CHUNK), "the blob is sent again from the start:\n{}", show(&new));
    assert_eq!(statuses(out, &local.layers[0][..12]).last(), Some(&"Pushed"), "{out}");
    assert!(!s.path.exists() && session_files(&env).is_empty());
    assert!(fs::read(reg.blob_data_path(&local.layers[0])).unwrap() == blob);
    pull_back(&target, &env.inspect("local/big:1"));
}

// ---------------------------------------------------------------------------------------------

#[test]
fn registry_push_zstd() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let text = "all work and no play makes jack a dull boy\n".repeat(20_000);
    let tars =
        vec![Layer::new().dir("etc/", 0o755).file("etc/text", text.as_bytes(), 0o644).finish(), layer("b", 32 << 10)];
    let local = load(&env, "local/app:1", &tars);
    let target = format!("{}/test/zstd:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &["--compression", "zstd", &target], &[]);
    let out = ok(&r, &reg, "push --compression zstd");
    let (_, digest, size) = pushed(out);
    assert_ne!(digest, local.manifest, "a re-compressed image has another manifest");

    let sk = Skopeo::new();
    let src = format!("docker://{target}");
    let raw = raw_manifest(&sk, &src, None);
    assert_eq!(format!("sha256:{}", util::sha256_hex(&raw)), digest);
    assert_eq!(raw.len() as u64, size);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{m}");
    assert_eq!(m["config"]["digest"], format!("sha256:{}", local.config), "the config is unchanged: {m}");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["mediaType"], ZSTD_LAYER, "{m}");
        let hex = l["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let data = fs::read(reg.blob_data_path(hex)).unwrap();
        assert_eq!(data.len() as u64, l["size"].as_u64().unwrap());
        assert_eq!(&data[..4], &[0x28, 0xb5, 0x2f, 0xfd], "layer {i} is zstd");
        assert_ne!(hex, local.layers[i]);
    }

    let want = env.inspect("local/app:1");
    let other = pull_back(&target, &want);
    assert_eq!(other.inspect(&target)["Descriptor"]["digest"], digest.as_str());

    let tmp = scratch();
    let oci = tmp.path().join("oci");
    let r = sk.run(&["copy", "-q", "--src-tls-verify=false", &src, &format!("oci:{}:z", oci.display())]);
    ok(&r, &reg, "skopeo copy of the zstd image");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");

    // Pushing again changes nothing.
    let r = push(&env, &["--compression", "zstd", &target], &[]);
    let out = ok(&r, &reg, "second zstd push");
    assert_eq!(pushed(out).1, digest, "re-compression is deterministic");
}

#[test]
fn registry_push_quiet_and_json() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 20 << 10)]);
    let target = format!("{}/test/q:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &["-q", &target], &[]);
    let out = ok(&r, &reg, "push -q");
    assert_eq!(out, format!("{}\n", local.manifest), "exactly the digest");
    assert!(out.len() == 72 && out[7..71].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    let target = format!("{}/test/json:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &["--progress", "json", &target], &[]);
    let out = ok(&r, &reg, "push --progress json");
    let events: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done", "{out}");
    assert_eq!(last["digest"], local.manifest.as_str());
    assert_eq!(last["size"], local.manifest_bytes.len());
    assert!(events.iter().any(|e| e["event"] == "layer" && e["status"] == "Mounted from test/q"), "{out}");

    // No tag: `latest`.
    let target = format!("{}/test/notag", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let out = ok(&push(&env, &[&target], &[]), &reg, "push without a tag").to_string();
    assert_eq!(pushed(&out).0, "latest");
    let sk = Skopeo::new();
    assert_eq!(raw_manifest(&sk, &format!("docker://{target}:latest"), None), local.manifest_bytes);
}

#[test]
fn registry_push_errors() {
    if !need_tools() {
        return;
    }
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 8 << 10)]);
    let sk = Skopeo::new();

    // Not in the store.
    let reg = Registry::start(Auth::Open);
    let r = push(&env, &[&format!("{}/test/none:1", reg.addr)], &[]);
    let err = r.fails(125);
    assert!(err.contains("does not exist locally"), "{err}");
    // A digest reference.
    let by_digest = format!("{}/test/app@{}", reg.addr, local.manifest);
    env.run(&["tag", "local/app:1", &format!("{}/test/app:1", reg.addr)]).ok();
    let err = push(&env, &[&by_digest], &[]).fails(125).to_string();
    assert!(err.starts_with("Error: "), "{err}");
    assert!(!requests(&reg).iter().any(|q| q.method == "PUT"), "nothing was pushed");

    // Basic auth: refused without login, works after it.
    let reg = Registry::start(Auth::Basic(vec![("alice".into(), "wonderland".into())]));
    let target = format!("{}/test/app:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &[&target], &[]);
    let err = r.fails(125);
    assert!(err.contains("strata login"), "{err}");
    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland\n");
    ok(&r, &reg, "login");
    let out = ok(&push(&env, &[&target], &[]), &reg, "push after login").to_string();
    assert_eq!(pushed(&out).1, local.manifest);
    assert_eq!(raw_manifest(&sk, &format!("docker://{target}"), Some("alice:wonderland")), local.manifest_bytes);

    // Token auth with anonymous pull: an anonymous push is refused.
    let reg = Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: true });
    let target = format!("{}/test/app:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let r = push(&env, &[&target], &[]);
    let err = r.fails(125);
    assert!(err.contains("unauthorized") || err.contains("strata login"), "{err}");
    assert!(!requests(&reg).iter().any(|q| q.method == "PUT" && q.status < 300), "nothing was stored");
    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland");
    ok(&r, &reg, "login (token)");
    let out = ok(&push(&env, &[&target], &[]), &reg, "push after login (token)").to_string();
    assert_eq!(pushed(&out).1, local.manifest);
    assert_eq!(raw_manifest(&sk, &format!("docker://{target}"), None), local.manifest_bytes);

    // Nobody listening.
    let target = format!("{}/test/app:1", dead_addr());
    env.run(&["tag", "local/app:1", &target]).ok();
    let t = Instant::now();
    let r = push(&env, &[&target], &[]);
    let err = r.fails(125);
    assert!(err.contains("cannot reach registry"), "{err}");
    println!("unreachable registry: gave up after {:?}", t.elapsed());
}

#[test]
fn registry_push_mount_tries_every_source() {
    if !need_tools() {
        return;
    }
    // Two other repositories name the image locally: `aaa` (first in order) never got it, `bbb`
    // has it. The mount from `aaa` fails (202, an upload session); the one from `bbb` works.
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 300 << 10)]);
    for repo in ["aaa", "bbb"] {
        env.run(&["tag", "local/app:1", &format!("{}/{repo}:1", reg.addr)]).ok();
    }
    ok(&push(&env, &[&format!("{}/bbb:1", reg.addr)], &[]), &reg, "push bbb");
    let target = format!("{}/ccc:1", reg.addr);
    env.run(&["tag", "local/app:1", &target]).ok();
    let mark = requests(&reg).len();
    let r = push(&env, &[&target], &[]);
    let out = ok(&r, &reg, "push ccc");
    let new = requests(&reg)[mark..].to_vec();
    for s in local.shorts() {
        assert_eq!(statuses(out, &s).last(), Some(&"Mounted from bbb"), "{s}:\n{out}\n{}", show(&new));
    }
    assert!(!new.iter().any(|q| q.method == "PATCH" || q.method == "PUT" && q.target.contains("/blobs/")));
}

#[test]
fn registry_push_token_auth_mount() {
    if !need_tools() {
        return;
    }
    let reg =
        Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: false });
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 40 << 10)]);
    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland\n");
    ok(&r, &reg, "login");
    let a = format!("{}/team/a:1", reg.addr);
    let b = format!("{}/team/b:1", reg.addr);
    env.run(&["tag", "local/app:1", &a]).ok();
    env.run(&["tag", "local/app:1", &b]).ok();
    ok(&push(&env, &[&a], &[]), &reg, "push a");
    let r = push(&env, &[&b], &[]);
    let out = ok(&r, &reg, "push b");
    for s in local.shorts() {
        assert_eq!(statuses(out, &s).last(), Some(&"Mounted from team/a"), "{s}:\n{out}");
    }
    let sk = Skopeo::new();
    assert_eq!(raw_manifest(&sk, &format!("docker://{b}"), Some("alice:wonderland")), local.manifest_bytes);
    let other = TestEnv::new();
    // A fresh store with the same credentials pulls it.
    fs::create_dir_all(other.path("docker-config")).unwrap();
    fs::copy(env.path("docker-config/config.json"), other.path("docker-config/config.json")).unwrap();
    other.run(&["pull", "-q", &b]).ok();
    assert_eq!(other.inspect(&b)["Id"], env.inspect("local/app:1")["Id"]);
}

#[test]
fn registry_push_docker_schema2_image() {
    if !need_tools() {
        return;
    }
    // A docker v2 schema 2 image (pushed by skopeo, pulled by strata) is pushed back as it is;
    // `--compression zstd` turns it into an OCI image.
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let local = load(&env, "local/app:1", &[layer("a", 30 << 10), layer("b", 10 << 10)]);
    let sk = Skopeo::new();
    regserver::push(&sk, &reg, &local.oci_ref(), "up/v2s2:1", &["--format", "v2s2"]);
    let src = format!("docker://{}/up/v2s2:1", reg.addr);
    let theirs = raw_manifest(&sk, &src, None);
    let m: serde_json::Value = serde_json::from_slice(&theirs).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let pulled = format!("{}/up/v2s2:1", reg.addr);
    env.run(&["pull", "-q", &pulled]).ok();
    let digest = format!("sha256:{}", util::sha256_hex(&theirs));
    assert_eq!(env.inspect(&pulled)["Descriptor"]["digest"], digest.as_str());

    let target = format!("{}/down/v2s2:1", reg.addr);
    env.run(&["tag", &pulled, &target]).ok();
    let out = ok(&push(&env, &[&target], &[]), &reg, "push v2s2").to_string();
    assert_eq!(pushed(&out).1, digest);
    assert_eq!(raw_manifest(&sk, &format!("docker://{target}"), None), theirs);

    let target = format!("{}/down/zstd:1", reg.addr);
    env.run(&["tag", &pulled, &target]).ok();
    let out = ok(&push(&env, &["--compression", "zstd", &target], &[]), &reg, "push v2s2 as zstd").to_string();
    let raw = raw_manifest(&sk, &format!("docker://{target}"), None);
    assert_eq!(format!("sha256:{}", util::sha256_hex(&raw)), pushed(&out).1);
    let z: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(z["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{z}");
    assert_eq!(z["config"]["mediaType"], "application/vnd.oci.image.config.v1+json", "{z}");
    assert_eq!(z["config"]["digest"], m["config"]["digest"], "{z}");
    assert!(z["layers"].as_array().unwrap().iter().all(|l| l["mediaType"] == ZSTD_LAYER), "{z}");
    pull_back(&target, &env.inspect("local/app:1"));
}

#[test]
fn registry_push_by_image_id_is_refused() {
    // docker push takes NAME[:TAG] only: an image ID is not a tag in the store, so docker answers
    // "An image does not exist locally with the tag". A proxy that refuses connections keeps
    // anything from leaving the machine.
    let env = TestEnv::new();
    load(&env, "local/app:1", &[layer("a", 1024)]);
    let id = env.inspect("local/app:1")["Id"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let dead = format!("http://{}", dead_addr());
    for arg in [&id[..12], id.as_str()] {
        let mut child = env
            .cmd(&["push", arg])
            .env("HTTPS_PROXY", &dead)
            .env("HTTP_PROXY", &dead)
            .env("https_proxy", &dead)
            .env("http_proxy", &dead)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(
            !stdout.contains("The push refers to repository"),
            "push {arg}: it set out to push\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert_eq!(o.status.code(), Some(125), "push {arg}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stderr.contains("does not exist locally"), "push {arg}: {stderr}");
    }
}
