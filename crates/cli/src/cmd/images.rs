//! images, inspect, history, tag, rmi.

use std::io::Write;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strata_store::{gc, Image, Reference, Store};

use crate::args::{Format, HistoryArgs, ImagesArgs, InspectArgs, RmiArgs, TagArgs};
use crate::render::{self, Table};
use crate::Outcome;

/// One row of `images`: an image under one of its names (or none).
struct Row<'a> {
    image: &'a Image,
    repo: String,
    tag: String,
}

fn rows<'a>(images: &'a [Image], args: &ImagesArgs) -> anyhow::Result<Vec<Row<'a>>> {
    let mut dangling: Option<bool> = None;
    let mut patterns: Vec<String> = args.reference.iter().cloned().collect();
    let mut labels: Vec<(String, Option<String>)> = Vec::new();
    let mut before: Option<i64> = None;
    let mut since: Option<i64> = None;
    for f in &args.filters {
        let (k, v) = f.split_once('=').with_context(|| format!("invalid filter {f:?}: expected KEY=VALUE"))?;
        match k {
            "dangling" => {
                dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid filter 'dangling={v}': use true or false"),
                })
            }
            "reference" => patterns.push(v.to_string()),
            "label" => labels.push(match v.split_once('=') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (v.to_string(), None),
            }),
            "before" | "since" => {
                let img = strata_store::image::find_image(images, v)?;
                let t = img.created().unwrap_or(0);
                if k == "before" {
                    before = Some(t)
                } else {
                    since = Some(t)
                }
            }
            _ => bail!("invalid filter {k:?}: supported filters are dangling, reference, label, before, since"),
        }
    }
    let mut out = Vec::new();
    for img in images {
        if dangling.is_some_and(|d| d != img.tags.is_empty()) {
            continue;
        }
        if before.is_some_and(|b| img.created().unwrap_or(0) >= b)
            || since.is_some_and(|s| img.created().unwrap_or(0) <= s)
        {
            continue;
        }
        if !labels.is_empty() {
            let have = img.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
            if !labels.iter().all(|(k, v)| have.get(k).is_some_and(|hv| v.as_ref().is_none_or(|v| v == hv))) {
                continue;
            }
        }
        if img.tags.is_empty() {
            if patterns.is_empty() {
                out.push(Row { image: img, repo: "<none>".into(), tag: "<none>".into() });
            }
            continue;
        }
        for t in &img.tags {
            let repo = t.familiar_name();
            let tag = t.tag().unwrap_or("<none>").to_string();
            if !patterns.is_empty() && !patterns.iter().any(|p| matches_reference(p, &repo, &tag, t)) {
                continue;
            }
            out.push(Row { image: img, repo, tag });
        }
    }
    Ok(out)
}

/// docker's reference filter: `busybox`, `busybox:1.*`, `*/app`, or the full name.
fn matches_reference(pattern: &str, repo: &str, tag: &str, r: &Reference) -> bool {
    let (pr, pt) = match pattern.rsplit_once(':') {
        Some((a, b)) if !b.contains('/') => (a, Some(b)),
        _ => (pattern, None),
    };
    (glob(pr, repo) || glob(pr, &r.name())) && pt.is_none_or(|pt| glob(pt, tag))
}

/// `*` matches any run of characters except `/`; everything else literally.
fn glob(p: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(p.as_bytes(), s.as_bytes())
}

fn image_size(store: &Store, img: &Image) -> u64 {
    img.diff_ids()
        .unwrap_or_default()
        .iter()
        .map(|d| store.snapshot_summary(d).map(|s| s.content_bytes).unwrap_or(0))
        .sum()
}

pub fn list(store: &Store, args: ImagesArgs, out: &mut dyn Write) -> Outcome {
    if args.tree {
        return crate::cmd::tree::tree(store, args.format, out);
    }
    let images = store.images()?;
    let rows = rows(&images, &args)?;
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.image.id().clone()) {
                writeln!(out, "{}", render::id(r.image.id(), args.no_trunc))?;
            }
        }
        return Ok(0);
    }
    if args.format == Format::Json {
        for r in &rows {
            let created = r.image.created();
            let v = json!({
                "Containers": "N/A",
                "CreatedAt": created.map(strata_store::time::format_rfc3339),
                "CreatedSince": render::ago(created),
                "Digest": r.image.digest().to_string(),
                "ID": render::id(r.image.id(), args.no_trunc),
                "Repository": r.repo,
                "Tag": r.tag,
                "Size": render::size(image_size(store, r.image)),
                "LastUsed": r.image.last_used.map(strata_store::time::format_rfc3339),
            });
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    let mut headers = vec!["REPOSITORY", "TAG"];
    if args.digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut t = Table::new(&headers);
    for r in &rows {
        let mut cells = vec![r.repo.clone(), r.tag.clone()];
        if args.digests {
            cells.push(repo_digest(r.image));
        }
        cells.push(render::id(r.image.id(), args.no_trunc));
        cells.push(render::ago(r.image.created()));
        cells.push(render::size(image_size(store, r.image)));
        t.row(cells);
    }
    t.print(out)?;
    Ok(0)
}

/// docker's `image inspect` object for an image.
/// The digest a registry knows the image by: what its tag resolved to when pulled (an index's
/// digest for a multi-platform image), else the manifest's.
fn repo_digest(img: &Image) -> String {
    img.descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(strata_registry::pull::REPO_DIGEST))
        .cloned()
        .unwrap_or_else(|| img.digest().to_string())
}

