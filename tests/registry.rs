//! `strata pull`, `login` and `logout` against a real registry (tests/regserver.rs): output,
//! what lands in the store, HEAD-only re-pulls, errors, resumed and retried downloads,
//! concurrent pulls, multi-platform images, and the three ways to authenticate (Basic, token,
//! credential helper).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::regserver::{
    self, dead_addr, gunzip, hex, host_arch, need_tools, push, requests, scratch, show, start_proxy, test_image,
    write_multiarch_layout, Auth, Fault, MultiArch, Registry, Req, Skopeo, TestImage,
};
use crate::util::{self, Layer, Run, TestEnv};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Asserts that a strata command succeeded, showing the registry log if not; returns stdout.
#[track_caller]
fn ok<'a>(r: &'a Run, reg: &Registry) -> &'a str {
    assert_eq!(
        r.code,
        0,
        "expected success\nstdout:\n{}\nstderr:\n{}\nregistry log:\n{}",
        r.stdout,
        r.stderr,
        reg.log()
    );
    &r.stdout
}

/// The registry's HTTP/1.1 requests for `/v2/…`.
fn access(reg: &Registry) -> Vec<Req> {
    requests(reg).into_iter().filter(|q| q.proto == "HTTP/1.1" && q.target.starts_with("/v2/")).collect()
}

/// Those of [`access`] with `method` (GET, HEAD).
fn requests_of(reg: &Registry, method: &str) -> Vec<Req> {
    access(reg).into_iter().filter(|q| q.method == method).collect()
}

/// Those of [`access`] that GET blob `hex`.
fn blob_gets(reg: &Registry, hex: &str) -> Vec<Req> {
    let end = format!("/blobs/sha256:{hex}");
    requests_of(reg, "GET").into_iter().filter(|q| q.target.ends_with(&end)).collect()
}

/// The uncompressed tar's digest (the diff ID) of a gzip layer blob, hex.
fn diff_id_of(gz: &[u8]) -> String {
    util::sha256_hex(&gunzip(gz))
}

fn blob_path(env: &TestEnv, hex: &str) -> PathBuf {
    env.root.join("blobs/sha256").join(hex)
}

fn partial_path(env: &TestEnv, hex: &str) -> PathBuf {
    env.root.join("tmp/partial").join(format!("sha256-{hex}"))
}

/// What is left under `tmp/partial` (nothing, after a successful pull).
fn partial_files(env: &TestEnv) -> Vec<String> {
    match fs::read_dir(env.root.join("tmp/partial")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// `images --format json`, as (Repository:Tag, ID) pairs, sorted.
fn listed(env: &TestEnv) -> Vec<String> {
    let r = env.run(&["images", "--format", "json"]);
    let mut v: Vec<String> = r
        .ok()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("images --format json prints JSON lines");
            format!("{}:{}", v["Repository"].as_str().unwrap(), v["Tag"].as_str().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// An architecture that is not this host's.
fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// Writes the one-layer test image with `payload` random bytes at `dir` and pushes it to `dest`
/// (`repo:tag`) with `extra` skopeo flags.
fn push_image(reg: &Registry, dir: &Path, payload: usize, dest: &str, extra: &[&str]) -> TestImage {
    let img = test_image(dir, payload);
    push(&Skopeo::new(), reg, &img.oci_ref(), dest, extra);
    img
}

/// A layer holding `name` with `content` plus `size` random bytes in `name.bin`.
fn layer(name: &str, content: &str, size: usize) -> Vec<u8> {
    Layer::new()
        .dir("data/", 0o755)
        .file(&format!("data/{name}"), content.as_bytes(), 0o644)
        .file(&format!("data/{name}.bin"), &regserver::rand_bytes(size), 0o644)
        .finish()
}

/// A `docker-credential-teststore` helper (sh) keeping credentials as files in `store`, one per
/// server URL, and logging each action to `store/actions`; returns the folder to put on PATH.
fn write_cred_helper(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    let store = dir.join("helper-store");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&store).unwrap();
    let script = format!(
        r#"#!/bin/sh
S='{store}'
key() {{ printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }}
case "$1" in
  store)
    input=$(cat)
    url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    printf '%s' "$input" > "$S/$(key "$url")"
    echo "store $url" >> "$S/actions";;
  get)
    url=$(cat)
    echo "get $url" >> "$S/actions"
    f="$S/$(key "$url")"
    if [ -s "$f" ]; then cat "$f"; else echo 'credentials not found in native keychain'; exit 1; fi;;
  erase)
    url=$(cat)
    echo "erase $url" >> "$S/actions"
    f="$S/$(key "$url")"
    if [ -e "$f" ]; then rm -f "$f"; else echo 'credentials not found in native keychain'; exit 1; fi;;
  *) echo "unknown action $1" >&2; exit 2;;
esac
"#,
        store = store.display()
    );
    let helper = bin.join("docker-credential-teststore");
    fs::write(&helper, script).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    (bin, store)
}

/// PATH with `bin` first.
fn path_with(bin: &Path) -> std::ffi::OsString {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&old));
    std::env::join_paths(paths).unwrap()
}

fn docker_config(env: &TestEnv) -> PathBuf {
    env.dir.path().join("docker-config/config.json")
}

// ---------------------------------------------------------------------------------------------
// Pull: output and store.

