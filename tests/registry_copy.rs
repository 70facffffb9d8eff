//! `strata copy` between registries, OCI layouts and docker archives (digests kept, mounts
//! within a registry, streaming between registries, multi-platform selection, errors), and the
//! registry inspection commands `manifest inspect`, `tags` and `catalog` (with pagination), against
//! the real `docker-registry` of tests/regserver.rs, with skopeo and umoci as oracles.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::regserver::{
    self, gunzip, hex, host_arch, http_get, layer, need_tools, ok, push, raw_manifest, requests, scratch, show,
    write_multiarch_layout, ArchImage, Auth, Registry, Req, Skopeo,
};
use crate::util::{self, Run, TestEnv};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `strata ARGS…` with `vars` set (and the list page size left to the test).
fn strata(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut c = env.cmd(args);
    c.env_remove("STRATA_LIST_PAGE_SIZE");
    for (k, v) in vars {
        c.env(k, v);
    }
    Run::from_output(c.output().expect("run strata"))
}

/// `strata copy ARGS…`
fn copy(env: &TestEnv, args: &[&str]) -> Run {
    strata(env, &[&["copy"], args].concat(), &[])
}

/// Asserts exit 125 with `Error: …` mentioning `needle`; returns stderr.
#[track_caller]
fn fails_with<'a>(r: &'a Run, needle: &str) -> &'a str {
    let err = r.fails(125);
    assert!(err.contains("Error: "), "no `Error: ` in:\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    err
}

/// Whether an error message reports a digest mismatch.
fn says_mismatch(err: &str) -> bool {
    err.contains("hashes to") || err.contains("hashing to") || err.contains("mismatch")
}

/// The summary copy prints last: `Copied SRC to DST: digest sha256:… (N blobs copied, M already
/// there)`; returns (digest, N, M) after checking SRC and DST.
#[track_caller]
fn copied(stdout: &str, src: &str, dst: &str) -> (String, usize, usize) {
    let last = stdout.lines().last().unwrap_or_default();
    let prefix = format!("Copied {src} to {dst}: digest ");
    let rest = last.strip_prefix(&prefix).unwrap_or_else(|| panic!("expected {prefix:?}… last, got:\n{stdout}"));
    let (digest, counts) = rest.split_once(" (").unwrap_or_else(|| panic!("no counts in {last:?}"));
    let counts = counts.strip_suffix(" already there)").unwrap_or_else(|| panic!("bad counts in {last:?}"));
    let (n, m) = counts.split_once(" blobs copied, ").unwrap_or_else(|| panic!("bad counts in {last:?}"));
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "bad digest in {last:?}");
    (digest.to_string(), n.parse().unwrap(), m.parse().unwrap())
}

/// Runs `strata copy SRC DST` (plus `flags`), asserting success; returns (digest, copied, skipped).
#[track_caller]
fn copy_ok(env: &TestEnv, reg: &Registry, flags: &[&str], src: &str, dst: &str) -> (String, usize, usize) {
    let r = copy(env, &[flags, &[src, dst]].concat());
    copied(ok(&r, reg, &format!("copy {src} {dst}")), src, dst)
}

/// skopeo's args for reading `image`: `--tls-verify=false` for a registry.
fn sk_args<'a>(cmd: &'a [&'a str], image: &'a str) -> Vec<&'a str> {
    let mut a = cmd.to_vec();
    if image.starts_with("docker://") {
        a.push("--tls-verify=false");
    }
    a.push(image);
    a
}

/// `skopeo inspect [--config] IMAGE`, parsed.
#[track_caller]
fn sk_inspect(sk: &Skopeo, image: &str, config: bool) -> Value {
    let cmd: &[&str] = if config { &["inspect", "--config"] } else { &["inspect"] };
    let r = sk.run(&sk_args(cmd, image));
    assert_eq!(r.code, 0, "skopeo inspect {image}:\n{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("skopeo inspect prints JSON")
}

/// `sha256:HEX` of bytes.
fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", util::sha256_hex(bytes))
}

/// An image in an OCI layout, described from its manifest.
struct Img {
    layout: PathBuf,
    refname: String,
    /// `sha256:…` of the manifest, and its bytes.
    manifest: String,
    manifest_bytes: Vec<u8>,
    /// `sha256:…` of the config, and its bytes.
    config: String,
    config_bytes: Vec<u8>,
    /// `sha256:…` of the (gzip) layer blobs, in order.
    layers: Vec<String>,
    /// `sha256:…` diff IDs, in order.
    diff_ids: Vec<String>,
}

impl Img {
    /// Describes image `refname` of the layout at `dir`, whose manifest is `manifest_hex`.
    fn describe(dir: &Path, refname: &str, manifest_hex: &str) -> Img {
        let manifest_bytes = fs::read(dir.join("blobs/sha256").join(manifest_hex)).unwrap();
        let m: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config = m["config"]["digest"].as_str().unwrap().to_string();
        let config_bytes = fs::read(dir.join("blobs/sha256").join(hex(&config))).unwrap();
        let c: Value = serde_json::from_slice(&config_bytes).unwrap();
        Img {
            layout: dir.to_path_buf(),
            refname: refname.to_string(),
            manifest: format!("sha256:{manifest_hex}"),
            manifest_bytes,
            config,
            config_bytes,
            layers: m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect(),
            diff_ids: c["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().into()).collect(),
        }
    }
    /// `oci:LAYOUT:REF`
    fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.refname)
    }
    fn blob(&self, d: &str) -> Vec<u8> {
        fs::read(self.layout.join("blobs/sha256").join(hex(d))).unwrap()
    }
    /// Config and layers.
    fn blobs(&self) -> Vec<String> {
        std::iter::once(self.config.clone()).chain(self.layers.iter().cloned()).collect()
    }
}

/// A two-layer image in an OCI layout at `dir`, named `refname`. Its manifest's keys are not in
/// alphabetical order (schemaVersion, mediaType, config, layers; mediaType, size, digest), so that
/// byte-for-byte copies and key order can be told from re-serialisation.
fn two_layer_image(dir: &Path, refname: &str) -> Img {
    let tag = regserver::rand_alnum(6);
    let m = util::write_oci_layout(dir, refname, &[layer(&format!("a-{tag}"), 24 << 10), layer("b", 8 << 10)], None);
    let blobs = dir.join("blobs/sha256");
    let v: Value = serde_json::from_slice(&fs::read(blobs.join(&m)).unwrap()).unwrap();
    let desc =
        |d: &Value| format!(r#"{{"mediaType":{},"size":{},"digest":{}}}"#, d["mediaType"], d["size"], d["digest"]);
    let layers: Vec<String> = v["layers"].as_array().unwrap().iter().map(desc).collect();
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":{},"config":{},"layers":[{}]}}"#,
        v["mediaType"],
        desc(&v["config"]),
        layers.join(",")
    );
    assert_eq!(serde_json::from_str::<Value>(&bytes).unwrap(), v);
    let h = util::sha256_hex(bytes.as_bytes());
    fs::write(blobs.join(&h), &bytes).unwrap();
    fs::remove_file(blobs.join(&m)).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{h}"), "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": refname},
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Img::describe(dir, refname, &h)
}

/// What most tests here start from, with `reg` started: a scratch dir, a store, skopeo, and
/// [`two_layer_image`] (named `v1`) in the scratch dir's `src`, pushed to `reg` as `src/app:1`.
fn src_app(reg: &Registry) -> (tempfile::TempDir, TestEnv, Skopeo, Img) {
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    push(&sk, reg, &img.oci_ref(), "src/app:1", &[]);
    (tmp, env, sk, img)
}

/// The parsed `index.json` of a layout.
fn layout_index(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json")).expect("index.json is JSON")
}

/// The `index.json` entry of a layout named `refname`.
#[track_caller]
fn layout_entry(dir: &Path, refname: &str) -> Value {
    let idx = layout_index(dir);
    let found: Vec<&Value> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == refname)
        .collect();
    assert_eq!(found.len(), 1, "one entry named {refname} in {idx}");
    found[0].clone()
}

/// The `sha256:…` names of the blob files of a layout, sorted.
fn layout_blobs(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir.join("blobs/sha256")) else { return Vec::new() };
    let mut v: Vec<String> = rd.map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy())).collect();
    v.sort();
    v
}

/// Every file of a layout's blob dir holds the bytes its name says.
#[track_caller]
fn assert_layout_verified(dir: &Path) {
    for d in layout_blobs(dir) {
        let bytes = fs::read(dir.join("blobs/sha256").join(hex(&d))).unwrap();
        assert_eq!(sha(&bytes), d, "blob file {d} of {} holds other bytes", dir.display());
    }
}

/// Unpacks `image` (`LAYOUT:REF`) with umoci into `bundle`, asserting success; false if umoci is
/// not installed.
#[track_caller]
fn umoci_unpack(image: &str, bundle: &Path) -> bool {
    if !util::have("umoci") {
        return false;
    }
    let r = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", image])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(r.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&r.stderr));
    true
}

