//! load, save, import.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use strata_store::archive::{self, SaveFormat, SaveItem};
use strata_store::import::{self, ImportOptions, ImportSource};
use strata_store::{Reference, Store};

use crate::args::{ArchiveFormat, ImportArgs, LoadArgs, SaveArgs};
use crate::Outcome;

pub fn load(store: &Store, args: LoadArgs, out: &mut dyn Write) -> Outcome {
    let report = match &args.input {
        Some(p) => archive::load(store, p).with_context(|| format!("cannot load {}", p.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal: use -i FILE or redirect an archive");
            }
            archive::load_reader(store, std::io::stdin().lock()).context("cannot load from stdin")?
        }
    };
    if !args.quiet {
        for img in &report.images {
            if img.tags.is_empty() {
                writeln!(out, "Loaded image ID: {}", img.id)?;
            }
            for t in &img.tags {
                writeln!(out, "Loaded image: {}", t.familiar())?;
            }
        }
    }
    Ok(0)
}

pub fn save(store: &Store, args: SaveArgs, out: &mut dyn Write) -> Outcome {
    let images = store.images()?;
    let mut items: Vec<SaveItem> = Vec::new();
    for name in &args.images {
        let img = strata_store::image::find_image(&images, name)?;
        // A name saves that tag; an ID saves the image with all its tags.
        let tags = match Reference::parse(name) {
            Ok(r) if img.tags.contains(&r) => vec![r],
            _ => img.tags.clone(),
        };
        match items.iter_mut().find(|i| i.image.digest() == img.digest()) {
            Some(existing) => {
                for t in tags {
                    if !existing.tags.contains(&t) {
                        existing.tags.push(t);
                    }
                }
            }
            None => items.push(SaveItem { image: img.clone(), tags }),
        }
    }
    let format = match args.format {
        ArchiveFormat::Docker => SaveFormat::DockerArchive,
        ArchiveFormat::Oci => SaveFormat::Oci,
    };
    match &args.output {
        Some(p) => archive::save_to_file(store, &items, format, p)
            .with_context(|| format!("cannot save to {}", p.display()))?,
        None => {
            if crate::cmd::stdout_is_tty() {
                bail!("cowardly refusing to save to a terminal: use the -o flag or redirect");
            }
            archive::save(store, &items, format, out)?;
            out.flush()?;
        }
    }
    Ok(0)
}

pub fn import(store: &Store, args: ImportArgs, out: &mut dyn Write) -> Outcome {
    let reference = args.reference.as_deref().map(Reference::parse).transpose()?;
    let source = if args.source == "-" {
        ImportSource::Reader(Box::new(std::io::stdin()))
    } else {
        let p = PathBuf::from(&args.source);
        let meta = std::fs::metadata(&p)
            .with_context(|| format!("cannot import {}: no such file or directory", p.display()))?;
        if meta.is_dir() {
            ImportSource::Dir(p)
        } else {
            ImportSource::Tarball(p)
        }
    };
    let opts = ImportOptions { changes: args.changes, message: args.message, platform: args.platform };
    let img = import::import(store, source, reference.as_ref(), &opts)?;
    writeln!(out, "{}", img.id())?;
    Ok(0)
}
