//! Manifests and indexes on a registry: HEAD to learn a tag's digest without spending a pull,
//! GET with every media type we read, verification of what arrives against its digest.

use oci_spec::image::MediaType;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use strata_store::digest::{self, Digest};
use strata_store::image::docker;
use strata_store::Reference;

use crate::error::{Error, ErrorKind, Result};
use crate::transport::{read_capped, Scope};
use crate::Client;

/// Every manifest media type this client reads, for `Accept`.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; the spec lets registries refuse ones over 4 MiB.
const MAX_MANIFEST: usize = 4 << 20;

/// What a HEAD of a manifest told.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<Digest>,
    /// `Content-Type`.
    pub media_type: Option<String>,
    /// `Content-Length`.
    pub size: Option<u64>,
    /// `RateLimit-Remaining` (Docker Hub), when sent.
    pub rate_limit: Option<String>,
}

/// A manifest or index as fetched, verified against its digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
    /// Its bytes, exactly as the registry sent them.
    pub bytes: Vec<u8>,
    /// `RateLimit-Remaining`, when sent.
    pub rate_limit: Option<String>,
}

/// The tag or digest part of a manifest URL for `r`.
pub fn manifest_ref(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => strata_store::reference::DEFAULT_TAG.to_string(),
    }
}

/// The media type of a manifest from its `Content-Type` or, failing that, its `mediaType` field.
pub fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> Result<MediaType> {
    let from_body = || {
        serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| {
            if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
                return Some(mt.to_string());
            }
            // An OCI manifest or index may omit mediaType; tell them apart by their fields.
            if v.get("manifests").is_some() {
                Some("application/vnd.oci.image.index.v1+json".to_string())
            } else if v.get("layers").is_some() {
                Some("application/vnd.oci.image.manifest.v1+json".to_string())
            } else {
                None
            }
        })
    };
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    let mt = match ct {
        Some(c) if !c.is_empty() && c != "application/json" && c != "text/plain" => c,
        _ => from_body().unwrap_or_default(),
    };
    if mt.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this image has a Docker schema 1 manifest, which is deprecated and not supported; push it again with a current client",
        ));
    }
    let parsed = MediaType::from(mt.as_str());
    let known = matches!(parsed, MediaType::ImageManifest | MediaType::ImageIndex)
        || mt == docker::MANIFEST
        || mt == docker::MANIFEST_LIST;
    if !known {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("unsupported manifest media type {mt:?} (expected an OCI or Docker schema 2 manifest or index)"),
        ));
    }
    Ok(parsed)
}

fn rate_limit(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl Client {
    /// HEAD of `r`'s manifest: its digest without downloading it (and, on Docker Hub, without
    /// spending a pull of the rate limit).
    pub(crate) async fn head_manifest(&self, r: &Reference) -> Result<Head> {
        let (reg, repo) = (r.registry(), r.repository());
        let url_ref = manifest_ref(r);
        let resp = self
            .transport
            .send(reg, &Scope::pull(repo), |c, base| {
                c.head(format!("{base}/v2/{repo}/manifests/{url_ref}")).header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.manifest_error(r, resp).await);
        }
        let h = resp.headers();
        Ok(Head {
            digest: h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|s| digest::parse(s).ok()),
            media_type: h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
            size: h.get("content-length").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()),
            rate_limit: rate_limit(h),
        })
    }

    /// GETs the manifest of `repo` at `url_ref` (a tag or digest) and verifies it: against
    /// `expected` when given, else against `Docker-Content-Digest` when the registry sent one.
    pub(crate) async fn get_manifest(
        &self,
        r: &Reference,
        url_ref: &str,
        expected: Option<&Digest>,
    ) -> Result<Fetched> {
        let (reg, repo) = (r.registry(), r.repository());
        let resp = self
            .transport
            .send(reg, &Scope::pull(repo), |c, base| {
                c.get(format!("{base}/v2/{repo}/manifests/{url_ref}")).header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.manifest_error(r, resp).await);
        }
        let h = resp.headers().clone();
        let bytes = read_capped(resp, MAX_MANIFEST).await?;
        let got = digest::sha256(&bytes);
        let announced =
            h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|s| digest::parse(s).ok());
        let want = expected.cloned().or(announced.filter(|d| d.algorithm().to_string() == "sha256"));
        if let Some(want) = want {
            if want != got {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "manifest {} of {repo}: the registry sent content that hashes to {got} (corrupt or tampered)",
                        want
                    ),
                ));
            }
        }
        let media_type = media_type_of(h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()), &bytes)?;
        Ok(Fetched { digest: got, media_type, bytes, rate_limit: rate_limit(&h) })
    }

    /// The error for a failed manifest request, in docker's words for the common cases.
    async fn manifest_error(&self, r: &Reference, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let e = self.transport.error_for(r.registry(), resp, &r.familiar()).await;
        if status == StatusCode::NOT_FOUND || e.kind() == ErrorKind::NotFound {
            return Error::new(
                ErrorKind::NotFound,
                format!("manifest for {} not found: manifest unknown (check the name and tag)", r.familiar()),
            );
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            media_type_of(Some("application/vnd.oci.image.manifest.v1+json"), b"{}").unwrap(),
            MediaType::ImageManifest
        );
        assert_eq!(media_type_of(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(), MediaType::ImageIndex);
        assert_eq!(
            media_type_of(Some("application/json"), format!(r#"{{"mediaType":"{}"}}"#, docker::MANIFEST).as_bytes())
                .unwrap(),
            MediaType::Other(docker::MANIFEST.into())
        );
        let e = media_type_of(Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), b"{}").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(media_type_of(Some("text/html"), b"<html>").is_err());
    }

    #[test]
    fn manifest_refs() {
        assert_eq!(manifest_ref(&Reference::parse("busybox").unwrap()), "latest");
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(manifest_ref(&Reference::parse(&format!("busybox@{d}")).unwrap()), d);
    }
}