/// skopeo writes `img` to a docker archive at `file`, tagged `local/app:1` (layers uncompressed).
#[track_caller]
fn skopeo_archive(sk: &Skopeo, img: &Img, file: &Path) {
    let r = sk.run(&["copy", "-q", &img.oci_ref(), &format!("docker-archive:{}:local/app:1", file.display())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// Changes 16 bytes in the middle of the file at `p`, keeping its length.
fn corrupt_middle(p: &Path) {
    let mut bytes = fs::read(p).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    fs::write(p, &bytes).unwrap();
}

/// The regular members of a tar file: (name, bytes), in order.
fn tar_members(file: &Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(fs::File::open(file).unwrap());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.push((name, b));
    }
    out
}

fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    &members.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no member {name} in {names:?}")).1
}

// ---------------------------------------------------------------------------------------------
// copy: registries and layouts.

#[test]
fn registry_copy_within_a_registry_mounts() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (_tmp, env, sk, img) = src_app(&reg);

    let src = format!("docker://{}/src/app:1", reg.addr);
    let dst = format!("docker://{}/dst/app:2", reg.addr);
    let mark = requests(&reg).len();
    let (digest, n, m) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!(digest, img.manifest, "the manifest digest is kept");
    assert_eq!((n, m), (3, 0));
    let new = requests(&reg)[mark..].to_vec();
    assert_eq!(raw_manifest(&sk, &dst, None), img.manifest_bytes, "the destination serves the same manifest bytes");
    let mounts: Vec<&Req> = new.iter().filter(|q| q.target.contains("mount=")).collect();
    assert_eq!(mounts.len(), 3, "one mount per blob:\n{}", show(&new));
    for d in img.blobs() {
        assert!(
            mounts.iter().any(|q| q.method == "POST"
                && q.target.starts_with("/v2/dst/app/blobs/uploads/?")
                && q.target.contains(&format!("mount={d}"))
                && q.target.contains("from=src/app")
                && q.status == 201),
            "no 201 mount of {d}:\n{}",
            show(&new)
        );
    }
    assert!(
        !new.iter().any(|q| q.method == "GET" && q.target.contains("/blobs/sha256:")),
        "a mount moves no bytes:\n{}",
        show(&new)
    );
    assert!(!new.iter().any(|q| q.method == "PUT" && q.target.contains("/blobs/uploads/")), "{}", show(&new));
    assert!(new.iter().all(Req::by_strata), "{}", show(&new));
    // skopeo reads the copy.
    let v = sk_inspect(&sk, &dst, false);
    assert_eq!(v["Layers"], json!(img.layers));

    // Again: everything is there.
    let mark = requests(&reg).len();
    let (digest, n, m) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 0, 3));
    let new = requests(&reg)[mark..].to_vec();
    assert!(!new.iter().any(|q| q.method == "POST"), "nothing to upload or mount:\n{}", show(&new));

    // Bare references, and -q prints only the digest.
    let bare_src = format!("{}/src/app:1", reg.addr);
    let bare_dst = format!("{}/bare/app:3", reg.addr);
    let r = copy(&env, &["-q", &bare_src, &bare_dst]);
    assert_eq!(ok(&r, &reg, "copy -q"), format!("{}\n", img.manifest));
    assert_eq!(sha(&raw_manifest(&sk, &format!("docker://{bare_dst}"), None)), img.manifest);
    // The store was never used.
    assert!(!env.root.join("blobs").exists() || fs::read_dir(env.root.join("blobs/sha256")).unwrap().count() == 0);
}

#[test]
fn registry_copy_between_registries_streams() {
    if !need_tools() {
        return;
    }
    let a = Registry::start(Auth::Open);
    let b = Registry::start(Auth::Open);
    let (tmp, env, sk, img) = src_app(&a);

    let src = format!("docker://{}/src/app:1", a.addr);
    let dst = format!("docker://{}/mirror/app:1", b.addr);
    let (mark_a, mark_b) = (requests(&a).len(), requests(&b).len());
    let (digest, n, m) = copy_ok(&env, &b, &[], &src, &dst);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 3, 0));
    assert_eq!(raw_manifest(&sk, &dst, None), img.manifest_bytes);
    let (new_a, new_b) = (requests(&a)[mark_a..].to_vec(), requests(&b)[mark_b..].to_vec());
    for d in img.blobs() {
        let gets = new_a
            .iter()
            .filter(|q| q.method == "GET" && q.target == format!("/v2/src/app/blobs/{d}") && q.status == 200)
            .count();
        assert_eq!(gets, 1, "one GET of {d} from the source:\n{}", show(&new_a));
        assert!(
            new_b.iter().any(|q| q.method == "PUT"
                && q.target.starts_with("/v2/mirror/app/blobs/uploads/")
                && q.target.contains(&format!("digest={d}"))
                && q.status == 201),
            "no PUT of {d} to the destination:\n{}",
            show(&new_b)
        );
    }
    assert!(!new_b.iter().any(|q| q.target.contains("mount=")), "no mount across registries:\n{}", show(&new_b));
    assert!(!new_b.iter().any(|q| q.method == "PATCH"), "monolithic uploads:\n{}", show(&new_b));
    // The bytes arrived intact: skopeo copies the mirror to a layout and the blobs are the source's.
    let back = tmp.path().join("back");
    let r = sk.run(&["copy", "-q", "--src-tls-verify=false", &dst, &format!("oci:{}:x", back.display())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for d in img.blobs() {
        assert_eq!(fs::read(back.join("blobs/sha256").join(hex(&d))).unwrap(), img.blob(&d), "{d}");
    }

    // --progress json: JSON lines, the last one the result.
    let dst2 = format!("docker://{}/mirror/app:2", b.addr);
    let r = copy(&env, &["--progress", "json", &src, &dst2]);
    let out = ok(&r, &b, "copy --progress json");
    for l in out.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{out}"));
    }
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done", "{out}");
    assert_eq!(last["digest"], img.manifest.as_str(), "{out}");
    assert_eq!((last["copied"].as_u64(), last["skipped"].as_u64()), (Some(0), Some(3)), "{out}");
}

#[test]
fn registry_copy_registry_to_layout_and_back() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, sk, img) = src_app(&reg);
    let src = format!("docker://{}/src/app:1", reg.addr);

    let out = tmp.path().join("out");
    let dst = format!("oci:{}:v1", out.display());
    let (digest, n, m) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 3, 0));
    assert!(out.join("oci-layout").is_file(), "the layout has its oci-layout file");
    let e = layout_entry(&out, "v1");
    assert_eq!(e["digest"], img.manifest.as_str());
    assert_eq!(e["size"], img.manifest_bytes.len());
    assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let mut want = img.blobs();
    want.push(img.manifest.clone());
    want.sort();
    assert_eq!(layout_blobs(&out), want, "exactly the image's blobs");
    for d in img.blobs() {
        assert_eq!(fs::read(out.join("blobs/sha256").join(hex(&d))).unwrap(), img.blob(&d), "{d}");
    }
    assert_eq!(raw_manifest(&sk, &dst, None), img.manifest_bytes);
    assert_eq!(sk_inspect(&sk, &dst, false)["Layers"], json!(img.layers));
    if util::have("umoci") {
        let r = std::process::Command::new("umoci")
            .args(["stat", "--json", "--image", &format!("{}:v1", out.display())])
            .output()
            .unwrap();
        assert!(r.status.success(), "umoci stat: {}", String::from_utf8_lossy(&r.stderr));
        let v: Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(v["history"].as_array().map(Vec::len), Some(2), "{v}");
    }

    // A second name in the same layout: nothing to copy, both names listed.
    let dst2 = format!("oci:{}:second", out.display());
    let (digest, n, m) = copy_ok(&env, &reg, &[], &src, &dst2);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 0, 3));
    assert_eq!(layout_index(&out)["manifests"].as_array().unwrap().len(), 2);
    // The same name again replaces its entry.
    copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!(layout_index(&out)["manifests"].as_array().unwrap().len(), 2, "{}", layout_index(&out));
    layout_entry(&out, "v1");

    // Layout to registry: same digest, skopeo reads it.
    let back = format!("docker://{}/back/app:1", reg.addr);
    let (digest, n, m) = copy_ok(&env, &reg, &[], &dst, &back);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 3, 0));
    assert_eq!(raw_manifest(&sk, &back, None), img.manifest_bytes);
    assert_eq!(sk_inspect(&sk, &back, true)["rootfs"]["diff_ids"], json!(img.diff_ids));
    // strata pulls it: the layers are the image's.
    let other = TestEnv::new();
    other.run(&["pull", "-q", back.trim_start_matches("docker://")]).ok();
    assert_eq!(other.inspect(back.trim_start_matches("docker://"))["RootFS"]["Layers"], json!(img.diff_ids));
    other.assert_sound();
}

