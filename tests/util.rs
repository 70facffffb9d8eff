//! Test harness: a `TestEnv` with its own store root and scratch dir, driving the real `strata`
//! binary, plus helpers to build root filesystems and tar layers for test images.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// One test's world: a fresh store root and a scratch directory, removed on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stdout
    }
    /// Asserts exit code `code` and returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        &self.stderr
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("strata-test").tempdir_in(scratch_base()).expect("tempdir");
        let root = dir.path().join("store");
        TestEnv { dir, root }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `strata --root ROOT ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(STRATA);
        c.arg("--root").arg(&self.root).args(args);
        c.env_remove("STRATA_ROOT");
        // Never the host's docker credentials.
        c.env("DOCKER_CONFIG", self.dir.path().join("docker-config"));
        c.env_remove("STRATA_INSECURE_REGISTRIES");
        c.stdin(Stdio::null());
        c
    }

    /// Runs strata and captures its output.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(self.cmd(args).output().expect("run strata"))
    }

    /// Runs strata with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        run_with_stdin(self.cmd(args), input)
    }

    /// Makes a small root filesystem from busybox-static (or fails clearly if it is missing).
    pub fn busybox_rootfs(&self, name: &str) -> PathBuf {
        let r = self.path(name);
        for d in ["bin", "etc", "tmp", "root", "usr/bin"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let bb = Path::new("/bin/busybox");
        assert!(bb.exists(), "busybox-static is required (apt-get install busybox-static; scripts/test.sh does it)");
        fs::copy(bb, r.join("bin/busybox")).unwrap();
        for a in ["sh", "ls", "cat", "echo"] {
            symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(r.join("etc/motd"), format!("image {name}\n")).unwrap();
        r
    }

    /// Imports `dir` as image `reference`; returns the image ID.
    pub fn import(&self, dir: &Path, reference: &str) -> String {
        self.run(&["import", dir.to_str().unwrap(), reference]).ok().trim().to_string()
    }

    /// `images -q --no-trunc`, sorted.
    pub fn image_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.run(&["images", "-q", "--no-trunc"]).ok().lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// `image inspect` of one image, parsed.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let out = self.run(&["image", "inspect", image]);
        let v: serde_json::Value = serde_json::from_str(out.ok()).expect("inspect prints JSON");
        v[0].clone()
    }

    /// Asserts that `system check` finds the store sound.
    #[track_caller]
    pub fn assert_sound(&self) {
        let r = self.run(&["system", "check"]);
        assert_eq!(r.code, 0, "store not sound:\n{}{}", r.stdout, r.stderr);
    }
}

impl Drop for TestEnv {
    /// Containers a test left (it failed half-way, or kept one running) are removed, so that
    /// their processes, mounts and groups do not outlive the test's folder.
    fn drop(&mut self) {
        if !self.root.join("containers").is_dir() {
            return;
        }
        let Ok(out) = self.cmd(&["ps", "-aq", "--no-trunc"]).output() else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.cmd(&args).output();
        }
    }
}

/// Runs `c` with `input` on stdin and captures its output.
pub fn run_with_stdin(mut c: Command, input: &[u8]) -> Run {
    use std::io::Write;
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let t = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    t.join().unwrap();
    Run::from_output(out)
}

/// Where scratch dirs go: a real disk (overlay markers and xattrs need more than some tmpfs).
pub fn scratch_base() -> PathBuf {
    let p = PathBuf::from(std::env::var("STRATA_TEST_TMP").unwrap_or_else(|_| "/var/tmp".into()));
    fs::create_dir_all(&p).unwrap();
    p
}

/// Whether a peer tool is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs an external command, asserting success; returns stdout.
#[track_caller]
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "`{cmd}` failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tar builder for hand-made layers, including hostile ones.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer { b: tar::Builder::new(Vec::new()) }
    }
    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        // Write the raw name so that hostile paths (`..`, absolute) reach the archive as is.
        let name = path.as_bytes();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(path, tar::EntryType::Directory, 0, mode);
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    pub fn file(mut self, path: &str, content: &[u8], mode: u32) -> Self {
        let h = Self::header(path, tar::EntryType::Regular, content.len() as u64, mode);
        self.b.append(&h, content).unwrap();
        self
    }
    pub fn file_owned(mut self, path: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(path, tar::EntryType::Regular, content.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, content).unwrap();
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(path, tar::EntryType::Symlink, 0, 0o777);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(path, tar::EntryType::Link, 0, 0o644);
        // set_link_name refuses `..`; write the raw bytes.
        let t = target.as_bytes();
        h.as_gnu_mut().unwrap().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// gzip-compresses bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// sha256 hex of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    strata_store::digest::sha256(data).digest().to_string()
}

/// Writes an OCI image layout at `dir` holding one image made of `layers` (uncompressed tars,
/// stored gzip-compressed), tagged `refname`. `diff_ids` overrides the config's diff IDs (to make
/// a lying image). Returns the manifest digest hex.
pub fn write_oci_layout(dir: &Path, refname: &str, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let h = sha256_hex(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        (h, bytes.len())
    };
    let mut layer_descs = Vec::new();
    let mut ids = Vec::new();
    for l in layers {
        let gz = gzip(l);
        let (h, n) = put(&gz);
        layer_descs.push(serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{h}"),"size":n}));
        ids.push(format!("sha256:{}", sha256_hex(l)));
    }
    let ids = diff_ids.unwrap_or(ids);
    let history: Vec<serde_json::Value> = (0..layers.len())
        .map(|i| serde_json::json!({"created":"2024-01-01T00:00:00Z","created_by":format!("layer {i}")}))
        .collect();
    let config = serde_json::json!({
        "created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux",
        "config":{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]},
        "rootfs":{"type":"layers","diff_ids":ids},
        "history": history,
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let (ch, cn) = put(&cb);
    let manifest = serde_json::json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha256:{ch}"),"size":cn},
        "layers": layer_descs,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let (mh, mn) = put(&mb);
    let index = serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":format!("sha256:{mh}"),"size":mn,"annotations":{"org.opencontainers.image.ref.name":refname}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    mh
}

/// Tars a directory (an OCI layout) into an archive file.
pub fn tar_dir(dir: &Path, out: &Path) {
    sh(&format!("tar -C '{}' -cf '{}' .", dir.display(), out.display()));
}
