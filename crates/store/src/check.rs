//! `system check`: verifies every blob's digest, every reference (manifest, config, layers,
//! snapshots) and every snapshot index, and with `repair` removes what is broken — a corrupt blob
//! is deleted, a reference whose content is gone is dropped, a missing or corrupt snapshot is
//! unpacked again from its layer blob when that blob is sound.
//!
//! Unreferenced blobs and stale temp files are what an interrupted operation leaves; they are
//! reported as notes, not problems (GC removes them).

use std::collections::HashSet;
use std::time::Duration;

use rayon::prelude::*;

use crate::digest::{self, Digest};
use crate::error::Result;
use crate::fileindex::FileIndex;
use crate::image::Image;
use crate::refs::ref_name;
use crate::snapshot::{FS_DIR, INDEX_FILE};
use crate::store::Store;

/// One finding.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// What it is about: a digest, a reference, a path.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// What repair did, if it ran.
    pub repaired: Option<String>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Blobs verified.
    pub blobs: usize,
    /// References verified.
    pub references: usize,
    /// Snapshots verified.
    pub snapshots: usize,
    /// What is wrong.
    pub problems: Vec<Problem>,
    /// Things that are not wrong but worth knowing (garbage a GC removes).
    pub notes: Vec<String>,
}

impl CheckReport {
    /// Sound: nothing wrong, or everything wrong was repaired.
    pub fn sound(&self) -> bool {
        self.problems.iter().all(|p| p.repaired.is_some())
    }
}

impl Store {
    /// Checks the store; with `repair`, fixes what it can.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let lock = self.lock()?;
        let mut report = CheckReport::default();
        // 1. Blobs: each hashes to its name.
        let blobs = self.list_blobs()?;
        report.blobs = blobs.len();
        let bad: Vec<(Digest, String)> = blobs
            .par_iter()
            .filter_map(|(d, _)| match self.blob(d) {
                Ok(b) => {
                    let got = digest::sha256(&b);
                    (got != *d).then(|| (d.clone(), format!("content hashes to {got}")))
                }
                Err(e) => Some((d.clone(), format!("unreadable: {e}"))),
            })
            .collect();
        let bad_set: HashSet<Digest> = bad.iter().map(|b| b.0.clone()).collect();
        for (d, why) in bad {
            let repaired = if repair {
                self.delete_blob(&d)?;
                Some("deleted".to_string())
            } else {
                None
            };
            report.problems.push(Problem {
                subject: format!("blob {d}"),
                problem: format!("corrupt blob: {why}"),
                repaired,
            });
        }
        // 2. References: manifest, config, layers and snapshots present and sound.
        let manifests = self.read_index()?.manifests().clone();
        report.references = manifests.len();
        let mut keep = Vec::with_capacity(manifests.len());
        let mut changed = false;
        let mut needed_snapshots: HashSet<Digest> = HashSet::new();
        for desc in &manifests {
            let subject = match ref_name(desc) {
                Some(n) => format!("reference {n}"),
                None => format!("image {}", desc.digest()),
            };
            let problem = match self.check_image(desc, &bad_set) {
                Ok(img) => {
                    let mut missing = None;
                    for d in img.diff_ids().unwrap_or_default() {
                        needed_snapshots.insert(d.clone());
                        if !self.has_snapshot(&d) {
                            missing = Some(d);
                        }
                    }
                    match missing {
                        Some(d) if repair => {
                            // Re-unpack what is missing from the (sound) layer blobs.
                            let lease = self.lease(Duration::from_secs(86400))?;
                            match self.unpack_image(&img, &lease) {
                                Ok(_) => {
                                    report.problems.push(Problem {
                                        subject: subject.clone(),
                                        problem: format!("snapshot of layer {d} is missing"),
                                        repaired: Some("unpacked again from its layer blob".into()),
                                    });
                                    None
                                }
                                Err(e) => {
                                    Some(format!("snapshot of layer {d} is missing and cannot be unpacked again: {e}"))
                                }
                            }
                        }
                        Some(d) => Some(format!("snapshot of layer {d} is missing")),
                        None => None,
                    }
                }
                Err(e) => Some(e.to_string()),
            };
            match problem {
                None => keep.push(desc.clone()),
                Some(p) => {
                    let repaired = if repair {
                        changed = true;
                        Some("reference removed".to_string())
                    } else {
                        keep.push(desc.clone());
                        None
                    };
                    report.problems.push(Problem { subject, problem: p, repaired });
                }
            }
        }
        if repair && changed {
            self.write_index(&lock, keep)?;
        }
        // 3. Snapshots: complete, index parses, recorded diff ID is the folder's.
        let snaps = self.list_snapshots()?;
        report.snapshots = snaps.len();
        for d in snaps {
            let dir = self.snapshot_path(&d)?;
            let problem = if !dir.join(FS_DIR).is_dir() {
                Some("no fs/ directory".to_string())
            } else {
                match FileIndex::read(&dir.join(INDEX_FILE)) {
                    Ok(idx) if idx.diff_id != d => Some(format!("its index records diff ID {}", idx.diff_id)),
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                }
            };
            if let Some(p) = problem {
                let repaired = if repair {
                    self.delete_snapshot(&d)?;
                    Some(
                        "deleted (load or pull the image again, or rerun check --repair to unpack it from its blob)"
                            .into(),
                    )
                } else {
                    None
                };
                report.problems.push(Problem { subject: format!("snapshot {d}"), problem: p, repaired });
            }
        }
        // Notes: garbage.
        let stale = self.stale_tmp()?;
        if !stale.is_empty() {
            report.notes.push(format!(
                "{} temporary entries left by interrupted operations (`strata system prune` removes them)",
                stale.len()
            ));
        }
        drop(lock);
        Ok(report)
    }

    fn check_image(&self, desc: &oci_spec::image::Descriptor, bad: &HashSet<Digest>) -> Result<Image> {
        use crate::error::Error;
        if bad.contains(desc.digest()) {
            return Err(Error::invalid_content(format!("manifest blob {} is corrupt", desc.digest())));
        }
        let size = self
            .blob_size(desc.digest())
            .map_err(|_| Error::not_found(format!("manifest blob {} is missing", desc.digest())))?;
        if size != desc.size() {
            return Err(Error::invalid_content(format!(
                "manifest blob {} has {size} bytes, the index says {}",
                desc.digest(),
                desc.size()
            )));
        }
        let img = self.load_image(desc)?;
        if bad.contains(img.id()) {
            return Err(Error::invalid_content(format!("config blob {} is corrupt", img.id())));
        }
        for l in img.manifest.layers() {
            if bad.contains(l.digest()) {
                return Err(Error::invalid_content(format!("layer blob {} is corrupt", l.digest())));
            }
            match self.blob_size(l.digest()) {
                Ok(s) if s == l.size() => {}
                Ok(s) => {
                    return Err(Error::invalid_content(format!(
                        "layer blob {} has {s} bytes, the manifest says {}",
                        l.digest(),
                        l.size()
                    )))
                }
                Err(_) => return Err(Error::not_found(format!("layer blob {} is missing", l.digest()))),
            }
        }
        if img.diff_ids()?.len() != img.manifest.layers().len() {
            return Err(Error::invalid_content("the manifest and the config list different numbers of layers"));
        }
        Ok(img)
    }
}
