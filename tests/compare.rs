//! `strata diff IMAGE IMAGE`, `strata layers`, `strata ls` and `strata cat`, end to end: images
//! built here layer by layer (so every expectation comes from what the test put in them), local,
//! staged from layouts and archives, containers, and umoci's unpacked trees as an oracle.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::util::*;

/// The mtime every entry gets unless a test says otherwise.
const T0: u64 = 1_700_000_000;

/// A tar layer builder with a settable mtime (util's `Layer` fixes it).
struct Tb {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Tb {
    fn new() -> Tb {
        Tb { b: tar::Builder::new(Vec::new()), mtime: T0 }
    }
    /// Entries from here on get `mtime`.
    fn at(mut self, mtime: u64) -> Tb {
        self.mtime = mtime;
        self
    }
    #[allow(clippy::too_many_arguments)]
    fn put(
        mut self,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        link: Option<&str>,
    ) -> Tb {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_path(path).unwrap();
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn dir(self, p: &str, mode: u32) -> Tb {
        self.put(p, tar::EntryType::Directory, b"", mode, 0, 0, None)
    }
    fn file(self, p: &str, data: &[u8], mode: u32) -> Tb {
        self.put(p, tar::EntryType::Regular, data, mode, 0, 0, None)
    }
    fn owned(self, p: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Tb {
        self.put(p, tar::EntryType::Regular, data, mode, uid, gid, None)
    }
    fn symlink(self, p: &str, target: &str) -> Tb {
        self.put(p, tar::EntryType::Symlink, b"", 0o777, 0, 0, Some(target))
    }
    fn device(mut self, p: &str, kind: tar::EntryType, major: u32, minor: u32, mode: u32) -> Tb {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_path(p).unwrap();
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn hardlink(self, p: &str, target: &str) -> Tb {
        self.put(p, tar::EntryType::Link, b"", 0o644, 0, 0, Some(target))
    }
    /// A whiteout of `p`.
    fn whiteout(self, p: &str) -> Tb {
        let (dir, name) = match p.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), p),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }
    /// Makes directory `p` opaque (list the directory itself first).
    fn opaque(self, p: &str) -> Tb {
        self.file(&format!("{p}/.wh..wh..opq"), b"", 0o644)
    }
    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// The config of a test image.
struct Cfg<'a> {
    env: &'a [&'a str],
    cmd: &'a [&'a str],
    created_by: &'a [&'a str],
}

/// Writes an OCI layout at `dir` holding one image of `layers` with config `cfg`, named
/// `refname`. Returns the layers' blob digests (hex).
fn layout(dir: &Path, refname: &str, layers: &[Vec<u8>], cfg: &Cfg) -> Vec<String> {
    let container = json!({"Cmd": cfg.cmd, "Env": cfg.env});
    layout_raw(dir, refname, layers, cfg.created_by, container, "amd64")
}

/// As [`layout`], with the config's `config` object and architecture given whole.
fn layout_raw(
    dir: &Path,
    refname: &str,
    layers: &[Vec<u8>],
    created_by: &[&str],
    container: Value,
    arch: &str,
) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let h = sha256_hex(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        (h, bytes.len())
    };
    let (mut descs, mut ids, mut hexes) = (Vec::new(), Vec::new(), Vec::new());
    for l in layers {
        let (h, n) = put(&gzip(l));
        descs.push(
            json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{h}"),"size":n}),
        );
        ids.push(format!("sha256:{}", sha256_hex(l)));
        hexes.push(h);
    }
    assert_eq!(created_by.len(), layers.len());
    let history: Vec<Value> =
        created_by.iter().map(|c| json!({"created":"2024-01-01T00:00:00Z","created_by":c})).collect();
    let config = json!({
        "created":"2024-01-01T00:00:00Z","architecture":arch,"os":"linux",
        "config":container,
        "rootfs":{"type":"layers","diff_ids":ids},
        "history": history,
    });
    let (ch, cn) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha256:{ch}"),"size":cn},
        "layers": descs,
    });
    let (mh, mn) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":format!("sha256:{mh}"),"size":mn,"annotations":{"org.opencontainers.image.ref.name":refname}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    hexes
}

const DEFAULT_CFG: Cfg<'static> = Cfg { env: &["PATH=/bin"], cmd: &["/bin/sh"], created_by: &[] };

/// Writes a layout of `layers` (history `step N`) and loads it; `name` must be a full tag.
fn load(env: &TestEnv, name: &str, layers: &[Vec<u8>]) -> Vec<String> {
    let by: Vec<String> = (0..layers.len()).map(|i| format!("step {i}")).collect();
    let by: Vec<&str> = by.iter().map(String::as_str).collect();
    load_cfg(env, name, layers, &Cfg { created_by: &by, ..DEFAULT_CFG })
}

fn load_cfg(env: &TestEnv, name: &str, layers: &[Vec<u8>], cfg: &Cfg) -> Vec<String> {
    let dir = env.path(&format!("layout-{}", name.replace([':', '/'], "_")));
    let blobs = layout(&dir, name, layers, cfg);
    let out = env.run(&["load", "-i", dir.to_str().unwrap()]).ok().to_string();
    assert!(out.contains(name), "{out}");
    blobs
}

/// Component order, as the listings sort (`a/b` before `a-b`).
fn pcmp(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Lines of a table, split into cells (cells are separated by at least three spaces).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect())
        .collect()
}

/// Sizes as the tables print them (only small ones here).
fn hsize(n: u64) -> String {
    assert!(n < 1000, "keep test files small: {n}");
    format!("{n}B")
}

fn dpkg(pkgs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    for (n, v) in pkgs {
        s += &format!(
            "Package: {n}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: {v}\nDescription: the {n} package\n which is\n .\n described at length\n\n"
        );
    }
    s.into_bytes()
}