#[test]
fn registry_copy_layout_to_layout() {
    if !need_tools() {
        return;
    }
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    let out = tmp.path().join("out");
    let dst = format!("oci:{}:copied", out.display());
    let r = copy(&env, &[&img.oci_ref(), &dst]);
    let (digest, n, m) = copied(r.ok(), &img.oci_ref(), &dst);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 3, 0));
    assert_eq!(layout_blobs(&out), layout_blobs(&img.layout), "the same blob files");
    assert_layout_verified(&out);
    assert_eq!(layout_entry(&out, "copied")["digest"], img.manifest.as_str());
    assert_eq!(raw_manifest(&sk, &dst, None), img.manifest_bytes);
    let bundle = tmp.path().join("bundle");
    if umoci_unpack(&format!("{}:copied", out.display()), &bundle) {
        assert_eq!(fs::read_to_string(bundle.join("rootfs/data/b")).unwrap(), "this is b\n");
        assert_eq!(fs::read_to_string(bundle.join("rootfs/etc/motd")).unwrap(), "layer b\n", "the upper layer wins");
    }
    // skopeo copies the copy.
    let third = format!("oci:{}:x", tmp.path().join("third").display());
    let r = sk.run(&["copy", "-q", &dst, &third]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A layout with one image needs no REF; without one, the destination entry has no name.
    let plain = tmp.path().join("plain");
    let src = format!("oci:{}", img.layout.display());
    let dst = format!("oci:{}", plain.display());
    let r = copy(&env, &[&src, &dst]);
    let (digest, _, _) = copied(r.ok(), &src, &dst);
    assert_eq!(digest, img.manifest);
    let idx = layout_index(&plain);
    let entries = idx["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{idx}");
    assert_eq!(entries[0]["digest"], img.manifest.as_str(), "{idx}");
    assert!(entries[0]["annotations"]["org.opencontainers.image.ref.name"].is_null(), "{idx}");
    // Copying it again does not add a second entry.
    copy(&env, &[&src, &dst]).ok();
    assert_eq!(layout_index(&plain)["manifests"].as_array().unwrap().len(), 1, "{}", layout_index(&plain));

    // Within one layout, under another name: nothing to copy, two names.
    let again = format!("oci:{}:again", img.layout.display());
    let r = copy(&env, &[&img.oci_ref(), &again]);
    let (digest, n, m) = copied(r.ok(), &img.oci_ref(), &again);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 0, 3));
    assert_eq!(layout_entry(&img.layout, "again")["digest"], img.manifest.as_str());
    assert_eq!(layout_entry(&img.layout, "v1")["digest"], img.manifest.as_str());
}

#[test]
fn registry_copy_layout_ref_names_with_slash_and_colon() {
    if !need_tools() {
        return;
    }
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    // A layout strata itself wrote: `save --format oci`, unpacked.
    let img = two_layer_image(&tmp.path().join("src"), "local/app:1");
    env.run(&["load", "-i", img.layout.to_str().unwrap()]).ok();
    let ar = tmp.path().join("saved-oci.tar");
    env.run(&["save", "--format", "oci", "-o", ar.to_str().unwrap(), "local/app:1"]).ok();
    let saved = tmp.path().join("saved");
    fs::create_dir_all(&saved).unwrap();
    util::sh(&format!("tar -C '{}' -xf '{}'", saved.display(), ar.display()));
    let idx = layout_index(&saved);
    let refname = idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_string();
    assert!(refname.contains('/') && refname.contains(':'), "{idx}");

    let out = tmp.path().join("out");
    let src = format!("oci:{}:{refname}", saved.display());
    let dst = format!("oci:{}:local/app:2", out.display());
    let r = copy(&env, &[&src, &dst]);
    let (digest, _, _) = copied(r.ok(), &src, &dst);
    assert_eq!(digest, img.manifest);
    assert_eq!(layout_entry(&out, "local/app:2")["digest"], img.manifest.as_str());
    let siblings: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out:"))
        .collect();
    assert!(siblings.is_empty(), "a directory named after part of the ref: {siblings:?}");
    // skopeo names the same images the same way.
    assert_eq!(raw_manifest(&sk, &src, None), img.manifest_bytes);
    assert_eq!(raw_manifest(&sk, &dst, None), img.manifest_bytes);
}

#[test]
fn registry_copy_keeps_an_unreadable_destination_index() {
    if !need_tools() {
        return;
    }
    let tmp = scratch();
    let env = TestEnv::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    let other = two_layer_image(&tmp.path().join("other"), "v1");
    let out = tmp.path().join("out");
    copy(&env, &[&img.oci_ref(), &format!("oci:{}:first", out.display())]).ok();
    // index.json is cut short (a crash of another tool, a full disk).
    let full = fs::read(out.join("index.json")).unwrap();
    let cut = &full[..full.len() - 20];
    fs::write(out.join("index.json"), cut).unwrap();
    let r = copy(&env, &[&other.oci_ref(), &format!("oci:{}:second", out.display())]);
    assert_ne!(r.code, 0, "copied into a layout with a broken index.json:\n{}", r.stdout);
    r.fails(125);
    assert_eq!(fs::read(out.join("index.json")).unwrap(), cut, "index.json left as it was");
}

// ---------------------------------------------------------------------------------------------
// copy: docker archives.

/// Checks a docker archive strata wrote for `img` (tagged `tags`): members, manifest.json, bytes.
#[track_caller]
fn check_written_archive(file: &Path, img: &Img, tags: &[&str]) {
    let members = tar_members(file);
    let mf: Value = serde_json::from_slice(member(&members, "manifest.json")).expect("manifest.json is JSON");
    let want_layers: Vec<String> = img.layers.iter().map(|l| format!("{}/layer.tar", hex(l))).collect();
    assert_eq!(
        mf,
        json!([{"Config": format!("{}.json", hex(&img.config)), "RepoTags": tags, "Layers": want_layers}]),
        "manifest.json"
    );
    assert_eq!(member(&members, &format!("{}.json", hex(&img.config))), img.config_bytes.as_slice());
    for l in &img.layers {
        assert!(member(&members, &format!("{}/layer.tar", hex(l))) == img.blob(l).as_slice(), "layer {l} as it is");
    }
}

#[test]
fn registry_copy_to_docker_archive() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, sk, img) = src_app(&reg);
    let name = format!("{}/src/app:1", reg.addr);
    let src = format!("docker://{name}");

    // Registry to archive: tagged as the source.
    let file = tmp.path().join("from-registry.tar");
    let dst = format!("docker-archive:{}", file.display());
    let (digest, n, _) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!((digest.as_str(), n), (img.manifest.as_str(), 3));
    check_written_archive(&file, &img, &[&name]);
    // skopeo reads it.
    let v = sk_inspect(&sk, &dst, true);
    assert_eq!(v["rootfs"]["diff_ids"], json!(img.diff_ids), "{v}");
    assert_eq!(v["config"]["Cmd"], json!(["/bin/sh"]), "{v}");
    let via = tmp.path().join("via-skopeo");
    let r = sk.run(&["copy", "-q", &dst, &format!("oci:{}:x", via.display())]);
    assert_eq!(r.code, 0, "skopeo copy of strata's archive: {}", r.stderr);
    // strata loads it: the image is the source's.
    let loader = TestEnv::new();
    loader.run(&["load", "-i", file.to_str().unwrap()]).ok();
    let got = loader.inspect(&name);
    assert_eq!(got["Id"], img.config.as_str(), "{got}");
    assert_eq!(got["RootFS"]["Layers"], json!(img.diff_ids), "{got}");
    assert_eq!(got["Config"]["Cmd"], json!(["/bin/sh"]), "{got}");
    loader.assert_sound();

    // Layout to archive, with a tag of our choosing.
    let file2 = tmp.path().join("from-layout.tar");
    let dst2 = format!("docker-archive:{}:local/app:7", file2.display());
    let r = copy(&env, &[&img.oci_ref(), &dst2]);
    let (digest, n, m) = copied(r.ok(), &img.oci_ref(), &dst2);
    assert_eq!((digest.as_str(), n, m), (img.manifest.as_str(), 3, 0));
    check_written_archive(&file2, &img, &["local/app:7"]);
    let loader = TestEnv::new();
    loader.run(&["load", "-i", file2.to_str().unwrap()]).ok();
    assert_eq!(loader.inspect("local/app:7")["Id"], img.config.as_str());
    assert_eq!(loader.inspect("local/app:7")["RootFS"]["Layers"], json!(img.diff_ids));
    // Layout without a name to archive: no tag.
    let file3 = tmp.path().join("untagged.tar");
    let dst3 = format!("docker-archive:{}", file3.display());
    copy(&env, &[&img.oci_ref(), &dst3]).ok();
    check_written_archive(&file3, &img, &[]);
    // The scratch dir holds only the archives (no temp files left behind).
    let mut left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar") || n.starts_with(".tmp"))
        .collect();
    left.sort();
    assert_eq!(left, ["from-layout.tar", "from-registry.tar", "untagged.tar"]);
}