#[test]
fn registry_pull_prints_docker_lines_and_fills_the_store() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let env = TestEnv::new();
    let full = format!("{}/test/img:1", reg.addr);
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    let short = &img.layer_digest[..12];
    let want = format!(
        "1: Pulling from test/img\n{short}: Waiting\n{short}: Downloading\n{short}: Download complete\n\
         {short}: Pull complete\nDigest: sha256:{}\nStatus: Downloaded newer image for {full}\n{full}\n",
        img.manifest
    );
    assert_eq!(out, want, "stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("Error"), "{}", r.stderr);

    // The blob, the unpacked snapshot, nothing left in tmp/partial.
    assert_eq!(fs::read(blob_path(&env, &img.layer_digest)).unwrap(), img.layer);
    let diff_id = diff_id_of(&img.layer);
    let motd = env.root.join("snapshots").join(&diff_id).join("fs/etc/motd");
    assert_eq!(fs::read_to_string(&motd).unwrap(), "strata registry test\n");
    assert_eq!(fs::metadata(env.root.join("snapshots").join(&diff_id).join("fs/payload.bin")).unwrap().len(), 16 << 10);
    assert!(partial_files(&env).is_empty(), "{:?}", partial_files(&env));

    // images, inspect, check.
    assert_eq!(listed(&env), vec![format!("{}/test/img:1", reg.addr)]);
    let v = env.inspect(&full);
    let config_digest = {
        let m: Value =
            serde_json::from_slice(&fs::read(img.layout.join("blobs/sha256").join(&img.manifest)).unwrap()).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(v["Id"], config_digest);
    assert_eq!(v["RepoTags"], json!([full]));
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["RootFS"]["Layers"], json!([format!("sha256:{diff_id}")]));
    assert_eq!(env.image_ids(), vec![config_digest]);
    env.assert_sound();
}

#[test]
fn registry_repull_of_an_unchanged_image_is_one_head() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let env = TestEnv::new();
    let full = format!("{}/test/img:1", reg.addr);
    ok(&env.run(&["pull", &full]), &reg);
    let gets = requests_of(&reg, "GET").len();
    let heads = requests_of(&reg, "HEAD").len();
    assert!(
        gets >= 3,
        "a first pull GETs the manifest, the config and the layer:\n{}",
        show(&requests_of(&reg, "GET"))
    );
    assert_eq!(blob_gets(&reg, &img.layer_digest).len(), 1);

    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    // docker prints no layer lines here; strata may print "Already exists" for each.
    let short = &img.layer_digest[..12];
    let kept: Vec<&str> = out.lines().filter(|l| *l != format!("{short}: Already exists")).collect();
    assert_eq!(
        kept,
        [
            "1: Pulling from test/img".to_string(),
            format!("Digest: sha256:{}", img.manifest),
            format!("Status: Image is up to date for {full}"),
            full.clone()
        ],
        "{out}"
    );
    let after = requests_of(&reg, "GET");
    assert_eq!(after.len(), gets, "a re-pull must not GET anything; new requests:\n{}", show(&after[gets..]));
    assert_eq!(requests_of(&reg, "HEAD").len(), heads + 1, "one HEAD of the manifest");
    assert!(requests_of(&reg, "HEAD").last().unwrap().target.ends_with("/v2/test/img/manifests/1"));

    // JSON mode says the same.
    let r = env.run(&["pull", "--progress", "json", &full]);
    let last: Value = serde_json::from_str(ok(&r, &reg).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["updated"], false);
    assert_eq!(requests_of(&reg, "GET").len(), gets);
    env.assert_sound();
}

#[test]
fn registry_pull_of_another_tag_of_the_same_image_downloads_nothing() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 16 << 10);
    let sk = Skopeo::new();
    push(&sk, &reg, &img.oci_ref(), "test/img:1", &[]);
    push(&sk, &reg, &img.oci_ref(), "test/img:2", &[]);
    let env = TestEnv::new();
    ok(&env.run(&["pull", &format!("{}/test/img:1", reg.addr)]), &reg);
    let gets = requests_of(&reg, "GET").len();
    let r = env.run(&["pull", &format!("{}/test/img:2", reg.addr)]);
    let out = ok(&r, &reg);
    let short = &img.layer_digest[..12];
    assert!(out.contains(&format!("{short}: Already exists\n")), "{out}");
    assert!(!out.contains("Downloading"), "{out}");
    assert!(out.contains(&format!("Digest: sha256:{}\n", img.manifest)), "{out}");
    assert_eq!(blob_gets(&reg, &img.layer_digest).len(), 1, "the layer is downloaded once");
    assert_eq!(requests_of(&reg, "GET").len(), gets, "{}", show(&requests_of(&reg, "GET")[gets..]));
    assert_eq!(listed(&env), vec![format!("{}/test/img:1", reg.addr), format!("{}/test/img:2", reg.addr)]);
    assert_eq!(env.image_ids().len(), 1);
    env.assert_sound();
}

#[test]
fn registry_pull_default_tag_quiet_and_json() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 16 << 10);
    let sk = Skopeo::new();
    push(&sk, &reg, &img.oci_ref(), "test/img:latest", &[]);
    push(&sk, &reg, &img.oci_ref(), "test/q:7", &[]);
    push(&sk, &reg, &img.oci_ref(), "test/j:8", &[]);

    // No tag: latest.
    let env = TestEnv::new();
    let r = env.run(&["pull", &format!("{}/test/img", reg.addr)]);
    let out = ok(&r, &reg);
    let full = format!("{}/test/img:latest", reg.addr);
    assert!(out.starts_with("Using default tag: latest\nlatest: Pulling from test/img\n"), "{out}");
    assert!(out.ends_with(&format!("Status: Downloaded newer image for {full}\n{full}\n")), "{out}");
    assert_eq!(env.inspect(&full)["RepoTags"], json!([full]));

    // -q: the reference and nothing else, on a fresh store.
    let env = TestEnv::new();
    let full = format!("{}/test/q:7", reg.addr);
    let r = env.run(&["pull", "-q", &full]);
    assert_eq!(ok(&r, &reg), format!("{full}\n"));
    assert!(!r.stderr.contains("Downloading"), "quiet means quiet: {}", r.stderr);
    assert_eq!(listed(&env), vec![full.clone()]);

    // --progress json: JSON lines, the last one the result.
    let env = TestEnv::new();
    let full = format!("{}/test/j:8", reg.addr);
    let r = env.run(&["pull", "--progress", "json", &full]);
    let out = ok(&r, &reg);
    let events: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect();
    let layer_d = format!("sha256:{}", img.layer_digest);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "layer" && e["digest"] == layer_d.as_str())
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Waiting", "Downloading", "Download complete", "Pull complete"], "{out}");
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "{out}");
    let lastp = progress.last().unwrap();
    assert_eq!(lastp["done"], json!(img.layer.len()), "{out}");
    assert_eq!(lastp["size"], json!(img.layer.len()), "{out}");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{out}");
    assert_eq!(done["reference"], full);
    assert_eq!(done["digest"], format!("sha256:{}", img.manifest));
    assert_eq!(done["updated"], true);
    assert_eq!(done["id"], env.inspect(&full)["Id"]);
    env.assert_sound();
}

