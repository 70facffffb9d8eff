//! Named volumes: `volumes/<name>/_data` in the store (docker's layout), with a `meta.json`.
//! Containers list the volumes they use in their record (`volumes`), which keeps them from
//! `volume rm` and `volume prune`. A new, empty volume mounted over a directory the image has
//! content in is first filled from it, as docker does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_store::unpack::{self, Format};
use strata_store::Store;

use crate::container::{check_name, Container};
use crate::error::{Error, ErrorKind, Result};

/// A volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// When it was made (RFC 3339).
    #[serde(rename = "CreatedAt")]
    pub created: String,
    /// Where its data is.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    /// Always `local`.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Labels; an anonymous volume (made for `-v /path`, docker's way) has [`ANONYMOUS`].
    #[serde(rename = "Labels", default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The label of anonymous volumes (docker's), which `rm -v` and `run --rm` remove with their
/// container.
pub const ANONYMOUS: &str = "com.docker.volume.anonymous";

impl Volume {
    /// Whether it was made anonymous, for one container.
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS)
    }
}

fn volumes_dir(store: &Store) -> PathBuf {
    store.root().join("volumes")
}

/// Creates volume `name` (a random one when `None`); an existing one is returned as it is.
pub fn create(store: &Store, name: Option<&str>) -> Result<Volume> {
    make(store, name, false)
}

/// Creates an anonymous volume (random name, [`ANONYMOUS`] label) for one container.
pub fn create_anonymous(store: &Store) -> Result<Volume> {
    make(store, None, true)
}

fn make(store: &Store, name: Option<&str>, anonymous: bool) -> Result<Volume> {
    let name = match name {
        Some(n) => {
            check_name(n).map_err(|_| {
                Error::invalid(format!("invalid volume name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"))
            })?;
            n.to_string()
        }
        None => crate::container::new_id()?,
    };
    let dir = volumes_dir(store).join(&name);
    if let Ok(v) = inspect(store, &name) {
        return Ok(v);
    }
    let data = dir.join("_data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io("create", &data, e))?;
    let v = Volume {
        name: name.clone(),
        created: strata_store::time::format_rfc3339(strata_store::store::now_unix()),
        mountpoint: data,
        driver: "local".into(),
        labels: if anonymous { [(ANONYMOUS.to_string(), String::new())].into() } else { Default::default() },
    };
    let bytes = serde_json::to_vec_pretty(&v).expect("a volume serialises");
    strata_store::fsutil::write_atomic(&dir.join("meta.json"), &bytes, 0o644)?;
    Ok(v)
}

/// Volume `name`.
pub fn inspect(store: &Store, name: &str) -> Result<Volume> {
    let p = volumes_dir(store).join(name).join("meta.json");
    let bytes =
        std::fs::read(&p).map_err(|_| Error::new(ErrorKind::NotFound, format!("get {name}: no such volume")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{} is not a volume record", p.display())).with_source(e))
}

/// Every volume, by name.
pub fn list(store: &Store) -> Result<Vec<Volume>> {
    let dir = volumes_dir(store);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if let Ok(v) = inspect(store, &e.file_name().to_string_lossy()) {
                out.push(v);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The containers (any state) that use volume `name`.
pub fn users(store: &Store, name: &str) -> Result<Vec<Container>> {
    Ok(Container::list(store)?.into_iter().filter(|c| c.volumes.iter().any(|v| v == name)).collect())
}

/// Removes volume `name`; one a container uses is refused (with or without `force`, as docker).
pub fn remove(store: &Store, name: &str) -> Result<()> {
    inspect(store, name)?;
    let users = users(store, name)?;
    if !users.is_empty() {
        let ids: Vec<&str> = users.iter().map(|c| c.id.as_str()).collect();
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!("remove {name}: volume is in use - [{}]", ids.join(", ")),
        ));
    }
    let dir = volumes_dir(store).join(name);
    strata_store::fsutil::remove_tree(&dir)?;
    Ok(())
}

/// Removes the anonymous volumes container `c` used that no other container uses (`rm -v`,
/// and `run --rm`, as docker); returns their names.
pub fn remove_anonymous(store: &Store, c: &Container) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    let others: Vec<Container> = Container::list(store)?.into_iter().filter(|o| o.id != c.id).collect();
    for name in &c.volumes {
        let Ok(v) = inspect(store, name) else { continue };
        if !v.anonymous() || others.iter().any(|o| o.volumes.contains(name)) {
            continue;
        }
        strata_store::fsutil::remove_tree(&volumes_dir(store).join(name))?;
        gone.push(name.clone());
    }
    Ok(gone)
}

/// Fills the empty volume at `data` from `target` in the container's rootfs (docker copies an
/// image's content into a new volume the first time it is mounted over it).
pub fn fill(rootfs: &Path, target: &str, data: &Path) -> Result<()> {
    let empty = std::fs::read_dir(data).map_err(|e| Error::io("read", data, e))?.next().is_none();
    if !empty {
        return Ok(());
    }
    let Ok(src) = crate::copy::resolve(rootfs, target, true) else { return Ok(()) };
    if !std::fs::symlink_metadata(&src).map(|m| m.is_dir()).unwrap_or(false) {
        return Ok(());
    }
    let mut tarball = Vec::new();
    strata_store::import::tar_dir(&src, &mut tarball)?;
    unpack::unpack_layer(&tarball, data, Format::Plain, &format!("the image's {target}"))?;
    Ok(())
}
