//! The test OIDC provider against a plain HTTP client and a strict jsonwebtoken verifier.

use std::collections::HashMap;
use std::time::Duration;

use sandport_testkit::eventually;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use sandport_testkit::oidc::{truncate_token, JwksMode, TestProvider, DEFAULT_SUB};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "s3cret+/=value";
const REDIRECT_URI: &str = "https://app.example.test/_callback";
/// Largest token the strict verifier looks at (a gateway bounds cookie and header sizes).
const MAX_TOKEN_LEN: usize = 16 * 1024;

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn location(&self) -> String {
        self.headers["location"]
            .to_str()
            .expect("location")
            .to_owned()
    }
}

async fn send(req: Request<Full<Bytes>>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = client.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

async fn get(url: &str) -> Reply {
    send(
        Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn post_token(p: &TestProvider, authorization: Option<&str>, body: &str) -> Reply {
    let mut req = Request::post(p.token_endpoint())
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    send(
        req.body(Full::new(Bytes::from(body.to_owned())))
            .expect("request"),
    )
    .await
}

fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn pkce_pair() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Runs `/oauth2/authorize` (or `path`) and returns the code from the redirect.
async fn authorize(p: &TestProvider, path: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid email profile"),
    ];
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend_from_slice(extra);
    let reply = get(&format!("{}{path}?{}", p.issuer(), form(&pairs))).await;
    assert_eq!(reply.status, 302, "{:?}", reply.body);
    let location = reply.location();
    assert!(
        location.starts_with(&format!("{REDIRECT_URI}?code=")),
        "{location}"
    );
    query_of(&location)["code"].clone()
}

async fn fetch_jwks(p: &TestProvider) -> JwkSet {
    let reply = get(&p.jwks_uri()).await;
    assert_eq!(reply.status, 200);
    serde_json::from_slice(&reply.body).expect("JWKS")
}

/// Strict verification as a gateway does it: size bound, kid lookup, RS256 pinned, `exp`,
/// `iss`, `aud`, `sub` required, `nbf` honoured, small leeway, `token_use` = `id`.
fn verify(p: &TestProvider, jwks: &JwkSet, token: &str) -> Result<Value, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token too large".into());
    }
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("unknown kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[p.issuer()]);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    let data = decode::<Value>(token, &key, &validation).map_err(|e| format!("decode: {e}"))?;
    if data.claims["token_use"] != "id" {
        return Err("token_use is not id".into());
    }
    Ok(data.claims)
}

async fn start() -> TestProvider {
    TestProvider::start(CLIENT_ID, CLIENT_SECRET)
        .await
        .expect("provider")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_document_and_jwks() {
    let p = start().await;
    let issuer = p.issuer();
    assert!(issuer.starts_with("http://127.0.0.1:"));
    assert_eq!(issuer, format!("http://{}", p.addr()));

    let reply = get(&p.discovery_url()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let doc = reply.json();
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{issuer}/oauth2/authorize")
    );
    assert_eq!(doc["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(doc["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(doc["end_session_endpoint"], format!("{issuer}/logout"));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(p.discovery_fetches(), 1);

    p.set_discovery_available(false);
    assert_eq!(get(&p.discovery_url()).await.status, 404);
    p.set_discovery_available(true);
    assert_eq!(p.discovery_fetches(), 2);

    let reply = get(&p.jwks_uri()).await;
    assert_eq!(reply.status, 200);
    let jwks = reply.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["kid"], p.current_kid());
    assert_eq!(key["e"], "AQAB");
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("base64url n");
    assert_eq!(n.len(), 256, "RSA-2048 modulus");
    assert_eq!(jwks, p.jwks());
    assert_eq!(p.jwks_fetches(), 1);

    assert_eq!(get(&format!("{issuer}/nope")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_and_nonce() {
    let p = start().await;
    p.set_user("user-42", "u42@example.test", false);
    let (verifier, challenge) = pkce_pair();
    // A state that needs percent-encoding comes back byte for byte.
    let raw_state = "eyJ1cmkiOiIvYSJ9%2B%2F%3D.sig";
    let url = format!(
        "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&state={raw_state}\
         &scope=openid+email+profile&code_challenge={challenge}&code_challenge_method=S256\
         &nonce=n-0S6_WzA2Mj",
        p.authorization_endpoint(),
        form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>(),
    );
    let reply = get(&url).await;
    assert_eq!(reply.status, 302);
    let location = reply.location();
    assert!(
        location.ends_with(&format!("&state={raw_state}")),
        "{location}"
    );
    let code = query_of(&location)["code"].clone();
    assert_eq!(p.authorize_calls(), 1);
    let recorded: HashMap<_, _> = p
        .last_authorize_params()
        .expect("recorded")
        .into_iter()
        .collect();
    assert_eq!(recorded["scope"], "openid email profile");
    assert_eq!(recorded["code_challenge_method"], "S256");

    let reply = post_token(
        &p,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("code_verifier", &verifier),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let tokens = reply.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert!(tokens["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let jwks = fetch_jwks(&p).await;
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let header = decode_header(id_token).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(p.current_kid().as_str()));
    let claims = verify(&p, &jwks, id_token).expect("id_token verifies");
    assert_eq!(claims["iss"], p.issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], "user-42");
    assert_eq!(claims["email"], "u42@example.test");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["token_use"], "id");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["cognito:username"], "user-42");
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 3600);

    // The access token is signed by the same key but is not an id token (no aud, token_use).
    let access = tokens["access_token"].as_str().expect("access_token");
    let err = verify(&p, &jwks, access).expect_err("access token is not an id token");
    assert!(err.contains("aud") || err.contains("token_use"), "{err}");
    let access_claims =
        jsonwebtoken::dangerous::insecure_decode::<Value>(access).expect("access claims");
    assert_eq!(access_claims.claims["token_use"], "access");
    assert_eq!(access_claims.claims["client_id"], CLIENT_ID);

    assert_eq!(p.token_calls("authorization_code"), 1);
    assert_eq!(p.token_calls_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_alias_client_secret_post_and_scopes() {
    let p = start().await;
    // `/login`, no PKCE, no nonce, client_secret in the body.
    let code = authorize(&p, "/login", &[("state", "s")]).await;
    let reply = post_token(
        &p,
        None,
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let jwks = fetch_jwks(&p).await;
    let claims =
        verify(&p, &jwks, reply.json()["id_token"].as_str().expect("id")).expect("verifies");
    assert_eq!(claims["sub"], DEFAULT_SUB);
    assert!(claims.get("nonce").is_none());

    // Basic credentials form-urlencoded per RFC 6749 are accepted too.
    let code = authorize(&p, "/oauth2/authorize", &[]).await;
    let encoded_secret: String =
        form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect();
    let reply = post_token(
        &p,
        Some(&basic(CLIENT_ID, &encoded_secret)),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    // A scope without openid gets no id_token, as with Cognito.
    let code = authorize(&p, "/oauth2/authorize", &[("scope", "email")]).await;
    let reply = post_token(
        &p,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ]),
    )
    .await;
    assert_eq!(reply.status, 200);
    let tokens = reply.json();
    assert!(tokens.get("id_token").is_none());
    assert!(tokens.get("access_token").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_is_single_use_and_expires() {
    let p = start().await;
    let exchange = |code: String| {
        let p = &p;
        async move {
            post_token(
                p,
                Some(&basic(CLIENT_ID, CLIENT_SECRET)),
                &form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                ]),
            )
            .await
        }
    };
    let code = authorize(&p, "/oauth2/authorize", &[]).await;
    assert_eq!(exchange(code.clone()).await.status, 200);
    let again = exchange(code).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
    assert!(again.json()["error_description"].is_string());

    // A failed presentation consumes the code as well.
    let code = authorize(&p, "/oauth2/authorize", &[]).await;
    let wrong = post_token(
        &p,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://evil.example.test/_callback"),
        ]),
    )
    .await;
    assert_eq!(wrong.json()["error"], "invalid_grant");
    assert_eq!(exchange(code).await.json()["error"], "invalid_grant");

    p.set_code_lifetime(Duration::ZERO);
    let code = authorize(&p, "/oauth2/authorize", &[]).await;
    let expired = exchange(code).await;
    assert_eq!(expired.status, 400);
    assert_eq!(expired.json()["error_description"], "code expired");
    assert_eq!(p.token_calls("authorization_code"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected() {
    let p = start().await;
    let (verifier, challenge) = pkce_pair();
    let pkce = [
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let token_with = |code: String, verifier: Option<String>, auth: String| {
        let p = &p;
        async move {
            let mut pairs = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
            ];
            if let Some(v) = &verifier {
                pairs.push(("code_verifier", v.as_str()));
            }
            post_token(p, Some(&auth), &form(&pairs)).await
        }
    };
    let good_auth = basic(CLIENT_ID, CLIENT_SECRET);

    // Wrong verifier, missing verifier, too short a verifier.
    let (other_verifier, _) = pkce_pair();
    for bad in [Some(other_verifier), None, Some("short".to_owned())] {
        let code = authorize(&p, "/oauth2/authorize", &pkce).await;
        let reply = token_with(code, bad, good_auth.clone()).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"], "invalid_grant");
    }
    // The right verifier works.
    let code = authorize(&p, "/oauth2/authorize", &pkce).await;
    assert_eq!(
        token_with(code, Some(verifier.clone()), good_auth.clone())
            .await
            .status,
        200
    );

    // Bad client credentials: wrong secret, wrong id, none at all, body id disagreeing.
    for auth in [
        basic(CLIENT_ID, "wrong"),
        basic("other-client", CLIENT_SECRET),
        "Bearer abc".to_owned(),
    ] {
        let code = authorize(&p, "/oauth2/authorize", &pkce).await;
        let reply = token_with(code, Some(verifier.clone()), auth).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["error"], "invalid_client");
        assert!(reply.headers.contains_key("www-authenticate"));
    }
    let reply = post_token(
        &p,
        None,
        &form(&[("grant_type", "authorization_code"), ("code", "x")]),
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = post_token(
        &p,
        Some(&good_auth),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "other-client"),
        ]),
    )
    .await;
    assert_eq!(reply.status, 401);

    // Unsupported grant type, missing grant type.
    let reply = post_token(&p, Some(&good_auth), &form(&[("grant_type", "password")])).await;
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    let reply = post_token(&p, Some(&good_auth), "").await;
    assert_eq!(reply.json()["error"], "invalid_request");
    assert_eq!(p.token_calls("password"), 1);
    assert_eq!(p.token_calls(""), 1);

    // Authorize: unknown client and missing redirect_uri get 400 without a redirect.
    let issuer = p.issuer();
    let reply = get(&format!(
        "{issuer}/oauth2/authorize?response_type=code&client_id=other&redirect_uri=https%3A%2F%2Fx%2F"
    ))
    .await;
    assert_eq!(reply.status, 400);
    assert!(!reply.headers.contains_key("location"));
    let reply = get(&format!(
        "{issuer}/oauth2/authorize?response_type=code&client_id={CLIENT_ID}"
    ))
    .await;
    assert_eq!(reply.status, 400);
    // Other errors go back to the client with the state.
    let reply = get(&format!(
        "{issuer}/login?response_type=token&client_id={CLIENT_ID}&redirect_uri=https%3A%2F%2Fx%2Fcb&state=st"
    ))
    .await;
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.location(),
        "https://x/cb?error=unsupported_response_type&state=st"
    );
    let reply = get(&format!(
        "{issuer}/login?response_type=code&client_id={CLIENT_ID}&redirect_uri=https%3A%2F%2Fx%2Fcb%3Fa%3D1&code_challenge=abc&code_challenge_method=plain"
    ))
    .await;
    assert_eq!(reply.status, 302);
    assert!(reply
        .location()
        .starts_with("https://x/cb?a=1&error=invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_and_revocation() {
    let p = start().await;
    p.set_id_token_lifetime(2);
    let code = authorize(&p, "/oauth2/authorize", &[("nonce", "abc")]).await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let tokens = post_token(
        &p,
        Some(&auth),
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ]),
    )
    .await
    .json();
    assert_eq!(tokens["expires_in"], 2);
    let refresh_token = tokens["refresh_token"].as_str().expect("rt").to_owned();
    let jwks = fetch_jwks(&p).await;
    let first = verify(&p, &jwks, tokens["id_token"].as_str().expect("id")).expect("valid");
    assert_eq!(
        first["exp"].as_u64().expect("exp") - first["iat"].as_u64().expect("iat"),
        2
    );

    // The seed's refresh request: Basic auth and client_id in the body.
    let refresh = |rt: String| {
        let (p, auth) = (&p, auth.clone());
        async move {
            post_token(
                p,
                Some(&auth),
                &form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", CLIENT_ID),
                ]),
            )
            .await
        }
    };
    p.set_id_token_lifetime(3600);
    let reply = refresh(refresh_token.clone()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let renewed = reply.json();
    assert!(
        renewed.get("refresh_token").is_none(),
        "not rotated by default"
    );
    let id_token = renewed["id_token"].as_str().expect("id_token");
    assert_ne!(id_token, tokens["id_token"].as_str().expect("id"));
    let claims = verify(&p, &jwks, id_token).expect("valid");
    assert_eq!(claims["sub"], DEFAULT_SUB);
    assert!(claims.get("nonce").is_none());
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        3600
    );
    assert!(renewed["access_token"].is_string());

    // Rotation: a new refresh token, the old one is dead.
    p.set_rotate_refresh_tokens(true);
    let rotated = refresh(refresh_token.clone()).await.json();
    let new_rt = rotated["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(new_rt, refresh_token);
    let reply = refresh(refresh_token).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_grant");
    let reply = refresh(new_rt).await;
    assert_eq!(reply.status, 200);
    let new_rt = reply.json()["refresh_token"]
        .as_str()
        .expect("rotated again")
        .to_owned();

    // Revocation.
    p.set_rotate_refresh_tokens(false);
    assert_eq!(refresh(new_rt.clone()).await.status, 200);
    p.revoke_refresh_tokens();
    let reply = refresh(new_rt).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_grant");
    assert_eq!(refresh("never-issued".to_owned()).await.status, 400);
    assert_eq!(p.token_calls("refresh_token"), 7);
    assert_eq!(p.token_calls("authorization_code"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_drops_the_old_kid() {
    let p = start().await;
    let claims = p.standard_claims("rotating-user");
    let old_kid = p.current_kid();
    let old_token = p.mint(claims.clone());
    let old_jwks = fetch_jwks(&p).await;
    verify(&p, &old_jwks, &old_token).expect("old token, old JWKS");

    let new_kid = p.rotate_keys();
    assert_ne!(new_kid, old_kid);
    assert_eq!(p.current_kid(), new_kid);
    assert_eq!(p.published_kids(), vec![new_kid.clone()]);
    let jwks = fetch_jwks(&p).await;
    assert!(jwks.find(&old_kid).is_none(), "old kid dropped");
    assert!(jwks.find(&new_kid).is_some());
    assert_eq!(
        verify(&p, &jwks, &old_token).expect_err("old kid gone"),
        "unknown kid"
    );
    let new_token = p.mint(claims.clone());
    assert_eq!(
        decode_header(&new_token).expect("header").kid.as_deref(),
        Some(new_kid.as_str())
    );
    verify(&p, &jwks, &new_token).expect("new token, new JWKS");
    assert_eq!(
        verify(&p, &old_jwks, &new_token).expect_err("new kid unknown to the old JWKS"),
        "unknown kid"
    );

    // Cognito style: publish the next key first, sign with it after the rotation.
    let next_kid = p.add_next_key();
    assert_eq!(p.published_kids(), vec![new_kid.clone(), next_kid.clone()]);
    assert_eq!(
        p.current_kid(),
        new_kid,
        "still signing with the current key"
    );
    let jwks = fetch_jwks(&p).await;
    assert!(jwks.find(&next_kid).is_some());
    assert_eq!(p.rotate_keys(), next_kid);
    assert_eq!(p.published_kids(), vec![next_kid.clone()]);
    let token = p.mint(claims);
    verify(&p, &jwks, &token).expect("the pre-published key verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_unavailable_and_hang() {
    let p = start().await;
    p.set_jwks_mode(JwksMode::Unavailable503);
    assert_eq!(get(&p.jwks_uri()).await.status, 503);

    p.set_jwks_mode(JwksMode::Hang);
    let held = tokio::time::timeout(Duration::from_millis(300), get(&p.jwks_uri())).await;
    assert!(held.is_err(), "a hanging JWKS request does not complete");
    let uri = p.jwks_uri();
    let pending = tokio::spawn(async move { get(&uri).await.status });
    eventually("the held request arrived", Duration::from_secs(5), || {
        let arrived = p.jwks_fetches() == 3;
        async move { arrived }
    })
    .await;
    assert!(!pending.is_finished());
    assert_eq!(p.jwks_fetches(), 3, "counted on arrival");

    // Leaving Hang answers the held request per the new mode.
    p.set_jwks_mode(JwksMode::Normal);
    let status = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("released")
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(get(&p.jwks_uri()).await.status, 200);
    assert_eq!(p.jwks_fetches(), 4);

    // Dropping the provider closes held requests instead of leaving them open.
    p.set_jwks_mode(JwksMode::Hang);
    let uri = p.jwks_uri();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let pending = tokio::spawn(async move {
        client
            .request(
                Request::get(uri)
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await
            .is_err()
    });
    eventually("the held request arrived", Duration::from_secs(5), || {
        let arrived = p.jwks_fetches() == 5;
        async move { arrived }
    })
    .await;
    let addr = p.addr();
    drop(p);
    let failed = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("closed on drop")
        .expect("join");
    assert!(failed);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_records_the_uri() {
    let p = start().await;
    assert_eq!(p.last_logout_uri(), None);
    let reply = get(&format!(
        "{}?client_id={CLIENT_ID}&logout_uri=https%3A%2F%2Fapp.example.test%2F",
        p.end_session_endpoint()
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/plain"));
    assert_eq!(&reply.body[..], b"logged out");
    assert_eq!(
        p.last_logout_uri().as_deref(),
        Some("https://app.example.test/")
    );
    let reply = get(&format!("{}?client_id=other", p.end_session_endpoint())).await;
    assert_eq!(reply.status, 400);
    assert_eq!(p.logout_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_rejected_and_the_valid_one_accepted() {
    let p = start().await;
    let jwks = fetch_jwks(&p).await;
    let valid = p.mint(p.standard_claims("victim"));
    let claims = verify(&p, &jwks, &valid).expect("the valid token is accepted");
    assert_eq!(claims["sub"], "victim");
    assert_eq!(claims["email"], "victim@example.test");

    let table = p.hostile_tokens("victim");
    let names: Vec<&str> = table.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "alg_none",
            "hs256_public_key",
            "rs384",
            "unknown_kid",
            "foreign_key_current_kid",
            "expired",
            "nbf_future",
            "wrong_iss",
            "wrong_aud",
            "token_use_access",
            "missing_exp",
            "tampered",
            "truncated",
            "huge",
            "garbage",
            "empty",
        ]
    );
    for hostile in &table {
        let result = verify(&p, &jwks, &hostile.token);
        assert!(result.is_err(), "{} accepted: {result:?}", hostile.name);
    }
    let reason = |name: &str| {
        let token = &table.iter().find(|t| t.name == name).expect(name).token;
        verify(&p, &jwks, token).expect_err(name)
    };
    assert!(reason("hs256_public_key").contains("InvalidAlgorithm"));
    assert!(reason("rs384").contains("InvalidAlgorithm"));
    assert_eq!(reason("unknown_kid"), "unknown kid");
    assert!(reason("foreign_key_current_kid").contains("InvalidSignature"));
    assert!(reason("expired").contains("ExpiredSignature"));
    assert!(reason("nbf_future").contains("ImmatureSignature"));
    assert!(reason("wrong_iss").contains("InvalidIssuer"));
    assert!(reason("wrong_aud").contains("InvalidAudience"));
    assert_eq!(reason("token_use_access"), "token_use is not id");
    assert!(reason("missing_exp").contains("exp"));
    assert!(reason("tampered").contains("InvalidSignature"));
    assert_eq!(reason("huge"), "token too large");
    assert!(table[13].token.len() > 1024 * 1024);

    // The attacks are real: each is what its name says.
    let alg_none = &table[0].token;
    assert!(alg_none.ends_with('.'));
    let none_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(alg_none.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(none_header["alg"], "none");

    // HS256 under the public PEM verifies for a verifier that lets the token pick HMAC.
    let mut lenient = Validation::new(Algorithm::HS256);
    lenient.set_audience(&[CLIENT_ID]);
    jsonwebtoken::decode::<Value>(
        &table[1].token,
        &DecodingKey::from_secret(p.public_key_pem().as_bytes()),
        &lenient,
    )
    .expect("key-confusion token is a valid HMAC under the public PEM");
    assert!(p
        .public_key_pem()
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));

    // The tampered token carries the other sub with the original signature.
    let tampered = jsonwebtoken::dangerous::insecure_decode::<Value>(&table[11].token)
        .expect("tampered payload");
    assert_eq!(tampered.claims["sub"], "victim-attacker");

    // The unknown kid is never published, the foreign-key one reuses the current kid.
    let unknown = decode_header(&table[3].token).expect("header");
    assert!(!p
        .published_kids()
        .contains(&unknown.kid.expect("kid present")));
    let foreign = decode_header(&table[4].token).expect("header");
    assert_eq!(foreign.kid, Some(p.current_kid()));

    // Huge but otherwise valid: only a size bound stops it.
    let mut unbounded = Validation::new(Algorithm::RS256);
    unbounded.set_issuer(&[p.issuer()]);
    unbounded.set_audience(&[CLIENT_ID]);
    let key = DecodingKey::from_jwk(jwks.find(&p.current_kid()).expect("jwk")).expect("key");
    jsonwebtoken::decode::<Value>(&table[13].token, &key, &unbounded).expect("validly signed");

    // mint_with_header keeps the header verbatim.
    let token = p.mint_with_header(
        json!({"alg": "RS256", "kid": p.current_kid(), "jku": "https://evil.example.test/jwks"}),
        p.standard_claims("victim"),
    );
    let header = decode_header(&token).expect("header");
    assert_eq!(
        header.jku.as_deref(),
        Some("https://evil.example.test/jwks")
    );
    verify(&p, &jwks, &token).expect("a valid signature; jku is never followed");

    let truncated = truncate_token(&valid);
    assert!(valid.starts_with(&truncated) && truncated.len() < valid.len());
    assert_eq!(truncated.matches('.').count(), 2);
}
