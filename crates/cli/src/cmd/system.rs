//! system df, image prune, system prune, system check.

use std::io::Write;

use anyhow::{bail, Context};
use strata_store::gc::{PrunePolicy, PruneReport};
use strata_store::Store;

use crate::args::{CheckArgs, DfArgs, Format, ImagePruneArgs, PruneFilterArgs, SystemPruneArgs};
use crate::render::{self, Table};
use crate::Outcome;

fn pct(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "0%".into(),
    }
}

pub fn df(store: &Store, args: DfArgs, out: &mut dyn Write) -> Outcome {
    let du = store.disk_usage()?;
    if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, &du)?;
        writeln!(out)?;
        return Ok(0);
    }
    if !args.verbose {
        let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
        for (name, r) in [
            ("Images", &du.images),
            ("Containers", &du.containers),
            ("Local Volumes", &du.volumes),
            ("Unreferenced", &du.unreferenced),
        ] {
            t.row(vec![
                name.into(),
                r.total.to_string(),
                r.active.to_string(),
                render::size(r.size),
                format!("{} ({})", render::size(r.reclaimable), pct(r.reclaimable, r.size)),
            ]);
        }
        t.print(out)?;
        return Ok(0);
    }
    writeln!(out, "Images space usage:\n")?;
    let mut t = Table::new(&[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "LAST USED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ]);
    for u in &du.image_usage {
        let names: Vec<(String, String)> = if u.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            u.tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            t.row(vec![
                repo,
                tag,
                u.id.trim_start_matches("sha256:").chars().take(12).collect(),
                render::ago(u.created),
                render::ago(u.last_used),
                render::size(u.size),
                render::size(u.shared),
                render::size(u.unique),
                u.containers.to_string(),
            ]);
        }
    }
    t.print(out)?;
    writeln!(
        out,
        "\nTotal: {} in {} images (shared layers counted once)",
        render::size(du.images.size),
        du.images.total
    )?;
    writeln!(out, "\nLayers space usage:\n")?;
    let mut t = Table::new(&["LAYER", "COMPRESSED", "UNPACKED", "IMAGES"]);
    for l in &du.layer_usage {
        let names: Vec<String> = l
            .images
            .iter()
            .map(|id| {
                du.image_usage
                    .iter()
                    .find(|u| &u.id == id)
                    .and_then(|u| u.tags.first().cloned())
                    .unwrap_or_else(|| id.trim_start_matches("sha256:").chars().take(12).collect())
            })
            .collect();
        t.row(vec![
            l.diff_id.trim_start_matches("sha256:").chars().take(12).collect(),
            render::size(l.blob_bytes),
            render::size(l.snapshot_bytes),
            names.join(", "),
        ]);
    }
    t.print(out)?;
    writeln!(out, "\nContainers space usage:\n")?;
    let mut t = Table::new(&["CONTAINER ID", "SIZE"]);
    for (id, s) in &du.container_usage {
        t.row(vec![id.chars().take(12).collect(), render::size(*s)]);
    }
    t.print(out)?;
    writeln!(out, "\nLocal Volumes space usage:\n")?;
    let mut t = Table::new(&["VOLUME NAME", "SIZE"]);
    for (name, s) in &du.volume_usage {
        t.row(vec![name.clone(), render::size(*s)]);
    }
    t.print(out)?;
    if du.unreferenced.total > 0 {
        writeln!(
            out,
            "\nUnreferenced: {} items, {} (a prune frees them)",
            du.unreferenced.total,
            render::size(du.unreferenced.size)
        )?;
    }
    Ok(0)
}

fn policy(a: &PruneFilterArgs) -> anyhow::Result<PrunePolicy> {
    let mut p = PrunePolicy { all: a.all, ..Default::default() };
    for f in &a.filters {
        let (k, v) = f.split_once('=').with_context(|| format!("invalid filter {f:?}: expected until=DURATION"))?;
        match k {
            "until" => {
                let secs = match strata_store::time::parse_duration(v) {
                    Some(s) => s,
                    None => match strata_store::time::parse_rfc3339(v).or_else(|| v.parse::<i64>().ok()) {
                        Some(t) => render::now() - t,
                        None => bail!(
                            "invalid filter 'until={v}': use a duration (24h, 7d), an RFC 3339 time or Unix seconds"
                        ),
                    },
                };
                p.created_before = Some(secs);
            }
            _ => bail!("invalid filter {k:?}: prune supports until=DURATION (see also --unused-for)"),
        }
    }
    if let Some(d) = &a.unused_for {
        p.unused_for = Some(
            strata_store::time::parse_duration(d)
                .with_context(|| format!("invalid --unused-for {d:?}: use a duration like 72h or 14d"))?,
        );
    }
    if let Some(s) = &a.keep_bytes {
        p.keep_bytes = Some(
            render::parse_size(s)
                .with_context(|| format!("invalid --keep-bytes {s:?}: use a size like 10GB or 500MiB"))?,
        );
    }
    Ok(p)
}

