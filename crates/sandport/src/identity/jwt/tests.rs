//! `verify` against the test provider's hostile-token table and the catalogue's claim attacks,
//! each row with the exact error.

use serde_json::{json, Value};

use super::*;
use crate::identity::jwks;
use sandport_testkit::oidc::TestProvider;

const CLIENT_ID: &str = "jwt-table-client";
const SUB: &str = "8f3c2a1e-0b7d-4c55-9e21-6a4d3f2b1c00";

struct Fixture {
    provider: TestProvider,
    keys: KeySet,
    rules: Rules,
}

async fn fixture() -> Fixture {
    let provider = TestProvider::start(CLIENT_ID, "unused-secret")
        .await
        .unwrap();
    let document = serde_json::to_vec(&provider.jwks()).unwrap();
    let keys = jwks::parse(&document).unwrap();
    let rules = Rules {
        issuer: provider.issuer(),
        client_id: CLIENT_ID.into(),
        token_use: "id".into(),
        clock_skew_secs: 60,
    };
    Fixture {
        provider,
        keys,
        rules,
    }
}

impl Fixture {
    fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        verify(token, &self.keys, &self.rules, oidc_now())
    }

    /// Valid claims for [`SUB`] with `edit` applied.
    fn claims(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut claims = self.provider.standard_claims(SUB);
        if let Value::Object(map) = &mut claims {
            edit(map);
        }
        claims
    }

    fn with_kid(&self, kid: Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        self.provider
            .mint_with_header(header, self.provider.standard_claims(SUB))
    }
}

fn oidc_now() -> u64 {
    crate::identity::oidc::unix_now()
}

fn invalid(kind: &str) -> Result<(), TokenError> {
    Err(TokenError::Invalid(kind.into()))
}

#[tokio::test]
async fn a_valid_token_names_its_subject() {
    let f = fixture().await;
    let verified = f.verify(&f.provider.mint(f.provider.standard_claims(SUB)));
    let verified = verified.unwrap();
    assert_eq!(verified.principal.user_id, SUB);
    assert_eq!(
        verified.principal.email.as_deref(),
        Some(format!("{SUB}@example.test").as_str())
    );
    assert_eq!(verified.principal.email_verified, Some(true));
}

#[tokio::test]
async fn an_expired_copy_of_a_valid_token_is_expired() {
    let f = fixture().await;
    let valid = f.provider.mint(f.provider.standard_claims(SUB));
    assert!(f.verify(&valid).is_ok());
    let expired = f.provider.mint_expired_copy(&valid);
    assert_eq!(f.verify(&expired).map(|_| ()), Err(TokenError::Expired));
}

#[tokio::test]
async fn every_hostile_token_of_the_testkit_table_gets_its_exact_error() {
    let f = fixture().await;
    let table = f.provider.hostile_tokens(SUB);
    let truncated = table
        .iter()
        .find(|row| row.name == "truncated")
        .map(|row| row.token.clone())
        .unwrap();
    let expected = |name: &str| match name {
        "alg_none" | "garbage" | "empty" => Err(TokenError::Malformed),
        "hs256_public_key" | "rs384" => invalid("InvalidAlgorithm"),
        "unknown_kid" => Err(TokenError::UnknownKey),
        "foreign_key_current_kid" | "tampered" => invalid("InvalidSignature"),
        "expired" => Err(TokenError::Expired),
        "nbf_future" => Err(TokenError::NotYetValid),
        "wrong_iss" => invalid("InvalidIssuer"),
        "wrong_aud" => Err(TokenError::WrongAudience),
        "token_use_access" => Err(TokenError::WrongTokenUse),
        "missing_exp" => Err(TokenError::NoExpiry),
        // Half a signature is refused as base64 when its last character carries stray bits
        // (strict decoding), else as a signature that does not match.
        "truncated" => truncated_expectation(&truncated),
        "huge" => Err(TokenError::TooLarge),
        other => panic!("no expectation for the table's new row {other}: add one"),
    };
    assert_eq!(
        table.len(),
        16,
        "the table changed: review the expectations"
    );
    for row in table {
        assert_eq!(
            f.verify(&row.token).map(|_| ()),
            expected(row.name),
            "{}",
            row.name
        );
    }
}

fn truncated_expectation(token: &str) -> Result<(), TokenError> {
    use base64::Engine as _;
    let signature = token.rsplit('.').next().unwrap_or_default();
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) {
        Ok(_) => invalid("InvalidSignature"),
        Err(_) => invalid("Base64"),
    }
}

