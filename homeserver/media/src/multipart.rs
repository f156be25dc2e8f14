//! The `multipart/mixed` body of federation media downloads (spec 1.11): a JSON metadata part,
//! then the content itself or a `Location` to fetch it from.
//!
//! Writing is split into a head and a tail so the file between them is streamed from disk.

use crate::MediaError;

/// Everything before the content: the metadata part and the content part's headers.
pub fn head(boundary: &str, content_type: &str, disposition: &str) -> Vec<u8> {
    format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    )
    .into_bytes()
}

/// Everything after the content.
pub fn tail(boundary: &str) -> Vec<u8> {
    format!("\r\n--{boundary}--\r\n").into_bytes()
}

/// The `Content-Type` of the whole response.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// The boundary parameter of a `multipart/mixed` content type, quoted or not.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/mixed")
    {
        return None;
    }
    params
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| {
                v.trim()
                    .trim_start_matches('"')
                    .trim_end_matches('"')
                    .to_owned()
            })
        })
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

/// One part: its headers (names lower-cased) and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl Part<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i] == needle[0] && &hay[i..i + needle.len()] == needle)
}

/// Splits a body into its parts (RFC 2046 §5.1): preamble and epilogue are ignored.
pub fn parse<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, MediaError> {
    let bad = |why: &str| MediaError::Multipart(why.to_owned());
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim, 0).ok_or_else(|| bad("no boundary"))? + delim.len();
    let mut parts = Vec::new();
    let closing = [b"\r\n".as_slice(), &delim].concat();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line break that ends the delimiter line.
        while matches!(body.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(bad("delimiter line not ended by CRLF"));
        }
        at += 2;
        let end = find(body, &closing, at).ok_or_else(|| bad("unterminated part"))?;
        let raw = &body[at..end];
        let (head, content) = if raw.starts_with(b"\r\n") {
            (&raw[..0], &raw[2..])
        } else {
            let split = find(raw, b"\r\n\r\n", 0).ok_or_else(|| bad("part without headers end"))?;
            (&raw[..split], &raw[split + 4..])
        };
        let head = std::str::from_utf8(head).map_err(|_| bad("headers not UTF-8"))?;
        let mut headers = Vec::new();
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad("malformed header"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        parts.push(Part {
            headers,
            body: content,
        });
        at = end + closing.len();
        if parts.len() > 16 {
            return Err(bad("too many parts"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_parses_back() {
        let content = b"\x89PNG\r\n--not-the-boundary\r\n\r\nbinary";
        let mut body = head("b0und", "image/png", "inline; filename=\"a.png\"");
        body.extend_from_slice(content);
        body.extend(tail("b0und"));
        let ct = content_type("b0und");
        let boundary = boundary_of(&ct).unwrap();
        let parts = parse(&boundary, &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-type"), Some("application/json"));
        assert_eq!(parts[0].body, b"{}");
        assert_eq!(parts[1].header("content-type"), Some("image/png"));
        assert_eq!(parts[1].body, content);
    }

    #[test]
    fn location_parts_and_quoted_boundaries() {
        let body = b"preamble\r\n--x y\r\nContent-Type: application/json\r\n\r\n{}\r\n--x y\r\nLocation: https://cdn.example/a\r\n\r\n\r\n--x y--\r\nepilogue";
        let b = boundary_of("Multipart/Mixed; boundary=\"x y\"").unwrap();
        let parts = parse(&b, body).unwrap();
        assert_eq!(parts[1].header("location"), Some("https://cdn.example/a"));
        assert!(parts[1].body.is_empty());
        assert_eq!(boundary_of("multipart/form-data; boundary=x"), None);
        assert_eq!(boundary_of("multipart/mixed"), None);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"--b",
            b"--b\r\nContent-Type: a\r\n\r\nno end",
            b"--bXX",
            b"--b\r\nno-colon\r\n\r\nx\r\n--b--",
        ] {
            assert!(
                parse("b", body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse("b", b"--b--").unwrap(), vec![]);
    }
}
