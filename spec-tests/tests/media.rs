//! The media repository on one server: uploads and downloads on the authenticated and legacy
//! endpoints, reserved ids with asynchronous upload, thumbnails, limits, bad input and
//! durability across `kill -9`.

use plexus_spec_tests::{
    enc, image_dims as dims, test_jpeg as jpeg, test_png as png, Client, Server,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pseudo-random bytes: content that no codec or proxy would alter.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_on_both_endpoint_families() {
    let mut s = Server::start().await;
    let alice = s.user("alice").await;
    let data = noise(1_500_000);
    let uri = alice
        .upload(data.clone(), "application/pdf", Some("War and Peace.pdf"))
        .await;
    assert!(uri.starts_with("localhost/"), "{uri}");

    let got = alice
        .media(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await;
    assert_eq!(got.ok(), data.as_slice());
    assert_eq!(got.header("content-type"), "application/pdf");
    // PDFs are not on the spec's inline list.
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename=\"War and Peace.pdf\""
    );
    assert!(got.header("content-security-policy").contains("sandbox"));

    // The filename in the path wins; non-ASCII names are encoded per RFC 6266.
    let got = alice
        .media(&format!(
            "/_matrix/client/v1/media/download/{uri}/{}",
            enc("Война и мир.pdf")
        ))
        .await;
    assert_eq!(got.ok(), data.as_slice());
    assert!(got
        .header("content-disposition")
        .starts_with("attachment; filename*=utf-8''%D0%92"));

    // Authenticated endpoints need a token; the deprecated ones do not.
    s.client()
        .media(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await
        .err(401, "M_MISSING_TOKEN");
    let legacy = s
        .client()
        .media(&format!("/_matrix/media/v3/download/{uri}"))
        .await;
    assert_eq!(legacy.ok(), data.as_slice());

    // Safe types are inline, with the uploader's name; no name, no filename parameter.
    let text = alice
        .upload(b"hello".to_vec(), "text/plain", Some("notes.txt"))
        .await;
    let got = alice
        .media(&format!("/_matrix/client/v1/media/download/{text}"))
        .await;
    assert_eq!(got.ok(), b"hello");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"notes.txt\""
    );
    let html = alice
        .upload(b"<script>alert(1)</script>".to_vec(), "text/html", None)
        .await;
    let got = alice
        .media(&format!("/_matrix/client/v1/media/download/{html}"))
        .await;
    assert_eq!(got.header("content-type"), "text/html");
    assert_eq!(got.header("content-disposition"), "attachment");

    // No Content-Type: the spec's default.
    let r = alice.upload_raw(b"raw".to_vec(), None, None).await;
    let untyped = json(r.ok())["content_uri"].as_str().unwrap()[6..].to_owned();
    let got = alice
        .media(&format!("/_matrix/client/v1/media/download/{untyped}"))
        .await;
    assert_eq!(got.header("content-type"), "application/octet-stream");

    let cfg = alice.get("/_matrix/client/v1/media/config").await;
    assert_eq!(cfg.ok()["m.upload.size"], 50 * 1024 * 1024);
    let cfg = alice.get("/_matrix/media/v3/config").await;
    assert_eq!(cfg.ok()["m.upload.size"], 50 * 1024 * 1024);

    // A client was told the upload succeeded: it survives kill -9.
    s.crash_and_restart().await;
    let got = alice
        .media(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await;
    assert_eq!(got.ok(), data.as_slice());
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename=\"War and Peace.pdf\""
    );
}

/// An upload without Content-Length, sent chunk by chunk, is cut off at the limit too.
async fn chunked_upload(base: &str, token: &str, total: usize) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 500];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        let frame = [
            format!("{n:x}\r\n").into_bytes(),
            chunk[..n].to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if tcp.write_all(&frame).await.is_err() {
            break;
        }
        sent += n;
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4096];
    let n = tcp.read(&mut answer).await.unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_get_spec_errors() {
    let s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_MEDIA_MAX_UPLOAD_BYTES", "1000"),
    ])
    .await;
    let alice = s.user("alice").await;
    let cfg = alice.get("/_matrix/client/v1/media/config").await;
    assert_eq!(cfg.ok()["m.upload.size"], 1000);
    alice
        .upload(vec![1; 1000], "application/octet-stream", None)
        .await;
    alice
        .upload_raw(vec![1; 1001], Some("application/octet-stream"), None)
        .await
        .err(413, "M_TOO_LARGE");
    let token = alice.token.clone().unwrap();
    assert_eq!(chunked_upload(&s.base, &token, 5000).await, 413);
    assert_eq!(chunked_upload(&s.base, &token, 900).await, 200);

    s.client()
        .upload_raw(b"x".to_vec(), Some("text/plain"), None)
        .await
        .err(401, "M_MISSING_TOKEN");
    alice
        .upload_raw(b"x".to_vec(), Some("text/plain"), Some("bad\nname"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .media("/_matrix/client/v1/media/download/localhost/doesnotexist")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .media("/_matrix/client/v1/media/download/localhost/..%2F..%2Fdb")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .media("/_matrix/client/v1/media/download/not%20a%20server/abc")
        .await
        .err(400, "M_INVALID_PARAM");
    // Legacy download of another server's media with allow_remote=false: nothing is fetched.
    s.client()
        .media("/_matrix/media/v3/download/example.org/abc?allow_remote=false")
        .await
        .err(404, "M_NOT_FOUND");

    let text = alice.upload(b"words".to_vec(), "text/plain", None).await;
    let img = alice
        .upload(png(10, 10)[..].to_vec(), "image/png", None)
        .await;
    for (query, status, errcode) in [
        ("width=0&height=32", 400, "M_INVALID_PARAM"),
        ("width=-5&height=32", 400, "M_INVALID_PARAM"),
        ("width=abc&height=32", 400, "M_INVALID_PARAM"),
        ("height=32", 400, "M_INVALID_PARAM"),
        ("width=32&height=32&method=zoom", 400, "M_INVALID_PARAM"),
    ] {
        alice
            .media(&format!("/_matrix/client/v1/media/thumbnail/{img}?{query}"))
            .await
            .err(status, errcode);
    }
    // Not an image: the spec's "cannot thumbnail" answer.
    alice
        .media(&format!(
            "/_matrix/client/v1/media/thumbnail/{text}?width=32&height=32"
        ))
        .await
        .err(400, "M_UNKNOWN");
    // Claims to be a PNG but is not one.
    let fake = alice
        .upload(b"not really a png".to_vec(), "image/png", None)
        .await;
    alice
        .media(&format!(
            "/_matrix/client/v1/media/thumbnail/{fake}?width=32&height=32"
        ))
        .await
        .err(400, "M_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_ids_take_their_upload_later() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let r = alice
        .post("/_matrix/media/v1/create", serde_json::json!({}))
        .await;
    let created = r.ok().clone();
    let uri = created["content_uri"].as_str().unwrap()[6..].to_owned();
    assert!(created["unused_expires_at"].as_u64().unwrap() > 0);

    // Not uploaded yet: a short wait ends in 504.
    alice
        .media(&format!(
            "/_matrix/client/v1/media/download/{uri}?timeout_ms=200"
        ))
        .await
        .err(504, "M_NOT_YET_UPLOADED");
    // Someone else cannot fill another user's reservation.
    bob.bytes(
        "PUT",
        &format!("/_matrix/media/v3/upload/{uri}"),
        &[("content-type", "text/plain".into())],
        Some(b"intruder".to_vec().into()),
    )
    .await
    .err(403, "M_FORBIDDEN");

    // A download that is already waiting gets the content as soon as it arrives.
    let waiter = {
        let bob = bob.clone();
        let uri = uri.clone();
        tokio::spawn(async move {
            bob.media(&format!(
                "/_matrix/client/v1/media/download/{uri}?timeout_ms=20000"
            ))
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the download should be waiting for the upload"
    );
    let put = alice
        .bytes(
            "PUT",
            &format!("/_matrix/media/v3/upload/{uri}?filename=late.txt"),
            &[("content-type", "text/plain".into())],
            Some(b"worth the wait".to_vec().into()),
        )
        .await;
    assert_eq!(json(put.ok()), serde_json::json!({}));
    let got = waiter.await.unwrap();
    assert_eq!(got.ok(), b"worth the wait");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"late.txt\""
    );

    alice
        .bytes(
            "PUT",
            &format!("/_matrix/media/v3/upload/{uri}"),
            &[("content-type", "text/plain".into())],
            Some(b"again".to_vec().into()),
        )
        .await
        .err(409, "M_CANNOT_OVERWRITE_MEDIA");
    alice
        .bytes(
            "PUT",
            "/_matrix/media/v3/upload/localhost/neverreserved",
            &[],
            Some(b"x".to_vec().into()),
        )
        .await
        .err(404, "M_NOT_FOUND");

    // Ten open reservations per user; the eleventh is refused until one is used.
    for _ in 0..10 {
        alice
            .post("/_matrix/media/v1/create", serde_json::json!({}))
            .await
            .ok();
    }
    let r = alice
        .post("/_matrix/media/v1/create", serde_json::json!({}))
        .await;
    r.err(429, "M_LIMIT_EXCEEDED");
    assert!(r.body["retry_after_ms"].as_u64().is_some());
    bob.post("/_matrix/media/v1/create", serde_json::json!({}))
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_are_scaled_cropped_and_cached() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let wide = alice
        .upload(png(1000, 500), "image/png", Some("wide.png"))
        .await;
    let photo = alice.upload(jpeg(1600, 1200), "image/jpeg", None).await;
    let tiny = alice.upload(png(40, 20), "image/png", None).await;
    let thumb = |c: &Client, uri: &str, q: &str| {
        let c = c.clone();
        let path = format!("/_matrix/client/v1/media/thumbnail/{uri}?{q}");
        async move { c.media(&path).await }
    };

    let t = thumb(&alice, &wide, "width=320&height=240&method=scale").await;
    assert_eq!(t.header("content-type"), "image/png");
    assert_eq!(dims(t.ok()), (320, 160));
    let t = thumb(&alice, &wide, "width=96&height=96&method=crop").await;
    assert_eq!(dims(t.ok()), (96, 96));
    // Requests snap up to the next standard size: never smaller than asked.
    let t = thumb(&alice, &wide, "width=50&height=50&method=crop").await;
    assert_eq!(dims(t.ok()), (96, 96));
    let t = thumb(&alice, &photo, "width=640&height=480").await;
    assert_eq!(t.header("content-type"), "image/jpeg");
    assert_eq!(dims(t.ok()), (640, 480));
    // Never upscaled.
    let t = thumb(&alice, &tiny, "width=800&height=600&method=scale").await;
    assert_eq!(dims(t.ok()), (40, 20));

    // Different requests that snap to the same standard size get the same thumbnail.
    let a = thumb(&alice, &photo, "width=300&height=200").await;
    let b = thumb(&alice, &photo, "width=320&height=240&method=scale").await;
    assert_eq!(a.ok(), b.ok());
    // The deprecated endpoint, without a token, serves the same thumbnail.
    let legacy = s
        .client()
        .media(&format!(
            "/_matrix/media/v3/thumbnail/{photo}?width=320&height=240"
        ))
        .await;
    assert_eq!(legacy.ok(), a.ok());
    s.client()
        .media(&format!(
            "/_matrix/client/v1/media/thumbnail/{photo}?width=32&height=32"
        ))
        .await
        .err(401, "M_MISSING_TOKEN");
}
