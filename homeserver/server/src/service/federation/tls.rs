//! The federation listener: TLS with a configured certificate, or a self-signed one generated
//! into the data dir on first start, serving the federation and key routers over HTTP/1.1.

use std::{path::Path, sync::Arc};

use axum::Router;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::FederationError;
use crate::config::FederationSettings;

/// The certificate and key to serve: the configured pair, else `data_dir/tls/` (generated once).
pub fn load_or_generate(
    settings: &FederationSettings,
    data_dir: &Path,
    server_name: &str,
) -> Result<rustls::ServerConfig, FederationError> {
    let (cert_path, key_path) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("federation.crt"), dir.join("federation.key"));
            if !c.exists() || !k.exists() {
                generate(&dir, &c, &k, server_name)?;
            }
            (c, k)
        }
    };
    let io = |p: &Path, e: &dyn std::fmt::Display| {
        FederationError::Internal(format!("TLS file {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| io(&cert_path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(&cert_path, &e))?;
    if certs.is_empty() {
        return Err(io(&cert_path, &"no certificate in file"));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| io(&key_path, &e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FederationError::Internal(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| FederationError::Internal(format!("TLS certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn generate(dir: &Path, cert: &Path, key: &Path, server_name: &str) -> Result<(), FederationError> {
    let host = super::resolve::split(server_name).0;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ck = rcgen::generate_simple_self_signed(vec![host.to_owned()])
        .map_err(|e| FederationError::Internal(format!("generating a certificate: {e}")))?;
    let w = |p: &Path, data: String| {
        std::fs::write(p, data)
            .map_err(|e| FederationError::Internal(format!("writing {}: {e}", p.display())))
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| FederationError::Internal(format!("creating {}: {e}", dir.display())))?;
    w(key, ck.key_pair.serialize_pem())?;
    w(cert, ck.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed federation certificate");
    Ok(())
}

/// Accept TLS connections until the process stops; each connection is served on its own task.
pub async fn serve(listener: TcpListener, tls: rustls::ServerConfig, router: Router) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "federation accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "federation connection ended");
            }
        });
    }
}