fn apk(pkgs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    for (n, v) in pkgs {
        s += &format!("C:Q1abcdefghijklmnopqrstuvwxyz=\nP:{n}\nV:{v}\nA:x86_64\nS:1234\nT:the {n} package\n\n");
    }
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The main pair of images: A = [base, a1], B = [base, b1].

const TEXT_A: &[u8] = b"line1\nline2\nline3\n";
const TEXT_B: &[u8] = b"line1\nLINE2\nline3\nline4\n";
const BIN_A: &[u8] = &[0, 1, 2, 3];
const BIN_B: &[u8] = &[0, 1, 2, 4, 5];
const DIST: &str = "usr/lib/python3/dist-packages";

fn dpkg_a() -> Vec<u8> {
    dpkg(&[("libc6", "2.36-9"), ("curl", "7.88.1-10"), ("gone-pkg", "1.0")])
}
fn dpkg_b() -> Vec<u8> {
    dpkg(&[("libc6", "2.36-10"), ("curl", "7.88.1-10"), ("new-pkg", "3.1")])
}
fn apk_a() -> Vec<u8> {
    apk(&[("musl", "1.2.4-r2")])
}
fn apk_b() -> Vec<u8> {
    apk(&[("musl", "1.2.4-r3"), ("busybox", "1.36.1-r0")])
}

fn base_layer() -> Vec<u8> {
    Tb::new()
        .file("a-only", b"", 0o644) // replaced by a1's version in A; absent from B
        .dir("data", 0o755)
        .file("data/blob.bin", BIN_A, 0o644)
        .file("data/text.txt", TEXT_A, 0o644)
        .dir("etc", 0o755)
        .file("etc/gone", b"bye\n", 0o644)
        .file("etc/hl", b"x\n", 0o644)
        .file("etc/hlsrc", b"x\n", 0o644)
        .file("etc/keep", b"same\n", 0o644)
        .file("etc/motd", b"hello\n", 0o644)
        .owned("etc/owner", b"o\n", 0o644, 0, 0)
        .file("etc/perm", b"p\n", 0o644)
        .dir("lib", 0o755)
        .dir("lib/apk", 0o755)
        .dir("lib/apk/db", 0o755)
        .file("lib/apk/db/installed", &apk_a(), 0o644)
        .symlink("link", "/etc/motd")
        .dir("opq", 0o755)
        .file("opq/a", b"a", 0o644)
        .file("opq/b", b"bb", 0o644)
        .file("typechg", b"t\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/python3", 0o755)
        .dir(DIST, 0o755)
        .dir(&format!("{DIST}/six-1.16.0.dist-info"), 0o755)
        .file(&format!("{DIST}/six-1.16.0.dist-info/METADATA"), b"Name: six\n", 0o644)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/dpkg", 0o755)
        .file("var/lib/dpkg/status", &dpkg_a(), 0o644)
        .finish()
}

const A_ONLY: &[u8] = b"only in A\n";

fn a1_layer() -> Vec<u8> {
    Tb::new().file("a-only", A_ONLY, 0o644).finish()
}

fn b1_layer() -> Vec<u8> {
    Tb::new()
        .whiteout("a-only")
        .dir("data", 0o755)
        .file("data/blob.bin", BIN_B, 0o644)
        .file("data/text.txt", TEXT_B, 0o644)
        .dir("etc", 0o755)
        .whiteout("etc/gone")
        .file("etc/hlsrc", b"x\n", 0o644)
        .hardlink("etc/hl", "etc/hlsrc")
        .file("etc/new", b"new\n", 0o644)
        .hardlink("etc/new.hard", "etc/new")
        .owned("etc/owner", b"o\n", 0o644, 1000, 1000)
        .file("etc/perm", b"p\n", 0o600)
        .dir("lib", 0o755)
        .dir("lib/apk", 0o755)
        .dir("lib/apk/db", 0o755)
        .file("lib/apk/db/installed", &apk_b(), 0o644)
        .symlink("link", "/etc/keep")
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/c", b"ccc", 0o644)
        .dir("typechg", 0o755)
        .file("typechg/inner", b"i\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/python3", 0o755)
        .dir(DIST, 0o755)
        .dir(&format!("{DIST}/requests-2.31.0.dist-info"), 0o755)
        .file(&format!("{DIST}/requests-2.31.0.dist-info/METADATA"), b"Name: requests\n", 0o644)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/dpkg", 0o755)
        .file("var/lib/dpkg/status", &dpkg_b(), 0o644)
        .finish()
}

/// One expected difference between A and B.
struct Exp {
    letter: char,
    path: String,
    /// What the C line lists, in order.
    detail: Vec<String>,
    /// Regular-file sizes in A and B (0 when not a regular file there).
    sa: u64,
    sb: u64,
    /// A directory in A or B.
    dir: bool,
}

impl Exp {
    fn line(&self) -> String {
        if self.letter == 'C' {
            format!("C /{}  ({})", self.path, self.detail.join(", "))
        } else {
            format!("{} /{}", self.letter, self.path)
        }
    }
    /// The field names of the detail.
    fn fields(&self) -> Vec<String> {
        self.detail.iter().map(|d| d.split(' ').next().unwrap().to_string()).collect()
    }
    /// The top-level directory `--stat` puts it under.
    fn top(&self) -> String {
        match self.path.split_once('/') {
            Some((t, _)) => format!("/{t}"),
            None if self.dir => format!("/{}", self.path),
            None => "/".into(),
        }
    }
}

fn content_change(a: &[u8], b: &[u8]) -> Vec<String> {
    let mut d = Vec::new();
    if a != b {
        d.push("content".to_string());
    }
    if a.len() != b.len() {
        d.push(format!("size {} -> {}", a.len(), b.len()));
    }
    d
}

/// What differs between A and B, from what the layers above put in them.
fn expected() -> Vec<Exp> {
    let e = |letter: char, path: &str, detail: Vec<String>, sa: usize, sb: usize, dir: bool| Exp {
        letter,
        path: path.to_string(),
        detail,
        sa: sa as u64,
        sb: sb as u64,
        dir,
    };
    let s = |x: &str| x.to_string();
    let mut v = vec![
        e('D', "a-only", vec![], A_ONLY.len(), 0, false),
        e('C', "data/blob.bin", content_change(BIN_A, BIN_B), BIN_A.len(), BIN_B.len(), false),
        e('C', "data/text.txt", content_change(TEXT_A, TEXT_B), TEXT_A.len(), TEXT_B.len(), false),
        e('D', "etc/gone", vec![], 4, 0, false),
        e('C', "etc/hl", vec![s("link (none) -> etc/hlsrc")], 2, 2, false),
        e('A', "etc/new", vec![], 0, 4, false),
        e('A', "etc/new.hard", vec![], 0, 4, false),
        e('C', "etc/owner", vec![s("uid 0 -> 1000"), s("gid 0 -> 1000")], 2, 2, false),
        e('C', "etc/perm", vec![s("mode 0644 -> 0600")], 2, 2, false),
        e('C', "lib/apk/db/installed", content_change(&apk_a(), &apk_b()), apk_a().len(), apk_b().len(), false),
        e('C', "link", vec![s("link /etc/motd -> /etc/keep")], 0, 0, false),
        e('D', "opq/a", vec![], 1, 0, false),
        e('D', "opq/b", vec![], 2, 0, false),
        e('A', "opq/c", vec![], 0, 3, false),
        e('C', "typechg", vec![s("type file -> dir"), s("mode 0644 -> 0755")], 2, 0, true),
        e('A', "typechg/inner", vec![], 0, 2, false),
        e('A', &format!("{DIST}/requests-2.31.0.dist-info"), vec![], 0, 0, true),
        e('A', &format!("{DIST}/requests-2.31.0.dist-info/METADATA"), vec![], 0, 15, false),
        e('C', "var/lib/dpkg/status", content_change(&dpkg_a(), &dpkg_b()), dpkg_a().len(), dpkg_b().len(), false),
    ];
    v.sort_by(|x, y| pcmp(&x.path, &y.path));
    v
}

fn expected_text(exp: &[Exp]) -> String {
    exp.iter().map(|e| e.line() + "\n").collect()
}

/// Loads A (`cmp/a:1`) and B (`cmp/b:1`); returns their blob digests.
fn load_pair(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    let a = load_cfg(
        env,
        "cmp/a:1",
        &[base_layer(), a1_layer()],
        &Cfg { env: &["PATH=/bin"], cmd: &["/bin/sh"], created_by: &["base", "a step"] },
    );
    let b = load_cfg(
        env,
        "cmp/b:1",
        &[base_layer(), b1_layer()],
        &Cfg { env: &["PATH=/usr/bin", "ONLYB=1"], cmd: &["/bin/sh", "-c", "x"], created_by: &["base", "b step"] },
    );
    assert_eq!(a[0], b[0], "the base layer is shared");
    (a, b)
}

#[test]
fn diff_reports_every_kind_of_change_with_its_details() {
    let env = TestEnv::new();
    load_pair(&env);
    let exp = expected();
    let r = env.run(&["diff", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1, "images differ: {r:?}");
    assert_eq!(r.stdout, expected_text(&exp), "stderr: {}", r.stderr);

    // The other way round: A and D swap, C details swap sides.
    let r = env.run(&["diff", "cmp/b:1", "cmp/a:1"]);
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), exp.len(), "{}", r.stdout);
    for (l, e) in lines.iter().zip(&exp) {
        let letter = match e.letter {
            'A' => 'D',
            'D' => 'A',
            c => c,
        };
        assert!(l.starts_with(&format!("{letter} /{}", e.path)), "{l} vs {}", e.line());
    }
    assert!(r.stdout.contains("C /etc/perm  (mode 0600 -> 0644)"), "{}", r.stdout);
    assert!(r.stdout.contains("C /link  (link /etc/keep -> /etc/motd)"), "{}", r.stdout);
    assert!(r.stdout.contains("C /typechg  (type dir -> file, mode 0755 -> 0644)"), "{}", r.stdout);

    // An image against itself, by two names: identical, silent.
    env.run(&["tag", "cmp/a:1", "cmp/a:again"]).ok();
    let r = env.run(&["diff", "cmp/a:1", "cmp/a:again"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));

    // --ignore owner drops the owner-only change; --ignore mode,link,uid,gid more.
    let r = env.run(&["diff", "--ignore", "owner", "cmp/a:1", "cmp/b:1"]);
    let keep: Vec<&Exp> = exp.iter().filter(|e| e.path != "etc/owner").collect();
    assert_eq!(r.stdout, keep.iter().map(|e| e.line() + "\n").collect::<String>());
    let r = env.run(&["diff", "--ignore", "mode,link", "--ignore", "uid,gid", "cmp/a:1", "cmp/b:1"]);
    r.fails(1);
    for gone in ["etc/owner", "etc/perm", "link", "etc/hl"] {
        assert!(!r.stdout.contains(&format!(" /{gone}")), "{gone}: {}", r.stdout);
    }
    // A type change without its mode.
    assert!(r.stdout.contains("C /typechg  (type file -> dir)\n"), "{}", r.stdout);

    // --ignore-path: anchored subtree and unanchored patterns.
    let r = env.run(&[
        "diff",
        "--ignore-path",
        "/opq",
        "--ignore-path",
        "*.bin",
        "--ignore-path",
        "usr/",
        "cmp/a:1",
        "cmp/b:1",
    ]);
    let keep: Vec<&Exp> = exp
        .iter()
        .filter(|e| !e.path.starts_with("opq/") && !e.path.ends_with(".bin") && !e.path.starts_with("usr/"))
        .collect();
    assert_eq!(r.stdout, keep.iter().map(|e| e.line() + "\n").collect::<String>());
    assert_eq!(r.code, 1);
    // Leaving out every difference makes the images the same.
    let mut args = vec!["diff".to_string()];
    for e in &exp {
        args.extend(["--ignore-path".to_string(), format!("/{}", e.path)]);
    }
    args.extend(["cmp/a:1".to_string(), "cmp/b:1".to_string()]);
    let r = env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    env.assert_sound();
}