/// Checks an image synthesised from a docker archive at `image` (skopeo name): a Docker schema 2
/// manifest of digest `digest`, the archive's config, the layers `layer_digests`.
#[track_caller]
fn check_from_archive(sk: &Skopeo, image: &str, digest: &str, config: &str, layer_digests: &[String]) {
    let raw = raw_manifest(sk, image, None);
    assert_eq!(sha(&raw), digest, "the printed digest is the manifest's");
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{m}");
    assert_eq!(m["config"]["mediaType"], "application/vnd.docker.container.image.v1+json", "{m}");
    assert_eq!(m["config"]["digest"], config, "{m}");
    let got: Vec<&str> = m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(got, layer_digests, "{m}");
}

#[test]
fn registry_copy_from_docker_archive() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");

    // An archive made by skopeo (uncompressed layers).
    let file = tmp.path().join("skopeo.tar");
    skopeo_archive(&sk, &img, &file);
    let members = tar_members(&file);
    let mf: Value = serde_json::from_slice(member(&members, "manifest.json")).unwrap();
    let cfg_bytes = member(&members, mf[0]["Config"].as_str().unwrap()).to_vec();
    let cfg: Value = serde_json::from_slice(&cfg_bytes).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"], json!(img.diff_ids));
    let ar_layers: Vec<String> =
        mf[0]["Layers"].as_array().unwrap().iter().map(|l| sha(member(&members, l.as_str().unwrap()))).collect();
    assert_eq!(ar_layers, img.diff_ids, "skopeo stores the layers uncompressed");

    // Archive to registry.
    let src = format!("docker-archive:{}", file.display());
    let dst = format!("docker://{}/fromar/app:1", reg.addr);
    let (digest, n, m) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!((n, m), (3, 0));
    assert_ne!(digest, img.manifest, "a synthesised manifest");
    check_from_archive(&sk, &dst, &digest, &sha(&cfg_bytes), &img.diff_ids);
    assert_eq!(sk_inspect(&sk, &dst, true)["rootfs"]["diff_ids"], json!(img.diff_ids));
    let other = TestEnv::new();
    let pulled = dst.trim_start_matches("docker://");
    other.run(&["pull", "-q", pulled]).ok();
    assert_eq!(other.inspect(pulled)["RootFS"]["Layers"], json!(img.diff_ids));
    assert_eq!(other.inspect(pulled)["Id"], sha(&cfg_bytes).as_str());
    other.assert_sound();

    // Archive (by its tag) to layout: an OCI manifest of the same config and layers (a layout's
    // readers expect OCI manifests).
    let out = tmp.path().join("out");
    let src_named = format!("docker-archive:{}:local/app:1", file.display());
    let dst = format!("oci:{}:x", out.display());
    let r = copy(&env, &[&src_named, &dst]);
    let (digest2, n, _) = copied(r.ok(), &src_named, &dst);
    assert_eq!(n, 3);
    assert_ne!(digest2, digest, "an OCI manifest, not the Docker one made for the registry");
    assert_layout_verified(&out);
    let e = layout_entry(&out, "x");
    assert_eq!(e["digest"], digest2.as_str());
    let raw = fs::read(out.join("blobs/sha256").join(hex(&digest2))).unwrap();
    assert_eq!(sha(&raw), digest2);
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{m}");
    assert_eq!(m["config"]["digest"], sha(&cfg_bytes).as_str(), "{m}");
    let got: Vec<&str> = m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(got, img.diff_ids, "{m}");
    // A tag the archive does not have.
    let r =
        copy(&env, &[&format!("docker-archive:{}:local/app:2", file.display()), &format!("oci:{}:y", out.display())]);
    fails_with(&r, "local/app:2");

    // An archive made by strata save.
    let saver = TestEnv::new();
    let to_load = tmp.path().join("to-load");
    let layers: Vec<Vec<u8>> = img.layers.iter().map(|l| gunzip(&img.blob(l))).collect();
    util::write_oci_layout(&to_load, "local/saved:1", &layers, None);
    saver.run(&["load", "-i", to_load.to_str().unwrap()]).ok();
    let saved = tmp.path().join("saved.tar");
    saver.run(&["save", "-o", saved.to_str().unwrap(), "local/saved:1"]).ok();
    let src = format!("docker-archive:{}", saved.display());
    let dst = format!("docker://{}/saved/app:1", reg.addr);
    let (digest, _, _) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!(sha(&raw_manifest(&sk, &dst, None)), digest);
    let v = sk_inspect(&sk, &dst, true);
    assert_eq!(v["rootfs"]["diff_ids"], json!(img.diff_ids), "{v}");
    let other = TestEnv::new();
    other.run(&["pull", "-q", dst.trim_start_matches("docker://")]).ok();
    assert_eq!(other.inspect(dst.trim_start_matches("docker://"))["RootFS"]["Layers"], json!(img.diff_ids));
}

#[test]
fn registry_copy_docker_archive_to_layout_is_readable() {
    if !need_tools() {
        return;
    }
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    let file = tmp.path().join("skopeo.tar");
    skopeo_archive(&sk, &img, &file);
    let out = tmp.path().join("out");
    let src = format!("docker-archive:{}", file.display());
    let dst = format!("oci:{}:x", out.display());
    copy(&env, &[&src, &dst]).ok();
    // skopeo reads the layout strata wrote…
    let r = sk.run(&["inspect", "--config", &dst]);
    assert_eq!(r.code, 0, "skopeo inspect --config {dst}:\n{}\nindex.json: {}", r.stderr, layout_index(&out));
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["rootfs"]["diff_ids"], json!(img.diff_ids));
    let r = sk.run(&["copy", "-q", &dst, &format!("oci:{}:y", tmp.path().join("again").display())]);
    assert_eq!(r.code, 0, "skopeo copy {dst}: {}", r.stderr);
    // …and so does umoci.
    let bundle = tmp.path().join("bundle");
    if umoci_unpack(&format!("{}:x", out.display()), &bundle) {
        assert_eq!(fs::read_to_string(bundle.join("rootfs/data/b")).unwrap(), "this is b\n");
    }
}

/// A tar member header.
fn tar_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A docker archive as `docker save` writes it, tagged `local/dup:1`: one directory per layer
/// with layer.tar, json and VERSION, a `repositories` file, and a repeated layer (the image's
/// layers are A, B, A) stored once and linked by a symlink. Returns the file, the config digest
/// and the diff IDs.
fn docker_save_archive(dir: &Path) -> (PathBuf, String, Vec<String>) {
    let (a, b) = (layer("same", 4 << 10), layer("other", 4 << 10));
    let diff_ids = vec![sha(&a), sha(&b), sha(&a)];
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "one"}, {"created_by": "two"}, {"created_by": "three"}],
    }))
    .unwrap();
    let cfg = sha(&config);
    let ids: Vec<String> = (0..3).map(|i| util::sha256_hex(format!("layer-id-{i}").as_bytes())).collect();
    let mut t = tar::Builder::new(Vec::new());
    for (i, data) in [&a, &b].into_iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("{}/", ids[i])).unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        t.append(&h, &[][..]).unwrap();
        tar_entry(&mut t, &format!("{}/VERSION", ids[i]), b"1.0");
        tar_entry(&mut t, &format!("{}/json", ids[i]), format!(r#"{{"id":"{}"}}"#, ids[i]).as_bytes());
        tar_entry(&mut t, &format!("{}/layer.tar", ids[i]), data);
    }
    let mut h = tar::Header::new_ustar();
    h.set_path(format!("{}/layer.tar", ids[2])).unwrap();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name(format!("../{}/layer.tar", ids[0])).unwrap();
    h.set_mode(0o777);
    h.set_size(0);
    h.set_cksum();
    t.append(&h, &[][..]).unwrap();
    tar_entry(&mut t, &format!("{}.json", hex(&cfg)), &config);
    let layers: Vec<String> = ids.iter().map(|i| format!("{i}/layer.tar")).collect();
    let mf = json!([{"Config": format!("{}.json", hex(&cfg)), "RepoTags": ["local/dup:1"], "Layers": layers}]);
    tar_entry(&mut t, "manifest.json", &serde_json::to_vec(&mf).unwrap());
    tar_entry(&mut t, "repositories", format!(r#"{{"local/dup":{{"1":"{}"}}}}"#, ids[2]).as_bytes());
    let file = dir.join("saved.tar");
    fs::write(&file, t.into_inner().unwrap()).unwrap();
    (file, cfg, diff_ids)
}

#[test]
fn registry_copy_docker_save_style_archive() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let (file, cfg, diff_ids) = docker_save_archive(tmp.path());
    let src = format!("docker-archive:{}:local/dup:1", file.display());
    let dst = format!("docker://{}/dup/app:1", reg.addr);
    let (digest, n, _) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!(n, 3, "config and two distinct layers");
    check_from_archive(&sk, &dst, &digest, &cfg, &diff_ids);
    let other = TestEnv::new();
    let pulled = dst.trim_start_matches("docker://");
    other.run(&["pull", "-q", pulled]).ok();
    let got = other.inspect(pulled);
    assert_eq!(got["Id"], cfg.as_str());
    assert_eq!(got["RootFS"]["Layers"], json!(diff_ids));
    other.assert_sound();
}

#[test]
fn registry_copy_repeated_layer_to_docker_archive() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let (file, cfg, diff_ids) = docker_save_archive(tmp.path());
    let dst = format!("docker://{}/dup/app:1", reg.addr);
    copy_ok(&env, &reg, &[], &format!("docker-archive:{}", file.display()), &dst);
    // Registry (layers A, B, A) to a docker archive.
    let out = tmp.path().join("out.tar");
    let archive = format!("docker-archive:{}", out.display());
    copy_ok(&env, &reg, &[], &dst, &archive);
    let members = tar_members(&out);
    let mf: Value = serde_json::from_slice(member(&members, "manifest.json")).unwrap();
    let layers: Vec<String> =
        mf[0]["Layers"].as_array().unwrap().iter().map(|l| sha(member(&members, l.as_str().unwrap()))).collect();
    assert_eq!(layers, diff_ids, "one Layers entry per layer of the image:\n{mf}");
    let v = sk_inspect(&sk, &archive, true);
    assert_eq!(v["rootfs"]["diff_ids"], json!(diff_ids));
    let loader = TestEnv::new();
    loader.run(&["load", "-i", out.to_str().unwrap()]).ok();
    assert_eq!(loader.inspect(&cfg)["RootFS"]["Layers"], json!(diff_ids));
}