fn print_prune(report: &PruneReport, dry_run: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if !report.images.is_empty() {
        writeln!(out, "{}", if dry_run { "Would remove images:" } else { "Deleted Images:" })?;
        for i in &report.images {
            for t in &i.tags {
                writeln!(out, "untagged: {t}")?;
            }
            writeln!(out, "deleted: {}", i.id)?;
        }
        writeln!(out)?;
    }
    if dry_run && (!report.sweep.blobs.is_empty() || !report.sweep.snapshots.is_empty()) {
        writeln!(
            out,
            "Would free: {} blobs, {} snapshots, {} temp entries",
            report.sweep.blobs.len(),
            report.sweep.snapshots.len(),
            report.sweep.tmp_entries
        )?;
    }
    writeln!(
        out,
        "Total {} space: {}",
        if dry_run { "reclaimable" } else { "reclaimed" },
        render::size(report.sweep.bytes())
    )
}

pub fn image_prune(store: &Store, args: ImagePruneArgs, out: &mut dyn Write) -> Outcome {
    let a = &args.common;
    let p = policy(a)?;
    if !a.force && !a.dry_run {
        let what = if p.all || p.keep_bytes.is_some() {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        if !crate::cmd::confirm(&format!("WARNING! This will remove {what}.\nAre you sure you want to continue?")) {
            return Ok(0);
        }
    }
    let report = store.prune(&p, a.dry_run)?;
    print_prune(&report, a.dry_run, out)?;
    Ok(0)
}

pub fn system_prune(store: &Store, args: SystemPruneArgs, out: &mut dyn Write) -> Outcome {
    let a = &args.common;
    let p = policy(a)?;
    if !a.force && !a.dry_run {
        let mut msg = String::from("WARNING! This will remove:\n  - all stopped containers\n");
        if args.volumes {
            msg.push_str("  - all volumes not used by at least one container\n");
        }
        msg.push_str(if p.all {
            "  - all images without at least one container associated to them\n"
        } else {
            "  - all dangling images\n"
        });
        msg.push_str("  - all temporary files left by interrupted operations\n\nAre you sure you want to continue?");
        if !crate::cmd::confirm(&msg) {
            return Ok(0);
        }
    }
    let mut freed = 0u64;
    if args.volumes {
        let vols = store.prune_volumes(a.dry_run)?;
        if !vols.is_empty() {
            writeln!(out, "{}", if a.dry_run { "Would remove volumes:" } else { "Deleted Volumes:" })?;
            for (name, size) in &vols {
                writeln!(out, "{name}")?;
                freed += size;
            }
            writeln!(out)?;
        }
    }
    let report = store.prune(&p, a.dry_run)?;
    if !report.images.is_empty() {
        writeln!(out, "{}", if a.dry_run { "Would remove images:" } else { "Deleted Images:" })?;
        for i in &report.images {
            for t in &i.tags {
                writeln!(out, "untagged: {t}")?;
            }
            writeln!(out, "deleted: {}", i.id)?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total {} space: {}",
        if a.dry_run { "reclaimable" } else { "reclaimed" },
        render::size(report.sweep.bytes() + freed)
    )?;
    Ok(0)
}

pub fn check(store: &Store, args: CheckArgs, out: &mut dyn Write) -> Outcome {
    let report = store.check(args.repair)?;
    if args.format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        for p in &report.problems {
            match &p.repaired {
                Some(r) => writeln!(out, "{}: {} (repaired: {r})", p.subject, p.problem)?,
                None => writeln!(out, "{}: {}", p.subject, p.problem)?,
            }
        }
        for n in &report.notes {
            writeln!(out, "note: {n}")?;
        }
        let open = report.problems.iter().filter(|p| p.repaired.is_none()).count();
        writeln!(
            out,
            "checked {} blobs, {} references, {} snapshots: {}",
            report.blobs,
            report.references,
            report.snapshots,
            if report.problems.is_empty() {
                "sound".to_string()
            } else if open == 0 {
                format!("{} problems repaired", report.problems.len())
            } else {
                format!("{open} problems (run `strata system check --repair` to remove what is broken)")
            }
        )?;
    }
    Ok(if report.sound() { 0 } else { 1 })
}
