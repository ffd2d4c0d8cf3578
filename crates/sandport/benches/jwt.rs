//! ID-token verification with a cached key: the cost sandport adds per request in OIDC mode.
//!
//! `cargo bench -p sandport --bench jwt`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::{Arc, Mutex};

use sandport::identity::jwt::{self, Rules};
use sandport::identity::provider::{Config as ProviderConfig, Provider};
use sandport::identity::session::{CookiePolicy, SigningKey};
use sandport::identity::{jwks, oidc, Secret};
use sandport_testkit::oidc::TestProvider;

fn verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let provider = runtime
        .block_on(TestProvider::start(
            "bench-client",
            "bench-secret-0123456789",
        ))
        .expect("test provider");
    let keys = jwks::parse(provider.jwks().to_string().as_bytes()).expect("JWKS");
    let token = provider.mint(provider.standard_claims("bench-user"));
    let rules = Rules {
        issuer: provider.issuer(),
        client_id: "bench-client".into(),
        token_use: "id".into(),
        clock_skew_secs: 60,
    };
    let now = jsonwebtoken::get_current_timestamp();
    assert!(jwt::verify(&token, &keys, &rules, now).is_ok());
    c.bench_function("jwt/verify_rs256_cached_key", |b| {
        b.iter(|| jwt::verify(black_box(&token), &keys, &rules, now))
    });
    // What a request pays in OIDC mode: the cookie parsed, the token found in the cache of
    // verified tokens (after the first request), its key checked to be still published.
    let oidc = oidc_mode(&runtime, &provider);
    let mut headers = http::HeaderMap::new();
    let cookie = format!("theme=dark; id_token={token}");
    headers.insert(http::header::COOKIE, cookie.parse().expect("cookie"));
    let authenticated = |headers| {
        matches!(
            runtime.block_on(oidc.authenticate(headers)),
            oidc::AppAuth::Authenticated { .. }
        )
    };
    assert!(authenticated(&headers));
    c.bench_function("oidc/authenticate_cookie_cached", |b| {
        b.iter(|| authenticated(black_box(&headers)))
    });
    let forged = provider.mint_alg_none(provider.standard_claims("bench-user"));
    c.bench_function("jwt/refuse_alg_none", |b| {
        b.iter(|| jwt::verify(black_box(&forged), &keys, &rules, now))
    });
}

fn oidc_mode(runtime: &tokio::runtime::Runtime, test_provider: &TestProvider) -> oidc::Oidc {
    let issuer = test_provider.issuer();
    let provider = test_provider;
    let provider = Arc::new(Provider::new(ProviderConfig {
        issuer: provider.issuer(),
        client_id: "bench-client".into(),
        client_secret: Secret::new("bench-secret-0123456789".into()),
        jwks_uri: Some(provider.jwks_uri()),
        authorization_endpoint: Some(provider.authorization_endpoint()),
        token_endpoint: Some(provider.token_endpoint()),
        end_session_endpoint: None,
        timeout: Duration::from_secs(2),
    }));
    let jwks = Arc::new(jwks::Jwks::new(Arc::clone(&provider)));
    runtime.block_on(jwks.refresh()).expect("JWKS");
    let cookies = CookiePolicy {
        secure: false,
        same_site: "Lax",
        domain: None,
    };
    oidc::Oidc {
        provider,
        jwks,
        rules: Rules {
            issuer,
            client_id: "bench-client".into(),
            token_use: "id".into(),
            clock_skew_secs: 60,
        },
        scopes: "openid".into(),
        session_key: SigningKey::new(&Secret::generate()),
        cookies: cookies.clone(),
        runtime_cookies: cookies,
        runtime_session_secs: 60,
        codes: Mutex::default(),
        verified: Mutex::default(),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = verify
}
criterion_main!(benches);
