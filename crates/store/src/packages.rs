//! Installed packages of an image, read from its package databases in the snapshots: dpkg
//! (`/var/lib/dpkg/status` and distroless' `/var/lib/dpkg/status.d/*`), apk
//! (`/lib/apk/db/installed`) and Python (`*.dist-info` / `*.egg-info` in `site-packages` and
//! `dist-packages` directories), and the package-level difference of two images.

use std::collections::BTreeMap;

use crate::error::{Error, IoContext, Result};
use crate::fileindex::Kind;
use crate::view::View;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    /// `dpkg`, `apk` or `python`.
    pub manager: &'static str,
    /// Its name.
    pub name: String,
    /// dpkg/apk: the architecture; python: the directory it is installed in.
    pub arch: String,
    /// Its version.
    pub version: String,
}

/// A package that differs between two images.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageChange {
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// `dpkg`, `apk` or `python`.
    pub manager: &'static str,
    /// Its name.
    pub name: String,
    /// Architecture or location.
    pub arch: String,
    /// Version in the first image.
    pub a: Option<String>,
    /// Version in the second image.
    pub b: Option<String>,
}

/// The largest package database read.
const DB_MAX: u64 = 256 << 20;

fn read(view: &View, path: &str) -> Result<Option<Vec<u8>>> {
    let Ok(p) = view.resolve(path.as_bytes(), true) else {
        return Ok(None);
    };
    let Some(node) = view.get(&p) else {
        return Ok(None);
    };
    if !matches!(node.entry.kind, Kind::File | Kind::Hardlink) {
        return Ok(None);
    }
    if node.entry.size > DB_MAX {
        return Err(Error::invalid_content(format!(
            "/{path} is {} bytes: too big for a package database",
            node.entry.size
        )));
    }
    let disk = view.disk_path(node);
    Ok(Some(std::fs::read(&disk).at("cannot read", &disk)?))
}