#[test]
fn registry_copy_large_blob_round_trip() {
    // A 6 MiB layer through every streaming path: registry → registry, registry → layout,
    // layout → docker archive, strata's own archive (gzip layers) → registry.
    if !need_tools() {
        return;
    }
    let a = Registry::start(Auth::Open);
    let b = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let m = util::write_oci_layout(&tmp.path().join("src"), "big", &[layer("big", 6 << 20)], None);
    let img = Img::describe(&tmp.path().join("src"), "big", &m);
    assert!(img.blob(&img.layers[0]).len() > 6 << 20);
    push(&sk, &a, &img.oci_ref(), "big/app:1", &[]);

    let on_b = format!("docker://{}/big/app:1", b.addr);
    let (d, n, _) = copy_ok(&env, &b, &[], &format!("docker://{}/big/app:1", a.addr), &on_b);
    assert_eq!((d.as_str(), n), (img.manifest.as_str(), 2));
    let out = tmp.path().join("out");
    let in_layout = format!("oci:{}:big", out.display());
    let (d, _, _) = copy_ok(&env, &b, &[], &on_b, &in_layout);
    assert_eq!(d, img.manifest);
    assert!(fs::read(out.join("blobs/sha256").join(hex(&img.layers[0]))).unwrap() == img.blob(&img.layers[0]));
    let file = tmp.path().join("big.tar");
    let archive = format!("docker-archive:{}:local/big:1", file.display());
    let r = copy(&env, &[&in_layout, &archive]);
    copied(r.ok(), &in_layout, &archive);
    check_written_archive(&file, &img, &["local/big:1"]);
    let back = format!("docker://{}/from-strata-archive/app:1", a.addr);
    let (d, n, _) = copy_ok(&env, &a, &[], &format!("docker-archive:{}", file.display()), &back);
    assert_eq!(n, 2, "config and layer (kept as they are, gzip) uploaded to the new repository");
    let raw = raw_manifest(&sk, &back, None);
    assert_eq!(sha(&raw), d);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["layers"][0]["digest"], img.layers[0].as_str(), "{v}");
    assert_eq!(v["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip", "{v}");
    let other = TestEnv::new();
    other.run(&["pull", "-q", back.trim_start_matches("docker://")]).ok();
    assert_eq!(other.inspect(back.trim_start_matches("docker://"))["RootFS"]["Layers"], json!(img.diff_ids));
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn registry_copy_written_files_are_readable() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, _sk, _img) = src_app(&reg);
    let src = format!("docker://{}/src/app:1", reg.addr);
    // What this process's umask gives a new file.
    let probe = tmp.path().join("probe");
    fs::write(&probe, b"x").unwrap();
    let want = mode(&probe);

    let out = tmp.path().join("out");
    copy_ok(&env, &reg, &[], &src, &format!("oci:{}:x", out.display()));
    let index_mode = mode(&out.join("index.json"));
    let mut wrong: Vec<String> = layout_blobs(&out)
        .into_iter()
        .map(|d| (mode(&out.join("blobs/sha256").join(hex(&d))), d))
        .filter(|(m, _)| *m != index_mode)
        .map(|(m, d)| format!("layout blob {d} is {m:o}, index.json {index_mode:o}"))
        .collect();

    let file = tmp.path().join("x.tar");
    copy_ok(&env, &reg, &[], &src, &format!("docker-archive:{}", file.display()));
    if mode(&file) != want {
        wrong.push(format!("the docker archive is {:o}, a new file here {want:o}", mode(&file)));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn registry_copy_upload_reports_each_blob_once() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    let dst = format!("docker://{}/once/app:1", reg.addr);
    let mark = requests(&reg).len();
    let r = copy(&env, &["--progress", "plain", &img.oci_ref(), &dst]);
    let out = ok(&r, &reg, "copy --progress plain").to_string();
    let new = requests(&reg)[mark..].to_vec();
    for d in img.blobs() {
        let heads = new.iter().filter(|q| q.method == "HEAD" && q.target.ends_with(&format!("/blobs/{d}"))).count();
        assert_eq!(heads, 1, "one HEAD of {d}:\n{}", show(&new));
        let short = &hex(&d)[..12];
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(short)).collect();
        let mut dedup = lines.clone();
        dedup.dedup();
        assert_eq!(lines, dedup, "each status of {short} once:\n{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// copy: multi-platform images.

#[test]
fn registry_copy_multi_platform() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let layout = tmp.path().join("multi");
    let ma = write_multiarch_layout(&layout, "multi", &["amd64", "arm64"]);
    let host = host_arch();
    assert!(host == "amd64" || host == "arm64", "the test image has amd64 and arm64 only");
    let src_layout = format!("oci:{}:multi", layout.display());

    // --all, layout to registry: the index and both children, digests kept.
    let all = format!("docker://{}/multi/app:all", reg.addr);
    let (digest, n, _) = copy_ok(&env, &reg, &["--all"], &src_layout, &all);
    assert_eq!(digest, ma.index);
    assert_eq!(n, 4, "two configs and two layers");
    assert_eq!(raw_manifest(&sk, &all, None), ma.index_bytes);
    for ArchImage { arch, manifest: m, .. } in &ma.images {
        let child = format!("docker://{}/multi/app@{m}", reg.addr);
        assert_eq!(sha(&raw_manifest(&sk, &child, None)), *m, "{arch} child");
        sk_inspect(&sk, &child, true);
    }

    // Without flags: only the host's manifest, as a plain manifest.
    let one = format!("docker://{}/multi/host:1", reg.addr);
    let (digest, n, _) = copy_ok(&env, &reg, &[], &all, &one);
    assert_eq!(digest, ma.image(host).manifest, "the host's ({host}) child");
    assert_eq!(n, 2);
    let raw = raw_manifest(&sk, &one, None);
    assert_eq!(sha(&raw), ma.image(host).manifest);
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(sk_inspect(&sk, &one, true)["architecture"], host);

    // --platform linux/arm64 picks arm64, from a registry and from a layout.
    let arm = format!("docker://{}/multi/arm:1", reg.addr);
    let (digest, _, _) = copy_ok(&env, &reg, &["--platform", "linux/arm64"], &all, &arm);
    assert_eq!(digest, ma.image("arm64").manifest);
    assert_eq!(sk_inspect(&sk, &arm, true)["architecture"], "arm64");
    let arm_dir = tmp.path().join("arm");
    let dst = format!("oci:{}:arm", arm_dir.display());
    let r = copy(&env, &["--platform", "linux/arm64", &src_layout, &dst]);
    let (digest, n, _) = copied(r.ok(), &src_layout, &dst);
    assert_eq!((digest.as_str(), n), (ma.image("arm64").manifest.as_str(), 2));
    let mut want =
        vec![ma.image("arm64").manifest.clone(), ma.image("arm64").config.clone(), ma.image("arm64").layer.clone()];
    want.sort();
    assert_eq!(layout_blobs(&arm_dir), want, "only arm64's blobs");

    // --all, registry to layout: the index, both children, all blobs.
    let all_dir = tmp.path().join("all");
    let dst = format!("oci:{}:all", all_dir.display());
    let (digest, n, _) = copy_ok(&env, &reg, &["--all"], &all, &dst);
    assert_eq!((digest.as_str(), n), (ma.index.as_str(), 4));
    assert_eq!(layout_blobs(&all_dir), layout_blobs(&layout));
    assert_layout_verified(&all_dir);
    let e = layout_entry(&all_dir, "all");
    assert_eq!(e["digest"], ma.index.as_str());
    assert_eq!(e["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw_manifest(&sk, &dst, None), ma.index_bytes);

    // --all to a docker archive is refused; without it, the host's image is written.
    let file = tmp.path().join("multi.tar");
    let dst = format!("docker-archive:{}", file.display());
    let r = copy(&env, &["--all", &all, &dst]);
    fails_with(&r, "one platform");
    assert!(!file.exists(), "nothing written");
    let (digest, n, _) = copy_ok(&env, &reg, &[], &all, &dst);
    assert_eq!((digest.as_str(), n), (ma.image(host).manifest.as_str(), 2));
    let members = tar_members(&file);
    let mf: Value = serde_json::from_slice(member(&members, "manifest.json")).unwrap();
    assert_eq!(mf[0]["Config"], format!("{}.json", hex(&ma.image(host).config)), "{mf}");
    assert_eq!(sk_inspect(&sk, &dst, true)["architecture"], host);
}

// ---------------------------------------------------------------------------------------------
// copy: errors.

#[test]
fn registry_copy_errors() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, sk, img) = src_app(&reg);
    let out = |n: &str| format!("oci:{}:x", tmp.path().join(n).display());

    // An unknown tag.
    let r = copy(&env, &[&format!("docker://{}/src/app:nope", reg.addr), &out("o1")]);
    fails_with(&r, "not found");
    // A layout without index.json.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let r = copy(&env, &[&format!("oci:{}", empty.display()), &out("o2")]);
    fails_with(&r, "index.json");
    // A name the layout does not have.
    let r = copy(&env, &[&format!("oci:{}:missing", img.layout.display()), &out("o3")]);
    fails_with(&r, "no image named");
    // A layout with two images and no name.
    let two = tmp.path().join("two");
    let other = two_layer_image(&tmp.path().join("other"), "v1");
    copy(&env, &[&img.oci_ref(), &format!("oci:{}:one", two.display())]).ok();
    copy(&env, &[&other.oci_ref(), &format!("oci:{}:two", two.display())]).ok();
    let r = copy(&env, &[&format!("oci:{}", two.display()), &out("o4")]);
    fails_with(&r, "name one");
    // Transports copy does not speak.
    let r = copy(&env, &["oci-archive:x", &out("o5")]);
    fails_with(&r, "not supported");
    // A compressed docker archive.
    let file = tmp.path().join("a.tar");
    skopeo_archive(&sk, &img, &file);
    let gz = tmp.path().join("a.tar.gz");
    fs::write(&gz, util::gzip(&fs::read(&file).unwrap())).unwrap();
    let r = copy(&env, &[&format!("docker-archive:{}", gz.display()), &out("o6")]);
    fails_with(&r, "compressed");
    // A platform the index does not have.
    let multi = tmp.path().join("multi");
    write_multiarch_layout(&multi, "m", &["amd64", "arm64"]);
    let r = copy(&env, &["--platform", "linux/s390x", &format!("oci:{}:m", multi.display()), &out("o7")]);
    fails_with(&r, "s390x");
    for n in ["o1", "o2", "o3", "o4", "o5", "o6", "o7"] {
        let p = tmp.path().join(n);
        assert!(!p.join("index.json").exists(), "{n}: no image written");
    }
}

#[test]
fn registry_copy_corrupt_layout_blob() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    // Change bytes of the first layer blob, keeping its length.
    let bad = img.layers[0].clone();
    corrupt_middle(&img.layout.join("blobs/sha256").join(hex(&bad)));

    // To a layout.
    let out = tmp.path().join("out");
    let r = copy(&env, &[&img.oci_ref(), &format!("oci:{}:x", out.display())]);
    let err = r.fails(125);
    assert!(err.contains("Error: ") && err.contains(&bad), "names the blob:\n{err}");
    assert!(says_mismatch(err), "a digest mismatch:\n{err}");
    assert!(!layout_blobs(&out).contains(&bad), "no blob file {bad}: {:?}", layout_blobs(&out));
    assert!(!out.join("blobs/sha256").join(hex(&bad)).exists());
    assert_layout_verified(&out);
    let has_x = out.join("index.json").exists() && layout_index(&out).to_string().contains(&img.manifest);
    assert!(!has_x, "no manifest entry for the failed copy");

    // To a registry: refused, no manifest.
    let dst = format!("docker://{}/bad/app:1", reg.addr);
    let r = copy(&env, &[&img.oci_ref(), &dst]);
    r.fails(125);
    let resp =
        http_get(&reg.addr, "/v2/bad/app/manifests/1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")])
            .unwrap();
    assert_eq!(resp.status, 404, "no manifest was put");

    // To a docker archive: no file.
    let file = tmp.path().join("bad.tar");
    let r = copy(&env, &[&img.oci_ref(), &format!("docker-archive:{}", file.display())]);
    let err = r.fails(125);
    assert!(err.contains(&bad), "{err}");
    assert!(!file.exists());
    let leftovers: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn registry_copy_corrupt_registry_blob() {
    if !need_tools() {
        return;
    }
    let a = Registry::start(Auth::Open);
    let b = Registry::start(Auth::Open);
    let (tmp, env, _sk, img) = src_app(&a);
    // The registry's stored bytes of a layer change (same length): it serves them as they are.
    let bad = img.layers[0].clone();
    corrupt_middle(&a.blob_data_path(hex(&bad)));
    let src = format!("docker://{}/src/app:1", a.addr);

    // To a layout: a digest mismatch, no blob file, no entry.
    let out = tmp.path().join("out");
    let r = copy(&env, &[&src, &format!("oci:{}:x", out.display())]);
    let err = r.fails(125);
    assert!(err.contains(&bad) && says_mismatch(err), "a digest mismatch naming the blob:\n{err}");
    assert!(!layout_blobs(&out).contains(&bad), "{:?}", layout_blobs(&out));
    assert_layout_verified(&out);
    assert!(!out.join("index.json").exists() || !layout_index(&out).to_string().contains(&img.manifest));
    let stray: Vec<String> = fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() != 64)
        .collect();
    assert!(stray.is_empty(), "temp files left in the layout: {stray:?}");

    // To a docker archive: no file.
    let file = tmp.path().join("x.tar");
    let r = copy(&env, &[&src, &format!("docker-archive:{}", file.display())]);
    assert!(r.fails(125).contains(&bad), "{}", r.stderr);
    assert!(!file.exists());

    // To another registry: that registry refuses the bytes; no manifest is put.
    let dst = format!("docker://{}/mirror/app:1", b.addr);
    let r = copy(&env, &[&src, &dst]);
    r.fails(125);
    let resp =
        http_get(&b.addr, "/v2/mirror/app/manifests/1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")])
            .unwrap();
    assert_eq!(resp.status, 404, "no manifest was put:\n{}", show(&requests(&b)));
    let resp = http_get(&b.addr, &format!("/v2/mirror/app/blobs/{bad}"), &[]).unwrap();
    assert_eq!(resp.status, 404, "the corrupt blob is not there");
}

