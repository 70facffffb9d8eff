//! References: `index.json` at the root holds one manifest descriptor per tag, annotated with
//! the full normalised reference (`org.opencontainers.image.ref.name`), so that `skopeo copy
//! oci:$ROOT:docker.io/library/busybox:latest …` finds it. Images whose last tag moved away stay as
//! one descriptor without a name (docker's dangling `<none>` images) until pruned.
//!
//! The file is only ever rewritten whole, atomically, under the store lock, so several `strata`
//! processes can tag, load and prune at once.

use std::collections::HashMap;
use std::fs;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::reference::Reference;
use crate::store::{now_unix, Store, StoreLock};

/// The OCI annotation that names a tagged descriptor.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Our annotation: when the image was last pulled, loaded, run or committed (Unix seconds).
pub const LAST_USED: &str = "io.strata.last-used";

impl Store {
    /// Reads `index.json`.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let p = self.path("index.json");
        let bytes = fs::read(&p).at("cannot read", &p)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid_content(format!("{} is corrupt (run `strata system check --repair`)", p.display()))
                .with_source(e)
        })
    }

    /// Rewrites `index.json` atomically; the caller holds the lock.
    pub fn write_index(&self, _lock: &StoreLock, manifests: Vec<Descriptor>) -> Result<()> {
        let index: ImageIndex = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .expect("index builds");
        // Canonical (sorted keys): annotations live in hash maps, and the file should not churn.
        let bytes = crate::archive::canonical_json(&index)?;
        fsutil::write_atomic(&self.path("index.json"), &bytes, 0o644)
    }

    /// Runs `f` on the list of descriptors under the lock and writes the result back.
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut Vec<Descriptor>) -> Result<T>) -> Result<T> {
        let lock = self.lock()?;
        let mut manifests = self.read_index()?.manifests().clone();
        let before = manifests.clone();
        let out = f(&mut manifests)?;
        if manifests != before {
            self.write_index(&lock, manifests)?;
        }
        Ok(out)
    }

    /// Points `reference` at `manifest` (a manifest descriptor) and marks the image used now.
    /// The image the tag pointed at before is kept as dangling if nothing else names it.
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let name = reference.to_string();
        let now = now_unix();
        self.update_refs(|list| {
            set_tag(list, &name, manifest, now);
            Ok(())
        })
    }

    /// Removes tag `reference`; returns the manifest digest it named. The image itself stays
    /// only if another tag names it (callers GC afterwards).
    pub fn untag(&self, reference: &Reference) -> Result<Digest> {
        let name = reference.to_string();
        self.update_refs(|list| {
            let i = list
                .iter()
                .position(|d| ref_name(d) == Some(name.as_str()))
                .ok_or_else(|| Error::not_found(format!("no such image: {}", reference.familiar())))?;
            Ok(list.remove(i).digest().clone())
        })
    }

    /// Records that the image with manifest `digest` was used now.
    pub fn touch(&self, digest: &Digest) -> Result<()> {
        let now = now_unix().to_string();
        self.update_refs(|list| {
            for d in list.iter_mut().filter(|d| d.digest() == digest) {
                annotate(d, LAST_USED, &now);
            }
            Ok(())
        })
    }
}

/// Sets `name` on `manifest` in `list`; used by [`Store::tag`] and by loads that tag many at once.
pub(crate) fn set_tag(list: &mut Vec<Descriptor>, name: &str, manifest: &Descriptor, now: i64) {
    let mut desc = manifest.clone();
    let mut ann: HashMap<String, String> = desc.annotations().clone().unwrap_or_default();
    ann.retain(|k, _| k != REF_NAME && k != LAST_USED);
    ann.insert(REF_NAME.to_string(), name.to_string());
    ann.insert(LAST_USED.to_string(), now.to_string());
    desc.set_annotations(Some(ann));
    // The descriptor this name pointed at before, if any.
    let old = list.iter().position(|d| ref_name(d) == Some(name));
    let old_desc = old.map(|i| list[i].clone());
    match old {
        Some(i) => list[i] = desc.clone(),
        None => list.push(desc.clone()),
    }
    // A dangling entry for the new image is no longer needed.
    list.retain(|d| !(ref_name(d).is_none() && d.digest() == manifest.digest()));
    if let Some(mut old) = old_desc {
        if old.digest() != manifest.digest() && !list.iter().any(|d| d.digest() == old.digest()) {
            // The image this name pointed at keeps its last-used time but no name: dangling.
            let used = last_used(&old);
            old.set_annotations(None);
            if let Some(t) = used {
                annotate(&mut old, LAST_USED, &t.to_string());
            }
            list.push(old);
        }
    }
    // Keep the last-used time the same on every descriptor of this image.
    for d in list.iter_mut().filter(|d| d.digest() == manifest.digest()) {
        annotate(d, LAST_USED, &now.to_string());
    }
}

/// Sets one annotation on a descriptor.
pub(crate) fn annotate(d: &mut Descriptor, key: &str, value: &str) {
    let mut ann = d.annotations().clone().unwrap_or_default();
    ann.insert(key.to_string(), value.to_string());
    d.set_annotations(Some(ann));
}

/// The reference name a descriptor carries, if any.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(|s| s.as_str())
}

/// The last-used time a descriptor carries, if any.
pub fn last_used(d: &Descriptor) -> Option<i64> {
    d.annotations().as_ref()?.get(LAST_USED)?.parse().ok()
}