/// Stanzas of `Key: value` lines separated by blank lines (dpkg) or `K:value` lines (apk).
fn stanzas(text: &[u8], mut f: impl FnMut(&BTreeMap<&[u8], &[u8]>)) {
    let mut cur: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if !cur.is_empty() {
                f(&cur);
                cur.clear();
            }
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // continuation of a multi-line field
        }
        if let Some(k) = line.iter().position(|&b| b == b':') {
            let v = &line[k + 1..];
            let v = v.strip_prefix(b" ").unwrap_or(v);
            cur.entry(&line[..k]).or_insert(v);
        }
    }
    if !cur.is_empty() {
        f(&cur);
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses a dpkg status file: packages whose status says installed.
pub fn parse_dpkg(text: &[u8], out: &mut Vec<Package>) {
    stanzas(text, |st| {
        let installed = st.get(&b"Status"[..]).is_none_or(|v| v.ends_with(b" installed"));
        if let (Some(name), Some(ver), true) = (st.get(&b"Package"[..]), st.get(&b"Version"[..]), installed) {
            out.push(Package {
                manager: "dpkg",
                name: s(name),
                arch: st.get(&b"Architecture"[..]).map(|a| s(a)).unwrap_or_default(),
                version: s(ver),
            });
        }
    });
}

/// Parses apk's installed database.
pub fn parse_apk(text: &[u8], out: &mut Vec<Package>) {
    stanzas(text, |st| {
        if let (Some(name), Some(ver)) = (st.get(&b"P"[..]), st.get(&b"V"[..])) {
            out.push(Package {
                manager: "apk",
                name: s(name),
                arch: st.get(&b"A"[..]).map(|a| s(a)).unwrap_or_default(),
                version: s(ver),
            });
        }
    });
}

/// Name and version from a `NAME-VERSION.dist-info` or `NAME-VERSION[-pyX.Y].egg-info` name.
pub fn parse_python_dir(name: &str) -> Option<(String, String)> {
    let (stem, egg) = match name.strip_suffix(".dist-info") {
        Some(s) => (s, false),
        None => (name.strip_suffix(".egg-info")?, true),
    };
    let (n, mut v) = stem.split_once('-')?;
    if egg {
        if let Some(k) = v.find("-py") {
            v = &v[..k];
        }
    }
    if n.is_empty() || v.is_empty() {
        return None;
    }
    // PEP 503 normalisation, so `Foo_Bar` and `foo-bar` are one package.
    let norm = n.to_ascii_lowercase().replace(['_', '.'], "-");
    Some((norm, v.to_string()))
}

/// Every package `view` has installed, sorted.
pub fn packages(view: &View) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    if let Some(t) = read(view, "var/lib/dpkg/status")? {
        parse_dpkg(&t, &mut out);
    }
    if let Ok(d) = view.resolve(b"var/lib/dpkg/status.d", true) {
        let files: Vec<Vec<u8>> = view
            .below(&d, false)
            .filter(|n| matches!(n.entry.kind, Kind::File | Kind::Hardlink) && !n.entry.path.ends_with(b".md5sums"))
            .map(|n| n.entry.path.clone())
            .collect();
        for f in files {
            if let Some(t) = read(view, &s(&f))? {
                parse_dpkg(&t, &mut out);
            }
        }
    }
    if let Some(t) = read(view, "lib/apk/db/installed")? {
        parse_apk(&t, &mut out);
    }
    for n in &view.nodes {
        let p = &n.entry.path;
        if !(p.ends_with(b".dist-info") || p.ends_with(b".egg-info")) {
            continue;
        }
        let Some(k) = p.iter().rposition(|&b| b == b'/') else { continue };
        let (parent, name) = (&p[..k], &p[k + 1..]);
        if !(parent.ends_with(b"site-packages") || parent.ends_with(b"dist-packages")) {
            continue;
        }
        if let Some((name, version)) = parse_python_dir(&s(name)) {
            out.push(Package { manager: "python", name, arch: format!("/{}", s(parent)), version });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Where a lookup through the layers' trees ended.
enum Lookup {
    /// The path's file on disk, in the topmost layer that has it.
    Found(std::path::PathBuf),
    /// No layer shows it (absent, or deleted by a whiteout or an opaque parent).
    Absent,
    /// A symlink on the way, or an error: only the merged view can answer.
    Unsure,
}

/// Looks `rel` up through layer trees in overlayfs format (topmost first), as overlayfs does:
/// a whiteout (character device 0/0) deletes, an opaque directory hides the layers below it, a
/// non-directory hides what lower layers have under its path. Symlinks are followed inside the
/// image (absolute targets from its root, `..` stopping there).
fn lookup(roots: &[std::path::PathBuf], rel: &str) -> Lookup {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut comps: Vec<Vec<u8>> = normal(&[], rel.as_bytes());
    let mut hops = 0;
    'restart: loop {
        'layers: for root in roots {
            let mut p = root.clone();
            let mut opaque = false;
            for i in 0..comps.len() {
                p.push(std::ffi::OsStr::from_bytes(&comps[i]));
                let md = match std::fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if opaque {
                            return Lookup::Absent;
                        }
                        continue 'layers;
                    }
                    Err(_) => return Lookup::Unsure,
                };
                let ft = md.file_type();
                if ft.is_char_device() && md.rdev() == 0 {
                    return Lookup::Absent;
                }
                if ft.is_symlink() {
                    // The topmost entry at this prefix: resolve it and start over.
                    hops += 1;
                    let Ok(target) = std::fs::read_link(&p) else { return Lookup::Unsure };
                    if hops > 40 {
                        return Lookup::Unsure;
                    }
                    let mut next = normal(&comps[..i], target.as_os_str().as_bytes());
                    next.extend_from_slice(&comps[i + 1..]);
                    comps = next;
                    continue 'restart;
                }
                if i + 1 == comps.len() {
                    return Lookup::Found(p);
                }
                if !ft.is_dir() {
                    return Lookup::Absent;
                }
                let mut v = [0u8; 2];
                if rustix::fs::getxattr(&p, "trusted.overlay.opaque", &mut v).is_ok_and(|n| n == 1 && v[0] == b'y') {
                    opaque = true;
                }
            }
        }
        return Lookup::Absent;
    }
}

