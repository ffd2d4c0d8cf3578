//! Micro-benchmarks of the per-request work that does not touch the network: routing a
//! request-target, looking a conversation up in the discovery snapshot, and rewriting the
//! request headers for the upstream.
//!
//! Run with `cargo bench -p sandport --bench routing`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use sandport::discovery::{Event, PortMapping, Sandbox, SandboxState, Store};
use sandport::identity::{Authenticator, Secret, TokenAuth};
use sandport::proxy::headers::{prepare_upstream, Forwarding, Peer};
use sandport::routing::{self, ConversationId};

const TOKEN: &str = "bench-token-0123456789abcdef";
const CONVERSATION: &str = "7c15e423fbd44f8f8bf483a481daa4d9";

fn routing_config() -> routing::Config {
    routing::Config {
        runtime_domain: "runtime.example.com".to_owned(),
    }
}

fn bench_parse(c: &mut Criterion) {
    let config = routing_config();
    let long_query = format!(
        "/runtime/{CONVERSATION}/5000/api/v1/files/list?path=%2Fworkspace%2Fproject%2Fsrc\
         &recursive=true&include_hidden=false&sort=name&order=asc&limit=500&offset=0\
         &filter=*.rs&session=3f2c427b1ad1535e&_=1717171717171"
    );
    let host_form = format!("5000-{CONVERSATION}.runtime.example.com");
    let mut group = c.benchmark_group("routing::parse");
    group.bench_function("path form, long query", |b| {
        b.iter(|| {
            routing::parse(
                &config,
                black_box("app.example.com"),
                black_box(&long_query),
            )
        })
    });
    group.bench_function("host form", |b| {
        b.iter(|| {
            routing::parse(
                &config,
                black_box(&host_form),
                black_box("/static/js/main.3f2c427b.js?v=2"),
            )
        })
    });
    group.bench_function("app path", |b| {
        b.iter(|| {
            routing::parse(
                &config,
                black_box("app.example.com"),
                black_box("/api/conversations?limit=20&page_id=abc"),
            )
        })
    });
    group.finish();
}

/// A running sandbox with a realistic shape: an address, three published ports.
fn sandbox(index: u32) -> Sandbox {
    let conversation = ConversationId::parse(&format!("{index:032x}")).expect("32 hex digits");
    Sandbox {
        conversation: conversation.clone(),
        owner: Some(format!("user-{}", index % 97)),
        container_id: format!("{index:064x}"),
        name: format!("oh-agent-server-{conversation}"),
        created: 1_700_000_000 + i64::from(index),
        state: SandboxState::Running,
        address: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + index))),
        ports: vec![
            PortMapping {
                private: 8000,
                public: Some(30_000),
            },
            PortMapping {
                private: 8001,
                public: Some(30_001),
            },
            PortMapping {
                private: 5000,
                public: None,
            },
        ],
    }
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("discovery::Store::lookup");
    for size in [1_u32, 100, 10_000] {
        let store = Store::new(Duration::from_secs(5));
        store.apply(Event::Restarted((0..size).map(sandbox).collect()));
        // Look up the last one inserted: as likely as any other in a hash table.
        let present = ConversationId::parse(&format!("{:032x}", size - 1)).expect("32 hex digits");
        let absent = ConversationId::parse(CONVERSATION).expect("a conversation id");
        let now = Instant::now();
        group.bench_with_input(BenchmarkId::new("hit", size), &present, |b, id| {
            b.iter(|| store.lookup(black_box(id), now))
        });
        group.bench_with_input(BenchmarkId::new("miss", size), &absent, |b, id| {
            b.iter(|| store.lookup(black_box(id), now))
        });
    }
    group.finish();
}

/// What a current browser sends on a same-site fetch to a sandbox port, plus the bearer
/// token and an identity header a client might try to spoof.
fn browser_headers() -> HeaderMap {
    let pairs = [
        ("host", "app.example.com"),
        ("connection", "keep-alive"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"156\", \"Not)A;Brand\";v=\"8\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/156.0.0.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("origin", "https://app.example.com"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("referer", "https://app.example.com/conversations/7c15e423"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9,fr;q=0.8"),
        (
            "cookie",
            "_ga=GA1.1.123456789.1700000000; theme=dark; sandport_token=bench-token-0123456789abcdef; \
             csrftoken=a1b2c3d4e5f60718293a4b5c6d7e8f90",
        ),
        ("authorization", "Bearer bench-token-0123456789abcdef"),
        ("x-cognito-user-id", "mallory"),
        ("priority", "u=1, i"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn bench_headers(c: &mut Criterion) {
    let auth = Authenticator::Token(TokenAuth {
        token: Secret::new(TOKEN.to_owned()),
        user_id: sandport::identity::UserId::parse("bench").expect("a valid user id"),
    });
    let peer = Peer::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let public_authority = HeaderValue::from_static("app.example.com");
    let forwarding = Forwarding {
        peer: &peer,
        keep_forwarded_chain: false,
        external_scheme: sandport::routing::Scheme::Https,
        public_authority: &public_authority,
        websocket: false,
        app_principal: None,
        app_assertion: None,
    };
    let template = browser_headers();
    let mut group = c.benchmark_group("proxy::headers");
    group.bench_function("prepare_upstream, browser request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| prepare_upstream(headers, &forwarding, &auth),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("clone of the header map (baseline)", |b| {
        b.iter(|| black_box(&template).clone())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_lookup, bench_headers
}
criterion_main!(benches);
