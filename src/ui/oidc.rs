//! Signing in to the in-cluster web queue with the cluster's OIDC provider:
//! authorization code with PKCE (RFC 7636). The ID token is kept in memory only,
//! for the session, and sent to the API server as the person's bearer token; the
//! API server (configured for the same issuer) verifies it and says who they
//! are. signoff checks only what binds the token to this sign-in (state, nonce,
//! audience, expiry), so a token for another client or another attempt is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use sha2::Digest as _;

use super::server::{random_token, urlencode};

/// How long a started sign-in may take before its state is forgotten.
pub const SIGN_IN_TTL: SignedDuration = SignedDuration::from_mins(10);

/// The provider's settings, as configured.
#[derive(Clone)]
pub struct Settings {
    /// The issuer URL, exactly as in the ID tokens' `iss` and the API server's configuration.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// This server's `/callback` URL, registered with the provider.
    pub redirect_url: String,
    /// Scopes to ask for; `openid` is always included.
    pub scopes: Vec<String>,
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The provider's authorization URL for one sign-in.
pub fn authorize_url(endpoint: &str, s: &Settings, state: &str, nonce: &str, verifier: &str) -> String {
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(s.scopes.iter().filter(|x| *x != "openid").cloned());
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!(
        "{endpoint}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
        urlencode(&s.client_id),
        urlencode(&s.redirect_url),
        urlencode(&scopes.join(" ")),
        challenge(verifier),
    )
}

/// The claims signoff checks in an ID token.
#[derive(Deserialize, Debug)]
pub struct Claims {
    pub iss: String,
    pub aud: Audience,
    pub exp: i64,
    pub nonce: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Read an ID token's claims and check that it was issued by `s.issuer` to this
/// client, for this sign-in (`nonce`), and is still valid at `now`. The
/// signature is the API server's to verify: it is the one that trusts the token.
pub fn check_id_token(token: &str, s: &Settings, nonce: &str, now: Timestamp) -> Result<Claims, String> {
    let payload = token.split('.').nth(1).ok_or("the provider's ID token is not a JWT")?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|e| format!("ID token: {e}"))?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|e| format!("ID token claims: {e}"))?;
    if claims.iss != s.issuer {
        return Err(format!("the ID token was issued by {}, not {}", claims.iss, s.issuer));
    }
    let ours = match &claims.aud {
        Audience::One(a) => a == &s.client_id,
        Audience::Many(all) => all.contains(&s.client_id),
    };
    if !ours {
        return Err(format!("the ID token is not for client {}", s.client_id));
    }
    if claims.nonce.as_deref() != Some(nonce) {
        return Err("the ID token does not belong to this sign-in (nonce)".into());
    }
    if claims.exp <= now.as_second() {
        return Err("the ID token has already expired".into());
    }
    Ok(claims)
}

/// A sign-in that went to the provider and has not come back yet.
struct Pending {
    verifier: String,
    nonce: String,
    next: String,
    started: Timestamp,
}

/// What a finished sign-in gives the server: the person's API client, until
/// when it works, and where they wanted to go.
pub struct SignedIn {
    pub client: kube::Client,
    pub expires: Timestamp,
    pub next: String,
}

/// The provider's answer at `/callback`.
#[derive(Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The sign-in flow against one provider.
pub struct Oidc {
    settings: Settings,
    http: HttpClient,
    /// The API server, without credentials: each session adds its own token.
    api: kube::Config,
    pending: Mutex<HashMap<String, Pending>>,
    endpoints: tokio::sync::OnceCell<Discovery>,
}