#[test]
fn registry_pull_by_digest() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let env = TestEnv::new();
    let by_digest = format!("{}/test/img@sha256:{}", reg.addr, img.manifest);
    let r = env.run(&["pull", &by_digest]);
    let out = ok(&r, &reg);
    assert!(out.starts_with(&format!("sha256:{}: Pulling from test/img\n", img.manifest)), "{out}");
    assert!(!out.contains("Using default tag"), "{out}");
    assert!(out.contains(&format!("Digest: sha256:{}\n", img.manifest)), "{out}");
    assert!(out.ends_with(&format!("{by_digest}\n")), "{out}");
    assert_eq!(fs::read(blob_path(&env, &img.layer_digest)).unwrap(), img.layer);
    assert_eq!(env.image_ids().len(), 1);
    // The manifest was fetched by digest, never by tag.
    let gets = requests_of(&reg, "GET");
    let by_digest_target = format!("/manifests/sha256:{}", img.manifest);
    assert!(gets.iter().any(|q| q.target.ends_with(&by_digest_target)), "{}", show(&gets));
    assert!(!gets.iter().any(|q| q.target.ends_with("/manifests/1")), "{}", show(&gets));
    let v = env.inspect(&by_digest);
    assert_eq!(v["Descriptor"]["digest"], format!("sha256:{}", img.manifest));
    env.assert_sound();
}

// ---------------------------------------------------------------------------------------------
// Pull: errors.

#[test]
fn registry_pull_of_unknown_repository_or_tag_is_not_found() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let env = TestEnv::new();
    for r in [format!("{}/test/img:nope", reg.addr), format!("{}/no/such:1", reg.addr)] {
        let run = env.run(&["pull", &r]);
        let err = run.fails(125);
        assert!(err.starts_with("Error: "), "{err}");
        assert!(err.contains("not found"), "{r}: {err}");
        assert!(!run.stdout.contains("Digest:"), "{}", run.stdout);
    }
    assert_eq!(env.run(&["images", "-q"]).ok(), "");
}

#[test]
fn registry_pull_from_an_unreachable_registry() {
    let env = TestEnv::new();
    let addr = dead_addr();
    let t = Instant::now();
    let r = env.run(&["pull", &format!("{addr}/test/img:1")]);
    let err = r.fails(125);
    assert!(err.contains("cannot reach registry"), "{err}");
    assert!(err.contains(&addr), "the message names the registry: {err}");
    println!("unreachable registry: failed after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert_eq!(env.run(&["images", "-q"]).ok(), "");
}

#[test]
fn registry_pull_of_a_corrupt_blob_stores_nothing() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let data = reg.blob_data_path(&img.layer_digest);
    let mut bad = regserver::rand_bytes(img.layer.len());
    bad[0] ^= 0x5a; // never equal by chance
    assert_ne!(bad, img.layer);
    fs::write(&data, &bad).unwrap();
    let env = TestEnv::new();
    let r = env.run(&["pull", &format!("{}/test/img:1", reg.addr)]);
    let err = r.fails(125);
    assert!(err.contains("digest"), "a mismatch is reported as one: {err}");
    assert!(err.contains(&img.layer_digest), "it names the blob: {err}");
    assert_eq!(env.run(&["images", "-q"]).ok(), "");
    assert!(!blob_path(&env, &img.layer_digest).exists(), "the bad blob must not be stored");
    assert!(!partial_path(&env, &img.layer_digest).exists(), "the bad bytes must not be kept to resume from");
    assert!(!env.root.join("snapshots").join(diff_id_of(&img.layer)).exists());
    env.assert_sound();
}

