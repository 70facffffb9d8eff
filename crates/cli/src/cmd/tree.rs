//! `image tree`: images drawn as a tree of their shared base layers, so that one sees at a glance
//! which images share which base and what each adds on top of it.

use std::io::Write;

use serde_json::{json, Value};
use strata_store::{Image, Store};

use crate::args::Format;
use crate::render;
use crate::Outcome;

/// A run of layers shared by every image below it.
#[derive(Default)]
struct Node {
    layers: Vec<String>,
    bytes: u64,
    images: Vec<String>,
    children: Vec<Node>,
}

fn insert(node: &mut Node, layers: &[(String, u64)], label: String) {
    if layers.is_empty() {
        node.images.push(label);
        return;
    }
    if let Some(child) = node.children.iter_mut().find(|c| c.layers.first() == Some(&layers[0].0)) {
        // Walk the shared prefix of the child's run; split the run where the image leaves it.
        let common = child.layers.iter().zip(layers).take_while(|(a, b)| **a == b.0).count();
        if common < child.layers.len() {
            let tail = Node {
                layers: child.layers.split_off(common),
                bytes: 0,
                images: std::mem::take(&mut child.images),
                children: std::mem::take(&mut child.children),
            };
            child.children.push(tail);
        }
        insert(child, &layers[common..], label);
        return;
    }
    node.children.push(Node {
        layers: layers.iter().map(|l| l.0.clone()).collect(),
        bytes: 0,
        images: vec![label],
        children: Vec::new(),
    });
}

fn fix_sizes(node: &mut Node, sizes: &std::collections::HashMap<String, u64>) {
    node.bytes = node.layers.iter().map(|l| sizes.get(l).copied().unwrap_or(0)).sum();
    node.children.sort_by(|a, b| a.layers.first().cmp(&b.layers.first()));
    for c in &mut node.children {
        fix_sizes(c, sizes);
    }
}

fn label(img: &Image) -> String {
    let id: String = img.id().digest().chars().take(12).collect();
    if img.tags.is_empty() {
        format!("<none>:<none> ({id})")
    } else {
        format!("{} ({id})", img.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>().join(", "))
    }
}

fn draw(node: &Node, prefix: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let mut items: Vec<Result<&String, &Node>> = node.images.iter().map(Ok).collect();
    items.extend(node.children.iter().map(Err));
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        let (branch, cont) = if last { ("└── ", "    ") } else { ("├── ", "│   ") };
        match item {
            Ok(img) => writeln!(out, "{prefix}{branch}{img}")?,
            Err(child) => {
                let first: String = child.layers[0].trim_start_matches("sha256:").chars().take(12).collect();
                let n = child.layers.len();
                writeln!(
                    out,
                    "{prefix}{branch}{} {} +{}",
                    if n == 1 { "layer".to_string() } else { format!("{n} layers") },
                    first,
                    render::size(child.bytes)
                )?;
                draw(child, &format!("{prefix}{cont}"), out)?;
            }
        }
    }
    Ok(())
}

fn to_json(node: &Node) -> Value {
    json!({
        "layers": node.layers,
        "size": node.bytes,
        "images": node.images,
        "children": node.children.iter().map(to_json).collect::<Vec<_>>(),
    })
}

pub fn tree(store: &Store, format: Format, out: &mut dyn Write) -> Outcome {
    let images = store.images()?;
    let mut root = Node::default();
    let mut sizes = std::collections::HashMap::new();
    for img in &images {
        let ids = img.diff_ids()?;
        let layers: Vec<(String, u64)> = ids
            .iter()
            .map(|d| {
                let s = store.snapshot_summary(d).map(|s| s.content_bytes).unwrap_or(0);
                sizes.insert(d.to_string(), s);
                (d.to_string(), s)
            })
            .collect();
        insert(&mut root, &layers, label(img));
    }
    fix_sizes(&mut root, &sizes);
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, &to_json(&root))?;
        writeln!(out)?;
        return Ok(0);
    }
    if images.is_empty() {
        return Ok(0);
    }
    writeln!(out, "<scratch>")?;
    draw(&root, "", out)?;
    Ok(0)
}