#[test]
fn diff_exit_status_follows_mtimes_and_ignore() {
    let env = TestEnv::new();
    let files = |t: u64| Tb::new().at(t).dir("d", 0o755).file("d/f", b"same", 0o644).symlink("l", "d/f").finish();
    load(&env, "m/one:1", &[files(T0)]);
    load(&env, "m/two:1", &[files(T0 + 3600)]);
    // Same files, a different config: no file differs.
    load_cfg(&env, "m/cfg:1", &[files(T0)], &Cfg { env: &["PATH=/x"], cmd: &["/bin/sh"], created_by: &["other"] });

    let r = env.run(&["diff", "m/one:1", "m/two:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    for (l, p) in lines.iter().zip(["/d", "/d/f", "/l"]) {
        assert!(l.starts_with(&format!("C {p}  (mtime ")) && l.ends_with(')') && l.contains(" -> "), "{l}");
        assert!(!l.contains("content") && !l.contains("mode"), "only the mtime: {l}");
    }
    assert!(lines[1].contains("2023-11-14T22:13:20Z -> 2023-11-14T23:13:20Z"), "{}", lines[1]);
    let r = env.run(&["diff", "--ignore", "mtime", "m/one:1", "m/two:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");

    // Same files: 0 and silent; the config differs, which --config reports (and only it).
    let r = env.run(&["diff", "m/one:1", "m/cfg:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = env.run(&["diff", "--config", "m/one:1", "m/cfg:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "Env.PATH: \"/bin\" -> \"/x\"\nHistory[0]: \"step 0\" -> \"other\"\n");
    // --packages alone on images without package databases: nothing differs.
    let r = env.run(&["diff", "--packages", "m/one:1", "m/two:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "files are not compared with --packages alone: {r:?}");
}

#[test]
fn readded_path_is_a_change_attributed_to_its_layers() {
    let env = TestEnv::new();
    let l0 = Tb::new().dir("d", 0o755).file("d/x", b"old", 0o644).file("d/y", b"y", 0o644).finish();
    let l1 = Tb::new().dir("d", 0o755).whiteout("d/x").finish();
    let l2 = Tb::new().dir("d", 0o755).file("d/x", b"new content", 0o644).finish();
    let one = load(&env, "re/one:1", std::slice::from_ref(&l0));
    let three = load(&env, "re/three:1", &[l0.clone(), l1.clone(), l2]);
    let two = load(&env, "re/two:1", &[l0, l1]);

    let r = env.run(&["diff", "re/one:1", "re/three:1"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "C /d/x  (content, size 3 -> 11)\n");
    let r = env.run(&["diff", "--layers", "re/one:1", "re/three:1"]);
    assert_eq!(
        r.stdout,
        format!(
            "C /d/x  (content, size 3 -> 11)\n    A: layer 0 {} step 0\n    B: layer 2 {} step 2\n",
            &one[0][..12],
            &three[2][..12]
        )
    );
    let v = json_of(&env, &["diff", "--format", "json", "re/one:1", "re/three:1"]);
    let f = &v["files"][0];
    assert_eq!((f["layer_a"].clone(), f["layer_b"].clone()), (json!(0), json!(2)));
    assert_eq!((f["removed_in_a"].clone(), f["removed_in_b"].clone()), (json!(false), json!(false)));
    assert_eq!(f["b"]["layer"], 2);
    assert_eq!(f["b"]["size"], 11);

    // Deleted and not re-added: a deletion, by layer 1 of B.
    let r = env.run(&["diff", "--layers", "re/one:1", "re/two:1"]);
    assert_eq!(
        r.stdout,
        format!(
            "D /d/x\n    A: layer 0 {} step 0\n    B: deleted by layer 1 {} step 1\n",
            &one[0][..12],
            &two[1][..12]
        )
    );
    let v = json_of(&env, &["diff", "--format", "json", "re/one:1", "re/two:1"]);
    let f = &v["files"][0];
    assert_eq!(
        (f["change"].clone(), f["layer_b"].clone(), f["removed_in_b"].clone()),
        (json!("D"), json!(1), json!(true))
    );
    assert_eq!(f["b"], Value::Null);
    // And back: the re-added file against the deleted one is an addition by layer 2.
    let r = env.run(&["diff", "--layers", "re/two:1", "re/three:1"]);
    assert_eq!(
        r.stdout,
        format!(
            "A /d/x\n    A: deleted by layer 1 {} step 1\n    B: layer 2 {} step 2\n",
            &two[1][..12],
            &three[2][..12]
        )
    );
}

/// Runs strata and parses its JSON stdout (any exit status below 2).
fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let r = env.run(args);
    assert!(r.code == 0 || r.code == 1, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[test]
fn diff_stat_content_packages_config_and_json() {
    let env = TestEnv::new();
    let (blobs_a, blobs_b) = load_pair(&env);
    let exp = expected();
    let ids = |n: &str| env.inspect(n)["RootFS"]["Layers"].clone();
    let (ids_a, ids_b) = (ids("cmp/a:1"), ids("cmp/b:1"));

    // --stat: per top-level directory and a total.
    let mut by: BTreeMap<String, [u64; 7]> = BTreeMap::new();
    for e in &exp {
        for key in [e.top(), "~total".to_string()] {
            let s = by.entry(key).or_default();
            match e.letter {
                'A' => {
                    s[0] += 1;
                    s[1] += e.sb;
                }
                'D' => {
                    s[2] += 1;
                    s[3] += e.sa;
                }
                _ => {
                    s[4] += 1;
                    s[5] += e.sa;
                    s[6] += e.sb;
                }
            }
        }
    }
    let tally = |n: u64, b: u64| if n == 0 || b == 0 { n.to_string() } else { format!("{n} ({})", hsize(b)) };
    let mut want = vec![vec!["PATH".to_string(), "ADDED".into(), "DELETED".into(), "CHANGED".into()]];
    for (k, s) in &by {
        let changed = if s[5] == 0 && s[6] == 0 {
            s[4].to_string()
        } else {
            format!("{} ({} -> {})", s[4], hsize(s[5]), hsize(s[6]))
        };
        want.push(vec![k.replace("~total", "total"), tally(s[0], s[1]), tally(s[2], s[3]), changed]);
    }
    let r = env.run(&["diff", "--stat", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1);
    assert_eq!(cells(&r.stdout), want, "{}", r.stdout);
    assert!(by.contains_key("/typechg") && by.contains_key("/"), "{by:?}");

    // --content: a unified diff for text, a note for binary files.
    let r = env.run(&["diff", "--content", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1);
    let out = &r.stdout;
    assert!(out.contains("--- a/data/text.txt\n+++ b/data/text.txt\n"), "{out}");
    assert!(out.contains("@@ -1,3 +1,4 @@\n line1\n-line2\n+LINE2\n line3\n+line4\n"), "{out}");
    assert!(out.contains("Binary files a/data/blob.bin and b/data/blob.bin differ\n"), "{out}");
    assert!(out.contains("-Version: 2.36-9\n+Version: 2.36-10\n"), "the dpkg status diff: {out}");
    // Every change line is still there, in order, each followed by its diff.
    let change_lines: Vec<&str> =
        out.lines().filter(|l| l.len() > 3 && matches!(&l[..3], "A /" | "C /" | "D /")).collect();
    assert_eq!(change_lines.join("\n") + "\n", expected_text(&exp));
    let text_at = out.find("C /data/text.txt").unwrap();
    assert!(out[text_at..].find("--- a/data/text.txt").unwrap() < out[text_at..].find("D /etc/gone").unwrap());
    // Only modified regular files get one.
    assert!(!out.contains("a/etc/perm") && !out.contains("a/link") && !out.contains("a/etc/hl"), "{out}");

    // --packages alone: the package table only, exit 1.
    let r = env.run(&["diff", "--packages", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let d = format!("/{DIST}");
    let row = |c: &str, m: &str, n: &str, a: &str, ar: &str, b: &str| {
        [c, m, n, a, ar, b].iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let want = vec![
        row("CHANGE", "MANAGER", "PACKAGE", "ARCH", "A", "B"),
        row("added", "apk", "busybox", "x86_64", "-", "1.36.1-r0"),
        row("changed", "apk", "musl", "x86_64", "1.2.4-r2", "1.2.4-r3"),
        row("removed", "dpkg", "gone-pkg", "amd64", "1.0", "-"),
        row("changed", "dpkg", "libc6", "amd64", "2.36-9", "2.36-10"),
        row("added", "dpkg", "new-pkg", "amd64", "-", "3.1"),
        row("added", "python", "requests", &d, "-", "2.31.0"),
    ];
    assert_eq!(cells(&r.stdout), want, "{}", r.stdout);
    assert!(!r.stdout.contains("curl") && !r.stdout.contains("six"), "unchanged packages are not listed");

    // --config alone.
    let r = env.run(&["diff", "--config", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1);
    let want = format!(
        "Env.ONLYB: (none) -> \"1\"\nEnv.PATH: \"/bin\" -> \"/usr/bin\"\nCmd: [\"/bin/sh\"] -> [\"/bin/sh\",\"-c\",\"x\"]\nHistory[1]: \"a step\" -> \"b step\"\nLayers[1]: {:?} -> {:?}\n",
        ids_a[1].as_str().unwrap(),
        ids_b[1].as_str().unwrap()
    );
    assert_eq!(r.stdout, want);

    // Two sections get headings.
    let r = env.run(&["diff", "--packages", "--config", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.starts_with("== Packages ==\nCHANGE"), "{}", r.stdout);
    assert!(r.stdout.ends_with(&format!("== Config ==\n{want}")), "{}", r.stdout);
    assert!(!r.stdout.contains("/etc/perm"), "no file section: {}", r.stdout);
    let r = env.run(&["diff", "--stat", "--config", "cmp/a:1", "cmp/b:1"]);
    assert!(r.stdout.starts_with("== Files ==\nPATH") && r.stdout.contains("== Config ==\n"), "{}", r.stdout);

    // --layers: under each change, where each side got it.
    let r = env.run(&["diff", "--layers", "cmp/a:1", "cmp/b:1"]);
    let out: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(out.len(), exp.len() * 3, "{}", r.stdout);
    let (ba, bb) = (&blobs_a[1][..12], &blobs_b[1][..12]);
    let b0 = &blobs_a[0][..12];
    for (k, e) in exp.iter().enumerate() {
        assert_eq!(out[3 * k], e.line());
        let (la, lb) = (out[3 * k + 1], out[3 * k + 2]);
        let a_from = if e.path == "a-only" { format!("layer 1 {ba} a step") } else { format!("layer 0 {b0} base") };
        match e.letter {
            'A' => assert_eq!(la, "    A: -"),
            _ => assert_eq!(la, format!("    A: {a_from}")),
        }
        match e.letter {
            'D' => assert_eq!(lb, format!("    B: deleted by layer 1 {bb} b step")),
            _ => assert_eq!(lb, format!("    B: layer 1 {bb} b step")),
        }
    }

    // JSON: a stable schema.
    let v = json_of(&env, &["diff", "--format", "json", "--stat", "--packages", "--config", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(keys(&v), set(&["schemaVersion", "a", "b", "identical", "files", "stat", "packages", "config"]));
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["identical"], false);
    assert_eq!(keys(&v["a"]), set(&["input", "id", "digest", "container", "layers"]));
    assert_eq!(v["a"]["input"], "cmp/a:1");
    assert_eq!(v["a"]["id"], env.inspect("cmp/a:1")["Id"]);
    assert_eq!(v["b"]["container"], Value::Null);
    assert_eq!(keys(&v["b"]["layers"][1]), set(&["index", "digest", "diff_id", "size", "created_by"]));
    assert_eq!(v["b"]["layers"][1]["digest"], format!("sha256:{}", blobs_b[1]));
    assert_eq!(v["b"]["layers"][1]["diff_id"], ids_b[1]);
    assert_eq!(v["b"]["layers"][1]["created_by"], "b step");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), exp.len());
    for (f, e) in files.iter().zip(&exp) {
        assert_eq!(
            keys(f),
            set(&["change", "path", "fields", "a", "b", "layer_a", "layer_b", "removed_in_a", "removed_in_b"])
        );
        assert_eq!(f["change"], e.letter.to_string());
        assert_eq!(f["path"], format!("/{}", e.path));
        assert_eq!(f["fields"], json!(e.fields()), "{}", e.path);
        let entry = set(&["type", "mode", "uid", "gid", "size", "mtime", "link", "hardlink", "dev", "digest", "layer"]);
        assert_eq!(f["a"].is_null(), e.letter == 'A');
        assert_eq!(f["b"].is_null(), e.letter == 'D');
        if e.letter != 'A' {
            assert_eq!(keys(&f["a"]), entry);
        }
        if e.letter != 'D' {
            assert_eq!(keys(&f["b"]), entry);
        }
        assert_eq!(f["removed_in_b"], e.letter == 'D');
    }
    let perm = files.iter().find(|f| f["path"] == "/etc/perm").unwrap();
    assert_eq!((perm["a"]["mode"].clone(), perm["b"]["mode"].clone()), (json!("0644"), json!("0600")));
    assert_eq!(perm["a"]["mtime"], T0);
    let hl = files.iter().find(|f| f["path"] == "/etc/hl").unwrap();
    assert_eq!((hl["a"]["hardlink"].clone(), hl["b"]["hardlink"].clone()), (json!(false), json!(true)));
    assert_eq!(hl["b"]["link"], "etc/hlsrc");
    assert_eq!(hl["a"]["digest"], hl["b"]["digest"], "same content");
    let tc = files.iter().find(|f| f["path"] == "/typechg").unwrap();
    assert_eq!((tc["a"]["type"].clone(), tc["b"]["type"].clone()), (json!("file"), json!("dir")));
    // stat agrees with the table's numbers.
    let stat = v["stat"].as_array().unwrap();
    assert_eq!(stat.len(), by.len());
    for s in stat {
        let k = s["path"].as_str().unwrap().replace("total", "~total");
        let n = by[&k];
        assert_eq!(keys(s), set(&["path", "added", "deleted", "changed"]));
        let got = [
            &s["added"]["count"],
            &s["added"]["bytes"],
            &s["deleted"]["count"],
            &s["deleted"]["bytes"],
            &s["changed"]["count"],
            &s["changed"]["bytes"],
        ]
        .map(|x| x.as_u64().unwrap());
        assert_eq!(got[..], n[..6], "{k}");
        assert_eq!(s["changed"]["bytes_b"].as_u64().unwrap_or(0), n[6], "{k}");
    }
    let pk = v["packages"].as_array().unwrap();
    assert_eq!(pk.len(), 6);
    assert_eq!(keys(&pk[0]), set(&["change", "manager", "name", "arch", "a", "b"]));
    assert_eq!(
        pk[0],
        json!({"change":"added","manager":"apk","name":"busybox","arch":"x86_64","a":null,"b":"1.36.1-r0"})
    );
    let cfg = v["config"].as_array().unwrap();
    assert_eq!(cfg[0], json!({"field":"Env.ONLYB","a":null,"b":"1"}));
    assert_eq!(cfg.len(), 5);

    // With --content each file gets a diff key (null when there is no diff).
    let v = json_of(&env, &["diff", "--format", "json", "--content", "cmp/a:1", "cmp/b:1"]);
    let files = v["files"].as_array().unwrap();
    for f in files {
        assert!(keys(f).contains("diff"), "{f}");
    }
    let t = files.iter().find(|f| f["path"] == "/data/text.txt").unwrap();
    assert!(t["diff"].as_str().unwrap().contains("+LINE2\n"), "{t}");
    let p = files.iter().find(|f| f["path"] == "/etc/perm").unwrap();
    assert_eq!(p["diff"], Value::Null);
    // Only --packages or --config: no files or stat, exit status from those sections.
    let v = json_of(&env, &["diff", "--format", "json", "--config", "cmp/a:1", "cmp/b:1"]);
    assert_eq!(keys(&v), set(&["schemaVersion", "a", "b", "identical", "files", "stat", "packages", "config"]));
    assert_eq!((v["files"].clone(), v["stat"].clone(), v["packages"].clone()), (Value::Null, Value::Null, Value::Null));
    // Identical images in JSON.
    let r = env.run(&["diff", "--format", "json", "cmp/a:1", "cmp/a:1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((v["identical"].clone(), v["files"].clone()), (json!(true), json!([])));
}

#[test]
fn diff_reads_layouts_and_archives_without_tagging_them() {
    let env = TestEnv::new();
    load_pair(&env);
    let want = expected_text(&expected());
    // A second store holding only A; B comes from a layout or an archive.
    let other = TestEnv::new();
    let dir_b = other.path("layout-b");
    layout(&dir_b, "cmp/b:1", &[base_layer(), b1_layer()], &Cfg { created_by: &["base", "b step"], ..DEFAULT_CFG });
    load_cfg(&other, "cmp/a:1", &[base_layer(), a1_layer()], &Cfg { created_by: &["base", "a step"], ..DEFAULT_CFG });
    let images_before = other.run(&["images", "-a", "--no-trunc"]).ok().to_string();
    let ids_before = other.image_ids();

    let oci = format!("oci:{}:cmp/b:1", dir_b.display());
    let r = other.run(&["diff", "cmp/a:1", &oci]);
    assert_eq!((r.code, r.stdout.as_str()), (1, want.as_str()), "{r:?}");
    // Without a name: the layout's only image.
    let r = other.run(&["diff", "cmp/a:1", &format!("oci:{}", dir_b.display())]);
    assert_eq!((r.code, r.stdout.as_str()), (1, want.as_str()), "{r:?}");
    // A name the layout does not have.
    let e = other.run(&["diff", "cmp/a:1", &format!("oci:{}:nope:9", dir_b.display())]).fails(125).to_string();
    assert!(e.contains("nope"), "{e}");

    // A docker archive saved from the first store, and a tar of the layout.
    let arch = env.path("b.tar");
    env.run(&["save", "-o", arch.to_str().unwrap(), "cmp/b:1"]).ok();
    for input in [format!("docker-archive:{}", arch.display()), format!("docker-archive:{}:cmp/b:1", arch.display())] {
        let r = other.run(&["diff", "cmp/a:1", &input]);
        assert_eq!((r.code, r.stdout.as_str()), (1, want.as_str()), "{input}: {r:?}");
        let v = json_of(&other, &["diff", "--format", "json", "cmp/a:1", &input]);
        assert_eq!(v["b"]["input"], input);
        assert_eq!(v["b"]["id"], env.inspect("cmp/b:1")["Id"], "the same image");
    }
    let ltar = other.path("layout-b.tar");
    tar_dir(&dir_b, &ltar);
    let r = other.run(&["diff", &format!("docker-archive:{}", ltar.display()), "cmp/a:1"]);
    assert_eq!(r.code, 1, "an OCI archive read as an archive: {r:?}");
    assert_eq!(r.stdout.lines().count(), expected().len());
    // Both sides remote, and the layout against itself.
    let r = other.run(&["diff", &oci, &format!("docker-archive:{}", arch.display())]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    // layers, ls and cat take them too.
    let out = other.run(&["cat", &oci, "/etc/new.hard"]).ok().to_string();
    assert_eq!(out, "new\n");
    let out = other.run(&["ls", &format!("docker-archive:{}", arch.display()), "/opq"]).ok().to_string();
    assert_eq!(out, "c\n");
    other.run(&["layers", &oci]).ok();

    assert_eq!(other.run(&["images", "-a", "--no-trunc"]).ok(), images_before, "staging tags nothing");
    assert_eq!(other.image_ids(), ids_before);
    other.assert_sound();
}

// ---------------------------------------------------------------------------------------------
// containers

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && have("runc") && Path::new("/bin/busybox").exists();
    assert!(ok || std::env::var("CI").is_err(), "containers need root, runc and busybox-static in CI");
    if !ok {
        println!("skipped: needs root, runc and busybox-static");
    }
    ok
}

#[test]
fn diff_compares_a_container_with_its_image() {
    if !can_run() {
        return;
    }
    let env = TestEnv::new();
    let r = env.busybox_rootfs("rootfs");
    std::os::unix::fs::symlink("busybox", r.join("bin/rm")).unwrap();
    // Old directory times, so that the container's changes to them always show.
    sh(&format!("touch -h -d 2020-01-01T00:00:00Z '{}' '{}'", r.join("etc").display(), r.join("usr").display()));
    env.import(&r, "bb:1");
    let run = env.run(&[
        "run",
        "--name",
        "ctr",
        "bb:1",
        "sh",
        "-c",
        "echo x > /new; rm /etc/motd; rm -r /usr; mkdir /usr; echo y > /usr/only",
    ]);
    assert_eq!(run.code, 0, "{run:?}");

    let r = env.run(&["diff", "bb:1", "ctr"]);
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&"A /new"), "{}", r.stdout);
    assert!(lines.contains(&"D /etc/motd"), "{}", r.stdout);
    // /usr was removed and made again: an opaque directory in the upper layer.
    assert!(lines.contains(&"D /usr/bin") && lines.contains(&"A /usr/only"), "{}", r.stdout);
    // The same paths, with the same letters, as the container's own diff (docker's).
    let docker_diff = env.run(&["diff", "ctr"]).ok().to_string();
    let stripped: Vec<&str> = lines.iter().map(|l| l.split("  (").next().unwrap()).collect();
    assert_eq!(stripped, docker_diff.lines().collect::<Vec<_>>(), "{}", r.stdout);
    let r1 = env.run(&["diff", "--ignore", "mtime", "bb:1", "ctr"]);
    assert_eq!(r1.stdout, "D /etc/motd\nA /new\nD /usr/bin\nA /usr/only\n", "{r1:?}");
    let r2 = env.run(&["diff", "--ignore", "mtime", "--ignore-path", "/etc", "bb:1", "ctr"]);
    assert_eq!(r2.stdout, "A /new\nD /usr/bin\nA /usr/only\n", "{r2:?}");
    let r3 = env.run(&["diff", "--ignore", "mtime", "--ignore-path", "/etc", "ctr", "bb:1"]);
    assert_eq!(r3.stdout, "D /new\nA /usr/bin\nD /usr/only\n", "{r3:?}");
    let v = json_of(&env, &["diff", "--format", "json", "--layers", "bb:1", "ctr"]);
    assert_eq!(v["b"]["container"], "ctr");
    let new = v["files"].as_array().unwrap().iter().find(|f| f["path"] == "/new").unwrap().clone();
    assert_eq!(new["b"]["size"], 2);
    assert_eq!(new["layer_b"], 1, "the container's layer is above the image's one");
    let motd = v["files"].as_array().unwrap().iter().find(|f| f["path"] == "/etc/motd").unwrap().clone();
    assert_eq!((motd["removed_in_b"].clone(), motd["layer_b"].clone()), (json!(true), json!(1)));
    let r = env.run(&["diff", "--layers", "bb:1", "ctr"]);
    assert!(
        r.stdout.contains("A /new\n    A: -\n    B: layer 1 upper container ctr (not committed)\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("D /usr/bin\n    A: layer 0 ")
            && r.stdout.contains("    B: deleted by layer 1 upper container ctr (not committed)\n"),
        "{}",
        r.stdout
    );
    // layers sees the container's layer too.
    let v = json_of(&env, &["layers", "--format", "json", "ctr"]);
    assert_eq!(v["layers"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["layers"][1]["created_by"], "container ctr (not committed)");
    // ls and cat see the container's files.
    assert_eq!(env.run(&["cat", "ctr", "/new"]).ok(), "x\n");
    let e = env.run(&["cat", "ctr", "/etc/motd"]).fails(125).to_string();
    assert!(e.contains("/etc/motd"), "{e}");
    assert_eq!(env.run(&["cat", "bb:1", "/etc/motd"]).ok(), "image rootfs\n");
    env.run(&["rm", "ctr"]).ok();
}

// ---------------------------------------------------------------------------------------------
// umoci as an oracle

#[derive(Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Vec<u8>,
    link: String,
}

fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Meta>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel)).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for n in names {
        let r =
            if rel.is_empty() { n.to_string_lossy().into_owned() } else { format!("{rel}/{}", n.to_string_lossy()) };
        let p = root.join(&r);
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else {
            "other"
        };
        let m = Meta {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_file() { md.len() } else { 0 },
            content: if ft.is_file() { fs::read(&p).unwrap() } else { Vec::new() },
            link: if ft.is_symlink() {
                fs::read_link(&p).unwrap().to_string_lossy().into_owned()
            } else {
                String::new()
            },
        };
        out.insert(r.clone(), m);
        if ft.is_dir() {
            walk(root, &r, out);
        }
    }
}

/// The fields that differ, as strata names them (mtime ignored).
fn oracle_fields(a: &Meta, b: &Meta) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.kind != b.kind {
        f.push("type");
    }
    if a.kind == "file" && b.kind == "file" {
        if a.content != b.content {
            f.push("content");
        }
        if a.size != b.size {
            f.push("size");
        }
    }
    if !(a.kind == "symlink" && b.kind == "symlink") && a.mode != b.mode {
        f.push("mode");
    }
    if a.uid != b.uid {
        f.push("uid");
    }
    if a.gid != b.gid {
        f.push("gid");
    }
    if a.link != b.link {
        f.push("link");
    }
    f
}

#[test]
fn diff_agrees_with_umoci_unpacked_trees() {
    // SAFETY: geteuid has no preconditions.
    if !have("umoci") || unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "the oracle needs umoci and root in CI");
        println!("skipped: needs umoci and root");
        return;
    }
    let env = TestEnv::new();
    let base = Tb::new()
        .dir("d1", 0o755)
        .file("d1/a", b"aaa", 0o644)
        .file("d1/b", b"bbb", 0o755)
        .dir("d1/sub", 0o750)
        .file("d1/sub/c", b"ccc", 0o644)
        .file("d1/sub/keep", b"keep", 0o644)
        .dir("d2", 0o700)
        .file("d2/x", b"x", 0o644)
        .file("d2/y", b"y", 0o644)
        .dir("d3", 0o755)
        .file("d3/k", b"k", 0o644)
        .dir("d3/deep", 0o755)
        .file("d3/deep/k2", b"k2", 0o644)
        .file("top", b"top", 0o644)
        .symlink("s", "d1/a")
        .owned("own", b"own", 0o640, 10, 20)
        .dir("d4", 0o755)
        .file("d4/z", b"z", 0o644)
        .dir("hl", 0o755)
        .file("hl/f", b"ffff", 0o644)
        .hardlink("hl/h", "hl/f")
        .finish();
    let o1 = Tb::new()
        .dir("d1", 0o755)
        .file("d1/a", b"AAA-1", 0o644)
        .dir("d2", 0o700)
        .whiteout("d2/x")
        .file("n1", b"n1", 0o644)
        .dir("d3", 0o755)
        .opaque("d3")
        .file("d3/m", b"m1", 0o644)
        .symlink("s2", "/top")
        .finish();
    let o2a = Tb::new()
        .dir("d1", 0o755)
        .file("d1/a", b"aaa", 0o600)
        .owned("d1/b", b"bbb", 0o755, 1000, 1000)
        .dir("d1/sub", 0o750)
        .whiteout("d1/sub/c")
        .whiteout("top")
        .dir("d2", 0o755)
        .file("d2/x", b"x", 0o644)
        .owned("own", b"own", 0o640, 10, 21)
        .file("s2", b"/top", 0o644)
        .file("d4", b"now a file", 0o644)
        .dir("hl", 0o755)
        .file("hl/f", b"f rewritten", 0o644)
        .finish();
    let o2b = Tb::new()
        .dir("top", 0o755)
        .file("top/t", b"t", 0o644)
        .symlink("s", "/d2/y")
        .dir("d1", 0o755)
        .dir("d1/sub", 0o750)
        .file("d1/sub/c", b"c-new", 0o644)
        .file("h1", b"hh", 0o644)
        .hardlink("h2", "h1")
        .whiteout("d3")
        .dir("n2", 0o711)
        .dir("n2/deeper", 0o755)
        .symlink("n2/deeper/l", "../../d1")
        .finish();
    let d1 = env.path("o1");
    let d2 = env.path("o2");
    layout(&d1, "o1", &[base.clone(), o1], &Cfg { created_by: &["b", "o1"], ..DEFAULT_CFG });
    layout(&d2, "o2", &[base, o2a, o2b], &Cfg { created_by: &["b", "o2a", "o2b"], ..DEFAULT_CFG });
    let mut trees = Vec::new();
    for (d, r) in [(&d1, "o1"), (&d2, "o2")] {
        let bundle = env.path(&format!("bundle-{r}"));
        sh(&format!("umoci unpack --image '{}:{r}' '{}'", d.display(), bundle.display()));
        let mut t = BTreeMap::new();
        walk(&bundle.join("rootfs"), "", &mut t);
        trees.push(t);
    }
    let (ta, tb) = (&trees[0], &trees[1]);
    let mut want: Vec<(String, String, Vec<&str>)> = Vec::new();
    for (p, a) in ta {
        match tb.get(p) {
            None => want.push(("D".into(), p.clone(), vec![])),
            Some(b) => {
                let f = oracle_fields(a, b);
                if !f.is_empty() {
                    want.push(("C".into(), p.clone(), f));
                }
            }
        }
    }
    for p in tb.keys().filter(|p| !ta.contains_key(*p)) {
        want.push(("A".into(), p.clone(), vec![]));
    }
    want.sort_by(|x, y| pcmp(&x.1, &y.1));
    assert!(want.len() > 15, "the images differ in many ways: {want:?}");

    let ia = format!("oci:{}:o1", d1.display());
    let ib = format!("oci:{}:o2", d2.display());
    let r = env.run(&["diff", "--ignore", "mtime", &ia, &ib]);
    assert_eq!(r.code, 1, "{r:?}");
    let got: Vec<(String, String, Vec<&str>)> = r
        .stdout
        .lines()
        .map(|l| {
            let (head, detail) = l.split_once("  (").unwrap_or((l, ""));
            let (letter, path) = head.split_once(" /").unwrap();
            let fields = detail
                .trim_end_matches(')')
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(|s| s.split(' ').next().unwrap())
                .collect();
            (letter.to_string(), path.to_string(), fields)
        })
        .collect();
    assert_eq!(got, want, "strata:\n{}", r.stdout);

    // And the merged listing is umoci's tree.
    let v = json_of(&env, &["ls", "-R", "--format", "json", &ib]);
    let listed: BTreeSet<String> =
        v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()[1..].to_string()).collect();
    assert_eq!(listed, tb.keys().cloned().collect::<BTreeSet<_>>());
    for e in v.as_array().unwrap() {
        let m = &tb[&e["path"].as_str().unwrap()[1..]];
        assert_eq!(e["type"], m.kind, "{e}");
        if m.kind != "symlink" {
            assert_eq!(e["mode"], format!("{:04o}", m.mode), "{e}");
        }
        assert_eq!((e["uid"].as_u64().unwrap(), e["gid"].as_u64().unwrap()), (m.uid as u64, m.gid as u64), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// strata layers

#[test]
fn layers_reports_waste_efficiency_and_gates() {
    let env = TestEnv::new();
    let n = |k: usize, c: u8| vec![c; k];
    let layers = vec![
        Tb::new()
            .dir("w", 0o755)
            .file("w/big", &n(1000, b'a'), 0o644)
            .file("w/del", &n(300, b'b'), 0o644)
            .file("w/keep", &n(50, b'c'), 0o644)
            .file("w/ow2", &n(100, b'd'), 0o644)
            .finish(),
        Tb::new().dir("w", 0o755).file("w/big", &n(400, b'e'), 0o644).finish(),
        Tb::new().dir("w", 0o755).whiteout("w/del").finish(),
        Tb::new().dir("w", 0o755).file("w/new", &n(70, b'f'), 0o644).file("w/ow2", &n(120, b'g'), 0o644).finish(),
        Tb::new().dir("w", 0o755).file("w/ow2", &n(130, b'h'), 0o644).finish(),
        Tb::new().dir("w", 0o755).whiteout("w/new").file("w/late", &n(10, b'i'), 0o644).finish(),
    ];
    let tars: Vec<u64> = layers.iter().map(|l| l.len() as u64).collect();
    let blobs = load(&env, "lay/six:1", &layers);
    let total: u64 = 1000 + 300 + 50 + 100 + 400 + 70 + 120 + 130 + 10;
    let visible: u64 = 400 + 50 + 130 + 10;
    let wasted = total - visible;
    assert_eq!(wasted, 1000 + 300 + 100 + 120 + 70);
    let eff = visible as f64 / total as f64;
    // (added, changed, deleted) per layer.
    let counts = [(5, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 0), (1, 0, 1)];

    let r = env.run(&["layers", "lay/six:1"]);
    let out = r.ok();
    let rows = cells(out);
    assert_eq!(rows[0], ["LAYER", "SIZE", "UNCOMPRESSED", "ADDED", "CHANGED", "DELETED", "CREATED BY"]);
    for (i, (a, c, d)) in counts.iter().enumerate() {
        let row = &rows[1 + i];
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[3..], [a.to_string(), c.to_string(), d.to_string(), format!("step {i}")], "layer {i}: {out}");
    }
    assert!(out.contains(&format!("Total file bytes: 2.18kB ({total} bytes)\n")), "{out}");
    let pct = 100.0 * wasted as f64 / total as f64;
    assert!(out.contains(&format!("Wasted bytes:     1.59kB ({wasted} bytes, {pct:.1}%)\n")), "{out}");
    assert!(out.contains(&format!("Efficiency:       {:.2}%\n", eff * 100.0)), "{out}");
    // The wasted files, biggest first.
    let want_waste = [
        ("1kB", "/w/big", 0, "1 (replaced)"),
        ("300B", "/w/del", 0, "2 (deleted)"),
        ("120B", "/w/ow2", 3, "4 (replaced)"),
        ("100B", "/w/ow2", 0, "3 (replaced)"),
        ("70B", "/w/new", 3, "5 (deleted)"),
    ];
    let at = rows.iter().position(|r| r.first().map(String::as_str) == Some("WASTED")).expect(out);
    assert_eq!(rows[at], ["WASTED", "PATH", "LAYER", "HIDDEN BY"]);
    for (k, (b, p, l, h)) in want_waste.iter().enumerate() {
        assert_eq!(rows[at + 1 + k], [b.to_string(), p.to_string(), l.to_string(), h.to_string()], "{out}");
    }
    let r = env.run(&["layers", "--top", "2", "lay/six:1"]);
    assert!(r.ok().ends_with("... and 3 more (--top 0 lists all)\n"), "{}", r.stdout);

    let v = json_of(&env, &["layers", "--format", "json", "lay/six:1"]);
    assert_eq!(
        keys(&v),
        set(&[
            "layers",
            "total_bytes",
            "visible_bytes",
            "wasted_bytes",
            "efficiency",
            "wasted",
            "image",
            "pass",
            "failures"
        ])
    );
    assert_eq!(
        (v["total_bytes"].as_u64(), v["visible_bytes"].as_u64(), v["wasted_bytes"].as_u64()),
        (Some(total), Some(visible), Some(wasted))
    );
    assert!((v["efficiency"].as_f64().unwrap() - eff).abs() < 1e-9);
    assert_eq!((v["pass"].clone(), v["failures"].clone()), (json!(true), json!([])));
    let ls = v["layers"].as_array().unwrap();
    assert_eq!(ls.len(), 6);
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(
            keys(l),
            set(&["index", "digest", "diff_id", "size", "uncompressed", "added", "changed", "deleted", "created_by"])
        );
        assert_eq!(l["digest"], format!("sha256:{}", blobs[i]));
        assert_eq!(l["size"], gzip(&layers[i]).len() as u64);
        assert_eq!(l["uncompressed"], tars[i]);
        assert_eq!(l["diff_id"], format!("sha256:{}", sha256_hex(&layers[i])));
        let (a, c, d) = counts[i];
        assert_eq!(
            (l["added"].as_u64(), l["changed"].as_u64(), l["deleted"].as_u64()),
            (Some(a), Some(c), Some(d)),
            "{i}"
        );
    }
    let w = v["wasted"].as_array().unwrap();
    assert_eq!(w.len(), 5);
    assert_eq!(w[0], json!({"path":"/w/big","bytes":1000,"layer":0,"hidden_by":1,"how":"replaced"}));
    assert_eq!(w.iter().map(|x| x["bytes"].as_u64().unwrap()).sum::<u64>(), wasted);

    // Gates: at the limit passes, below it fails (exit 1, FAIL on stderr).
    let gate = |args: &[&str]| {
        let mut a = vec!["layers"];
        a.extend_from_slice(args);
        a.push("lay/six:1");
        env.run(&a)
    };
    for ok in [vec!["--max-wasted-bytes", "1590"], vec!["--max-wasted-bytes", "2kB"], vec!["--min-efficiency", "0.27"]]
    {
        let r = gate(&ok);
        assert_eq!(r.code, 0, "{ok:?}: {r:?}");
        assert!(!r.stderr.contains("FAIL"), "{r:?}");
    }
    for bad in
        [vec!["--max-wasted-bytes", "1589"], vec!["--max-wasted-bytes", "1.5kB"], vec!["--min-efficiency", "0.28"]]
    {
        let r = gate(&bad);
        let e = r.fails(1);
        assert!(e.contains("FAIL:") && e.contains(bad[0]), "{bad:?}: {e}");
        assert!(r.stdout.contains("Wasted bytes:"), "the report is still printed");
    }
    let r = gate(&["--max-wasted-bytes", "0", "--min-efficiency", "0.99", "--format", "json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.matches("FAIL:").count(), 2, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["pass"], false);
    assert_eq!(v["failures"].as_array().unwrap().len(), 2);
    // Bad gate values.
    for bad in [
        vec!["--min-efficiency", "2"],
        vec!["--min-efficiency", "1.5"],
        vec!["--max-wasted-bytes", "lots"],
        vec!["--max-wasted-bytes", "5XB"],
    ] {
        let e = gate(&bad).fails(125).to_string();
        assert!(e.contains(bad[0]), "{bad:?}: {e}");
    }
    // An image without waste.
    load(&env, "lay/one:1", &[Tb::new().file("f", b"12345", 0o644).finish()]);
    let v =
        json_of(&env, &["layers", "--format", "json", "--min-efficiency", "1", "--max-wasted-bytes", "0", "lay/one:1"]);
    assert_eq!(
        (v["wasted_bytes"].as_u64(), v["efficiency"].as_f64(), v["pass"].clone()),
        (Some(0), Some(1.0), json!(true))
    );
}

// ---------------------------------------------------------------------------------------------
// strata ls and cat

#[test]
fn ls_and_cat_read_the_merged_view() {
    let env = TestEnv::new();
    let l0 = Tb::new()
        .symlink("abs", "/etc/motd")
        .dir("etc", 0o755)
        .file("etc/gone", b"g", 0o644)
        .file("etc/motd", b"lower\n", 0o644)
        .file("etc/over", b"v1\n", 0o644)
        .symlink("esc", "../../../../etc/motd")
        .symlink("escdir", "../../..")
        .symlink("sh", "usr/share")
        .dir("usr", 0o755)
        .dir("usr/share", 0o755)
        .owned("usr/share/f", b"f\n", 0o640, 7, 8)
        .dir("usr/share/sub", 0o700)
        .file("usr/share/sub/g", b"g\n", 0o644)
        .finish();
    let l1 = Tb::new()
        .at(T0 + 60)
        .dir("etc", 0o755)
        .whiteout("etc/gone")
        .file("etc/new", b"n", 0o600)
        .file("etc/over", b"v2-upper\n", 0o644)
        .finish();
    load(&env, "fs/img:1", &[l0, l1]);
    let ls = |args: &[&str]| {
        let mut a = vec!["ls", "fs/img:1"];
        a.extend_from_slice(args);
        env.run(&a).ok().to_string()
    };
    assert_eq!(ls(&[]), "abs\nesc\nescdir\netc\nsh\nusr\n");
    assert_eq!(ls(&["/etc"]), "motd\nnew\nover\n", "the whited-out file is gone");
    assert_eq!(ls(&["etc/"]), "motd\nnew\nover\n");
    assert_eq!(ls(&["/sh"]), "f\nsub\n", "a symlinked directory is followed");
    assert_eq!(ls(&["-R", "/usr"]), "share\nshare/f\nshare/sub\nshare/sub/g\n");
    assert_eq!(
        ls(&["-R"]),
        "abs\nesc\nescdir\netc\netc/motd\netc/new\netc/over\nsh\nusr\nusr/share\nusr/share/f\nusr/share/sub\nusr/share/sub/g\n"
    );
    assert_eq!(ls(&["/etc/motd"]), "/etc/motd\n", "a file is shown under the name given, as ls(1) does");

    // -l: mode, owner, size, time, layer, name.
    let long = ls(&["-l", "/etc"]);
    let rows: Vec<Vec<&str>> = long.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{long}");
    assert_eq!(rows[0], ["-rw-r--r--", "0", "0", "6", "2023-11-14T22:13:20Z", "0", "motd"]);
    assert_eq!(rows[1], ["-rw-------", "0", "0", "1", "2023-11-14T22:14:20Z", "1", "new"]);
    assert_eq!(rows[2], ["-rw-r--r--", "0", "0", "9", "2023-11-14T22:14:20Z", "1", "over"]);
    let long = ls(&["-l", "/sh"]);
    let row: Vec<&str> = long.split_whitespace().collect();
    assert_eq!((row[0], row[5], &row[6..]), ("lrwxrwxrwx", "0", &["/sh", "->", "usr/share"][..]), "{long}");
    assert_eq!(ls(&["-l", "/sh/"]).lines().count(), 2, "a trailing slash lists the directory the link points to");
    let long = ls(&["-l", "/usr/share"]);
    let rows: Vec<Vec<&str>> = long.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..4], ["-rw-r-----", "7", "8", "2"]);
    assert_eq!((rows[1][0], rows[1][6]), ("drwx------", "sub"));
    let v: Value = serde_json::from_str(&ls(&["--format", "json", "/etc"])).unwrap();
    let paths: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/etc/motd", "/etc/new", "/etc/over"]);
    assert_eq!(
        (v[1]["layer"].clone(), v[1]["mode"].clone(), v[1]["size"].clone()),
        (json!(1), json!("0600"), json!(1))
    );
    let e = env.run(&["ls", "fs/img:1", "/etc/gone"]).fails(125).to_string();
    assert!(e.contains("/etc/gone") && e.contains("no such file"), "{e}");

    // cat: lower and upper layers, symlinks resolved inside the image.
    let cat = |paths: &[&str]| {
        let mut a = vec!["cat", "fs/img:1"];
        a.extend_from_slice(paths);
        env.run(&a)
    };
    assert_eq!(cat(&["/etc/motd"]).ok(), "lower\n");
    assert_eq!(cat(&["/etc/over"]).ok(), "v2-upper\n", "the upper layer's version");
    assert_eq!(cat(&["/etc/motd", "etc/over", "/sh/f"]).ok(), "lower\nv2-upper\nf\n");
    for p in ["/abs", "/esc", "/escdir/etc/motd", "/../../etc/motd", "/usr/../../etc/motd", "/sh/../../../etc/motd"] {
        assert_eq!(cat(&[p]).ok(), "lower\n", "{p} stays inside the image");
    }
    for (p, what) in [
        ("/etc", "is a directory"),
        ("/sh", "is a directory"),
        ("/etc/gone", "no such file"),
        ("/nope", "no such file"),
        ("/etc/motd/x", "not a directory"),
    ] {
        let e = cat(&[p]).fails(125).to_string();
        assert!(e.contains(what), "{p}: {e}");
    }
    // An error after good paths still fails.
    let r = cat(&["/etc/motd", "/nope"]);
    assert_eq!(r.code, 125, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// errors

#[test]
fn errors_are_clear() {
    let env = TestEnv::new();
    load(&env, "err/a:1", &[Tb::new().file("f", b"1", 0o644).finish()]);
    let e = env.run(&["diff", "err/a:1", "nosuchimage"]).fails(125).to_string();
    assert!(e.contains("nosuchimage"), "{e}");
    let e = env.run(&["diff", "nosuchimage", "err/a:1"]).fails(125).to_string();
    assert!(e.contains("nosuchimage"), "{e}");
    let e = env.run(&["diff", "--ignore", "colour", "err/a:1", "err/a:1"]).fails(125).to_string();
    assert!(e.contains("colour"), "{e}");
    let e = env.run(&["diff", "--ignore-path", "/", "err/a:1", "err/a:1"]).fails(125).to_string();
    assert!(e.contains("--ignore-path"), "{e}");
    for flag in ["--stat", "--content", "--packages", "--config", "--layers"] {
        let e = env.run(&["diff", flag, "err/a:1"]).fails(125).to_string();
        assert!(e.contains("IMAGE_A IMAGE_B"), "{flag}: {e}");
    }
    let e = env.run(&["diff", "--format", "json", "err/a:1"]).fails(125).to_string();
    assert!(e.contains("IMAGE_A IMAGE_B"), "{e}");
    let e = env.run(&["layers", "--min-efficiency", "2", "err/a:1"]).fails(125).to_string();
    assert!(e.contains("--min-efficiency"), "{e}");
    for cmd in [&["layers", "nosuchimage"][..], &["ls", "nosuchimage"], &["cat", "nosuchimage", "/f"]] {
        let e = env.run(cmd).fails(125).to_string();
        assert!(e.contains("nosuchimage"), "{cmd:?}: {e}");
    }
    let e = env.run(&["diff", "err/a:1", "oci:/nonexistent/layout"]).fails(125).to_string();
    assert!(e.contains("/nonexistent/layout"), "{e}");
    env.assert_sound();
}

#[test]
fn layers_counts_hard_linked_content_as_visible() {
    // A file hard-linked in its layer stays visible through the link when a later layer replaces
    // or deletes the file's path: its bytes are not wasted.
    let env = TestEnv::new();
    let big = vec![b'z'; 500];
    let base = Tb::new().dir("d", 0o755).file("d/f", &big, 0o644).hardlink("d/h", "d/f").finish();
    load(&env, "hl/replaced:1", &[base.clone(), Tb::new().dir("d", 0o755).file("d/f", b"small", 0o644).finish()]);
    load(&env, "hl/deleted:1", &[base, Tb::new().dir("d", 0o755).whiteout("d/f").finish()]);
    // The view agrees: the content is there.
    assert_eq!(env.run(&["cat", "hl/deleted:1", "/d/h"]).ok().len(), 500);
    assert_eq!(env.run(&["cat", "hl/replaced:1", "/d/h"]).ok().len(), 500);
    assert_eq!(env.run(&["ls", "hl/deleted:1", "/d"]).ok(), "h\n");

    let v = json_of(&env, &["layers", "--format", "json", "hl/replaced:1"]);
    assert_eq!(v["total_bytes"], 505, "{v}");
    assert_eq!(v["wasted_bytes"], 0, "/d/h still shows the 500 bytes: {v}");
    let v = json_of(&env, &["layers", "--format", "json", "hl/deleted:1"]);
    assert_eq!(v["wasted_bytes"], 0, "/d/h still shows the 500 bytes: {v}");
    assert_eq!(v["efficiency"], 1.0, "{v}");
}

#[test]
fn a_layout_with_several_images_needs_a_name_and_the_error_offers_usable_ones() {
    let env = TestEnv::new();
    let dir = env.path("two");
    layout(&dir, "first", &[Tb::new().file("f", b"1", 0o644).finish()], &Cfg { created_by: &["one"], ..DEFAULT_CFG });
    let first = fs::read(dir.join("index.json")).unwrap();
    let second_dir = env.path("second");
    layout(
        &second_dir,
        "second",
        &[Tb::new().file("f", b"22", 0o644).finish()],
        &Cfg { created_by: &["two"], ..DEFAULT_CFG },
    );
    // Merge: both manifests in one index, every blob in one directory.
    let mut idx: Value = serde_json::from_slice(&first).unwrap();
    let idx2: Value = serde_json::from_slice(&fs::read(second_dir.join("index.json")).unwrap()).unwrap();
    idx["manifests"].as_array_mut().unwrap().push(idx2["manifests"][0].clone());
    fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    for b in fs::read_dir(second_dir.join("blobs/sha256")).unwrap() {
        let b = b.unwrap();
        fs::copy(b.path(), dir.join("blobs/sha256").join(b.file_name())).unwrap();
    }
    let d = dir.display();
    let r = env.run(&["diff", &format!("oci:{d}:first"), &format!("oci:{d}:second")]);
    assert_eq!((r.code, r.stdout.as_str()), (1, "C /f  (content, size 1 -> 2)\n"), "{r:?}");
    let e = env.run(&["diff", &format!("oci:{d}"), &format!("oci:{d}:second")]).fails(125).to_string();
    assert!(e.contains("holds 2 images"), "{e}");
    // Every name the message offers works as REF.
    let listed = e.split(" images (").nth(1).unwrap().split("): ").next().unwrap().to_string();
    assert_eq!(listed.split(", ").count(), 2, "{e}");
    for name in listed.split(", ") {
        let r = env.run(&["ls", &format!("oci:{d}:{name}")]);
        assert_eq!((r.code, r.stdout.as_str()), (0, "f\n"), "the error offered {name:?}: {e}\n{r:?}");
    }
    assert!(env.image_ids().is_empty(), "nothing tagged");
}

#[test]
fn deletion_by_a_parent_replaced_with_a_non_directory_is_attributed() {
    // Layer 1 of B turns directory /d into a symlink: /d/k is gone, deleted by layer 1 (which
    // `strata layers` knows), and --layers must say so rather than "-".
    let env = TestEnv::new();
    let l0 = Tb::new().dir("etc", 0o755).dir("d", 0o755).file("d/k", b"k", 0o644).finish();
    let l1 = Tb::new().symlink("d", "/etc").finish();
    let one = load(&env, "rp/one:1", std::slice::from_ref(&l0));
    let two = load(&env, "rp/two:1", &[l0, l1]);
    let v = json_of(&env, &["layers", "--format", "json", "rp/two:1"]);
    assert_eq!(v["layers"][1]["deleted"], 1, "{v}");
    assert_eq!(v["wasted"][0], json!({"path":"/d/k","bytes":1,"layer":0,"hidden_by":1,"how":"deleted"}));

    let r = env.run(&["diff", "--layers", "rp/one:1", "rp/two:1"]);
    assert_eq!(r.code, 1);
    let want = format!(
        "C /d  (type dir -> symlink, mode 0755 -> 0777, link (none) -> /etc)\n    A: layer 0 {a} step 0\n    B: layer 1 {b} step 1\nD /d/k\n    A: layer 0 {a} step 0\n    B: deleted by layer 1 {b} step 1\n",
        a = &one[0][..12],
        b = &two[1][..12]
    );
    assert_eq!(r.stdout, want);
    let v = json_of(&env, &["diff", "--format", "json", "rp/one:1", "rp/two:1"]);
    let k = &v["files"][1];
    assert_eq!(k["path"], "/d/k");
    assert_eq!((k["layer_b"].clone(), k["removed_in_b"].clone()), (json!(1), json!(true)), "{k}");
}

#[test]
fn deletion_is_attributed_to_the_layer_that_deleted_it_last() {
    // B deletes /d/x (layer 1), puts it back (layer 2), then deletes all of /d (layer 3): /d/x is
    // gone because of layer 3, not layer 1.
    let env = TestEnv::new();
    let l0 = Tb::new().dir("d", 0o755).file("d/x", b"x", 0o644).file("keep", b"k", 0o644).finish();
    let l1 = Tb::new().dir("d", 0o755).whiteout("d/x").finish();
    let l2 = Tb::new().dir("d", 0o755).file("d/x", b"x again", 0o644).finish();
    let l3 = Tb::new().whiteout("d").finish();
    let one = load(&env, "la/one:1", std::slice::from_ref(&l0));
    let four = load(&env, "la/four:1", &[l0, l1, l2, l3]);
    let v = json_of(&env, &["layers", "--format", "json", "la/four:1"]);
    let hidden: Vec<(String, u64)> = v["wasted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["path"].as_str().unwrap().to_string(), w["hidden_by"].as_u64().unwrap()))
        .collect();
    assert!(hidden.contains(&("/d/x".into(), 3)), "layers knows: {hidden:?}");

    let r = env.run(&["diff", "--layers", "la/one:1", "la/four:1"]);
    assert_eq!(r.code, 1);
    let (a, b) = (&one[0][..12], &four[3][..12]);
    let want = format!(
        "D /d\n    A: layer 0 {a} step 0\n    B: deleted by layer 3 {b} step 3\nD /d/x\n    A: layer 0 {a} step 0\n    B: deleted by layer 3 {b} step 3\n"
    );
    assert_eq!(r.stdout, want);
}

#[test]
fn packages_from_distroless_dpkg_and_python_name_normalisation() {
    let env = TestEnv::new();
    let img = |libc: &str, dist: &str| {
        Tb::new()
            .dir("var", 0o755)
            .dir("var/lib", 0o755)
            .dir("var/lib/dpkg", 0o755)
            .dir("var/lib/dpkg/status.d", 0o755)
            .file("var/lib/dpkg/status.d/libc6", &dpkg(&[("libc6", libc)]), 0o644)
            .file("var/lib/dpkg/status.d/libc6.md5sums", b"Package: bogus\nVersion: 9\n", 0o644)
            .dir("usr", 0o755)
            .dir("usr/lib", 0o755)
            .dir("usr/lib/python3.11", 0o755)
            .dir("usr/lib/python3.11/site-packages", 0o755)
            .dir(&format!("usr/lib/python3.11/site-packages/{dist}"), 0o755)
            .finish()
    };
    load(&env, "pk/a:1", &[img("2.36-9", "Foo_Bar-1.0.dist-info")]);
    load(&env, "pk/b:1", &[img("2.36-10", "foo.bar-1.1.dist-info")]);
    let r = env.run(&["diff", "--packages", "pk/a:1", "pk/b:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        cells(&r.stdout),
        [
            row(&["CHANGE", "MANAGER", "PACKAGE", "ARCH", "A", "B"]),
            row(&["changed", "dpkg", "libc6", "amd64", "2.36-9", "2.36-10"]),
            row(&["changed", "python", "foo-bar", "/usr/lib/python3.11/site-packages", "1.0", "1.1"]),
        ],
        "{}",
        r.stdout
    );
    let r = env.run(&["diff", "--packages", "pk/a:1", "pk/a:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""));
}

#[test]
fn diff_reads_registry_images_without_tagging_them() {
    use crate::regserver::{need_tools, push, Auth, Registry, Skopeo};
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let env = TestEnv::new();
    let dir_b = env.path("layout-b");
    layout(&dir_b, "cmp/b:1", &[base_layer(), b1_layer()], &Cfg { created_by: &["base", "b step"], ..DEFAULT_CFG });
    push(&Skopeo::new(), &reg, &format!("oci:{}:cmp/b:1", dir_b.display()), "cmp/b:1", &[]);
    load_cfg(&env, "cmp/a:1", &[base_layer(), a1_layer()], &Cfg { created_by: &["base", "a step"], ..DEFAULT_CFG });
    let images_before = env.run(&["images", "-a", "--no-trunc"]).ok().to_string();

    let remote = format!("docker://{}/cmp/b:1", reg.addr);
    let r = env.run(&["diff", "cmp/a:1", &remote]);
    assert_eq!((r.code, r.stdout.as_str()), (1, expected_text(&expected()).as_str()), "{r:?}");
    // Again, with the layers already in the store; and the other way round.
    let r = env.run(&["diff", &remote, "cmp/a:1"]);
    assert_eq!((r.code, r.stdout.lines().count()), (1, expected().len()), "{r:?}");
    assert_eq!(env.run(&["cat", &remote, "/etc/new"]).ok(), "new\n");
    let v = json_of(&env, &["layers", "--format", "json", &remote]);
    assert_eq!(v["image"]["input"], remote.as_str());
    let e = env.run(&["diff", "cmp/a:1", &format!("docker://{}/cmp/b:missing", reg.addr)]).fails(125).to_string();
    assert!(e.contains("cmp/b:missing"), "{e}");
    assert_eq!(env.run(&["images", "-a", "--no-trunc"]).ok(), images_before, "nothing was tagged");
    env.assert_sound();
}

#[test]
fn devices_special_modes_and_big_files() {
    let env = TestEnv::new();
    let big = |tail: &str| {
        let mut v: Vec<u8> = (0..200_000).flat_map(|i| format!("line {i} of a big text file\n").into_bytes()).collect();
        v.extend_from_slice(tail.as_bytes());
        v
    };
    let (big_a, big_b) = (big("end\n"), big("END\n"));
    assert!(big_a.len() > 4 << 20);
    let img = |zero_minor: u32, su_mode: u32, big: &[u8]| {
        use tar::EntryType as E;
        Tb::new()
            .file("big.txt", big, 0o644)
            .dir("dev", 0o755)
            .device("dev/fifo", E::Fifo, 0, 0, 0o600)
            .device("dev/null", E::Char, 1, 3, 0o666)
            .device("dev/sda", E::Block, 8, 0, 0o660)
            .device("dev/zero", E::Char, 1, zero_minor, 0o666)
            .dir("tmp", 0o1777)
            .dir("usr", 0o755)
            .dir("usr/bin", 0o755)
            .file("usr/bin/su", b"#!/bin/sh\n", su_mode)
            .finish()
    };
    load(&env, "dv/a:1", &[img(5, 0o4755, &big_a)]);
    load(&env, "dv/b:1", &[img(7, 0o755, &big_b)]);
    let r = env.run(&["diff", "--content", "dv/a:1", "dv/b:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stdout,
        "C /big.txt  (content)\nFiles a/big.txt and b/big.txt differ (too big for a text diff)\nC /dev/zero  (dev 1,5 -> 1,7)\nC /usr/bin/su  (mode 4755 -> 0755)\n"
    );
    let v = json_of(&env, &["diff", "--format", "json", "dv/a:1", "dv/b:1"]);
    let zero = &v["files"][1];
    assert_eq!(
        (zero["a"]["type"].clone(), zero["a"]["dev"].clone(), zero["b"]["dev"].clone()),
        (json!("char"), json!("1,5"), json!("1,7"))
    );

    let long = env.run(&["ls", "-l", "dv/a:1", "/dev"]).ok().to_string();
    let rows: Vec<Vec<&str>> = long.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][0], "prw-------", "{long}");
    assert_eq!((rows[1][0], rows[1][3], rows[1][4]), ("crw-rw-rw-", "1,", "3"), "{long}");
    assert_eq!((rows[2][0], rows[2][3], rows[2][4]), ("brw-rw----", "8,", "0"), "{long}");
    let long = env.run(&["ls", "-l", "dv/a:1"]).ok().to_string();
    let mode_of = |name: &str| {
        long.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap().split(' ').next().unwrap().to_string()
    };
    assert_eq!(mode_of("tmp"), "drwxrwxrwt");
    let su = env.run(&["ls", "-l", "dv/a:1", "/usr/bin/su"]).ok().to_string();
    assert!(su.starts_with("-rwsr-xr-x "), "{su}");
    assert_eq!(env.run(&["cat", "dv/b:1", "/big.txt"]).ok().len(), big_b.len());
    let e = env.run(&["cat", "dv/a:1", "/dev/null"]).fails(125).to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn config_differences_field_by_field() {
    let env = TestEnv::new();
    let layer = Tb::new().file("f", b"same", 0o644).finish();
    let a = env.path("ca");
    let b = env.path("cb");
    layout_raw(
        &a,
        "cf/a:1",
        std::slice::from_ref(&layer),
        &["add f"],
        json!({"Env":["PATH=/bin","KEEP=1","GONE=x"],"Entrypoint":["/bin/sh","-c"],"WorkingDir":"/","User":"root",
               "ExposedPorts":{"80/tcp":{}},"Labels":{"keep":"1","version":"1.0"}}),
        "amd64",
    );
    layout_raw(
        &b,
        "cf/b:1",
        std::slice::from_ref(&layer),
        &["add f"],
        json!({"Env":["PATH=/bin","KEEP=1"],"WorkingDir":"/srv","User":"1000:1000","StopSignal":"SIGINT",
               "ExposedPorts":{"80/tcp":{},"443/tcp":{}},"Labels":{"keep":"1","version":"1.1","new":"y"}}),
        "arm64",
    );
    for d in [&a, &b] {
        env.run(&["load", "-i", d.to_str().unwrap()]).ok();
    }
    let r = env.run(&["diff", "--config", "cf/a:1", "cf/b:1"]);
    assert_eq!(r.code, 1, "{r:?}");
    let want = [
        r#"Env.GONE: "x" -> (none)"#,
        r#"Entrypoint: ["/bin/sh","-c"] -> (none)"#,
        r#"WorkingDir: "/" -> "/srv""#,
        r#"User: "root" -> "1000:1000""#,
        r#"StopSignal: (none) -> "SIGINT""#,
        r#"Labels.new: (none) -> "y""#,
        r#"Labels.version: "1.0" -> "1.1""#,
        r#"Platform: "linux/amd64" -> "linux/arm64""#,
    ];
    // ExposedPorts: a set, in whatever order it prints.
    let (ports, rest): (Vec<&str>, Vec<&str>) = r.stdout.lines().partition(|l| l.starts_with("ExposedPorts: "));
    assert_eq!(rest, want, "{}", r.stdout);
    assert_eq!(ports.len(), 1, "{}", r.stdout);
    let (pa, pb) = ports[0]["ExposedPorts: ".len()..].split_once(" -> ").unwrap();
    let sorted = |s: &str| {
        let mut v: Vec<String> = serde_json::from_str(s).unwrap();
        v.sort();
        v
    };
    assert_eq!(
        (sorted(pa), sorted(pb)),
        (vec!["80/tcp".to_string()], vec!["443/tcp".to_string(), "80/tcp".to_string()])
    );
    // The files are the same (the same layer): the default comparison finds nothing.
    let r = env.run(&["diff", "cf/a:1", "cf/b:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
}

#[test]
fn config_comparison_does_not_depend_on_map_order() {
    // Two images with the same exposed ports and volumes (sets in the config, maps in JSON) and
    // one other difference: only that difference is reported, every time.
    let env = TestEnv::new();
    let layer = Tb::new().file("f", b"same", 0o644).finish();
    let ports: serde_json::Map<String, Value> = (0..12).map(|i| (format!("{}/tcp", 8000 + i), json!({}))).collect();
    let volumes: serde_json::Map<String, Value> = (0..12).map(|i| (format!("/vol{i}"), json!({}))).collect();
    for (name, user) in [("mo/a:1", "a"), ("mo/b:1", "b")] {
        let dir = env.path(&name.replace([':', '/'], "_"));
        layout_raw(
            &dir,
            name,
            std::slice::from_ref(&layer),
            &["add f"],
            json!({"User": user, "ExposedPorts": ports, "Volumes": volumes}),
            "amd64",
        );
        env.run(&["load", "-i", dir.to_str().unwrap()]).ok();
    }
    for _ in 0..3 {
        let r = env.run(&["diff", "--config", "mo/a:1", "mo/a:1"]);
        assert_eq!((r.code, r.stdout.as_str()), (0, ""), "an image against itself: {r:?}");
        let r = env.run(&["diff", "--config", "mo/a:1", "mo/b:1"]);
        assert_eq!((r.code, r.stdout.as_str()), (1, "User: \"a\" -> \"b\"\n"), "{r:?}");
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mk {
    Dir(u32),
    Other,
}

/// Random layers over `model` (path -> kind, overlay semantics): files, directories, symlinks,
/// whiteouts of files and whole trees, opaque directories, type changes, mode and owner changes.
/// Every entry's parents are listed with their current attributes, and no path is touched twice
/// in one layer.
fn random_layer(rng: &mut Rng, model: &mut BTreeMap<String, Mk>, ops: usize) -> Vec<u8> {
    let names = ["a", "b", "c", "d", "e"];
    let mut tb = Tb::new().at(T0 + rng.below(3) as u64);
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let conflicts = |touched: &BTreeSet<String>, p: &str| {
        touched.iter().any(|t| t == p || p.starts_with(&format!("{t}/")) || t.starts_with(&format!("{p}/")))
    };
    for _ in 0..ops {
        let depth = 1 + rng.below(3);
        let path: Vec<&str> = (0..depth).map(|_| *rng.pick(&names)).collect();
        let p = path.join("/");
        let existing: Vec<String> = model.keys().cloned().collect();
        let op = rng.below(8);
        // Operations on an existing path.
        if op >= 5 && !existing.is_empty() {
            let q = rng.pick(&existing).clone();
            if conflicts(&touched, &q) {
                continue;
            }
            let parents: Vec<String> = q
                .split('/')
                .scan(String::new(), |acc, c| {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(c);
                    Some(acc.clone())
                })
                .collect();
            let parents = &parents[..parents.len() - 1];
            if parents.iter().any(|a| conflicts(&touched, a) && touched.contains(a)) {
                continue;
            }
            for a in parents {
                if let Some(Mk::Dir(m)) = model.get(a) {
                    tb = tb.dir(a, *m);
                }
            }
            let is_dir = matches!(model.get(&q), Some(Mk::Dir(_)));
            match op {
                5 => {
                    tb = tb.whiteout(&q);
                    model.retain(|k, _| k != &q && !k.starts_with(&format!("{q}/")));
                }
                6 if is_dir => {
                    let m = *rng.pick(&[0o755, 0o700, 0o750]);
                    tb = tb.dir(&q, m).opaque(&q);
                    model.retain(|k, _| !k.starts_with(&format!("{q}/")));
                    model.insert(q.clone(), Mk::Dir(m));
                }
                _ if is_dir => {
                    let m = *rng.pick(&[0o755, 0o711, 0o700]);
                    tb = tb.dir(&q, m);
                    model.insert(q.clone(), Mk::Dir(m));
                }
                _ => {
                    let (uid, mode) = (*rng.pick(&[0u64, 1000]), *rng.pick(&[0o644, 0o600]));
                    tb = tb.owned(&q, b"owned", mode, uid, uid);
                    model.insert(q.clone(), Mk::Other);
                }
            }
            touched.insert(q);
            continue;
        }
        if conflicts(&touched, &p) {
            continue;
        }
        // Parents must be directories (made if missing); a non-directory parent: skip.
        let mut ok = true;
        let mut acc = String::new();
        let mut emit = Vec::new();
        for c in &path[..path.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            match model.get(&acc) {
                Some(Mk::Dir(m)) => emit.push((acc.clone(), *m)),
                Some(Mk::Other) => ok = false,
                None => emit.push((acc.clone(), 0o755)),
            }
        }
        if !ok || touched.iter().any(|t| emit.iter().any(|(e, _)| e == t)) {
            continue;
        }
        for (e, m) in &emit {
            tb = tb.dir(e, *m);
            model.insert(e.clone(), Mk::Dir(*m));
        }
        if model.get(&p).is_some() {
            // Replacing: drop what was below.
            model.retain(|k, _| !k.starts_with(&format!("{p}/")));
        }
        match op {
            0 | 1 => {
                let contents: [&[u8]; 4] = [b"one", b"two", b"three!", b""];
                let content = rng.pick(&contents);
                tb = tb.file(&p, content, *rng.pick(&[0o644, 0o755]));
                model.insert(p.clone(), Mk::Other);
            }
            2 => {
                let m = *rng.pick(&[0o755, 0o700]);
                tb = tb.dir(&p, m);
                if !matches!(model.get(&p), Some(Mk::Dir(_))) {
                    model.retain(|k, _| !k.starts_with(&format!("{p}/")));
                }
                model.insert(p.clone(), Mk::Dir(m));
            }
            3 => {
                let targets = ["/a", "../b", "c/d", "/nowhere"];
                tb = tb.symlink(&p, rng.pick::<&str>(&targets));
                model.insert(p.clone(), Mk::Other);
            }
            _ => {
                tb = tb.owned(&p, b"x", 0o640, 1000, 50);
                model.insert(p.clone(), Mk::Other);
            }
        }
        touched.insert(p);
    }
    tb.finish()
}

#[test]
fn diff_ls_and_layers_agree_with_umoci_on_random_layer_stacks() {
    // SAFETY: geteuid has no preconditions.
    if !have("umoci") || unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "the oracle needs umoci and root in CI");
        println!("skipped: needs umoci and root");
        return;
    }
    let mut compared = 0;
    for seed in 1..=24u64 {
        let env = TestEnv::new();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut base_model = BTreeMap::new();
        let base = random_layer(&mut rng, &mut base_model, 25);
        let mut images = Vec::new();
        for side in ["x", "y"] {
            let mut model = base_model.clone();
            let mut layers = vec![base.clone()];
            for _ in 0..1 + rng.below(3) {
                layers.push(random_layer(&mut rng, &mut model, 10));
            }
            let dir = env.path(side);
            let by: Vec<String> = (0..layers.len()).map(|i| format!("{side}{i}")).collect();
            let by: Vec<&str> = by.iter().map(String::as_str).collect();
            layout(&dir, side, &layers, &Cfg { created_by: &by, ..DEFAULT_CFG });
            let bundle = env.path(&format!("bundle-{side}"));
            sh(&format!("umoci unpack --image '{}:{side}' '{}'", dir.display(), bundle.display()));
            let mut t = BTreeMap::new();
            walk(&bundle.join("rootfs"), "", &mut t);
            // strata layers: the bytes every layer stores, and what the unpacked tree shows.
            let stored: u64 = layers
                .iter()
                .flat_map(|l| {
                    let mut a = tar::Archive::new(&l[..]);
                    a.entries()
                        .unwrap()
                        .map(|e| {
                            let e = e.unwrap();
                            if e.header().entry_type() == tar::EntryType::Regular
                                && !e.path().unwrap().to_string_lossy().contains(".wh.")
                            {
                                e.header().size().unwrap()
                            } else {
                                0
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .sum();
            let shown: u64 = t.values().filter(|m| m.kind == "file").map(|m| m.size).sum();
            let input = format!("oci:{}:{side}", dir.display());
            let v = json_of(&env, &["layers", "--format", "json", &input]);
            assert_eq!(
                (v["total_bytes"].as_u64(), v["visible_bytes"].as_u64()),
                (Some(stored), Some(shown)),
                "seed {seed} {side}"
            );
            let listed: u64 = v["wasted"].as_array().unwrap().iter().map(|w| w["bytes"].as_u64().unwrap()).sum();
            assert_eq!(listed, stored - shown, "seed {seed} {side}");
            images.push((input, t));
        }
        let (ta, tb) = (&images[0].1, &images[1].1);
        let mut want: Vec<String> = Vec::new();
        for (p, a) in ta {
            match tb.get(p) {
                None => want.push(format!("D /{p}")),
                Some(b) => {
                    let f = oracle_fields(a, b);
                    if !f.is_empty() {
                        want.push(format!("C /{p} {}", f.join(",")));
                    }
                }
            }
        }
        for p in tb.keys().filter(|p| !ta.contains_key(*p)) {
            want.push(format!("A /{p}"));
        }
        want.sort_by(|x, y| pcmp(x[3..].split(' ').next().unwrap(), y[3..].split(' ').next().unwrap()));
        let r = env.run(&["diff", "--ignore", "mtime", &images[0].0, &images[1].0]);
        assert_eq!(r.code, if want.is_empty() { 0 } else { 1 }, "seed {seed}: {r:?}");
        let got: Vec<String> = r
            .stdout
            .lines()
            .map(|l| match l.split_once("  (") {
                Some((head, d)) => format!(
                    "{head} {}",
                    d.trim_end_matches(')')
                        .split(", ")
                        .map(|s| s.split(' ').next().unwrap())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => l.to_string(),
            })
            .collect();
        assert_eq!(got, want, "seed {seed}: strata:\n{}", r.stdout);
        compared += want.len();
        for (input, tree) in &images {
            let v = json_of(&env, &["ls", "-R", "--format", "json", input]);
            let listed: BTreeSet<String> =
                v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()[1..].to_string()).collect();
            assert_eq!(listed, tree.keys().cloned().collect::<BTreeSet<_>>(), "seed {seed}: {input}");
        }
    }
    assert!(compared > 150, "the stacks differ enough to test something: {compared}");
}

#[test]
fn a_whiteout_hides_only_lower_layers_not_its_own() {
    // OCI image spec (layer.md, Whiteouts): "Whiteout files MUST only apply to resources in
    // lower/parent layers. Files that are present in the same layer as a whiteout file can only be
    // hidden by whiteout files in subsequent layers." umoci unpacks it so.
    let env = TestEnv::new();
    let l0 = Tb::new().file("x", b"old", 0o644).finish();
    let l1 = Tb::new().file("x", b"new", 0o644).whiteout("x").finish();
    load(&env, "wh/one:1", std::slice::from_ref(&l0));
    load(&env, "wh/two:1", &[l0, l1]);
    assert_eq!(env.run(&["cat", "wh/two:1", "/x"]).ok(), "new");
    let r = env.run(&["diff", "wh/one:1", "wh/two:1"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, "C /x  (content)\n"), "{r:?}");
}