#[tokio::test]
async fn claim_attacks_get_their_exact_error() {
    let f = fixture().await;
    let cases: Vec<(&str, Value, Result<(), TokenError>)> = vec![
        (
            "token_use missing",
            f.claims(|m| {
                m.remove("token_use");
            }),
            Err(TokenError::NoTokenUse),
        ),
        (
            "Cognito access token",
            f.claims(|m| {
                m.remove("aud");
                m.insert("client_id".into(), json!(CLIENT_ID));
                m.insert("token_use".into(), json!("access"));
            }),
            Err(TokenError::WrongTokenUse),
        ),
        (
            "no aud",
            f.claims(|m| {
                m.remove("aud");
            }),
            Err(TokenError::WrongAudience),
        ),
        (
            "aud list without us",
            f.claims(|m| {
                m.insert("aud".into(), json!(["a", "b"]));
            }),
            Err(TokenError::WrongAudience),
        ),
        (
            "aud list with us",
            f.claims(|m| {
                m.insert("aud".into(), json!(["a", CLIENT_ID]));
            }),
            Ok(()),
        ),
        (
            "sub with a newline",
            f.claims(|m| {
                m.insert("sub".into(), json!("alice\nX-Cognito-User-Id: bob"));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "sub with NUL",
            f.claims(|m| {
                m.insert("sub".into(), json!("alice\u{0}"));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "sub with an escape sequence",
            f.claims(|m| {
                m.insert("sub".into(), json!("\u{1b}[2Jalice"));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "empty sub",
            f.claims(|m| {
                m.insert("sub".into(), json!(""));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "placeholder sub",
            f.claims(|m| {
                m.insert("sub".into(), json!("anonymous"));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "sub over the length limit",
            f.claims(|m| {
                m.insert("sub".into(), json!("a".repeat(300)));
            }),
            Err(TokenError::BadSubject),
        ),
        (
            "sub not a string",
            f.claims(|m| {
                m.insert("sub".into(), json!(42));
            }),
            invalid("Json"),
        ),
        (
            "no sub",
            f.claims(|m| {
                m.remove("sub");
            }),
            invalid("Json"),
        ),
        (
            "iss as a list naming the issuer",
            f.claims(|m| {
                let issuer = m["iss"].clone();
                m.insert("iss".into(), json!([issuer]));
            }),
            invalid("Json"),
        ),
        (
            "iat a day ahead",
            f.claims(|m| {
                m.insert("iat".into(), json!(oidc_now() + 86_400));
            }),
            Err(TokenError::IssuedInFuture),
        ),
        (
            "iat in the skew window",
            f.claims(|m| {
                m.insert("iat".into(), json!(oidc_now() + 30));
            }),
            Ok(()),
        ),
        (
            "exp past the skew window",
            f.claims(|m| {
                m.insert("exp".into(), json!(oidc_now() - 61));
            }),
            Err(TokenError::Expired),
        ),
        (
            "exp in the skew window",
            f.claims(|m| {
                m.insert("exp".into(), json!(oidc_now() - 30));
            }),
            Ok(()),
        ),
    ];
    for (name, claims, expected) in cases {
        let token = f.provider.mint(claims);
        assert_eq!(f.verify(&token).map(|_| ()), expected, "{name}");
    }
}

#[test]
fn duplicate_claims_are_refused_not_resolved() {
    // `serde_json::Value` cannot hold a repeated key, so this token is signed here, with a
    // key of its own, from the payload's raw text.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap();
    let decoding = DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes()).unwrap();
    let keys = KeySet::from([("dup".to_owned(), Arc::new(decoding))]);
    let rules = Rules {
        issuer: "https://idp.test".into(),
        client_id: CLIENT_ID.into(),
        token_use: "id".into(),
        clock_skew_secs: 0,
    };
    let exp = oidc_now() + 600;
    let sign = |payload: &str| {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(r#"{"alg":"RS256","typ":"JWT","kid":"dup"}"#);
        let input = format!("{header}.{}", engine.encode(payload));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &encoding, Algorithm::RS256).unwrap();
        format!("{input}.{signature}")
    };
    let claims = |subs: &str| {
        format!(
            r#"{{"iss":"https://idp.test","aud":"{CLIENT_ID}","token_use":"id","exp":{exp},{subs}}}"#
        )
    };
    let single = sign(&claims(r#""sub":"alice""#));
    assert_eq!(
        verify(&single, &keys, &rules, oidc_now()).map(|v| v.principal.user_id),
        Ok(UserId::parse("alice").unwrap()),
        "the self-signed control token verifies"
    );
    let twice = sign(&claims(r#""sub":"alice","sub":"mallory""#));
    assert_eq!(
        verify(&twice, &keys, &rules, oidc_now()).map(|_| ()),
        invalid("Json")
    );
}

#[tokio::test]
async fn malformed_kids_are_refused_before_any_lookup() {
    let f = fixture().await;
    for (name, kid, expected) in [
        ("path", json!("../../../../dev/null"), TokenError::BadKeyId),
        ("sql", json!("' OR 1=1--"), TokenError::BadKeyId),
        ("8 KiB", json!("a".repeat(8 * 1024)), TokenError::BadKeyId),
        ("empty", json!(""), TokenError::BadKeyId),
        ("control", json!("ab\u{7}cd"), TokenError::BadKeyId),
        ("space", json!("ab cd"), TokenError::BadKeyId),
        ("number", json!(42), TokenError::Malformed),
        ("object", json!({"a": 1}), TokenError::Malformed),
        ("null", Value::Null, TokenError::NoKeyId),
        (
            "well formed, unknown",
            json!("AbC+/=-_0123456789"),
            TokenError::UnknownKey,
        ),
    ] {
        let token = f.with_kid(kid);
        assert_eq!(f.verify(&token).map(|_| ()), Err(expected), "{name}");
    }
    // The kids the provider publishes are all well formed.
    for kid in f.provider.published_kids() {
        assert!(is_well_formed_kid(&kid), "{kid}");
    }
}
