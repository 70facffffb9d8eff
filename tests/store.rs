//! Store, import/export, inspection and disk commands, end to end.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

#[test]
fn import_list_inspect_history_tag_rmi() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    let id = env
        .run(&[
            "import",
            "-c",
            "CMD [\"/bin/sh\"]",
            "-c",
            "ENV A=1",
            "-m",
            "first",
            rootfs.to_str().unwrap(),
            "demo/app:1",
        ])
        .ok()
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "import prints the image ID: {id}");

    let out = env.run(&["images"]).ok().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID") && lines[0].contains("SIZE"), "{out}");
    assert!(lines[1].starts_with("demo/app") && lines[1].contains(" 1 ") && lines[1].contains(&id[7..19]), "{out}");

    let v = env.inspect("demo/app:1");
    assert_eq!(v["Id"], id);
    assert_eq!(v["RepoTags"][0], "demo/app:1");
    assert!(v["RepoDigests"][0].as_str().unwrap().starts_with("demo/app@sha256:"));
    assert_eq!(v["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(v["Config"]["Env"][0], "A=1");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(v["Size"].as_u64().unwrap() > 500_000, "busybox is in it");
    assert_eq!(v["Comment"], "first");

    let h = env.run(&["history", "demo/app:1"]).ok().to_string();
    assert!(h.starts_with("IMAGE") && h.contains("strata import") && h.contains(&id[7..19]), "{h}");

    // Tag, then resolve by every kind of name.
    env.run(&["tag", "demo/app:1", "other:latest"]).ok();
    let digest = v["RepoDigests"][0].as_str().unwrap().split('@').nth(1).unwrap().to_string();
    for name in [
        "other",
        "other:latest",
        "docker.io/library/other:latest",
        &id,
        &id[7..],
        &id[7..15],
        &format!("demo/app@{digest}"),
    ] {
        assert_eq!(env.inspect(name)["Id"], id, "resolves {name}");
    }
    assert_eq!(env.image_ids(), vec![id.clone()], "one image, two tags");

    // rmi by ID with two tags needs -f; by tag untags; the last tag deletes.
    let e = env.run(&["rmi", &id[7..19]]).fails(1).to_string();
    assert!(e.contains("referenced in multiple repositories"), "{e}");
    let out = env.run(&["rmi", "other"]).ok().to_string();
    assert_eq!(out.trim(), "Untagged: other:latest");
    let out = env.run(&["rmi", "demo/app:1"]).ok().to_string();
    assert!(out.contains("Untagged: demo/app:1") && out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(env.image_ids().is_empty());
    assert_eq!(fs::read_dir(env.root.join("blobs/sha256")).unwrap().count(), 0, "rmi swept the blobs");
    assert_eq!(fs::read_dir(env.root.join("snapshots")).unwrap().count(), 0, "and the snapshot");
    env.assert_sound();
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    env.import(&rootfs, "keep:1");
    let before = fs::read(env.root.join("index.json")).unwrap();

    let e = env.run(&["rmi", "nope"]).fails(1).to_string();
    assert!(e.contains("no such image: nope"), "{e}");
    let e = env.run(&["image", "inspect", "nope"]).fails(1).to_string();
    assert!(e.contains("No such image: nope"), "{e}");
    let e = env.run(&["tag", "keep:1", "Bad:Name"]).fails(125).to_string();
    assert!(e.contains("invalid reference format") && e.contains("lowercase"), "{e}");
    let e = env.run(&["tag", "missing", "x"]).fails(125).to_string();
    assert!(e.contains("no such image: missing"), "{e}");
    let e = env.run(&["import", "/nonexistent/dir", "x"]).fails(125).to_string();
    assert!(e.contains("/nonexistent/dir"), "{e}");
    let e = env.run(&["import", "-c", "FROB x", rootfs.to_str().unwrap(), "x"]).fails(125).to_string();
    assert!(e.to_lowercase().contains("frob"), "names the bad instruction: {e}");
    let e = env.run(&["images", "-f", "color=red"]).fails(125).to_string();
    assert!(e.contains("invalid filter"), "{e}");

    // A directory that is not a store is refused as --root.
    let notstore = env.path("notstore");
    fs::create_dir_all(&notstore).unwrap();
    fs::write(notstore.join("precious"), "data").unwrap();
    let r = std::process::Command::new(STRATA).args(["--root", notstore.to_str().unwrap(), "images"]).output().unwrap();
    assert_eq!(r.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a strata store"));
    assert_eq!(fs::read_dir(&notstore).unwrap().count(), 1);

    assert_eq!(fs::read(env.root.join("index.json")).unwrap(), before, "index.json unchanged");
    env.assert_sound();
}

#[test]
fn save_and_load_round_trip_both_formats() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    fs::write(rootfs.join("etc/owned"), "x").unwrap();
    std::os::unix::fs::chown(rootfs.join("etc/owned"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::hard_link(rootfs.join("etc/motd"), rootfs.join("etc/motd.hard")).unwrap();
    let id = env.import(&rootfs, "round/trip:1");
    let layer = env.inspect("round/trip:1")["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    let index_before = fs::read(env.root.join("snapshots").join(&layer[7..]).join("files")).unwrap();

    for (fmt, file) in [("docker", "img.tar"), ("oci", "img-oci.tar")] {
        let out = env.path(file);
        env.run(&["save", "--format", fmt, "-o", out.to_str().unwrap(), "round/trip:1"]).ok();
        let again = env.path(&format!("again-{file}"));
        env.run(&["save", "--format", fmt, "-o", again.to_str().unwrap(), "round/trip:1"]).ok();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap(), "{fmt}: saving twice gives the same bytes");

        let other = TestEnv::new();
        let msg = other.run(&["load", "-i", out.to_str().unwrap()]).ok().to_string();
        assert_eq!(msg.trim(), "Loaded image: round/trip:1", "{fmt}");
        assert_eq!(other.image_ids(), vec![id.clone()], "{fmt}: same image ID after the round trip");
        let index_after = fs::read(other.root.join("snapshots").join(&layer[7..]).join("files")).unwrap();
        // Same entries (the header's creation time differs).
        assert_eq!(index_before[72..], index_after[72..], "{fmt}: identical file index");
        let m = fs::metadata(other.root.join("snapshots").join(&layer[7..]).join("fs/etc/owned")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{fmt}: ownership survives");
        other.assert_sound();

        // gzip-compressed archives load too, from stdin as well.
        let gz = gzip(&fs::read(&out).unwrap());
        let third = TestEnv::new();
        third.run_stdin(&["load"], &gz).ok();
        assert_eq!(third.image_ids(), vec![id.clone()], "{fmt}: gzip archive from stdin");
    }
    // Saving to a terminal is refused; a missing image is an error.
    let e = env.run(&["save", "-o", env.path("x.tar").to_str().unwrap(), "nope"]).fails(125).to_string();
    assert!(e.contains("no such image"), "{e}");
    assert!(!env.path("x.tar").exists(), "no partial output");
}

#[test]
fn corrupt_truncated_and_lying_archives_are_refused_without_change() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    env.import(&rootfs, "keep:1");
    let archive = env.path("good.tar");
    env.run(&["save", "-o", archive.to_str().unwrap(), "keep:1"]).ok();
    env.run(&["rmi", "keep:1"]).ok();
    let good = fs::read(&archive).unwrap();

    // Truncated.
    let t = env.path("truncated.tar");
    fs::write(&t, &good[..good.len() / 2]).unwrap();
    let e = env.run(&["load", "-i", t.to_str().unwrap()]).fails(125).to_string();
    assert!(e.contains("truncated.tar"), "names the file: {e}");
    // Garbage.
    let g = env.path("garbage.tar");
    fs::write(&g, vec![0x42u8; 10_000]).unwrap();
    env.run(&["load", "-i", g.to_str().unwrap()]).fails(125);
    // Missing file.
    let e = env.run(&["load", "-i", "/nonexistent.tar"]).fails(125).to_string();
    assert!(e.contains("/nonexistent.tar"), "{e}");

    // A layer that does not match the config's diff ID.
    let layout = env.path("lying");
    let layer = Layer::new().file("etc/x", b"real", 0o644).finish();
    write_oci_layout(&layout, "lying:1", &[layer], Some(vec![format!("sha256:{}", "0".repeat(64))]));
    let e = env.run(&["load", "-i", layout.to_str().unwrap()]).fails(125).to_string();
    assert!(e.contains("diff ID") || e.contains("diff_id"), "{e}");

    // A manifest pointing at a missing blob.
    let layout = env.path("missing");
    let layer = Layer::new().file("etc/x", b"real", 0o644).finish();
    write_oci_layout(&layout, "missing:1", std::slice::from_ref(&layer), None);
    let gz = gzip(&layer);
    fs::remove_file(layout.join("blobs/sha256").join(sha256_hex(&gz))).unwrap();
    let e = env.run(&["load", "-i", layout.to_str().unwrap()]).fails(125).to_string();
    assert!(e.contains(&sha256_hex(&gz)), "names the missing blob: {e}");

    assert!(env.image_ids().is_empty(), "nothing was tagged");
    env.assert_sound();
    // And a good load still works after all that.
    env.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert_eq!(env.image_ids().len(), 1);
}

#[test]
fn hostile_layers_are_refused_and_write_nothing_outside() {
    let env = TestEnv::new();
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let o = outside.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", Layer::new().file("../../../../escape", b"x", 0o644).finish(), "'..'"),
        ("symlink", Layer::new().symlink("out", &o).file("out/escape", b"x", 0o644).finish(), "symlink"),
        ("hardlink", Layer::new().hardlink("h", "../../../../etc/passwd").finish(), "hard link"),
        ("hardlink-abs", Layer::new().hardlink("h", "/etc/shadow").finish(), "hard link"),
    ];
    for (name, layer, what) in cases {
        let layout = env.path(&format!("evil-{name}"));
        write_oci_layout(&layout, &format!("evil/{name}:1"), &[layer], None);
        let e = env.run(&["load", "-i", layout.to_str().unwrap()]).fails(125).to_string();
        assert!(e.contains("refused") && e.contains(what) && e.contains("layer sha256:"), "{name}: {e}");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
    assert!(env.image_ids().is_empty());
    env.assert_sound();

    // An absolute path is neutralised (stripped), as docker does.
    let layout = env.path("abs");
    write_oci_layout(&layout, "abs:1", &[Layer::new().file("/etc/abs", b"in", 0o644).finish()], None);
    env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    let layer = env.inspect("abs:1")["RootFS"]["Layers"][0].as_str().unwrap()[7..].to_string();
    assert_eq!(fs::read(env.root.join("snapshots").join(layer).join("fs/etc/abs")).unwrap(), b"in");
}

#[test]
fn multi_layer_whiteouts_and_shared_layers_in_df() {
    let env = TestEnv::new();
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/a", &[1u8; 100_000], 0o644)
        .dir("opt", 0o755)
        .file("opt/old", b"old", 0o644)
        .finish();
    let top1 = Layer::new()
        .file("etc/.wh.a", b"", 0o644)
        .dir("opt", 0o755)
        .file("opt/.wh..wh..opq", b"", 0o644)
        .file("opt/new", &[2u8; 20_000], 0o644)
        .finish();
    let top2 = Layer::new().file("etc/b", &[3u8; 30_000], 0o644).finish();
    for (name, layers) in [("one", vec![base.clone(), top1]), ("two", vec![base.clone(), top2])] {
        let layout = env.path(name);
        write_oci_layout(&layout, &format!("lab/{name}:1"), &layers, None);
        env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    }
    let l1 = env.inspect("lab/one:1")["RootFS"]["Layers"][1].as_str().unwrap()[7..].to_string();
    let snap = env.root.join("snapshots").join(&l1).join("fs");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = fs::symlink_metadata(snap.join("etc/a")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout is a 0/0 char device");
    assert!(
        sh(&format!("getfattr -n trusted.overlay.opaque --only-values '{}'", snap.join("opt").display())).contains('y')
    );

    let du: serde_json::Value =
        serde_json::from_str(env.run(&["system", "df", "-v", "--format", "json"]).ok()).unwrap();
    let imgs = du["image_usage"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    let mut sum_unique = 0;
    for i in imgs {
        let (size, shared, unique) =
            (i["size"].as_u64().unwrap(), i["shared"].as_u64().unwrap(), i["unique"].as_u64().unwrap());
        assert_eq!(shared + unique, size, "SHARED + UNIQUE = SIZE");
        assert!(shared >= 100_000, "the base layer is shared: {i}");
        sum_unique += unique;
    }
    let shared = imgs[0]["shared"].as_u64().unwrap();
    assert_eq!(imgs[1]["shared"].as_u64().unwrap(), shared);
    assert_eq!(du["images"]["size"].as_u64().unwrap(), shared + sum_unique, "total counts the shared base once");
    // Exactly the store's bytes: every blob's size plus every snapshot's content.
    let blob_bytes: u64 =
        fs::read_dir(env.root.join("blobs/sha256")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let snap_bytes: u64 =
        du["layer_usage"].as_array().unwrap().iter().map(|l| l["snapshot_bytes"].as_u64().unwrap()).sum();
    assert_eq!(du["images"]["size"].as_u64().unwrap(), blob_bytes + snap_bytes);
    let base_layer = du["layer_usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["images"].as_array().unwrap().len() == 2)
        .expect("a layer used by both images");
    assert_eq!(base_layer["snapshot_bytes"].as_u64().unwrap(), 100_003);

    let text = env.run(&["system", "df", "-v"]).ok().to_string();
    assert!(
        text.contains("SHARED SIZE") && text.contains("UNIQUE SIZE") && text.contains("lab/one:1, lab/two:1"),
        "{text}"
    );
    let text = env.run(&["system", "df"]).ok().to_string();
    assert!(text.starts_with("TYPE") && text.contains("Images") && text.contains("RECLAIMABLE"), "{text}");

    let tree = env.run(&["image", "tree"]).ok().to_string();
    assert!(tree.contains("lab/one:1") && tree.contains("lab/two:1"), "{tree}");
    assert_eq!(tree.lines().filter(|l| l.contains("layer")).count(), 3, "one shared base, two tops:\n{tree}");
    env.assert_sound();
}

#[test]
fn prune_dangling_all_dry_run_and_by_last_use() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    let old = env.import(&rootfs, "app:1");
    fs::write(rootfs.join("etc/v2"), "2").unwrap();
    let new = env.import(&rootfs, "app:1"); // moves the tag: the old image is dangling now
    assert_ne!(old, new);
    let dangling = env.run(&["images", "-q", "--no-trunc", "-f", "dangling=true"]).ok().trim().to_string();
    assert_eq!(dangling, old);
    assert!(env.run(&["images"]).ok().contains("<none>"));

    let store_files = || sh(&format!("find '{}' -path '*/tmp' -prune -o -print | sort", env.root.display()));
    let before = store_files();
    let dry = env.run(&["image", "prune", "--dry-run"]).ok().to_string();
    assert!(dry.contains(&format!("deleted: {old}")) && dry.contains("Total reclaimable space:"), "{dry}");
    assert_eq!(store_files(), before, "--dry-run changes nothing");

    let out = env.run(&["image", "prune", "-f"]).ok().to_string();
    assert!(out.contains(&format!("deleted: {old}")) && !out.contains(&new), "{out}");
    assert_eq!(env.image_ids(), vec![new.clone()]);

    // Last use: an image used long ago goes with --unused-for, a fresh one stays.
    env.import(&env.busybox_rootfs("other"), "fresh:1");
    let idx_path = env.root.join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    for m in idx["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/app:1" {
            m["annotations"]["io.strata.last-used"] = serde_json::json!("1000");
        }
    }
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    let out = env.run(&["image", "prune", "-f", "--unused-for", "30d"]).ok().to_string();
    assert!(out.contains("untagged: app:1") && !out.contains("fresh"), "{out}");
    assert_eq!(env.run(&["images", "-q"]).ok().lines().count(), 1);

    // --keep-bytes 0 empties the store of unused images, least recently used first.
    let e = env.run(&["image", "prune", "-f", "--keep-bytes", "lots"]).fails(125).to_string();
    assert!(e.contains("--keep-bytes"), "{e}");
    env.run(&["image", "prune", "-f", "--keep-bytes", "0"]).ok();
    assert!(env.image_ids().is_empty());
    assert_eq!(fs::read_dir(env.root.join("blobs/sha256")).unwrap().count(), 0);
    env.assert_sound();
}

#[test]
fn keep_bytes_drops_least_recently_used_first() {
    let env = TestEnv::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let layout = env.path(&format!("img{n}"));
        write_oci_layout(
            &layout,
            &format!("lru/{n}:1"),
            &[Layer::new().file("data", &vec![n as u8; 200_000], 0o644).finish()],
            None,
        );
        env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
        ids.push(env.inspect(&format!("lru/{n}:1"))["Id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Use image 0 again (a re-tag records use), so image 1 is now the least recently used.
    env.run(&["tag", "lru/0:1", "lru/0:again"]).ok();
    let total: u64 = serde_json::from_str::<serde_json::Value>(env.run(&["system", "df", "--format", "json"]).ok())
        .unwrap()["images"]["size"]
        .as_u64()
        .unwrap();
    let limit = (total * 3 / 4).to_string();
    let out = env.run(&["image", "prune", "-f", "--keep-bytes", &limit]).ok().to_string();
    assert!(out.contains(&ids[1]) && !out.contains(&ids[0]) && !out.contains(&ids[2]), "LRU goes first:\n{out}");
}

#[test]
fn check_finds_and_repairs_corruption() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    env.import(&rootfs, "c:1");
    env.import(&env.busybox_rootfs("r2"), "c:2");
    env.assert_sound();
    let v = env.inspect("c:1");
    // Flip a byte of c:1's layer blob.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(env.root.join("blobs/sha256").join(&v["Descriptor"]["digest"].as_str().unwrap()[7..])).unwrap(),
    )
    .unwrap();
    let layer = env.root.join("blobs/sha256").join(&manifest["layers"][0]["digest"].as_str().unwrap()[7..]);
    let mut bytes = fs::read(&layer).unwrap();
    bytes[100] ^= 0xff;
    fs::set_permissions(&layer, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&layer, &bytes).unwrap();
    // Remove c:2's snapshot.
    let l2 = env.inspect("c:2")["RootFS"]["Layers"][0].as_str().unwrap()[7..].to_string();
    fs::remove_dir_all(env.root.join("snapshots").join(&l2)).unwrap();

    let r = env.run(&["system", "check"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("corrupt blob") && r.stdout.contains("snapshot of layer") && r.stdout.contains("--repair"),
        "{}",
        r.stdout
    );
    let r = env.run(&["system", "check", "--repair"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("unpacked again"), "{}", r.stdout);
    env.assert_sound();
    let names = env.run(&["images", "--format", "json"]).ok().to_string();
    assert!(names.contains("\"Tag\":\"2\"") && !names.contains("\"Tag\":\"1\""), "c:1 dropped, c:2 repaired: {names}");
}

#[test]
fn concurrent_processes_share_one_store() {
    let env = TestEnv::new();
    let mut layouts = Vec::new();
    for n in 0..6 {
        let layout = env.path(&format!("img{n}"));
        write_oci_layout(
            &layout,
            &format!("par/{n}:1"),
            &[Layer::new().file("f", &vec![n as u8; 50_000], 0o644).finish()],
            None,
        );
        layouts.push(layout);
    }
    let children: Vec<_> =
        layouts.iter().map(|l| env.cmd(&["load", "-q", "-i", l.to_str().unwrap()]).spawn().unwrap()).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(env.image_ids().len(), 6, "no tag lost to a race on index.json");
    env.assert_sound();
}

#[test]
fn kill_during_load_and_prune_leaves_a_sound_store() {
    let env = TestEnv::new();
    // A bigger image so that a load takes long enough to be interrupted at different points.
    let mut layers = Vec::new();
    for n in 0..4u8 {
        let mut l = Layer::new().dir(&format!("d{n}"), 0o755);
        for i in 0..400 {
            l = l.file(&format!("d{n}/f{i}"), &vec![n.wrapping_add(i as u8); 4096], 0o644);
        }
        layers.push(l.finish());
    }
    let layout = env.path("big");
    write_oci_layout(&layout, "big:1", &layers, None);
    for delay_ms in [5u64, 20, 60, 150] {
        let mut child = env.cmd(&["load", "-i", layout.to_str().unwrap()]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe { libc_kill(child.id() as i32, 9) };
        let _ = child.wait();
        env.assert_sound();
        env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
        env.assert_sound();
        // Interrupt a prune that removes the image, then let a second prune finish the job.
        let mut child = env.cmd(&["image", "prune", "-a", "-f"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms / 5));
        unsafe { libc_kill(child.id() as i32, 9) };
        let _ = child.wait();
        env.assert_sound();
        env.run(&["system", "prune", "-a", "-f"]).ok();
        env.assert_sound();
        assert!(env.image_ids().is_empty());
        assert_eq!(fs::read_dir(env.root.join("blobs/sha256")).unwrap().count(), 0, "prune swept every leftover");
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn images_flags_and_formats() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    let id = env.import(&rootfs, "flags/app:1");
    env.run(&["tag", "flags/app:1", "flags/app:2"]).ok();
    env.run(&["tag", "flags/app:1", "other/thing:1"]).ok();
    let q = env.run(&["images", "-q"]).ok().to_string();
    assert_eq!(q.trim(), &id[7..19], "-q lists each image once");
    assert_eq!(env.run(&["images", "-q", "--no-trunc"]).ok().trim(), id);
    let d = env.run(&["images", "--digests"]).ok().to_string();
    assert!(d.lines().next().unwrap().contains("DIGEST") && d.contains("sha256:"), "{d}");
    let by_name = env.run(&["images", "flags/app"]).ok().to_string();
    assert_eq!(by_name.lines().count(), 3, "header + two tags of flags/app:\n{by_name}");
    let by_tag = env.run(&["image", "ls", "flags/app:2"]).ok().to_string();
    assert_eq!(by_tag.lines().count(), 2, "{by_tag}");
    let glob = env.run(&["images", "-f", "reference=*/thing"]).ok().to_string();
    assert!(glob.contains("other/thing") && !glob.contains("flags/app"), "{glob}");
    let json = env.run(&["images", "--format", "json"]).ok().to_string();
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        for k in ["ID", "Repository", "Tag", "Digest", "CreatedAt", "CreatedSince", "Size"] {
            assert!(r.get(k).is_some(), "json rows have {k}: {r}");
        }
    }
    assert!(env.run(&["images", "-a"]).ok().contains("flags/app"));
    let hist: Vec<serde_json::Value> = env
        .run(&["history", "--format", "json", "flags/app:1"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["CreatedBy"], "strata import");
    // The same CLI answers as `docker` (multi-call).
    let docker = env.path("docker");
    std::os::unix::fs::symlink(STRATA, &docker).unwrap();
    let out = std::process::Command::new(&docker)
        .args(["--root", env.root.to_str().unwrap(), "images", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), &id[7..19]);
}

#[test]
fn unknown_media_type_locked_store_and_full_disk() {
    let env = TestEnv::new();
    // A layer media type strata does not know.
    let layout = env.path("weird");
    write_oci_layout(&layout, "weird:1", &[Layer::new().file("a", b"a", 0o644).finish()], None);
    let idx: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = idx["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&mdigest)).unwrap()).unwrap();
    m["layers"][0]["mediaType"] = serde_json::json!("application/x-weird-layer");
    let mb = serde_json::to_vec(&m).unwrap();
    fs::write(layout.join("blobs/sha256").join(sha256_hex(&mb)), &mb).unwrap();
    let index = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":format!("sha256:{}", sha256_hex(&mb)),"size":mb.len(),"annotations":{"org.opencontainers.image.ref.name":"weird:1"}}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let e = env.run(&["load", "-i", layout.to_str().unwrap()]).fails(125).to_string();
    assert!(e.contains("unsupported layer media type") && e.contains("application/x-weird-layer"), "{e}");

    // A store another process holds: a clear error after the wait, nothing changed.
    env.import(&env.busybox_rootfs("r"), "locked:1");
    let mut holder =
        std::process::Command::new("flock").arg(env.root.join(".strata.lock")).args(["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = env.cmd(&["tag", "locked:1", "locked:2"]).env("STRATA_LOCK_TIMEOUT", "1").output().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.status.code(), Some(125));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("locked by another strata process") && e.contains("STRATA_LOCK_TIMEOUT"), "{e}");
    assert_eq!(env.image_ids().len(), 1);
    assert!(!env.run(&["images"]).ok().contains("locked   2"));

    // A full disk: a store on a small tmpfs, an image bigger than it.
    let small = env.path("small");
    fs::create_dir_all(&small).unwrap();
    sh(&format!("mount -t tmpfs -o size=3m tmpfs '{}'", small.display()));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let big = env.path("big");
    let noise: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    write_oci_layout(&big, "big:1", &[Layer::new().file("noise", &noise, 0o644).finish()], None);
    let store = small.join("store");
    let r = std::process::Command::new(STRATA)
        .args(["--root", store.to_str().unwrap(), "load", "-i", big.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(125));
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("disk is full"), "{e}");
    let r = std::process::Command::new(STRATA)
        .args(["--root", store.to_str().unwrap(), "system", "check"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stdout));
    let r = std::process::Command::new(STRATA)
        .args(["--root", store.to_str().unwrap(), "system", "prune", "-f"])
        .output()
        .unwrap();
    assert!(r.status.success());
    let used: u64 = sh(&format!("du -sk '{}'", small.display())).split_whitespace().next().unwrap().parse().unwrap();
    assert!(used < 200, "the failed load left nothing behind after prune: {used} KiB");
}

#[test]
fn prune_until_and_system_prune_volumes() {
    let env = TestEnv::new();
    // An image created in 2024 (the layout's config says so) and one created now.
    let layout = env.path("old");
    write_oci_layout(&layout, "old/img:1", &[Layer::new().file("a", b"old", 0o644).finish()], None);
    env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    let fresh = env.import(&env.busybox_rootfs("r"), "fresh/img:1");
    let e = env.run(&["image", "prune", "-a", "-f", "--filter", "until=soon"]).fails(125).to_string();
    assert!(e.contains("until=soon"), "{e}");
    let e = env.run(&["image", "prune", "-a", "-f", "--filter", "label=x"]).fails(125).to_string();
    assert!(e.contains("invalid filter"), "{e}");
    let out = env.run(&["image", "prune", "-a", "-f", "--filter", "until=24h"]).ok().to_string();
    assert!(out.contains("untagged: old/img:1") && !out.contains("fresh"), "{out}");
    assert_eq!(env.image_ids(), vec![fresh.clone()]);

    // Volumes no container uses go with --volumes, and only then.
    let vol = env.root.join("volumes/data/_data");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("f"), vec![1u8; 5000]).unwrap();
    let du: serde_json::Value = serde_json::from_str(env.run(&["system", "df", "--format", "json"]).ok()).unwrap();
    assert_eq!(du["volumes"]["total"], 1);
    assert_eq!(du["volumes"]["size"], 5000);
    env.run(&["system", "prune", "-f"]).ok();
    assert!(vol.exists(), "volumes stay without --volumes");
    let dry = env.run(&["system", "prune", "-f", "--volumes", "--dry-run"]).ok().to_string();
    assert!(dry.contains("Would remove volumes:") && dry.contains("data"), "{dry}");
    assert!(vol.exists(), "--dry-run keeps them");
    let out = env.run(&["system", "prune", "-f", "--volumes"]).ok().to_string();
    assert!(out.contains("Deleted Volumes:") && out.contains("data"), "{out}");
    assert!(!env.root.join("volumes/data").exists());
    assert_eq!(env.image_ids(), vec![fresh], "tagged images stay without -a");
    // Without -f and with no answer on stdin, nothing is removed.
    env.run(&["system", "prune", "-a"]).ok();
    assert_eq!(env.image_ids().len(), 1);
}

#[test]
fn history_of_a_multi_layer_image_and_tree_json() {
    let env = TestEnv::new();
    let layout = env.path("ml");
    let l0 = Layer::new().file("a", &[0u8; 1000], 0o644).finish();
    let l1 = Layer::new().file("b", &[1u8; 2000], 0o644).finish();
    write_oci_layout(&layout, "ml/img:1", &[l0.clone(), l1], None);
    env.run(&["load", "-i", layout.to_str().unwrap()]).ok();
    let layout2 = env.path("ml2");
    write_oci_layout(&layout2, "ml/img:2", &[l0, Layer::new().file("c", &[2u8; 3000], 0o644).finish()], None);
    env.run(&["load", "-i", layout2.to_str().unwrap()]).ok();
    let h = env.run(&["history", "--no-trunc", "-H=false", "ml/img:1"]).ok().to_string();
    let rows: Vec<&str> = h.lines().collect();
    assert_eq!(rows.len(), 3, "{h}");
    assert!(rows[1].contains("layer 1") && rows[1].contains("2000"), "newest first, sizes in bytes: {h}");
    assert!(rows[2].contains("<missing>") && rows[2].contains("layer 0") && rows[2].contains("1000"), "{h}");
    let tree: serde_json::Value = serde_json::from_str(env.run(&["image", "tree", "--format", "json"]).ok()).unwrap();
    let base = &tree["children"][0];
    assert_eq!(tree["children"].as_array().unwrap().len(), 1, "one shared base: {tree}");
    assert_eq!(base["size"], 1000);
    assert_eq!(base["children"].as_array().unwrap().len(), 2, "two images on top of it: {tree}");
    assert_eq!(env.run(&["images", "--tree"]).ok(), env.run(&["image", "tree"]).ok());
}

#[test]
fn save_to_stdout_inspect_several_and_rmi_by_digest() {
    let env = TestEnv::new();
    let id = env.import(&env.busybox_rootfs("r"), "pipe/app:1");
    // save to stdout, load from stdin.
    let out = env.cmd(&["save", "pipe/app:1"]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() > 500_000);
    let other = TestEnv::new();
    other.run_stdin(&["load"], &out.stdout).ok();
    assert_eq!(other.image_ids(), vec![id.clone()]);
    // inspect of several names: the found ones are printed, a missing one makes it exit 1.
    let r = env.run(&["image", "inspect", "pipe/app:1", "nope", &id[7..19]]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(r.stderr.contains("No such image: nope"));
    // rmi by name@digest removes the image.
    let digest = env.inspect("pipe/app:1")["Descriptor"]["digest"].as_str().unwrap().to_string();
    let out = env.run(&["rmi", &format!("pipe/app@{digest}")]).ok().to_string();
    assert!(out.contains("Untagged: pipe/app:1") && out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(env.image_ids().is_empty());
    env.assert_sound();
}

#[test]
fn prune_during_a_load_does_not_take_what_the_load_is_writing() {
    let env = TestEnv::new();
    let mut layers = Vec::new();
    for n in 0..4u8 {
        let mut l = Layer::new().dir(&format!("d{n}"), 0o755);
        for i in 0..300 {
            l = l.file(&format!("d{n}/f{i}"), &vec![n ^ (i as u8); 8192], 0o644);
        }
        layers.push(l.finish());
    }
    let layout = env.path("big");
    write_oci_layout(&layout, "busy:1", &layers, None);
    for _ in 0..3 {
        let mut load = env.cmd(&["load", "-q", "-i", layout.to_str().unwrap()]).spawn().unwrap();
        // Sweep unreferenced content over and over while the load runs: until the load tags its
        // image, its blobs and snapshots are referenced by nothing but the load's lease.
        while load.try_wait().unwrap().is_none() {
            let r = env.cmd(&["system", "prune", "-f"]).output().unwrap();
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        }
        assert!(load.wait().unwrap().success(), "the load completes");
        env.assert_sound();
        assert_eq!(env.image_ids().len(), 1);
        env.run(&["rmi", "busy:1"]).ok();
    }
}

/// `strata image inspect … | head -1` (and other JSON output) ends quietly with status 0 when
/// the reader goes away, like `images | head`.
#[test]
fn closed_stdout_is_success_for_json_output() {
    let env = TestEnv::new();
    let rootfs = env.busybox_rootfs("rootfs");
    env.import(&rootfs, "pipe/test:1");
    for args in ["image inspect pipe/test:1", "images --format json", "images"] {
        // A pipe whose reader has already exited: every write fails with EPIPE.
        let mut c = env.cmd(&args.split(' ').collect::<Vec<_>>());
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        c.stdout(w).stderr(std::process::Stdio::piped());
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Two manifests of one config (an OCI and a Docker one, as a layout can hold) are one image ID:
/// an ID prefix names it without "ambiguous".
#[test]
fn two_manifests_of_one_config_are_one_image_id() {
    let env = TestEnv::new();
    let dir = env.path("layout");
    let layer = Layer::new().file("f", b"x\n", 0o644).finish();
    let mh = write_oci_layout(&dir, "a", &[layer], None);
    // A Docker-typed twin of the manifest, same config and layer.
    let m: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&mh)).unwrap()).unwrap();
    let mut twin = m.clone();
    twin["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    twin["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    twin["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    let tb = serde_json::to_vec(&twin).unwrap();
    let th = sha256_hex(&tb);
    fs::write(dir.join("blobs/sha256").join(&th), &tb).unwrap();
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": format!("sha256:{th}"),
        "size": tb.len(), "annotations": {"org.opencontainers.image.ref.name": "b"}
    }));
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    env.run(&["load", "-i", dir.to_str().unwrap()]).ok();
    let rows: Vec<serde_json::Value> =
        env.run(&["images", "--format", "json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "two manifests listed: {rows:?}");
    let ids = env.image_ids();
    assert_eq!(ids.len(), 1, "with one image ID: {ids:?}");
    env.run(&["tag", &ids[0][7..19], "one/id:1"]).ok();
    env.assert_sound();
}
