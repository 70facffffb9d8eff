//! Interop with the real peers: skopeo and umoci read strata's store and archives, and strata
//! loads what they write.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

/// A canonical listing of a tree: path, type, mode, owner, size, mtime (not for dirs), content
/// digest, link target. Overlay whiteouts must not appear in a merged tree.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let (kind, extra) = if ft.is_dir() {
                stack.push(path.clone());
                ("d", String::new())
            } else if ft.is_symlink() {
                ("l", fs::read_link(&path).unwrap().display().to_string())
            } else if ft.is_file() {
                ("f", sha256_hex(&fs::read(&path).unwrap()))
            } else {
                ("o", format!("{:x}", m.rdev()))
            };
            let mtime = if ft.is_dir() { 0 } else { m.mtime() };
            out.push(format!(
                "{rel} {kind} {:o} {}:{} {} {mtime} {extra}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                if ft.is_file() { m.len() } else { 0 }
            ));
        }
    }
    out.sort();
    out
}

fn need_peers() -> bool {
    let ok = have("skopeo") && have("umoci");
    assert!(ok || std::env::var("CI").is_err(), "skopeo and umoci are required in CI (scripts/test.sh installs them)");
    ok
}

#[test]
fn skopeo_reads_the_store_and_strata_archives_and_strata_loads_skopeos() {
    if !need_peers() {
        return;
    }
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    let id = env.import(&rootfs, "interop/app:1");
    let digest = env.inspect("interop/app:1")["Descriptor"]["digest"].as_str().unwrap().to_string();
    let root = env.root.display().to_string();

    // The store is an OCI layout skopeo reads by the full reference.
    let v: serde_json::Value =
        serde_json::from_str(&sh(&format!("skopeo inspect oci:{root}:docker.io/interop/app:1"))).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    // skopeo copies out of the store into both archive kinds; strata loads both back.
    let d = env.path("from-skopeo-docker.tar");
    let o = env.path("from-skopeo-oci.tar");
    sh(&format!(
        "skopeo --insecure-policy copy -q oci:{root}:docker.io/interop/app:1 docker-archive:{}:interop/app:1",
        d.display()
    ));
    sh(&format!(
        "skopeo --insecure-policy copy -q oci:{root}:docker.io/interop/app:1 oci-archive:{}:docker.io/interop/app:1",
        o.display()
    ));
    for f in [&d, &o] {
        let other = TestEnv::new();
        other.run(&["load", "-i", f.to_str().unwrap()]).ok();
        assert_eq!(other.image_ids(), vec![id.clone()], "{}", f.display());
        other.assert_sound();
    }
    // skopeo reads strata's own archives.
    let sd = env.path("strata-docker.tar");
    let so = env.path("strata-oci.tar");
    env.run(&["save", "-o", sd.to_str().unwrap(), "interop/app:1"]).ok();
    env.run(&["save", "--format", "oci", "-o", so.to_str().unwrap(), "interop/app:1"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&sh(&format!("skopeo inspect docker-archive:{}", sd.display()))).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    let cfg: serde_json::Value =
        serde_json::from_str(&sh(&format!("skopeo inspect --config docker-archive:{}", sd.display()))).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"], env.inspect("interop/app:1")["RootFS"]["Layers"]);
    let v: serde_json::Value =
        serde_json::from_str(&sh(&format!("skopeo inspect oci-archive:{}", so.display()))).unwrap();
    assert_eq!(v["Digest"], digest.as_str(), "the OCI archive keeps the manifest as stored");
    // And a copy through skopeo to an OCI directory loads as a directory.
    let dir = env.path("skopeo-dir");
    sh(&format!("skopeo --insecure-policy copy -q docker-archive:{} oci:{}:app", sd.display(), dir.display()));
    let other = TestEnv::new();
    other.run(&["load", "-i", dir.to_str().unwrap()]).ok();
    // skopeo rewrites the config when it converts to OCI, so the ID may change; the layers do not.
    let ids = other.image_ids();
    assert_eq!(ids.len(), 1);
    assert_eq!(other.inspect(&ids[0])["RootFS"], env.inspect(&id)["RootFS"]);
}

#[test]
fn umoci_unpacks_what_strata_stored_to_the_same_tree() {
    if !need_peers() {
        return;
    }
    let env = TestEnv::new();
    // Three layers with a deletion, an opaque directory, a permission-only and an owner-only change.
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/keep", b"keep", 0o644)
        .file("etc/gone", b"gone", 0o644)
        .dir("opt", 0o755)
        .file("opt/old", b"old", 0o600)
        .symlink("etc/link", "keep")
        .finish();
    let mid = Layer::new()
        .dir("etc", 0o755)
        .file("etc/.wh.gone", b"", 0o644)
        .file("etc/keep", b"keep", 0o755)
        .dir("opt", 0o755)
        .file("opt/.wh..wh..opq", b"", 0o644)
        .file("opt/new", b"new", 0o644)
        .finish();
    let top = Layer::new()
        .dir("etc", 0o755)
        .file_owned("etc/owned", b"o", 0o640, 1000, 100)
        .hardlink("etc/owned2", "etc/owned")
        .finish();
    let layout = env.path("src");
    write_oci_layout(&layout, "lab/three:1", &[base, mid, top], None);
    env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    let bundle = env.path("bundle");
    sh(&format!("umoci unpack --image {}:docker.io/lab/three:1 {}", env.root.display(), bundle.display()));

    // strata's merged view: its overlay snapshots mounted read-only (overlayfs reads our markers).
    let layers: Vec<String> = env.inspect("lab/three:1")["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap()[7..].to_string())
        .collect();
    let lower: Vec<String> =
        layers.iter().rev().map(|l| env.root.join("snapshots").join(l).join("fs").display().to_string()).collect();
    let mnt = env.path("merged");
    fs::create_dir_all(&mnt).unwrap();
    sh(&format!("mount -t overlay overlay -o ro,lowerdir={} {}", lower.join(":"), mnt.display()));
    let ours = listing(&mnt);
    sh(&format!("umount {}", mnt.display()));
    let theirs = listing(&bundle.join("rootfs"));
    assert_eq!(ours, theirs, "strata's snapshots merge to umoci's tree");
    assert!(ours.iter().any(|l| l.starts_with("etc/owned f 640 1000:100")), "{ours:?}");
    assert!(!ours.iter().any(|l| l.starts_with("etc/gone") || l.starts_with("opt/old")), "{ours:?}");
}
