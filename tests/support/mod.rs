//! Helpers of the tests against real parts: a Prometheus server on a free loopback port
//! ([`prometheus`]), a Linkerd-proxy metrics exporter ([`exporter`]), scriptable HTTP servers
//! for the failure cases and for counting queries ([`fake`]), a real Kubernetes control plane
//! ([`cluster`]), l3 installed into it by helm and run as real processes ([`release`]), and a
//! TrafficSplit-driven request mix ([`mesh`]), and a single-node VictoriaMetrics ([`victoria`]).

// Each test binary uses its own part of this shared code; the rest is dead code there.
#![allow(dead_code)]

pub mod cluster;
pub mod exporter;
pub mod fake;
pub mod fixture;
pub mod mesh;
pub mod prometheus;
pub mod release;
pub mod victoria;

use std::time::{Duration, Instant};

/// Poll `check` every `every` until it returns `Ok`, or fail with its last error after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("condition not met within {limit:?}; last state:\n{e}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Decode an `application/x-www-form-urlencoded` body into pairs.
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}