/// A layer whose gzip stream is corrupt near its start: the unpack, which follows the download,
/// notices before the last byte arrives. The error must still say what is wrong, the bad bytes
/// must not be kept to resume from, and once the registry serves the right bytes again the next
/// pull must succeed.
#[test]
fn registry_pull_of_a_corrupt_blob_noticed_by_the_unpack() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 256 << 10, "test/img:1", &[]);
    let mut bad = img.layer.clone();
    for b in &mut bad[20..4096] {
        *b ^= 0xa5;
    }
    let data = reg.blob_data_path(&img.layer_digest);
    let full = format!("{}/test/img:1", reg.addr);
    let mut problems = Vec::new();
    for i in 0..3 {
        fs::write(&data, &bad).unwrap();
        let env = TestEnv::new();
        let r = env.run(&["pull", &full]);
        assert_eq!(r.code, 125, "round {i}: {r:?}");
        if !(r.stderr.contains("digest") || r.stderr.contains(&img.layer_digest[..12])) {
            problems.push(format!(
                "round {i}: the error names neither a digest mismatch nor the layer: {}",
                r.stderr.trim()
            ));
        }
        let partial = partial_path(&env, &img.layer_digest);
        if let Ok(m) = fs::metadata(&partial) {
            problems.push(format!("round {i}: {} bytes of the bad blob kept in {}", m.len(), partial.display()));
        }
        assert!(!blob_path(&env, &img.layer_digest).exists(), "round {i}");
        assert_eq!(env.run(&["images", "-q"]).ok(), "");
        // The registry is repaired: the next pull must work (count how many it takes).
        fs::write(&data, &img.layer).unwrap();
        let mut failures = Vec::new();
        let mut succeeded = false;
        for _ in 0..8 {
            let r = env.run(&["pull", &full]);
            if r.code == 0 {
                succeeded = true;
                break;
            }
            let kept = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            failures.push(format!("{} (then {kept} bytes in tmp/partial)", r.stderr.trim()));
        }
        if !failures.is_empty() {
            problems.push(format!(
                "round {i}: after the repair, {} pulls failed{}:\n  {}",
                failures.len(),
                if succeeded { " before one succeeded" } else { " and none succeeded" },
                failures.join("\n  ")
            ));
        }
        env.assert_sound();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Pull: interrupted transfers.

#[test]
fn registry_killed_pull_resumes_with_a_range_request() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 4 << 20, "test/big:1", &[]);
    let env = TestEnv::new();
    let proxy = start_proxy(&reg.addr, Fault::Throttle(1 << 20));
    let (out_path, err_path) = (env.path("killed.out"), env.path("killed.err"));
    let mut child = env
        .cmd(&["pull", &format!("{}/test/big:1", proxy.addr)])
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let partial = partial_path(&env, &img.layer_digest);
    let deadline = Instant::now() + Duration::from_secs(15);
    // Until 1 MiB is kept and the periodic summary (every 2 s) was printed.
    loop {
        let kept = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let summary = fs::read_to_string(&err_path).unwrap_or_default().contains("Downloading: ");
        if kept > 1 << 20 && summary {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "the throttled pull ended ({st}) early\nstderr:\n{}\nregistry log:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default(),
                reg.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "after 15 s: {kept} bytes kept; stderr:\n{}",
            fs::read_to_string(&err_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(proxy);
    let short = &img.layer_digest[..12];
    let out = fs::read_to_string(&out_path).unwrap();
    assert!(out.starts_with("1: Pulling from test/big\n"), "{out}");
    assert!(out.contains(&format!("{short}: Downloading\n")), "{out}");
    let err = fs::read_to_string(&err_path).unwrap();
    let summary = err.lines().find(|l| l.starts_with("Downloading: ")).unwrap();
    // "Downloading: 2.1MB / 8.4MB, 1MB/s, ETA 6s"
    assert!(summary.contains(" / ") && summary.contains("/s, ETA ") && summary.ends_with('s'), "{summary}");
    let kept = fs::metadata(&partial).expect("a killed pull keeps its bytes").len();
    assert!(kept > 1 << 20 && kept < img.layer.len() as u64, "kept {kept}");
    assert!(!blob_path(&env, &img.layer_digest).exists());

    // Again, directly: the rest only.
    let full = format!("{}/test/big:1", reg.addr);
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("{short}: Resuming from ")), "{out}");
    // The killed transfer's 200 (logged whenever the registry finished writing into the proxy)
    // and one 206 for the rest: the response size in the access log is what was left.
    let gets = blob_gets(&reg, &img.layer_digest);
    let partial_gets: Vec<&Req> = gets.iter().filter(|q| q.status == 206).collect();
    assert_eq!(partial_gets.len(), 1, "one Range request answered 206:\n{}", show(&gets));
    assert!(gets.iter().all(|q| matches!(q.status, 200 | 206)), "{}", show(&gets));
    assert!(
        gets.iter().filter(|q| q.status == 200).count() <= 1,
        "the blob was not fetched whole again:\n{}",
        show(&gets)
    );
    assert_eq!(partial_gets[0].size, img.layer.len() as u64 - kept, "{:?}", partial_gets[0]);
    assert_eq!(fs::read(blob_path(&env, &img.layer_digest)).unwrap(), img.layer);
    assert!(partial_files(&env).is_empty(), "{:?}", partial_files(&env));
    assert_eq!(listed(&env), vec![full.clone()]);
    let payload = env.root.join("snapshots").join(diff_id_of(&img.layer)).join("fs/payload.bin");
    assert_eq!(fs::metadata(payload).unwrap().len(), 4 << 20);
    env.assert_sound();
}

/// A ramfs mounted for the length of a test (ramfs refuses `O_DIRECT`).
struct Ramfs(PathBuf);
impl Ramfs {
    fn mount(at: PathBuf) -> Ramfs {
        fs::create_dir_all(&at).unwrap();
        let st = std::process::Command::new("mount").args(["-t", "ramfs", "ramfs"]).arg(&at).status().unwrap();
        assert!(st.success(), "mount -t ramfs {}", at.display());
        Ramfs(at)
    }
}
impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn registry_pull_writes_the_same_store_with_and_without_direct_io() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    // A payload of several direct-I/O staging buffers and an unaligned tail, incompressible, so
    // that the blob too is larger than a staging buffer and ends unaligned.
    let img = push_image(&reg, &tmp.path().join("layout"), (3 << 20) + 4321, "test/direct:1", &[]);
    let payload = {
        let tar = gunzip(&img.layer);
        let mut ar = tar::Archive::new(&tar[..]);
        let mut e =
            ar.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path_bytes().as_ref() == b"payload.bin").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        v
    };
    let full = format!("{}/test/direct:1", reg.addr);
    let diff_id = diff_id_of(&img.layer);

    // Default (direct I/O on this disk), turned off, and on a file system that refuses it.
    let direct = TestEnv::new();
    let buffered = TestEnv::new();
    let mut on_ramfs = TestEnv::new();
    let _ramfs = Ramfs::mount(on_ramfs.path("ramfs"));
    on_ramfs.root = on_ramfs.path("ramfs").join("store");
    for (env, direct_io) in [(&direct, None), (&buffered, Some("0")), (&on_ramfs, None)] {
        let mut c = env.cmd(&["pull", "-q", &full]);
        if let Some(v) = direct_io {
            c.env("STRATA_DIRECT_IO", v);
        }
        let r = Run::from_output(c.output().unwrap());
        assert_eq!(ok(&r, &reg), format!("{full}\n"));
        assert_eq!(fs::read(blob_path(env, &img.layer_digest)).unwrap(), img.layer, "{}", env.root.display());
        let got = fs::read(env.root.join("snapshots").join(&diff_id).join("fs/payload.bin")).unwrap();
        assert!(got == payload, "{}: payload.bin differs", env.root.display());
        assert_eq!(env.run(&["cat", &full, "/etc/motd"]).ok(), "strata registry test\n");
        assert!(partial_files(env).is_empty());
        env.assert_sound();
    }
    // The file indexes agree (same entries, sizes and content digests).
    let ls = |env: &TestEnv| env.run(&["ls", "-l", "-R", &full]).ok().to_string();
    assert_eq!(ls(&direct), ls(&buffered));
    assert_eq!(ls(&direct), ls(&on_ramfs));
}

