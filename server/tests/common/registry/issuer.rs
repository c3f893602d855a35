//! Who may read the test registries: the htpasswd user of `auth: htpasswd`, and the token
//! issuer of `auth: token`.

use base64::Engine as _;
use std::sync::{Arc, Mutex};

/// The password of the htpasswd user [`HTPASSWD_LINE`].
pub const HTPASSWD_PASSWORD: &str = "registry-test-only";
/// `canopy:` and the bcrypt hash of [`HTPASSWD_PASSWORD`] (distribution reads bcrypt only;
/// made once with `python3 -c 'import crypt; print(crypt.crypt(PASSWORD,
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))'`, a test-only password).
pub const HTPASSWD_LINE: &str =
    "canopy:$2b$04$jKxqBCK1x5lUaqFwPVCoIenqY3yBbRH3aBZ5cEI.HbOvaxFZ.ba.K";

/// The token issuer of a registry run with `auth: token`: it serves the realm (`GET
/// /token?service=…&scope=…`) on 127.0.0.1 and signs JWTs (ES256, its certificate in `x5c`)
/// that the registry verifies against the certificate it was given. Anyone gets `pull` on any
/// repository except those under `private/`, which need the basic credentials
/// [`TokenIssuer::USER`] / [`TokenIssuer::PASSWORD`]. It counts the tokens it issues.
pub struct TokenIssuer {
    pub addr: String,
    pub cert_pem: String,
    cert_der_b64: String,
    key: jsonwebtoken::EncodingKey,
    /// Tokens issued, and the scopes asked for.
    pub issued: Mutex<Vec<String>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TokenIssuer {
    pub const SERVICE: &'static str = "canopy-test-registry";
    pub const ISSUER: &'static str = "canopy-test-issuer";
    pub const USER: &'static str = "reader";
    pub const PASSWORD: &'static str = "issuer-test-only";

    pub async fn start() -> Arc<TokenIssuer> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![Self::ISSUER.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let issuer = Arc::new(TokenIssuer {
            addr,
            cert_pem: cert.pem(),
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            key: jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
            issued: Mutex::new(Vec::new()),
            _shutdown: tx,
        });
        // The issuer's one route, not one of the server's (the route table does not list it).
        #[allow(clippy::disallowed_methods)]
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get({
                let issuer = Arc::downgrade(&issuer);
                move |q: axum::extract::Query<std::collections::HashMap<String, String>>,
                      headers: axum::http::HeaderMap| {
                    let issuer = issuer.upgrade();
                    async move {
                        match issuer {
                            Some(i) => i.answer(&q, &headers),
                            None => (axum::http::StatusCode::GONE, String::new()),
                        }
                    }
                }
            }),
        );
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        issuer
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    fn answer(
        &self,
        q: &std::collections::HashMap<String, String>,
        headers: &axum::http::HeaderMap,
    ) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        if q.get("service").map(String::as_str) != Some(Self::SERVICE) {
            return (StatusCode::BAD_REQUEST, "unknown service".into());
        }
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                Self::USER,
                Self::PASSWORD
            ))
        );
        let presented = headers.get("authorization").and_then(|v| v.to_str().ok());
        if presented.is_some_and(|p| p != expected) {
            return (
                StatusCode::UNAUTHORIZED,
                "wrong user name or password".into(),
            );
        }
        let scope = q.get("scope").cloned().unwrap_or_default();
        // repository:NAME:pull → pull on NAME, unless private and anonymous.
        let mut parts = scope.splitn(3, ':');
        let (kind, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let granted =
            kind == "repository" && (!name.starts_with("private/") || presented.is_some());
        self.issued.lock().unwrap().push(scope.clone());
        let token = self.mint(name, if granted { &["pull"] } else { &[] });
        (
            StatusCode::OK,
            serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                .to_string(),
        )
    }

    /// A signed token granting `actions` on repository `name`.
    pub fn mint(&self, name: &str, actions: &[&str]) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": Self::ISSUER, "sub": "canopy-test", "aud": Self::SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "access": [{"type": "repository", "name": name, "actions": actions}],
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.cert_der_b64.clone()]);
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}