#[test]
fn registry_copy_token_registry_mounts() {
    if !need_tools() {
        return;
    }
    let reg =
        Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: false });
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = two_layer_image(&tmp.path().join("src"), "v1");
    push(&sk, &reg, &img.oci_ref(), "src/app:1", &["--dest-creds", "alice:wonderland"]);
    let src = format!("docker://{}/src/app:1", reg.addr);
    let dst = format!("docker://{}/dst/app:1", reg.addr);
    // Anonymous: refused.
    copy(&env, &[&src, &dst]).fails(125);
    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland\n");
    ok(&r, &reg, "login");
    let mark = requests(&reg).len();
    let (digest, n, _) = copy_ok(&env, &reg, &[], &src, &dst);
    assert_eq!((digest.as_str(), n), (img.manifest.as_str(), 3));
    let new = requests(&reg)[mark..].to_vec();
    let mounts = new.iter().filter(|q| q.target.contains("mount=") && q.status == 201).count();
    assert_eq!(mounts, 3, "mounted with a token for both repositories:\n{}", show(&new));
    assert_eq!(raw_manifest(&sk, &dst, Some("alice:wonderland")), img.manifest_bytes);
    // And to a layout, with the login.
    let out = tmp.path().join("out");
    let (digest, _, _) = copy_ok(&env, &reg, &[], &dst, &format!("oci:{}:x", out.display()));
    assert_eq!(digest, img.manifest);
    assert_layout_verified(&out);
}

// ---------------------------------------------------------------------------------------------
// manifest inspect.

