//! Disk usage, exact: every byte the store holds is a blob (its file size) or a snapshot (the
//! content bytes its file index recorded), and each is counted once. Per image, SHARED is what
//! other images reach too and UNIQUE what only it reaches, so SHARED + UNIQUE is the image's size
//! and the images' total counts each shared layer once.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::digest::Digest;
use crate::error::Result;
use crate::gc::{container_images, du};
use crate::image::Image;
use crate::store::{Store, CONTAINERS, VOLUMES};

/// Disk usage of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageUsage {
    /// Image ID.
    pub id: String,
    /// Manifest digest.
    pub digest: String,
    /// Tags, familiar form.
    pub tags: Vec<String>,
    /// Creation time (Unix seconds).
    pub created: Option<i64>,
    /// Last use (Unix seconds).
    pub last_used: Option<i64>,
    /// Bytes this image reaches (SHARED + UNIQUE).
    pub size: u64,
    /// Bytes other images reach too.
    pub shared: u64,
    /// Bytes only this image reaches.
    pub unique: u64,
    /// Containers using it.
    pub containers: usize,
}

/// Disk usage of one layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerUsage {
    /// The layer's diff ID (its snapshot).
    pub diff_id: String,
    /// The compressed blob(s) holding it.
    pub blobs: Vec<String>,
    /// Blob bytes.
    pub blob_bytes: u64,
    /// Unpacked bytes.
    pub snapshot_bytes: u64,
    /// IDs of the images that use it.
    pub images: Vec<String>,
}

/// One summary row (Images, Containers, Local Volumes, Unreferenced).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Row {
    /// How many.
    pub total: usize,
    /// How many in use.
    pub active: usize,
    /// Bytes.
    pub size: u64,
    /// Bytes a prune could free.
    pub reclaimable: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskUsage {
    /// Images row.
    pub images: Row,
    /// Containers row.
    pub containers: Row,
    /// Volumes row.
    pub volumes: Row,
    /// Blobs, snapshots and temp files nothing refers to (a GC frees them).
    pub unreferenced: Row,
    /// Per image (with `-v`).
    pub image_usage: Vec<ImageUsage>,
    /// Per layer (with `-v`).
    pub layer_usage: Vec<LayerUsage>,
    /// Per volume: name and bytes.
    pub volume_usage: Vec<(String, u64)>,
    /// Per container: id and bytes of its writable layer.
    pub container_usage: Vec<(String, u64)>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Item {
    Blob(String),
    Snap(String),
}

impl Store {
    /// Computes disk usage from blob sizes and snapshot indexes.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let images = self.images()?;
        let blob_sizes: HashMap<String, u64> =
            self.list_blobs()?.into_iter().map(|(d, s)| (d.to_string(), s)).collect();
        let snapshots: Vec<Digest> = self.list_snapshots()?;
        let mut snap_sizes: HashMap<String, u64> = HashMap::new();
        for d in &snapshots {
            let size = self
                .snapshot_summary(d)
                .map(|s| s.content_bytes)
                .unwrap_or_else(|_| self.snapshot_path(d).map(|p| du(&p)).unwrap_or(0));
            snap_sizes.insert(d.to_string(), size);
        }
        let size_of = |it: &Item| match it {
            Item::Blob(d) => blob_sizes.get(d).copied().unwrap_or(0),
            Item::Snap(d) => snap_sizes.get(d).copied().unwrap_or(0),
        };
        let used = container_images(self);
        // Items per image.
        let mut items: Vec<HashSet<Item>> = Vec::with_capacity(images.len());
        let mut users: HashMap<Item, usize> = HashMap::new();
        for img in &images {
            let set = image_items(img);
            for it in &set {
                *users.entry(it.clone()).or_default() += 1;
            }
            items.push(set);
        }
        let mut du_ = DiskUsage::default();
        let mut all: HashSet<&Item> = HashSet::new();
        let mut active_items: HashSet<&Item> = HashSet::new();
        for (img, set) in images.iter().zip(&items) {
            let (mut shared, mut unique) = (0, 0);
            for it in set {
                let s = size_of(it);
                if users[it] > 1 {
                    shared += s;
                } else {
                    unique += s;
                }
                all.insert(it);
            }
            let containers = used.iter().filter(|d| *d == img.digest()).count();
            if containers > 0 {
                active_items.extend(set.iter());
            }
            du_.image_usage.push(ImageUsage {
                id: img.id().to_string(),
                digest: img.digest().to_string(),
                tags: img.tags.iter().map(|t| t.familiar()).collect(),
                created: img.created(),
                last_used: img.last_used,
                size: shared + unique,
                shared,
                unique,
                containers,
            });
        }
        let total: u64 = all.iter().map(|it| size_of(it)).sum();
        let active: u64 = active_items.iter().map(|it| size_of(it)).sum();
        du_.images = Row {
            total: images.len(),
            active: du_.image_usage.iter().filter(|u| u.containers > 0).count(),
            size: total,
            reclaimable: total - active,
        };
        // Layers.
        let mut layers: BTreeMap<String, LayerUsage> = BTreeMap::new();
        for img in &images {
            let ids = img.config.rootfs().diff_ids();
            for (i, l) in img.manifest.layers().iter().enumerate() {
                let Some(diff) = ids.get(i) else { continue };
                let e = layers.entry(diff.clone()).or_insert_with(|| LayerUsage {
                    diff_id: diff.clone(),
                    blobs: Vec::new(),
                    blob_bytes: 0,
                    snapshot_bytes: snap_sizes.get(diff).copied().unwrap_or(0),
                    images: Vec::new(),
                });
                let b = l.digest().to_string();
                if !e.blobs.contains(&b) {
                    e.blob_bytes += blob_sizes.get(&b).copied().unwrap_or(0);
                    e.blobs.push(b);
                }
                let id = img.id().to_string();
                if !e.images.contains(&id) {
                    e.images.push(id);
                }
            }
        }
        du_.layer_usage = layers.into_values().collect();
        // Unreferenced content.
        let mut unref = Row::default();
        for (d, s) in &blob_sizes {
            if !all.contains(&Item::Blob(d.clone())) {
                unref.total += 1;
                unref.size += s;
            }
        }
        for (d, s) in &snap_sizes {
            if !all.contains(&Item::Snap(d.clone())) {
                unref.total += 1;
                unref.size += s;
            }
        }
        for (p, _) in self.stale_tmp()? {
            unref.total += 1;
            unref.size += du(&p);
        }
        unref.reclaimable = unref.size;
        du_.unreferenced = unref;
        // Containers and volumes: their directories, walked.
        for (dir, row, list) in [
            (CONTAINERS, &mut du_.containers, &mut du_.container_usage),
            (VOLUMES, &mut du_.volumes, &mut du_.volume_usage),
        ] {
            if let Ok(rd) = std::fs::read_dir(self.path(dir)) {
                for e in rd.filter_map(|e| e.ok()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let size = du(&e.path());
                    row.total += 1;
                    row.size += size;
                    list.push((name, size));
                }
            }
            list.sort();
        }
        du_.containers.reclaimable = du_.containers.size;
        du_.volumes.reclaimable = du_.volumes.size;
        Ok(du_)
    }
}

fn image_items(img: &Image) -> HashSet<Item> {
    let mut set = HashSet::new();
    set.insert(Item::Blob(img.digest().to_string()));
    set.insert(Item::Blob(img.id().to_string()));
    for l in img.manifest.layers() {
        set.insert(Item::Blob(l.digest().to_string()));
    }
    for d in img.config.rootfs().diff_ids() {
        set.insert(Item::Snap(d.clone()));
    }
    set
}