impl Oidc {
    /// `ca_pem`: extra CA certificates for the provider (besides the system's).
    pub fn new(settings: Settings, ca_pem: Option<&[u8]>, api: kube::Config) -> Result<Oidc, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = ca_pem {
            let certs: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the provider's CA file: {e}"))?;
            if certs.is_empty() {
                return Err("the provider's CA file holds no certificate".into());
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("the provider's CA file: {e}"))?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Oidc { settings, http, api, pending: Mutex::new(HashMap::new()), endpoints: tokio::sync::OnceCell::new() })
    }

    async fn call(&self, request: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        let url = request.uri().to_string();
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| format!("{url}: no answer in 10 s"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        Ok((status, body))
    }

    async fn endpoints(&self) -> Result<&Discovery, String> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
                let request = hyper::Request::get(&url).body(Full::default()).map_err(|e| e.to_string())?;
                let (status, body) = self.call(request).await?;
                if status != 200 {
                    return Err(format!("{url}: HTTP {status}"));
                }
                serde_json::from_slice::<Discovery>(&body).map_err(|e| format!("{url}: {e}"))
            })
            .await
    }

    /// Start a sign-in: remember its state and return the provider's URL.
    pub async fn start(&self, next: &str) -> Result<String, String> {
        let endpoint = self.endpoints().await?.authorization_endpoint.clone();
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let url = authorize_url(&endpoint, &self.settings, &state, &nonce, &verifier);
        let now = Timestamp::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now.duration_since(p.started) < SIGN_IN_TTL);
        pending.insert(state, Pending { verifier, nonce, next: next.to_string(), started: now });
        Ok(url)
    }

    /// Finish a sign-in: exchange the code (with the PKCE verifier) for an ID
    /// token, check it, and make the person's API client.
    pub async fn finish(&self, q: &CallbackQuery) -> Result<SignedIn, String> {
        if let Some(error) = &q.error {
            let detail = q.error_description.as_ref().map(|d| format!(": {d}")).unwrap_or_default();
            return Err(format!("the provider refused the sign-in ({error}{detail})"));
        }
        let (Some(code), Some(state)) = (&q.code, &q.state) else {
            return Err("the provider's answer has no code or state".into());
        };
        let now = Timestamp::now();
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(state);
        let Some(pending) = pending.filter(|p| now.duration_since(p.started) < SIGN_IN_TTL) else {
            return Err("this sign-in was not started here or took too long: sign in again".into());
        };
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", self.settings.redirect_url.clone()),
            ("client_id", self.settings.client_id.clone()),
            ("code_verifier", pending.verifier.clone()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.clone()));
        }
        let body: String = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
        let endpoint = self.endpoints().await?.token_endpoint.clone();
        let request = hyper::Request::post(&endpoint)
            .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let (status, body) = self.call(request).await?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("the provider did not give a token (HTTP {status}): {}", text.trim()));
        }
        let token = serde_json::from_slice::<TokenResponse>(&body)
            .map_err(|e| format!("the provider's token response: {e}"))?
            .id_token
            .ok_or("the provider's token response has no id_token (is the openid scope allowed?)")?;
        let claims = check_id_token(&token, &self.settings, &pending.nonce, now)?;
        let mut config = self.api.clone();
        config.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
        let client = kube::Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
        let expires = Timestamp::from_second(claims.exp).map_err(|e| e.to_string())?;
        Ok(SignedIn { client, expires, next: pending.next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            issuer: "https://127.0.0.1:5556/dex".into(),
            client_id: "signoff-ui".into(),
            client_secret: None,
            redirect_url: "https://signoff.example/callback".into(),
            scopes: vec!["email".into(), "groups".into()],
        }
    }

    fn jwt(claims: serde_json::Value) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorization_url_asks_for_a_code_with_s256() {
        let url = authorize_url("https://idp/auth", &settings(), "st", "no", "verifier");
        assert!(url.starts_with("https://idp/auth?response_type=code&client_id=signoff-ui&"), "{url}");
        assert!(url.contains("redirect_uri=https%3A%2F%2Fsignoff.example%2Fcallback"), "{url}");
        assert!(url.contains("scope=openid%20email%20groups") && url.contains("state=st&nonce=no"), "{url}");
        assert!(url.contains(&format!("code_challenge={}&code_challenge_method=S256", challenge("verifier"))));
    }

    #[test]
    fn an_id_token_must_be_ours_for_this_sign_in_and_current() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let good = serde_json::json!({"iss": "https://127.0.0.1:5556/dex", "aud": "signoff-ui", "exp": 1_000_100, "nonce": "n1"});
        assert!(check_id_token(&jwt(good.clone()), &settings(), "n1", now).is_ok());
        let many = serde_json::json!({"iss": good["iss"], "aud": ["x", "signoff-ui"], "exp": 1_000_100, "nonce": "n1"});
        assert!(check_id_token(&jwt(many), &settings(), "n1", now).is_ok());
        let cases = [
            (
                serde_json::json!({"iss": "https://evil", "aud": "signoff-ui", "exp": 1_000_100, "nonce": "n1"}),
                "issued by",
            ),
            (
                serde_json::json!({"iss": good["iss"], "aud": "other", "exp": 1_000_100, "nonce": "n1"}),
                "not for client",
            ),
            (serde_json::json!({"iss": good["iss"], "aud": "signoff-ui", "exp": 1_000_100, "nonce": "n2"}), "nonce"),
            (serde_json::json!({"iss": good["iss"], "aud": "signoff-ui", "exp": 999_999, "nonce": "n1"}), "expired"),
        ];
        for (claims, why) in cases {
            let err = check_id_token(&jwt(claims), &settings(), "n1", now).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(check_id_token("not-a-jwt", &settings(), "n1", now).is_err());
    }
}