#[test]
fn registry_cut_transfer_is_retried_in_process() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 1 << 20, "test/img:1", &[]);
    let proxy = start_proxy(&reg.addr, Fault::CutAfter { bytes: 300_000, times: 1 });
    let env = TestEnv::new();
    let full = format!("{}/test/img:1", proxy.addr);
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut a connection");
    let short = &img.layer_digest[..12];
    assert!(r.stderr.contains(&format!("{short}: ")) && r.stderr.contains("retrying in"), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("(attempt 2)"), "stderr:\n{}", r.stderr);
    assert!(out.contains(&format!("Status: Downloaded newer image for {full}\n")), "{out}");
    // The retry asked for the rest only.
    let gets = blob_gets(&reg, &img.layer_digest);
    assert!(gets.iter().any(|q| q.status == 206), "the retry resumes with Range:\n{}", show(&gets));
    assert_eq!(fs::read(blob_path(&env, &img.layer_digest)).unwrap(), img.layer);
    assert!(partial_files(&env).is_empty(), "{:?}", partial_files(&env));
    env.assert_sound();
}

#[test]
fn registry_concurrent_pulls_of_images_sharing_a_layer() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let shared = layer("shared", "base layer\n", 512 << 10);
    let a = layer("a", "image a\n", 32 << 10);
    let b = layer("b", "image b\n", 32 << 10);
    let (la, lb) = (tmp.path().join("a"), tmp.path().join("b"));
    let ma = util::write_oci_layout(&la, "a", &[shared.clone(), a], None);
    let mb = util::write_oci_layout(&lb, "b", &[shared.clone(), b], None);
    let sk = Skopeo::new();
    push(&sk, &reg, &format!("oci:{}:a", la.display()), "test/a:1", &[]);
    push(&sk, &reg, &format!("oci:{}:b", lb.display()), "test/b:1", &[]);
    // Through a throttled proxy, so that the two transfers of the shared layer overlap.
    let proxy = start_proxy(&reg.addr, Fault::Throttle(4 << 20));
    let env = TestEnv::new();
    let refs = [format!("{}/test/a:1", proxy.addr), format!("{}/test/b:1", proxy.addr)];
    let children: Vec<_> = refs
        .iter()
        .map(|r| env.cmd(&["pull", r]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for (child, (r, m)) in children.into_iter().zip(refs.iter().zip([&ma, &mb])) {
        let o = child.wait_with_output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "pull {r} failed\nstdout:\n{out}\nstderr:\n{err}\nregistry log:\n{}", reg.log());
        assert!(out.contains(&format!("Digest: sha256:{m}\n")), "{out}");
    }
    assert_eq!(listed(&env), {
        let mut v = refs.to_vec();
        v.sort();
        v
    });
    assert_eq!(env.image_ids().len(), 2);
    let shared_dir = env.root.join("snapshots").join(util::sha256_hex(&shared)).join("fs/data");
    assert_eq!(fs::read_to_string(shared_dir.join("shared")).unwrap(), "base layer\n");
    assert!(partial_files(&env).is_empty(), "{:?}", partial_files(&env));
    env.assert_sound();
    // Both are whole: a re-pull of each is up to date.
    for r in &refs {
        let run = env.run(&["pull", r]);
        assert!(ok(&run, &reg).contains("Status: Image is up to date for"), "{}", run.stdout);
    }
}

