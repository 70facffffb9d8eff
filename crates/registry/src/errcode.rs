//! The distribution spec's error codes, typed, with which ones are worth retrying.

/// An error code from a registry's JSON error body (`{"errors":[{"code":…}]}`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// BLOB_UNKNOWN
    BlobUnknown,
    /// BLOB_UPLOAD_INVALID
    BlobUploadInvalid,
    /// BLOB_UPLOAD_UNKNOWN
    BlobUploadUnknown,
    /// DIGEST_INVALID
    DigestInvalid,
    /// MANIFEST_BLOB_UNKNOWN
    ManifestBlobUnknown,
    /// MANIFEST_INVALID
    ManifestInvalid,
    /// MANIFEST_UNKNOWN
    ManifestUnknown,
    /// NAME_INVALID
    NameInvalid,
    /// NAME_UNKNOWN
    NameUnknown,
    /// SIZE_INVALID
    SizeInvalid,
    /// UNAUTHORIZED
    Unauthorized,
    /// DENIED
    Denied,
    /// UNSUPPORTED
    Unsupported,
    /// TOOMANYREQUESTS
    TooManyRequests,
    /// UNAVAILABLE (some registries, for maintenance)
    Unavailable,
    /// Any other code, kept as sent.
    Other(String),
}

impl ErrorCode {
    /// Parses a code as sent.
    pub fn parse(s: &str) -> ErrorCode {
        use ErrorCode::*;
        match s {
            "BLOB_UNKNOWN" => BlobUnknown,
            "BLOB_UPLOAD_INVALID" => BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => BlobUploadUnknown,
            "DIGEST_INVALID" => DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ManifestBlobUnknown,
            "MANIFEST_INVALID" => ManifestInvalid,
            "MANIFEST_UNKNOWN" => ManifestUnknown,
            "NAME_INVALID" => NameInvalid,
            "NAME_UNKNOWN" => NameUnknown,
            "SIZE_INVALID" => SizeInvalid,
            "UNAUTHORIZED" => Unauthorized,
            "DENIED" => Denied,
            "UNSUPPORTED" => Unsupported,
            "TOOMANYREQUESTS" => TooManyRequests,
            "UNAVAILABLE" => Unavailable,
            other => Other(other.to_string()),
        }
    }

    /// The code as the spec spells it.
    pub fn as_str(&self) -> &str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            Unavailable => "UNAVAILABLE",
            Other(s) => s,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, ErrorCode::TooManyRequests | ErrorCode::Unavailable)
    }

    /// The codes of an error body, in order; a body that is not the spec's JSON gives none.
    pub fn from_body(body: &[u8]) -> Vec<(ErrorCode, String)> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return Vec::new() };
        v.get("errors")
            .and_then(|e| e.as_array())
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| {
                        let code = e.get("code")?.as_str()?;
                        let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or_default();
                        Some((ErrorCode::parse(code), msg.chars().take(300).collect()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_from_bodies() {
        let b = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."},{"code":"X_NEW","message":"m"}]}"#;
        let v = ErrorCode::from_body(b);
        assert_eq!(v[0].0, ErrorCode::TooManyRequests);
        assert!(v[0].0.is_temporary());
        assert_eq!(v[1].0, ErrorCode::Other("X_NEW".into()));
        assert!(!ErrorCode::parse("DENIED").is_temporary());
        assert!(ErrorCode::from_body(b"<html>").is_empty());
    }
}
