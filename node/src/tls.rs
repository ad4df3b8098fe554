//! HTTPS for the public port: a certificate and key from files (`--tls-cert`,
//! `--tls-key`), or certificates from an ACME CA for the node's domain name
//! (`--acme-domain`, `--acme-contact`, `--acme-directory`; TLS-ALPN-01 on the port
//! itself, so the node must be reachable on 443 under that name). Both use rustls with
//! the `ring` provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::StreamExt;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the public port speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// A certificate chain and private key in PEM files.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// Certificates from an ACME CA.
    Acme {
        /// The node's domain name.
        domain: String,
        /// The contact e-mail address for the CA.
        contact: String,
        /// The CA's directory URL.
        directory: String,
        /// Extra root certificates (PEM) to trust for the CA's own HTTPS (a private CA).
        root: Option<PathBuf>,
        /// Where issued certificates and the account key are kept.
        cache: PathBuf,
    },
}

/// Why TLS could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key files are unusable.
    #[error("TLS certificate {cert} / key {key}: {message}")]
    Files {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The ACME root file is unusable.
    #[error("ACME root {path}: {message}")]
    Root {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn install_provider() {
    // Once per process; a second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A handle that stops a TLS server.
pub type Handle = axum_server::Handle;

/// TLS ready to serve: the certificate loaded, or the ACME client set up.
pub enum Prepared {
    /// From files.
    Files(axum_server::tls_rustls::RustlsConfig),
    /// From an ACME CA (its event loop runs while the server does).
    Acme(rustls_acme::axum::AxumAcceptor),
}

/// Loads the certificate, or sets up the ACME client; errors are the operator's to fix
/// before the node starts.
pub async fn prepare(tls: Tls) -> Result<Prepared, TlsError> {
    install_provider();
    match tls {
        Tls::Files { cert, key } => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| TlsError::Files {
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                    message: e.to_string(),
                })?;
            Ok(Prepared::Files(config))
        }
        Tls::Acme {
            domain,
            contact,
            directory,
            root,
            cache,
        } => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &root {
                let bad = |message: String| TlsError::Root {
                    path: path.display().to_string(),
                    message,
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                use rustls::pki_types::pem::PemObject;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    roots
                        .add(cert.map_err(|e| bad(e.to_string()))?)
                        .map_err(|e| bad(e.to_string()))?;
                }
            }
            let client = Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            );
            let mut state = rustls_acme::AcmeConfig::new_with_client_config([&domain], client)
                .contact_push(format!("mailto:{contact}"))
                .directory(&directory)
                .cache(rustls_acme::caches::DirCache::new(cache))
                .state();
            let acceptor = state.axum_acceptor(state.default_rustls_config());
            tokio::spawn(async move {
                while let Some(event) = state.next().await {
                    match event {
                        Ok(ok) => tracing::info!(event = ?ok, "ACME"),
                        Err(e) => tracing::warn!(error = ?e, "ACME"),
                    }
                }
            });
            Ok(Prepared::Acme(acceptor))
        }
    }
}

/// Serves `app` over TLS on `listener` until `handle` shuts it down, each connection
/// admitted against `budgets` before its handshake.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Prepared,
    handle: Handle,
    budgets: Arc<crate::budget::Budgets>,
) {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "HTTPS listener");
            return;
        }
    };
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let budgeted = |inner| crate::http::Budgeted::new(inner, budgets.clone());
    let served = match tls {
        Prepared::Files(config) => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(budgeted(axum_server::tls_rustls::RustlsAcceptor::new(
                    config,
                )))
                .handle(handle);
            crate::http::configure(&mut server, &budgets);
            server.serve(make).await
        }
        Prepared::Acme(acceptor) => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(crate::http::Budgeted::new(acceptor, budgets.clone()))
                .handle(handle);
            crate::http::configure(&mut server, &budgets);
            server.serve(make).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTPS server failed");
    }
}

/// Stops a TLS server, letting requests in flight finish for up to `grace`.
pub fn stop(handle: &Handle, grace: Duration) {
    handle.graceful_shutdown(Some(grace));
}