/// `target` resolved against directory `base` (components), `..` stopping at the root.
fn normal(base: &[Vec<u8>], target: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = if target.starts_with(b"/") { Vec::new() } else { base.to_vec() };
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// Every package installed in the image whose layer trees are `roots` (topmost first) and file
/// indexes `indexes`, without building its merged view: the databases are found by looking
/// their paths up through the trees, Python's directories by scanning the indexes' paths.
/// `None` when a symlink on the way (or a distroless `status.d`) needs the merged view: use
/// [`packages`] then.
pub fn packages_in_layers(
    roots: &[std::path::PathBuf],
    indexes: &[std::path::PathBuf],
) -> Result<Option<Vec<Package>>> {
    let mut out = Vec::new();
    let read = |p: &std::path::Path| -> Result<Vec<u8>> {
        let n = std::fs::metadata(p).at("cannot read", p)?.len();
        if n > DB_MAX {
            return Err(Error::invalid_content(format!(
                "{} is {n} bytes: too big for a package database",
                p.display()
            )));
        }
        std::fs::read(p).at("cannot read", p)
    };
    for (db, parse) in
        [("var/lib/dpkg/status", parse_dpkg as fn(&[u8], &mut Vec<Package>)), ("lib/apk/db/installed", parse_apk)]
    {
        match lookup(roots, db) {
            Lookup::Found(p) => parse(&read(&p)?, &mut out),
            Lookup::Absent => {}
            Lookup::Unsure => return Ok(None),
        }
    }
    match lookup(roots, "var/lib/dpkg/status.d") {
        Lookup::Absent => {}
        _ => return Ok(None),
    }
    let mut candidates = std::collections::BTreeSet::new();
    for idx in indexes {
        crate::fileindex::scan_paths(idx, |_, p| {
            if p.ends_with(b".dist-info") || p.ends_with(b".egg-info") {
                candidates.insert(p.to_vec());
            }
        })?;
    }
    for p in candidates {
        let Some(k) = p.iter().rposition(|&b| b == b'/') else { continue };
        let (parent, name) = (&p[..k], &p[k + 1..]);
        if !(parent.ends_with(b"site-packages") || parent.ends_with(b"dist-packages")) {
            continue;
        }
        let Some((name, version)) = parse_python_dir(&s(name)) else { continue };
        match lookup(roots, &s(&p)) {
            Lookup::Found(_) => out.push(Package { manager: "python", name, arch: format!("/{}", s(parent)), version }),
            Lookup::Absent => {}
            Lookup::Unsure => return Ok(None),
        }
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// The package-level difference of `a` and `b` (each sorted), sorted by manager and name.
pub fn diff_packages(a: &[Package], b: &[Package]) -> Vec<PackageChange> {
    type Key<'a> = (&'static str, &'a str, &'a str);
    fn map(l: &[Package]) -> BTreeMap<Key<'_>, Vec<String>> {
        let mut m: BTreeMap<Key<'_>, Vec<String>> = BTreeMap::new();
        for p in l {
            m.entry((p.manager, p.name.as_str(), p.arch.as_str())).or_default().push(p.version.clone());
        }
        m
    }
    let (ma, mb) = (map(a), map(b));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&Key<'_>> = ma.keys().chain(mb.keys()).collect();
    for k in keys {
        let (va, vb) = (ma.get(k).map(|v| v.join(", ")), mb.get(k).map(|v| v.join(", ")));
        let change = match (&va, &vb) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(x), Some(y)) if x != y => "changed",
            _ => continue,
        };
        out.push(PackageChange { change, manager: k.0, name: k.1.to_string(), arch: k.2.to_string(), a: va, b: vb });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_stanzas() {
        let t = b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: curl\nStatus: install ok installed\nVersion: 7.88\n";
        let mut v = Vec::new();
        parse_dpkg(t, &mut v);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].name.as_str(), v[0].arch.as_str(), v[0].version.as_str()), ("libc6", "amd64", "2.36-9"));
        assert_eq!(v[1].name, "curl");
    }

    #[test]
    fn apk_and_python() {
        let mut v = Vec::new();
        parse_apk(b"C:Q1x\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36\n", &mut v);
        assert_eq!(v.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["musl", "busybox"]);
        assert_eq!(parse_python_dir("Foo_Bar-1.2.3.dist-info"), Some(("foo-bar".into(), "1.2.3".into())));
        assert_eq!(parse_python_dir("six-1.16.0-py3.11.egg-info"), Some(("six".into(), "1.16.0".into())));
        assert_eq!(parse_python_dir("weird.dist-info"), None);
    }

    #[test]
    fn lookup_through_layer_trees() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        std::fs::create_dir_all(lower.join("usr/lib/apk/db")).unwrap();
        std::fs::write(lower.join("usr/lib/apk/db/installed"), b"P:a\nV:1\n").unwrap();
        symlink("usr/lib", lower.join("lib")).unwrap();
        std::fs::create_dir_all(lower.join("etc/d")).unwrap();
        std::fs::write(lower.join("etc/d/f"), b"x").unwrap();
        std::fs::write(lower.join("etc/g"), b"x").unwrap();
        std::fs::create_dir_all(upper.join("etc/d")).unwrap();
        let roots = [upper.clone(), lower.clone()];
        assert!(
            matches!(lookup(&roots, "lib/apk/db/installed"), Lookup::Found(p) if p == lower.join("usr/lib/apk/db/installed"))
        );
        assert!(matches!(lookup(&roots, "etc/d/f"), Lookup::Found(_)), "a plain upper directory merges");
        assert!(matches!(lookup(&roots, "nope/x"), Lookup::Absent));
        // Opaque directories and whiteouts need root (trusted xattrs, mknod).
        if rustix::fs::setxattr(upper.join("etc/d"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .is_ok()
        {
            assert!(matches!(lookup(&roots, "etc/d/f"), Lookup::Absent), "an opaque directory hides lower layers");
        }
        let dev = rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/g"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        );
        if dev.is_ok() {
            assert!(matches!(lookup(&roots, "etc/g"), Lookup::Absent), "a whiteout deletes");
        }
    }

    #[test]
    fn package_diff() {
        let p = |n: &str, v: &str| Package { manager: "dpkg", name: n.into(), arch: "amd64".into(), version: v.into() };
        let a = vec![p("a", "1"), p("b", "1"), p("c", "1")];
        let b = vec![p("a", "1"), p("b", "2"), p("d", "1")];
        let d = diff_packages(&a, &b);
        let got: Vec<(&str, &str)> = d.iter().map(|c| (c.change, c.name.as_str())).collect();
        assert_eq!(got, [("changed", "b"), ("removed", "c"), ("added", "d")]);
    }
}