#[test]
fn registry_pull_max_concurrent_downloads() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let layers: Vec<Vec<u8>> = (0..4).map(|i| layer(&format!("l{i}"), &format!("layer {i}\n"), 16 << 10)).collect();
    let dir = tmp.path().join("layout");
    let m = util::write_oci_layout(&dir, "four", &layers, None);
    push(&Skopeo::new(), &reg, &format!("oci:{}:four", dir.display()), "test/four:1", &[]);
    let full = format!("{}/test/four:1", reg.addr);
    let env = TestEnv::new();
    let heads = requests_of(&reg, "HEAD").len();
    for bad in ["0", "65", "x"] {
        let r = env.run(&["pull", "--max-concurrent-downloads", bad, &full]);
        r.fails(125);
    }
    assert_eq!(requests_of(&reg, "HEAD").len(), heads, "a refused flag sends nothing");
    let r = env.run(&["pull", "--max-concurrent-downloads", "1", &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: sha256:{m}\n")), "{out}");
    assert_eq!(out.matches(": Pull complete\n").count(), 4, "{out}");
    for (i, l) in layers.iter().enumerate() {
        let f = env.root.join("snapshots").join(util::sha256_hex(l)).join(format!("fs/data/l{i}"));
        assert_eq!(fs::read_to_string(f).unwrap(), format!("layer {i}\n"));
    }
    env.assert_sound();
}

// ---------------------------------------------------------------------------------------------
// Multi-platform images.

/// Pushes an image for the host's and [`other_arch`]'s platforms (in that order) to `test/multi:1`
/// of `reg`; returns the scratch dir holding its layout, the image, and `ADDR/test/multi:1`.
fn push_multiarch(reg: &Registry) -> (tempfile::TempDir, MultiArch, String) {
    let tmp = scratch();
    let dir = tmp.path().join("layout");
    let m = write_multiarch_layout(&dir, "multi", &[host_arch(), other_arch()]);
    push(&Skopeo::new(), reg, &format!("oci:{}:multi", dir.display()), "test/multi:1", &["--all"]);
    (tmp, m, format!("{}/test/multi:1", reg.addr))
}

#[test]
fn registry_multiplatform_pull_picks_the_platform() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (_tmp, m, full) = push_multiarch(&reg);
    let (host, other) = (host_arch(), other_arch());

    // The host's platform by default; the Digest line is the index's.
    let env = TestEnv::new();
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: {}\n", m.index)), "{out}");
    let v = env.inspect(&full);
    assert_eq!(v["Architecture"], host);
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Descriptor"]["digest"], m.images[0].manifest);
    let arch_file = |env: &TestEnv, diff: &str| {
        fs::read_to_string(env.root.join("snapshots").join(diff).join("fs/arch.txt")).unwrap_or_default()
    };
    assert_eq!(arch_file(&env, hex(&m.images[0].diff_id)), format!("{host}\n"));
    assert!(
        !env.root.join("snapshots").join(hex(&m.images[1].diff_id)).exists(),
        "the other platform is not downloaded"
    );
    env.assert_sound();

    // Another platform, by flag, on a fresh store.
    let env = TestEnv::new();
    let plat = format!("linux/{other}");
    let r = env.run(&["pull", "--platform", &plat, &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: {}\n", m.index)), "{out}");
    let v = env.inspect(&full);
    assert_eq!(v["Architecture"], other);
    assert_eq!(arch_file(&env, hex(&m.images[1].diff_id)), format!("{other}\n"));
    env.assert_sound();

    // A platform the index does not have, and a malformed one.
    let r = env.run(&["pull", "--platform", "linux/s390x", &full]);
    let err = r.fails(125);
    assert!(err.contains("linux/s390x"), "{err}");
    let r = env.run(&["pull", "--platform", "bogus", &full]);
    let err = r.fails(125);
    assert!(err.contains("invalid platform"), "{err}");
    // Neither changed what is tagged.
    assert_eq!(env.inspect(&full)["Architecture"], other);
}

#[test]
fn registry_multiplatform_switching_platforms_retags() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (_tmp, m, full) = push_multiarch(&reg);
    let (host, other) = (host_arch(), other_arch());
    let env = TestEnv::new();

    // Host, then the other platform: the tag moves to the other.
    ok(&env.run(&["pull", &full]), &reg);
    assert_eq!(env.inspect(&full)["Architecture"], host);
    let r = env.run(&["pull", "--platform", &format!("linux/{other}"), &full]);
    let out = ok(&r, &reg);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_eq!(env.inspect(&full)["Architecture"], other);
    // Explicitly the host's again: back to the host's, from the store.
    let r = env.run(&["pull", "--platform", &format!("linux/{host}"), &full]);
    ok(&r, &reg);
    assert_eq!(env.inspect(&full)["Architecture"], host);
    assert_eq!(env.inspect(&full)["Descriptor"]["digest"], m.images[0].manifest);
    env.assert_sound();
}

/// `docker pull --platform linux/arm64 X` then `docker pull X` on amd64 leaves X the amd64
/// image: a pull without `--platform` means the host's platform.
#[test]
fn registry_multiplatform_pull_without_platform_means_the_hosts() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (_tmp, m, full) = push_multiarch(&reg);
    let env = TestEnv::new();
    ok(&env.run(&["pull", "--platform", &format!("linux/{}", other_arch()), &full]), &reg);
    assert_eq!(env.inspect(&full)["Architecture"], other_arch());
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert_eq!(
        env.inspect(&full)["Architecture"],
        host_arch(),
        "after `pull {full}` (no --platform) the tag should be the host's image\nstdout:\n{out}"
    );
    assert_eq!(env.inspect(&full)["Descriptor"]["digest"], m.images[0].manifest);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Authentication.

#[test]
fn registry_basic_auth_login_pull_logout() {
    if !need_tools() {
        return;
    }
    let long = regserver::rand_alnum(2048);
    let reg = Registry::start(Auth::Basic(vec![("alice".into(), "wonderland".into()), ("AWS".into(), long.clone())]));
    let tmp = scratch();
    let img =
        push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &["--dest-creds", "alice:wonderland"]);
    let env = TestEnv::new();
    let full = format!("{}/test/img:1", reg.addr);
    let cfg = docker_config(&env);

    // Anonymous: refused, with what to do.
    let r = env.run(&["pull", &full]);
    let err = r.fails(125);
    assert!(err.contains("strata login"), "{err}");
    assert!(err.contains(&reg.addr), "{err}");

    // Login with the long password on stdin.
    let r = env.run_stdin(&["login", "-u", "AWS", "--password-stdin", &reg.addr], format!("{long}\n").as_bytes());
    assert_eq!(ok(&r, &reg), "Login Succeeded\n");
    assert!(!r.stdout.contains(&long) && !r.stderr.contains(&long), "the password leaked: {r:?}");
    assert!(!r.stderr.contains("WARNING"), "{}", r.stderr);
    let mode = fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config.json mode");
    let saved: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    let auth = saved["auths"][&reg.addr]["auth"].as_str().unwrap_or_else(|| panic!("no auths entry: {saved}"));
    let decoded = {
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(auth).unwrap()).unwrap()
    };
    assert_eq!(decoded, format!("AWS:{long}"));
    let stored = fs::read(&cfg).unwrap();

    // Pull as AWS.
    let r = env.run(&["pull", &full]);
    ok(&r, &reg);
    assert!(!r.stdout.contains(&long) && !r.stderr.contains(&long));
    assert_eq!(listed(&env), vec![full.clone()]);

    // A wrong password: refused, warned about -p, and the stored credentials are untouched.
    let r = env.run(&["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    let err = r.fails(125);
    assert!(err.contains("incorrect username or password"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("WARNING! Using --password via the CLI is insecure")), "{err}");
    assert!(!r.stdout.contains("Login Succeeded"), "{}", r.stdout);
    assert_eq!(fs::read(&cfg).unwrap(), stored, "a failed login must not change config.json");
    // Another pull still works with the stored credentials (a new tag, so it talks to the registry).
    push(&Skopeo::new(), &reg, &img.oci_ref(), "test/img:2", &["--dest-creds", "alice:wonderland"]);
    ok(&env.run(&["pull", &format!("{}/test/img:2", reg.addr)]), &reg);

    // Logout.
    let r = env.run(&["logout", &reg.addr]);
    assert_eq!(ok(&r, &reg), format!("Removing login credentials for {}\n", reg.addr));
    let saved: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    assert!(saved["auths"].get(&reg.addr).is_none(), "{saved}");
    assert!(!fs::read_to_string(&cfg).unwrap().contains(auth));
    let r = env.run(&["pull", &full]);
    let err = r.fails(125);
    assert!(err.contains("strata login"), "{err}");
    let r = env.run(&["logout", &reg.addr]);
    assert_eq!(ok(&r, &reg), format!("Not logged in to {}\n", reg.addr));

    // --password-stdin needs -u.
    let r = env.run_stdin(&["login", "--password-stdin", &reg.addr], b"wonderland\n");
    let err = r.fails(125);
    assert!(err.contains("--username"), "{err}");
    let saved: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    assert!(saved["auths"].get(&reg.addr).is_none(), "{saved}");

    // alice with -p: warned, but logged in.
    let r = env.run(&["login", "-u", "alice", "-p", "wonderland", &reg.addr]);
    assert_eq!(ok(&r, &reg), "Login Succeeded\n");
    assert!(r.stderr.contains("WARNING! Using --password via the CLI is insecure"), "{}", r.stderr);
    ok(&env.run(&["pull", &full]), &reg);
    env.assert_sound();
}

#[test]
fn registry_token_auth_anonymous_pull_reuses_its_token() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: true });
    let tmp = scratch();
    let layers: Vec<Vec<u8>> = (0..4).map(|i| layer(&format!("l{i}"), &format!("layer {i}\n"), 8 << 10)).collect();
    let dir = tmp.path().join("layout");
    let m = util::write_oci_layout(&dir, "four", &layers, None);
    push(
        &Skopeo::new(),
        &reg,
        &format!("oci:{}:four", dir.display()),
        "test/four:1",
        &["--dest-creds", "alice:wonderland"],
    );
    let env = TestEnv::new();
    let full = format!("{}/test/four:1", reg.addr);
    let before = reg.token_requests.load(Ordering::SeqCst);
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: sha256:{m}\n")), "{out}");
    assert_eq!(out.matches(": Pull complete\n").count(), 4, "{out}");
    let used = reg.token_requests.load(Ordering::SeqCst) - before;
    assert!((1..=2).contains(&used), "one pull asked for {used} tokens (they are cached per scope)");
    for (i, l) in layers.iter().enumerate() {
        let f = env.root.join("snapshots").join(util::sha256_hex(l)).join(format!("fs/data/l{i}"));
        assert_eq!(fs::read_to_string(f).unwrap(), format!("layer {i}\n"));
    }
    assert!(!docker_config(&env).exists(), "an anonymous pull writes no credentials");
    env.assert_sound();
}