/// `s` without the whitespace outside JSON strings.
fn squeeze(s: &str) -> String {
    let (mut out, mut in_str, mut esc) = (String::new(), false, false);
    for c in s.chars() {
        if in_str {
            out.push(c);
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Checks `manifest inspect`'s output against the compact bytes served: same text up to
/// whitespace (so the same keys in the same order), indented by multiples of three spaces.
#[track_caller]
fn check_indented(out: &str, served: &[u8]) {
    assert_eq!(squeeze(out), String::from_utf8_lossy(served), "keys in the order served:\n{out}");
    assert!(out.ends_with("}\n"), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() > 5, "pretty-printed:\n{out}");
    assert_eq!(lines[0], "{");
    assert!(lines[1].starts_with("   \"") && !lines[1].starts_with("    "), "three spaces:\n{out}");
    for l in &lines {
        let n = l.len() - l.trim_start_matches(' ').len();
        assert_eq!(n % 3, 0, "indent of {l:?}:\n{out}");
    }
}

#[test]
fn registry_manifest_inspect() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, sk, img) = src_app(&reg);
    let name = format!("{}/src/app:1", reg.addr);

    let r = strata(&env, &["manifest", "inspect", &name], &[]);
    let out = ok(&r, &reg, "manifest inspect");
    check_indented(out, &img.manifest_bytes);
    assert!(out.contains("\n   \"schemaVersion\": 2,\n"), "{out}");
    let v: Value = serde_json::from_str(out).unwrap();
    assert_eq!(v, serde_json::from_slice::<Value>(&img.manifest_bytes).unwrap());

    let r = strata(&env, &["manifest", "inspect", "--raw", &name], &[]);
    ok(&r, &reg, "manifest inspect --raw");
    assert_eq!(r.stdout.as_bytes(), img.manifest_bytes.as_slice(), "the bytes as served");
    assert_eq!(sha(r.stdout.as_bytes()), img.manifest);
    // By digest.
    let by_digest = format!("{}/src/app@{}", reg.addr, img.manifest);
    let r = strata(&env, &["manifest", "inspect", "--raw", &by_digest], &[]);
    assert_eq!(ok(&r, &reg, "manifest inspect by digest").as_bytes(), img.manifest_bytes.as_slice());

    // An index, and one of its children by platform.
    let layout = tmp.path().join("multi");
    let ma = write_multiarch_layout(&layout, "multi", &["amd64", "arm64"]);
    push(&sk, &reg, &format!("oci:{}:multi", layout.display()), "multi/app:1", &["--all"]);
    let multi = format!("{}/multi/app:1", reg.addr);
    let r = strata(&env, &["manifest", "inspect", &multi], &[]);
    check_indented(ok(&r, &reg, "manifest inspect of an index"), &ma.index_bytes);
    let r = strata(&env, &["manifest", "inspect", "--raw", &multi], &[]);
    assert_eq!(sha(ok(&r, &reg, "--raw of an index").as_bytes()), ma.index);
    let r = strata(&env, &["manifest", "inspect", "--platform", "linux/arm64", &multi], &[]);
    let out = ok(&r, &reg, "manifest inspect --platform");
    let arm_bytes = fs::read(layout.join("blobs/sha256").join(hex(&ma.image("arm64").manifest))).unwrap();
    check_indented(out, &arm_bytes);
    let r = strata(&env, &["manifest", "inspect", "--raw", "--platform", "linux/arm64", &multi], &[]);
    assert_eq!(sha(ok(&r, &reg, "--raw --platform").as_bytes()), ma.image("arm64").manifest);
    let r = strata(&env, &["manifest", "inspect", "--raw", "--platform", "linux/amd64", &multi], &[]);
    assert_eq!(sha(ok(&r, &reg, "--raw --platform").as_bytes()), ma.image("amd64").manifest);

    // A platform the index does not have.
    let r = strata(&env, &["manifest", "inspect", "--platform", "linux/s390x", &multi], &[]);
    fails_with(&r, "s390x");

    // Unknown tag and repository.
    let r = strata(&env, &["manifest", "inspect", &format!("{}/src/app:nope", reg.addr)], &[]);
    fails_with(&r, "not found");
    let r = strata(&env, &["manifest", "inspect", &format!("{}/nobody/here:1", reg.addr)], &[]);
    fails_with(&r, "not found");
}

// ---------------------------------------------------------------------------------------------
// tags.

/// Pushes a tiny image under each of `tags` of `repo`.
fn push_tags(sk: &Skopeo, reg: &Registry, dir: &Path, repo: &str, tags: &[&str]) {
    let img = regserver::test_image(dir, 256);
    for t in tags {
        push(sk, reg, &img.oci_ref(), &format!("{repo}:{t}"), &[]);
    }
}

/// Access-log lines of strata's GETs whose target starts with `prefix`.
fn gets(reg: &Registry, prefix: &str) -> Vec<Req> {
    requests(reg).into_iter().filter(|q| q.method == "GET" && q.by_strata() && q.target.starts_with(prefix)).collect()
}

#[test]
fn registry_tags_list() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    push_tags(&sk, &reg, &tmp.path().join("img"), "tags/app", &["b", "latest", "2", "10", "a", "1"]);
    // What the registry gives, in its order.
    let r = http_get(&reg.addr, "/v2/tags/app/tags/list", &[]).unwrap();
    assert_eq!(r.status, 200);
    let served: Value = serde_json::from_slice(&r.body).unwrap();
    let want: Vec<String> = served["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    assert_eq!(want.len(), 6);
    let repo = format!("{}/tags/app", reg.addr);

    let r = strata(&env, &["tags", &repo], &[]);
    let out = ok(&r, &reg, "tags");
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "one tag a line, in the registry's order");
    let q = gets(&reg, "/v2/tags/app/tags/list");
    assert_eq!(q.len(), 1, "{}", show(&q));
    assert!(q[0].target.contains("n=1000"), "asks for pages of 1000:\n{}", show(&q));

    let r = strata(&env, &["tags", "--format", "json", &repo], &[]);
    let v: Value = serde_json::from_str(ok(&r, &reg, "tags --format json").trim()).unwrap();
    assert_eq!(v, json!({"name": repo, "tags": want}));

    // Errors: an unknown repository, a tag or digest given.
    let r = strata(&env, &["tags", &format!("{}/nobody/here", reg.addr)], &[]);
    fails_with(&r, "not found");
    let r = strata(&env, &["tags", &format!("{repo}:latest")], &[]);
    r.fails(125);
    let r = strata(&env, &["tags", &format!("{repo}@sha256:{}", "0".repeat(64))], &[]);
    r.fails(125);
}

#[test]
fn registry_tags_pagination() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    push_tags(&sk, &reg, &tmp.path().join("img"), "paged/app", &["t1", "t2", "t3", "t4", "t5"]);
    let repo = format!("{}/paged/app", reg.addr);
    let r = http_get(&reg.addr, "/v2/paged/app/tags/list", &[]).unwrap();
    let served: Value = serde_json::from_slice(&r.body).unwrap();
    let want: Vec<String> = served["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    // Whether this registry pages tag lists at all (distribution 2.8 does not: it ignores `n`).
    let first = http_get(&reg.addr, "/v2/paged/app/tags/list?n=2", &[]).unwrap();
    let registry_pages = first.header("link").is_some();

    let r = strata(&env, &["tags", &repo], &[("STRATA_LIST_PAGE_SIZE", "2")]);
    let out = ok(&r, &reg, "tags with pages of 2");
    let mut got: Vec<String> = out.lines().map(str::to_string).collect();
    got.sort();
    let mut all = want.clone();
    all.sort();
    assert_eq!(got, all, "every tag, once");
    let q = gets(&reg, "/v2/paged/app/tags/list");
    assert!(q.iter().all(|q| q.target.contains("n=2")), "pages of 2:\n{}", show(&q));
    if registry_pages {
        assert!(q.len() >= 3, "several pages:\n{}", show(&q));
    } else {
        assert_eq!(q.len(), 1, "one page when the registry sends no Link:\n{}", show(&q));
    }
}

/// A fake registry on 127.0.0.1 serving `/v2/` and a paged tag list of `repo`, `n` at a time,
/// linked by `Link: <…>; rel="next"` (relative URLs). Records each request target.
struct Pager {
    addr: String,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pager {
    fn start(repo: &str, tags: &[&str]) -> Pager {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (targets.clone(), stop.clone());
        let repo = repo.to_string();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => Pager::serve(conn, &repo, &tags, &t),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Pager { addr, targets, stop, thread: Some(thread) }
    }

    fn serve(mut conn: TcpStream, repo: &str, tags: &[String], targets: &Mutex<Vec<String>>) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        // One request per connection (Connection: close).
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        targets.lock().unwrap().push(target.clone());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut extra = String::new();
        let (status, body) = if path == "/v2/" {
            (200, "{}".to_string())
        } else if path == format!("/v2/{repo}/tags/list") {
            let mut n = tags.len();
            let mut last = None;
            for kv in query.split('&') {
                match kv.split_once('=') {
                    Some(("n", v)) => n = v.parse().unwrap_or(n),
                    Some(("last", v)) => last = Some(v.to_string()),
                    _ => {}
                }
            }
            let start = match last {
                Some(l) => tags.iter().position(|t| *t == l).map_or(tags.len(), |i| i + 1),
                None => 0,
            };
            let page: Vec<&String> = tags.iter().skip(start).take(n).collect();
            if start + page.len() < tags.len() {
                extra = format!(
                    "Link: </v2/{repo}/tags/list?last={}&n={n}>; rel=\"next\"\r\n",
                    page.last().map(|s| s.as_str()).unwrap_or("")
                );
            }
            (200, json!({"name": repo, "tags": page}).to_string())
        } else {
            (404, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#.into())
        };
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body.as_bytes());
        let _ = conn.flush();
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn registry_tags_follows_link_pages() {
    // Unsorted on purpose: strata keeps the registry's order.
    let tags = ["zeta", "alpha", "10", "2", "beta"];
    let pager = Pager::start("paged/app", &tags);
    let env = TestEnv::new();
    let repo = format!("{}/paged/app", pager.addr);
    let r = strata(&env, &["tags", &repo], &[("STRATA_LIST_PAGE_SIZE", "2")]);
    assert_eq!(r.code, 0, "{r:?}\nrequests: {:?}", pager.targets());
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), tags, "all tags in order; requests: {:?}", pager.targets());
    let pages: Vec<String> = pager.targets().into_iter().filter(|t| t.contains("/tags/list")).collect();
    assert_eq!(
        pages,
        ["/v2/paged/app/tags/list?n=2", "/v2/paged/app/tags/list?last=alpha&n=2", "/v2/paged/app/tags/list?last=2&n=2",],
        "pages of 2 following Link"
    );
    // The default page size.
    let r = strata(&env, &["tags", "--format", "json", &repo], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(serde_json::from_str::<Value>(r.stdout.trim()).unwrap(), json!({"name": repo, "tags": tags}));
    assert!(pager.targets().iter().any(|t| t == "/v2/paged/app/tags/list?n=1000"), "{:?}", pager.targets());
}

// ---------------------------------------------------------------------------------------------
// catalog.

#[test]
fn registry_catalog_open_registry() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = regserver::test_image(&tmp.path().join("img"), 256);
    let repos = ["e/five", "a/one", "c/three", "b/two", "d/four"];
    for r in repos {
        push(&sk, &reg, &img.oci_ref(), &format!("{r}:1"), &[]);
    }
    let served: Value = serde_json::from_slice(&http_get(&reg.addr, "/v2/_catalog", &[]).unwrap().body).unwrap();
    let want: Vec<String> =
        served["repositories"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().into()).collect();
    assert_eq!(want.len(), 5, "{served}");

