//! `login`: checking credentials against a registry before they are stored.

use crate::error::{Error, ErrorKind, Result};
use crate::keychain::Credential;
use crate::transport::{Scope, StaticKeychain};
use crate::{Client, Options};

/// The registry a `login`/`logout` argument names: `https://host/v1/`, `host:port` or a Docker
/// Hub alias (`index.docker.io`, `registry-1.docker.io`) become `host[:port]` / `docker.io`.
pub fn registry_name(arg: Option<&str>) -> Result<String> {
    let Some(arg) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(strata_store::reference::DEFAULT_REGISTRY.to_string());
    };
    let s = arg.strip_prefix("https://").or_else(|| arg.strip_prefix("http://")).unwrap_or(arg);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("invalid registry {arg:?}: expected a host name with an optional port, such as registry.example.com:5000"),
        ));
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => host,
    })
}

impl Client {
    /// Checks `credential` against `registry` the way `docker login` does: the API root is asked
    /// for, and whatever challenge it answers with (Basic, or Bearer through its token service)
    /// is met with these credentials. Succeeds only if the registry then lets us in.
    pub fn verify_login(registry: &str, credential: Credential, options: Options) -> Result<()> {
        let client = Client::new(Box::new(StaticKeychain(credential)), options)?;
        client
            .block_on(async {
                let t = &client.transport;
                let resp = t.send(registry, &Scope::none(), |c, base| c.get(format!("{base}/v2/"))).await?;
                if resp.status().is_success() {
                    return Ok(());
                }
                Err(t.error_for(registry, resp, &format!("login to {registry}")).await)
            })
            .map_err(|e| match e.kind() {
                ErrorKind::Unauthorized | ErrorKind::Denied => Error::new(
                    ErrorKind::Unauthorized,
                    format!("login to {registry} failed: unauthorized: incorrect username or password"),
                ),
                _ => e,
            })
    }
}