pub fn inspect_value(store: &Store, img: &Image) -> Value {
    let raw: Value = serde_json::from_slice(&img.config_raw).unwrap_or(Value::Null);
    let layers: Vec<String> = img.config.rootfs().diff_ids().clone();
    json!({
        "Id": img.id().to_string(),
        "RepoTags": img.tags.iter().filter(|t| t.tag().is_some()).map(|t| t.familiar()).collect::<Vec<_>>(),
        "RepoDigests": img.tags.iter().map(|t| format!("{}@{}", t.familiar_name(), repo_digest(img))).collect::<std::collections::BTreeSet<_>>(),
        "Parent": "",
        "Comment": img.config.history().as_ref().and_then(|h| h.last()).and_then(|h| h.comment().clone()).unwrap_or_default(),
        "Created": img.config.created().clone().unwrap_or_default(),
        "DockerVersion": raw.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": img.config.author().clone().unwrap_or_default(),
        "Config": raw.get("config").cloned().unwrap_or(json!({})),
        "Architecture": img.config.architecture().to_string(),
        "Variant": img.config.variant().clone(),
        "Os": img.config.os().to_string(),
        "Size": image_size(store, img),
        "RootFS": { "Type": "layers", "Layers": layers },
        "Metadata": { "LastTagTime": img.last_used.map(strata_store::time::format_rfc3339) },
        "Descriptor": {
            "mediaType": img.descriptor.media_type().to_string(),
            "digest": img.digest().to_string(),
            "size": img.descriptor.size(),
        },
    })
}

/// `image inspect` (`any_kind` false) or `inspect`, which finds containers too.
pub fn inspect(store: &Store, args: InspectArgs, any_kind: bool, out: &mut dyn Write) -> Outcome {
    if let Some(f) = &args.format {
        if f != "json" {
            bail!("unsupported --format {f:?}: strata prints JSON (pipe it to jq to pick fields)");
        }
    }
    let images = store.images()?;
    let mut values = Vec::new();
    let mut failed = false;
    for name in &args.images {
        match strata_store::image::find_image(&images, name) {
            Ok(img) => values.push(inspect_value(store, img)),
            Err(_) => {
                // `inspect` without a type also finds containers, as docker's does.
                #[cfg(feature = "runtime")]
                if any_kind {
                    if let Ok(c) = strata_run::container::Container::find(store, name) {
                        values.push(crate::cmd::container::inspect_value(store, &c));
                        continue;
                    }
                }
                eprintln!("Error: No such {}: {name}", if any_kind { "object" } else { "image" });
                failed = true;
            }
        }
    }
    serde_json::to_writer_pretty(&mut *out, &values)?;
    writeln!(out)?;
    Ok(if failed { 1 } else { 0 })
}

pub fn history(store: &Store, args: HistoryArgs, out: &mut dyn Write) -> Outcome {
    let img = store.resolve_image(&args.image)?;
    let diff_ids = img.diff_ids()?;
    let history = img.config.history().clone().unwrap_or_default();
    // Each non-empty history entry owns the next layer.
    let mut layer = 0usize;
    let mut rows = Vec::new();
    for h in &history {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            let s = diff_ids
                .get(layer)
                .map(|d| store.snapshot_summary(d).map(|s| s.content_bytes).unwrap_or(0))
                .unwrap_or(0);
            layer += 1;
            s
        };
        rows.push((h, size));
    }
    rows.reverse();
    if args.quiet {
        writeln!(out, "{}", render::id(img.id(), args.no_trunc))?;
        return Ok(0);
    }
    if args.format == Format::Json {
        for (i, (h, size)) in rows.iter().enumerate() {
            let v = json!({
                "ID": if i == 0 { render::id(img.id(), args.no_trunc) } else { "<missing>".into() },
                "CreatedAt": h.created(),
                "CreatedBy": h.created_by(),
                "Size": size,
                "Comment": h.comment(),
            });
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    for (i, (h, size)) in rows.iter().enumerate() {
        let by = h.created_by().clone().unwrap_or_default();
        let created = h.created().as_deref().and_then(strata_store::time::parse_rfc3339);
        t.row(vec![
            if i == 0 { render::id(img.id(), args.no_trunc) } else { "<missing>".into() },
            if args.human { render::ago(created) } else { h.created().clone().unwrap_or_default() },
            if args.no_trunc { by } else { render::ellipsis(&by, 45) },
            if args.human { render::size(*size) } else { size.to_string() },
            h.comment().clone().unwrap_or_default(),
        ]);
    }
    t.print(out)?;
    Ok(0)
}

pub fn tag(store: &Store, args: TagArgs) -> Outcome {
    let img = store.resolve_image(&args.source)?;
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference: {}", args.target);
    }
    store.tag(&target, &img.descriptor)?;
    Ok(0)
}

pub fn rmi(store: &Store, args: RmiArgs, out: &mut dyn Write) -> Outcome {
    let mut failed = false;
    for name in &args.images {
        match gc::remove_image(store, name, args.force) {
            Ok(rep) => {
                for t in &rep.untagged {
                    writeln!(out, "Untagged: {}", t.familiar())?;
                }
                for d in &rep.deleted {
                    writeln!(out, "Deleted: {d}")?;
                }
                for (d, _) in &rep.sweep.snapshots {
                    writeln!(out, "Deleted: {d}")?;
                }
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn globbing() {
        assert!(glob("busy*", "busybox"));
        assert!(!glob("*", "a/b"));
        assert!(glob("*/app", "me/app"));
        assert!(glob("1.*", "1.36"));
    }
}