    let r = strata(&env, &["catalog", &reg.addr], &[]);
    assert_eq!(ok(&r, &reg, "catalog").lines().collect::<Vec<_>>(), want);
    let r = strata(&env, &["catalog", "--format", "json", &reg.addr], &[]);
    let v: Value = serde_json::from_str(ok(&r, &reg, "catalog --format json").trim()).unwrap();
    assert_eq!(v, json!({"registry": reg.addr, "repositories": want}));
    let q = gets(&reg, "/v2/_catalog");
    assert_eq!(q.len(), 2, "one page each:\n{}", show(&q));
    assert!(q.iter().all(|q| q.target.contains("n=1000")), "{}", show(&q));

    // Pages of 2: three requests following Link, every repository once, in order.
    let mark = gets(&reg, "/v2/_catalog").len();
    let r = strata(&env, &["catalog", &reg.addr], &[("STRATA_LIST_PAGE_SIZE", "2")]);
    assert_eq!(ok(&r, &reg, "catalog with pages of 2").lines().collect::<Vec<_>>(), want);
    let q = gets(&reg, "/v2/_catalog")[mark..].to_vec();
    assert_eq!(q.len(), 3, "three pages:\n{}", show(&q));
    assert!(q.iter().all(|q| q.target.contains("n=2") && q.status == 200), "{}", show(&q));
    assert!(q[1].target.contains("last="), "{}", show(&q));
}

#[test]
fn registry_catalog_token_registry() {
    if !need_tools() {
        return;
    }
    let reg =
        Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: false });
    let tmp = scratch();
    let env = TestEnv::new();
    let sk = Skopeo::new();
    let img = regserver::test_image(&tmp.path().join("img"), 256);
    for r in ["x/one", "x/two", "x/three"] {
        push(&sk, &reg, &img.oci_ref(), &format!("{r}:1"), &["--dest-creds", "alice:wonderland"]);
    }
    // Anonymous: refused.
    let r = strata(&env, &["catalog", &reg.addr], &[]);
    r.fails(125);
    let r = env.run_stdin(&["login", "-u", "alice", "--password-stdin", &reg.addr], b"wonderland\n");
    ok(&r, &reg, "login");
    let r = strata(&env, &["catalog", &reg.addr], &[]);
    assert_eq!(ok(&r, &reg, "catalog").lines().collect::<Vec<_>>(), ["x/one", "x/three", "x/two"]);
    let mark = gets(&reg, "/v2/_catalog").len();
    let r = strata(&env, &["catalog", "--format", "json", &reg.addr], &[("STRATA_LIST_PAGE_SIZE", "2")]);
    let v: Value = serde_json::from_str(ok(&r, &reg, "catalog paged").trim()).unwrap();
    assert_eq!(v["repositories"], json!(["x/one", "x/three", "x/two"]));
    let q: Vec<Req> = gets(&reg, "/v2/_catalog")[mark..].iter().filter(|q| q.status == 200).cloned().collect();
    assert_eq!(q.len(), 2, "two pages:\n{}", show(&q));
    // Tags on the same registry, with the login.
    let r = strata(&env, &["tags", &format!("{}/x/two", reg.addr)], &[]);
    assert_eq!(ok(&r, &reg, "tags").trim(), "1");
}

/// A Docker schema 2 image copied from a registry into an OCI layout becomes OCI documents (as
/// `skopeo copy … oci:` makes it): readers of layouts (skopeo, umoci) accept it, the config and
/// layers are the same bytes; copied back to a registry it stays OCI.
#[test]
fn registry_copy_docker_schema2_to_layout_is_converted_to_oci() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = regserver::test_image(&tmp.path().join("src"), 20 << 10);
    let sk = Skopeo::new();
    push(&sk, &reg, &img.oci_ref(), "v2s2/app:1", &["--format", "v2s2"]);
    let src = format!("docker://{}/v2s2/app:1", reg.addr);
    let raw: Value = serde_json::from_slice(&raw_manifest(&sk, &src, None)).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let out = tmp.path().join("out");
    let env = TestEnv::new();
    let r = env.run(&["copy", "-q", &src, &format!("oci:{}:x", out.display())]);
    let digest = r.ok().trim().to_string();
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let m: Value = serde_json::from_slice(&fs::read(out.join("blobs/sha256").join(hex(&digest))).unwrap()).unwrap();
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(m["config"]["digest"], raw["config"]["digest"], "the config is the same blob");
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(m["layers"][0]["digest"], raw["layers"][0]["digest"], "the layer is the same blob");
    // The oracles read it.
    let r = sk.run(&["inspect", &format!("oci:{}:x", out.display())]);
    assert_eq!(r.code, 0, "{r:?}");
    if util::have("umoci") {
        util::sh(&format!("umoci stat --image {}:x >/dev/null", out.display()));
    }
}

/// `strata diff` of remote images: the second image's shared layer is not fetched again, nothing
/// gets a tag, and an image compared with itself is identical (exit 0).
#[test]
fn registry_diff_fetches_only_missing_layers_and_tags_nothing() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let (tmp, env, sk, v1) = src_app(&reg);
    // v2: a new bottom layer, the same top layer as v1 (same bytes, same blob).
    let shared = regserver::gunzip(&v1.blob(&v1.layers[1]));
    let name = format!("n{}", regserver::rand_alnum(6));
    let dir2 = tmp.path().join("v2");
    let m2 = util::write_oci_layout(&dir2, "v2", &[layer(&name, 4 << 10), shared], None);
    let v2 = Img::describe(&dir2, "v2", &m2);
    assert_eq!(v2.layers[1], v1.layers[1], "the top layer is shared");
    push(&sk, &reg, &v2.oci_ref(), "src/app:2", &[]);

    let (r1, r2) = (format!("docker://{}/src/app:1", reg.addr), format!("docker://{}/src/app:2", reg.addr));
    let images_before = env.run(&["images", "-q"]).ok().to_string();
    let mark = requests(&reg).len();
    let same = env.run(&["diff", &r1, &r1]);
    assert_eq!((same.code, same.stdout.as_str()), (0, ""), "an image against itself: {}", same.stderr);
    let r = env.run(&["diff", &r1, &r2]);
    assert_eq!(r.code, 1, "the images differ: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&format!("A /data/{name}").as_str()), "{}", r.stdout);
    assert!(lines.contains(&format!("A /data/{name}.bin").as_str()), "{}", r.stdout);
    assert_eq!(lines.iter().filter(|l| l.starts_with("D /data/")).count(), 2, "v1's own files deleted:\n{}", r.stdout);
    assert!(!r.stdout.contains("/etc/motd"), "etc/motd comes from the shared layer in both:\n{}", r.stdout);
    let new = requests(&reg)[mark..].to_vec();
    for (d, want) in [(&v1.layers[0], 1), (&v1.layers[1], 1), (&v2.layers[0], 1)] {
        let gets = new
            .iter()
            .filter(|q| q.method == "GET" && q.target.ends_with(&format!("/blobs/{d}")) && q.status == 200)
            .count();
        assert_eq!(gets, want, "GETs of {d}:\n{}", show(&new));
    }
    assert_eq!(env.run(&["images", "-q"]).ok(), images_before, "diff tags nothing");
    // What the comparison fetched is held only by its lease: a prune after it expires may take it,
    // a check now finds the store sound.
    env.assert_sound();
}
