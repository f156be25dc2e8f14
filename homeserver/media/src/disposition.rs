//! How media is served to browsers: `inline` only for types that cannot run script, the
//! uploader's filename in `Content-Disposition`, and headers that sandbox whatever else slips
//! through (the spec's "serving inline content" rules).

/// Content types the spec lets a server serve `inline`; everything else is an `attachment`.
const INLINE_SAFE: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The `Content-Security-Policy` sent with every download, so an HTML or SVG file opened
/// directly cannot run script against the homeserver's origin.
pub const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// The media type without parameters, lower-cased: `Text/Plain; charset=x` → `text/plain`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub fn is_inline_safe(content_type: &str) -> bool {
    INLINE_SAFE.contains(&essence(content_type).as_str())
}

/// `inline` or `attachment`, with the filename when there is one (RFC 6266; non-ASCII names
/// as `filename*`).
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    match filename {
        None => kind.to_owned(),
        Some(name)
            if name
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') =>
        {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let mut enc = String::new();
            for b in name.bytes() {
                if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                    enc.push(b as char);
                } else {
                    enc.push_str(&format!("%{b:02X}"));
                }
            }
            format!("{kind}; filename*=utf-8''{enc}")
        }
    }
}

/// The filename in a `Content-Disposition` header another server sent; `filename*` wins.
pub fn filename_of(header: &str) -> Option<String> {
    let mut plain = None;
    for param in split_params(header).into_iter().skip(1) {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim();
                let (charset, rest) = value.split_once('\'')?;
                let (_lang, encoded) = rest.split_once('\'')?;
                let bytes = percent_decode(encoded)?;
                let name = if charset.eq_ignore_ascii_case("utf-8") {
                    String::from_utf8(bytes).ok()?
                } else {
                    bytes.into_iter().map(char::from).collect()
                };
                return Some(name).filter(|n| !n.is_empty());
            }
            "filename" => plain = Some(unquote(value.trim())),
            _ => {}
        }
    }
    plain.filter(|n| !n.is_empty())
}

/// `;`-separated parameters, respecting quoted strings.
fn split_params(header: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in header.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(
            content_disposition("image/PNG", Some("cat.png")),
            "inline; filename=\"cat.png\""
        );
        assert_eq!(content_disposition("text/html", None), "attachment");
        assert_eq!(
            content_disposition("image/svg+xml", Some("x.svg")),
            "attachment; filename=\"x.svg\""
        );
        assert!(is_inline_safe("text/plain; charset=utf-8"));
    }

    #[test]
    fn filenames_round_trip_including_unicode_and_quotes() {
        for name in [
            "War and Peace.pdf",
            "Über café.txt",
            "a\"b\\c.txt",
            "日本.png",
        ] {
            let header = content_disposition("application/pdf", Some(name));
            assert_eq!(filename_of(&header).as_deref(), Some(name), "{header}");
        }
        assert_eq!(
            filename_of("attachment; filename=\"a;b.txt\"").as_deref(),
            Some("a;b.txt")
        );
        assert_eq!(
            filename_of("inline; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(filename_of("inline"), None);
        assert_eq!(filename_of("inline; filename*=utf-8''%zz"), None);
    }
}