#[test]
fn registry_token_auth_private_repository_needs_login() {
    if !need_tools() {
        return;
    }
    let reg =
        Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: false });
    let tmp = scratch();
    let img =
        push_image(&reg, &tmp.path().join("layout"), 16 << 10, "private/img:1", &["--dest-creds", "alice:wonderland"]);
    let env = TestEnv::new();
    let full = format!("{}/private/img:1", reg.addr);
    let r = env.run(&["pull", &full]);
    let err = r.fails(125);
    assert!(err.contains("login"), "{err}");
    assert_eq!(env.run(&["images", "-q"]).ok(), "");

    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"nope\n");
    assert!(r.fails(125).contains("incorrect username or password"), "{}", r.stderr);
    assert!(!docker_config(&env).exists() || !fs::read_to_string(docker_config(&env)).unwrap().contains(&reg.addr));

    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland\n");
    assert_eq!(ok(&r, &reg), "Login Succeeded\n");
    let before = reg.token_requests.load(Ordering::SeqCst);
    let r = env.run(&["pull", &full]);
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: sha256:{}\n", img.manifest)), "{out}");
    let used = reg.token_requests.load(Ordering::SeqCst) - before;
    assert!((1..=2).contains(&used), "{used} token requests");
    assert_eq!(fs::read(blob_path(&env, &img.layer_digest)).unwrap(), img.layer);
    env.assert_sound();
}

