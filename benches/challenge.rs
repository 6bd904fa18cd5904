//! What `DOSChallenge` costs per request: verifying a pass cookie (every request of a blocked
//! client that carries one), checking a submitted solution (one HMAC + one SHA-256), and
//! issuing a nonce (every challenge page).

use criterion::{criterion_group, criterion_main, Criterion};
use mod_shield::challenge::{nonce, pass, pow, Key};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

const NOW: i64 = 1_800_000_000;

fn bench(c: &mut Criterion) {
    let key = Key([0x5a; 32]);
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let valid = pass::issue(&key, client, 1, NOW + 3600);
    let forged = pass::issue(&Key([0xa5; 32]), client, 1, NOW + 3600);
    let header = format!("_ga=GA1.2.3; theme=dark; shield_pass={valid}");

    let mut g = c.benchmark_group("challenge");
    g.bench_function("pass_verify_valid", |b| {
        b.iter(|| pass::verify(&key, black_box(client), black_box(&valid), NOW))
    });
    g.bench_function("pass_verify_forged", |b| {
        b.iter(|| pass::verify(&key, black_box(client), black_box(&forged), NOW))
    });
    g.bench_function("pass_from_cookie_header", |b| {
        b.iter(|| pass::from_cookies(&key, black_box(client), black_box(&header), 1, NOW))
    });
    let n = nonce::issue(&key, client, NOW, 14);
    let s = pow::solve(&n, 14);
    g.bench_function("submission_check", |b| {
        b.iter(|| {
            nonce::check(&key, black_box(client), black_box(&n), NOW, 14, NOW).is_ok()
                && pow::check(black_box(&n), black_box(s), 14)
        })
    });
    g.bench_function("nonce_issue", |b| {
        b.iter(|| nonce::issue(&key, black_box(client), NOW, 14))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
