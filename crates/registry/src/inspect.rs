//! Registry inspection without pulling: manifests, tags of a repository, the catalog.

use oci_spec::image::ImageIndex;
use strata_store::image::{is_index, select_platform};
use strata_store::Reference;

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{manifest_ref, Fetched};
use crate::transport::{read_capped, Scope};
use crate::Client;

/// Pages of a list larger than this many entries are refused (a runaway registry).
const MAX_ENTRIES: usize = 1_000_000;

/// Entries asked for per page (`STRATA_LIST_PAGE_SIZE` overrides, for tests of pagination).
fn page_size() -> usize {
    std::env::var("STRATA_LIST_PAGE_SIZE").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(1000)
}

/// The next page's URL from a `Link: <url>; rel="next"` header.
fn next_link(h: &reqwest::header::HeaderMap, base: &str) -> Option<String> {
    let v = h.get("link")?.to_str().ok()?;
    for part in v.split(',') {
        let (url, params) = part.split_once(';')?;
        if params.contains("rel=\"next\"") || params.contains("rel=next") {
            let url = url.trim().trim_start_matches('<').trim_end_matches('>');
            return Some(if url.starts_with("http") { url.to_string() } else { format!("{base}{url}") });
        }
    }
    None
}

impl Client {
    /// The manifest (or index) `r` names, as the registry serves it; with `platform`, an index is
    /// resolved to that platform's manifest.
    pub fn manifest(&self, r: &Reference, platform: Option<&str>) -> Result<Fetched> {
        self.block_on(async {
            let top = self.get_manifest(r, &manifest_ref(r), r.digest()).await?;
            let Some(p) = platform else { return Ok(top) };
            if !is_index(&top.media_type) {
                return Ok(top);
            }
            let idx: ImageIndex = serde_json::from_slice(&top.bytes).map_err(|e| {
                Error::new(ErrorKind::Protocol, format!("the index of {} is malformed", r.familiar())).with_source(e)
            })?;
            let child = select_platform(&idx, Some(p)).map_err(Error::from)?;
            self.get_manifest(r, child.digest().as_ref(), Some(child.digest())).await
        })
    }

    /// Every tag of `r`'s repository, following pagination.
    pub fn tags(&self, r: &Reference) -> Result<Vec<String>> {
        let (reg, repo) = (r.registry(), r.repository());
        let what = format!("the tags of {}", r.name());
        self.block_on(self.list(reg, &Scope::pull(repo), &format!("/v2/{repo}/tags/list"), "tags", &what)).map_err(
            |e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::new(ErrorKind::NotFound, format!("repository {} not found", r.name()))
                } else {
                    e
                }
            },
        )
    }

    /// Every repository of `registry` (`/v2/_catalog`), following pagination.
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        let what = format!("the catalog of {registry}");
        self.block_on(self.list(registry, &Scope::catalog(), "/v2/_catalog", "repositories", &what))
    }

    /// A paginated list: the `field` array of each page of `path`, following `Link` headers.
    async fn list(&self, registry: &str, scope: &Scope, path: &str, field: &str, what: &str) -> Result<Vec<String>> {
        let base = self.transport.base(registry).await?;
        let mut url = format!("{base}{path}?n={}", page_size());
        let mut out = Vec::new();
        loop {
            let resp = self.transport.send(registry, scope, |c, _| c.get(&url)).await?;
            if !resp.status().is_success() {
                return Err(self.transport.error_for(registry, resp, &format!("listing {what}")).await);
            }
            let next = next_link(resp.headers(), &base);
            let body = read_capped(resp, 64 << 20).await?;
            let page: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                Error::new(ErrorKind::Protocol, format!("{what}: the registry sent malformed JSON")).with_source(e)
            })?;
            match page.get(field) {
                Some(serde_json::Value::Array(items)) => {
                    out.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)))
                }
                Some(serde_json::Value::Null) | None => {}
                Some(_) => return Err(Error::new(ErrorKind::Protocol, format!("{what}: `{field}` is not a list"))),
            }
            match next {
                Some(n) if out.len() < MAX_ENTRIES && n != url => url = n,
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("link", r#"</v2/x/tags/list?last=b&n=2>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h, "http://r:5").as_deref(), Some("http://r:5/v2/x/tags/list?last=b&n=2"));
        h.insert("link", r#"<https://o/v2/_catalog?last=z>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h, "http://r:5").as_deref(), Some("https://o/v2/_catalog?last=z"));
        h.insert("link", r#"<https://o/x>; rel="prev""#.parse().unwrap());
        assert_eq!(next_link(&h, "http://r:5"), None);
    }
}