#[test]
fn registry_credential_helper_stores_and_serves_the_login() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Basic(vec![("alice".into(), "wonderland".into())]));
    let tmp = scratch();
    let img =
        push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &["--dest-creds", "alice:wonderland"]);
    let env = TestEnv::new();
    let (bin, store) = write_cred_helper(&tmp.path().join("helper"));
    let path = path_with(&bin);
    let cfg = docker_config(&env);
    fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    fs::write(&cfg, r#"{"credsStore":"teststore"}"#).unwrap();
    let full = format!("{}/test/img:1", reg.addr);
    let cmd = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("PATH", &path);
        c
    };

    // Nothing in the helper yet: anonymous, refused.
    let r = util::run_with_stdin(cmd(&["pull", &full]), b"");
    assert!(r.fails(125).contains("strata login"), "{}", r.stderr);

    let r = util::run_with_stdin(cmd(&["login", "-u", "alice", "--password-stdin", &reg.addr]), b"wonderland\n");
    assert_eq!(ok(&r, &reg), "Login Succeeded\n");
    let actions = fs::read_to_string(store.join("actions")).unwrap_or_default();
    assert!(actions.lines().any(|l| l == format!("store {}", reg.addr)), "helper actions:\n{actions}");
    let kept: Vec<String> = fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "actions")
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let v: Value = serde_json::from_str(&kept[0]).unwrap();
    assert_eq!(v, json!({"ServerURL": reg.addr, "Username": "alice", "Secret": "wonderland"}));
    let saved = fs::read_to_string(&cfg).unwrap();
    assert!(!saved.contains("wonderland"), "the helper keeps the secret, not config.json: {saved}");
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["credsStore"], "teststore", "{saved}");
    assert!(saved["auths"][&reg.addr].get("auth").is_none(), "{saved}");

    // The pull gets alice's credentials from the helper.
    let r = util::run_with_stdin(cmd(&["pull", &full]), b"");
    let out = ok(&r, &reg);
    assert!(out.contains(&format!("Digest: sha256:{}\n", img.manifest)), "{out}");
    let actions = fs::read_to_string(store.join("actions")).unwrap();
    assert!(actions.lines().any(|l| l == format!("get {}", reg.addr)), "helper actions:\n{actions}");
    assert!(!r.stderr.contains("wonderland"));
    env.assert_sound();

    // Logout erases through the helper; then pulls are anonymous again.
    let r = util::run_with_stdin(cmd(&["logout", &reg.addr]), b"");
    assert_eq!(ok(&r, &reg), format!("Removing login credentials for {}\n", reg.addr));
    let actions = fs::read_to_string(store.join("actions")).unwrap();
    assert!(actions.lines().any(|l| l == format!("erase {}", reg.addr)), "helper actions:\n{actions}");
    push(&Skopeo::new(), &reg, &img.oci_ref(), "test/img:2", &["--dest-creds", "alice:wonderland"]);
    let r = util::run_with_stdin(cmd(&["pull", &format!("{}/test/img:2", reg.addr)]), b"");
    assert!(r.fails(125).contains("strata login"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Pull: temporary statuses.

/// A registry that answers 429 with `Retry-After: 1` twice, then works: the pull waits as told
/// and succeeds; a registry that keeps answering 503 makes the pull give up with the status.
#[test]
fn registry_pull_retries_429_honouring_retry_after() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    push_image(&reg, &tmp.path().join("layout"), 16 << 10, "test/img:1", &[]);
    let proxy = start_proxy(&reg.addr, Fault::Status { code: 429, times: 2, retry_after: Some(1) });
    let env = TestEnv::new();
    let t = Instant::now();
    let r = env.run(&["pull", "-q", &format!("{}/test/img:1", proxy.addr)]);
    let waited = t.elapsed();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 2, "both injected answers were used");
    // Two answers each asking for a 1 s wait: the client waited at least that long.
    assert!(waited >= Duration::from_secs(2), "Retry-After ignored: pull took {waited:?}");
    env.assert_sound();

    let proxy = start_proxy(&reg.addr, Fault::Status { code: 503, times: 100, retry_after: None });
    let env = TestEnv::new();
    let r = Run::from_output(
        env.cmd(&["pull", "-q", &format!("{}/test/img:1", proxy.addr)])
            .env("STRATA_RETRY_BACKOFF_MS", "50")
            .env("STRATA_RETRY_ATTEMPTS", "4")
            .output()
            .unwrap(),
    );
    let err = r.fails(125);
    assert!(err.contains("503"), "{err}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 4, "STRATA_RETRY_ATTEMPTS attempts, then the error");
    assert_eq!(env.run(&["images", "-q"]).ok(), "");
}

/// A loopback registry serving HTTPS with a self-signed certificate: strata speaks TLS to it
/// (loopback registries may have unverified certificates, as docker allows), never plain HTTP.
#[test]
fn registry_pull_from_a_tls_loopback_registry() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start_tls(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 10 << 10, "test/tls:1", &[]);
    let env = TestEnv::new();
    let r = env.run(&["pull", "-q", &format!("{}/test/tls:1", reg.addr)]);
    assert_eq!(r.code, 0, "{r:?}\n{}", reg.log());
    assert!(blob_path(&env, &img.layer_digest).exists());
    // Every request strata made arrived over TLS: none was refused as plain HTTP.
    // (A plain-HTTP request gets a bare 400 from Go's TLS server and no access line.)
    assert!(access(&reg).iter().any(|q| q.by_strata() && q.target.contains("/blobs/")), "{}", reg.log());
    env.assert_sound();
}

/// A transfer that stops sending without closing (a stalled connection) is given up after the
/// stall timeout and resumed with a Range request; the pull completes.
#[test]
fn registry_stalled_transfer_is_resumed() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 1 << 20, "test/stall:1", &[]);
    // Freeze the first connection that carries 300 kB (the layer's GET).
    let proxy = start_proxy(&reg.addr, Fault::Freeze { after: 300_000, times: 1 });
    let env = TestEnv::new();
    let r = Run::from_output(
        env.cmd(&["pull", "--progress", "plain", &format!("{}/test/stall:1", proxy.addr)])
            .env("STRATA_STALL_TIMEOUT", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert!(r.stderr.contains("no data for 1 s"), "{}", r.stderr);
    assert!(
        access(&reg).iter().any(|q| q.target.contains(&img.layer_digest) && q.status == 206),
        "the retry asked for the rest with a Range request:\n{}",
        reg.log()
    );
    assert!(blob_path(&env, &img.layer_digest).exists());
    env.assert_sound();
}

/// A registry (or CDN) that ignores Range answers 200 with the whole blob: the kept bytes are
/// not trusted to line up, the response is read from its start (the kept prefix skipped), and the
/// blob still verifies. Two proxies in a row: the outer one cuts the first transfer, the inner
/// one strips the Range header of the retry.
#[test]
fn registry_resume_against_a_server_that_ignores_range() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = push_image(&reg, &tmp.path().join("layout"), 1 << 20, "test/norange:1", &[]);
    let inner = start_proxy(&reg.addr, Fault::IgnoreRange);
    let outer = start_proxy(&inner.addr, Fault::CutAfter { bytes: 400_000, times: 1 });
    let env = TestEnv::new();
    let r = Run::from_output(
        env.cmd(&["pull", "--progress", "plain", &format!("{}/test/norange:1", outer.addr)])
            .env("STRATA_RETRY_BACKOFF_MS", "50")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(outer.cuts.load(Ordering::SeqCst), 1, "the first transfer was cut");
    let gets = blob_gets(&reg, &img.layer_digest);
    assert!(gets.len() >= 2, "{}", show(&gets));
    assert!(gets.iter().all(|q| q.status == 200), "no Range reached the registry:\n{}", show(&gets));
    assert!(blob_path(&env, &img.layer_digest).exists());
    assert!(partial_files(&env).is_empty());
    env.assert_sound();
}
