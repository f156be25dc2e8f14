//! Media across servers: a user on one server downloads and thumbnails media uploaded on
//! another, which is fetched over `/_matrix/federation/v1/media/*` and then served from the
//! cache, even after its own server has gone away. The unauthenticated endpoints serve only
//! what is cached.

use plexus_spec_tests::{image_dims, test_png, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_fetched_over_federation_and_cached() {
    let (mut a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let picture = test_png(600, 400);
    let uri = alice
        .upload(picture.clone(), "image/png", Some("cat.png"))
        .await;
    assert!(uri.starts_with(&format!("{}/", a.server_name)), "{uri}");
    let other = alice
        .upload(b"second file".to_vec(), "text/plain", Some("b.txt"))
        .await;

    let got = bob
        .media(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await;
    assert_eq!(got.ok(), picture.as_slice());
    assert_eq!(got.header("content-type"), "image/png");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"cat.png\""
    );
    let thumb = bob
        .media(&format!(
            "/_matrix/client/v1/media/thumbnail/{uri}?width=96&height=96&method=crop"
        ))
        .await;
    assert_eq!(image_dims(thumb.ok()), (96, 96));

    // Unknown media on the other server is a 404 here too.
    bob.media(&format!(
        "/_matrix/client/v1/media/download/{}/nosuchmedia",
        a.server_name
    ))
    .await
    .err(404, "M_NOT_FOUND");
    // A reserved id without content: the other server's 504 is passed on.
    let created = alice
        .post("/_matrix/media/v1/create", serde_json::json!({}))
        .await;
    let pending = created.ok()["content_uri"].as_str().unwrap()[6..].to_owned();
    bob.media(&format!(
        "/_matrix/client/v1/media/download/{pending}?timeout_ms=300"
    ))
    .await
    .err(504, "M_NOT_YET_UPLOADED");
    // The deprecated endpoint fetches nothing when told not to, nor otherwise: it needs no
    // login, so anyone could make this server download whatever they name (as Synapse, it
    // serves only what is cached already).
    b.client()
        .media(&format!(
            "/_matrix/media/v3/download/{other}?allow_remote=false"
        ))
        .await
        .err(404, "M_NOT_FOUND");
    b.client()
        .media(&format!("/_matrix/media/v3/download/{other}"))
        .await
        .err(404, "M_NOT_FOUND");
    let cached = b
        .client()
        .media(&format!("/_matrix/media/v3/download/{uri}"))
        .await;
    assert_eq!(cached.ok(), picture.as_slice());

    // The federation endpoint itself wants a signed request.
    let fed = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let id = uri.rsplit('/').next().unwrap();
    let r = fed
        .get(format!(
            "https://{}/_matrix/federation/v1/media/download/{id}",
            a.server_name
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // With the uploader's server gone, what was fetched is still served.
    a.kill9();
    let got = bob
        .media(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await;
    assert_eq!(got.ok(), picture.as_slice());
    let thumb = bob
        .media(&format!(
            "/_matrix/client/v1/media/thumbnail/{uri}?width=320&height=240"
        ))
        .await;
    assert_eq!(image_dims(thumb.ok()), (320, 213));
    bob.media(&format!("/_matrix/client/v1/media/download/{other}"))
        .await
        .err(502, "M_UNKNOWN");
}
