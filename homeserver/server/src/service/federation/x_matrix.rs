//! `Authorization: X-Matrix` request signatures: the header's parameters, the object a
//! signature covers, and signing what we send. Checking what we receive is the federation
//! listener's extractor (`http/x_matrix.rs`).

use base64::Engine;
use ruma::{
    canonical_json::{to_canonical_value, CanonicalJsonObject, CanonicalJsonValue},
    ServerName,
};
use serde_json::Value;

use super::FederationError;
use crate::service::Services;

/// The parameters of one `X-Matrix` authorization header.
#[derive(Debug, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    pub destination: Option<String>,
    pub key: String,
    pub sig: String,
}

/// Parse `X-Matrix origin=...,destination="...",key="...",sig="..."`: values may be quoted
/// (with `\` escapes) or bare tokens; the scheme and parameter names are case-insensitive.
pub fn parse(header: &str) -> Option<XMatrix> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return None;
    }
    let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        match name.trim().to_ascii_lowercase().as_str() {
            "origin" => origin = Some(value),
            "destination" => destination = Some(value),
            "key" => key = Some(value),
            "sig" => sig = Some(value),
            _ => {}
        }
    }
    Some(XMatrix {
        origin: origin?,
        destination,
        key: key?,
        sig: sig?,
    })
}

/// The JSON object a request signature covers.
pub fn signed_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<CanonicalJsonObject, FederationError> {
    let mut obj = CanonicalJsonObject::new();
    let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
    obj.insert("method".into(), s(method));
    obj.insert("uri".into(), s(uri));
    obj.insert("origin".into(), s(origin));
    obj.insert("destination".into(), s(destination));
    if let Some(c) = content {
        let c = to_canonical_value(c).map_err(|e| FederationError::BadJson(e.to_string()))?;
        obj.insert("content".into(), c);
    }
    Ok(obj)
}

/// The header value for a request we send to `destination`.
pub fn authorization(
    app: &Services,
    destination: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String, FederationError> {
    let origin = app.server_name().as_str();
    let obj = signed_object(method, uri, origin, destination.as_str(), content)?;
    let canonical =
        serde_json::to_string(&obj).map_err(|e| FederationError::Internal(e.to_string()))?;
    let sig =
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(app.key.sign(canonical.as_bytes()));
    Ok(format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{}\",sig=\"{sig}\"",
        app.key.key_id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_bare_values() {
        let h = r#"X-Matrix origin=origin.example,destination="dest.example:8448",key="ed25519:1",sig="ABC\"d""#;
        let x = parse(h).unwrap();
        assert_eq!(x.origin, "origin.example");
        assert_eq!(x.destination.as_deref(), Some("dest.example:8448"));
        assert_eq!(x.key, "ed25519:1");
        assert_eq!(x.sig, "ABC\"d");
        assert!(parse("Bearer abc").is_none());
        assert!(
            parse(r#"X-Matrix origin="a",key="k""#).is_none(),
            "sig is required"
        );
        assert!(
            parse(r#"X-Matrix origin="a,key="k",sig="s"#).is_none(),
            "unterminated"
        );
        let x = parse(r#"x-matrix ORIGIN="a", Key="k", sig="s""#).unwrap();
        assert_eq!((x.origin.as_str(), x.destination), ("a", None));
    }
}
