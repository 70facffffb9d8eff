//! Image references with Docker's normalisation: `busybox` is `docker.io/library/busybox:latest`,
//! `user/app` is `docker.io/user/app:latest`, a first component with a `.` or a `:`, or `localhost`,
//! names a registry, and `@sha256:…` pins a digest.

use std::fmt;
use std::str::FromStr;

use crate::digest::{self, Digest};
use crate::error::{Error, Result};

/// The registry a name without one refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a name without tag or digest refers to.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `s` with Docker's rules; a name with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid_argument(format!("invalid reference format {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > 4096 {
            return Err(bad("too long"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(digest::parse(d).map_err(|_| bad("the digest must be sha256:<64 hex digits>"))?)),
            None => (s, None),
        };
        // The tag is after the last ':' that comes after the last '/'.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad("a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry.is_empty()
            || !registry.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(bad("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        if path.is_empty() {
            return Err(bad("missing repository name"));
        }
        for comp in path.split('/') {
            if !valid_path_component(comp) {
                if comp.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(bad("repository name must be lowercase"));
                }
                return Err(bad(
                    "repository components are lower-case letters and digits separated by '.', '_', '__' or '-'",
                ));
            }
        }
        let repository =
            if registry == DEFAULT_REGISTRY && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The registry host (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `registry/repository`, the full name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// The short name docker shows: `busybox`, `user/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            self.name()
        }
    }
    /// The short form with tag and digest: `busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_ref());
        }
        s
    }
    /// The same name with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }
    /// The same name pinned to `digest`, without tag.
    pub fn with_digest(&self, digest: &Digest) -> Self {
        Reference { digest: Some(digest.clone()), tag: None, ..self.clone() }
    }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl PartialOrd for Reference {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Reference {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.registry, &self.repository, &self.tag, self.digest.as_ref().map(|d| d.as_ref())).cmp(&(
            &other.registry,
            &other.repository,
            &other.tag,
            other.digest.as_ref().map(|d| d.as_ref()),
        ))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("user/app:1.2"), "docker.io/user/app:1.2");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000/ns/app:v1"), "localhost:5000/ns/app:v1");
        assert_eq!(n("quay.io/a/b"), "quay.io/a/b:latest");
        assert_eq!(n("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(n(&format!("app@{d}")), format!("docker.io/library/app@{d}"));
        assert_eq!(n(&format!("app:v@{d}")), format!("docker.io/library/app:v@{d}"));
        assert_eq!(Reference::parse("busybox").unwrap().familiar(), "busybox:latest");
        assert_eq!(Reference::parse("localhost:5000/x").unwrap().familiar(), "localhost:5000/x:latest");
    }

    #[test]
    fn rejects_invalid() {
        for s in ["", "Busybox", "a//b", "app:", "app:-x", "app@sha256:zz", "-app", "a/b_", "a..b", ":tag"] {
            assert!(Reference::parse(s).is_err(), "{s:?} should be invalid");
        }
    }
}
