//! Webhook delivery: Standard Webhooks signatures, the private-address guard, and the notifier that
//! drains the journal's delivery outbox.
//!
//! - **Durable**: a delivery row is written in the same transaction as the timeline event it
//!   announces (`journal::hooks`), so the callback is always called, also when a job fails or dies,
//!   whatever step it was. The notifier claims due rows with a lease: a crash mid-request retries
//!   the same message later.
//! - **At least once, deduplicable**: the `webhook-id` is fixed per message and destination; every
//!   attempt re-sends the same id and body, signed afresh with the current `webhook-timestamp`.
//! - **Retried with backoff**: `webhook.retry-base` × 4ⁿ, capped at `webhook.retry-max`, ±20 %
//!   jitter, up to `webhook.max-attempts`; each attempt lands in the job's timeline (`webhook`
//!   event: status, attempt, latency).
//! - **SSRF guard**: the host is resolved and every address must be public: loopback, private,
//!   CGNAT, link-local (cloud metadata), unique-local, multicast and unspecified addresses are
//!   refused unless `LECTERN_WEBHOOK_ALLOW` names the host or a CIDR holding the address. The
//!   request then goes to exactly the checked addresses (no second lookup to rebind), and
//!   redirects are not followed (a 3xx is a failed attempt).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

use crate::clock::Millis;
use crate::config::WebhookOptions;
use crate::journal::Journal;
use crate::journal::hooks::{AttemptResult, Delivery};
use crate::metrics::{self, Metrics};

/// The `webhook-signature` header value: `v1,` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}")),
/// the key being the base64 after `whsec_`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key =
        b64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// Whether an address is one a webhook must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // 169.254/16, cloud metadata included
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking 198.18/15
                || (o[0] == 192 && o[1] == 0 && o[2] == 2) // documentation TEST-NET-1
                || (o[0] == 198 && o[1] == 51 && o[2] == 100) // TEST-NET-2
                || (o[0] == 203 && o[1] == 0 && o[2] == 113) // TEST-NET-3
                || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[0] == 0x2002 // 6to4 2002::/16: tunnels to the IPv4 address it embeds
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32: embeds an (obfuscated) IPv4
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
                || (s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0) // ::/96 IPv4-compatible
        }
    }
}

/// Why a URL may not receive webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("not a valid http(s) URL: {0}")]
    Invalid(String),
    #[error("{host} is a private, loopback or link-local address ({ip}); allow it with LECTERN_WEBHOOK_ALLOW")]
    Private { host: String, ip: IpAddr },
    #[error("{0} did not resolve")]
    Unresolved(String),
}

/// The private-address guard with its allow-list (hosts and CIDRs).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

/// A URL checked by the guard: where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: url::Url,
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

impl Guard {
    pub fn new(opts: &WebhookOptions) -> Self {
        let mut g = Self::default();
        for a in &opts.allow {
            let a = a.trim().to_ascii_lowercase();
            if let Ok(net) = a.parse::<IpNet>() {
                g.nets.push(net);
            } else if let Ok(ip) = a.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                g.nets.push(IpNet::from(ip));
            } else if !a.is_empty() {
                g.hosts.push(a);
            }
        }
        g
    }

    /// Parses a URL and checks what can be checked without DNS.
    pub fn parse(&self, raw: &str) -> Result<(url::Url, String), GuardError> {
        if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(GuardError::Invalid("control characters, spaces or over 2048 bytes".into()));
        }
        let url = url::Url::parse(raw).map_err(|e| GuardError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::Invalid(format!("scheme {} (use http or https)", url.scheme())));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(GuardError::Invalid("no host".into())),
        };
        Ok((url, host))
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), GuardError> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if is_private(ip) && !self.nets.iter().any(|n| n.contains(&ip)) && !self.host_allowed(host) {
            return Err(GuardError::Private { host: host.to_string(), ip });
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    fn check_addrs(&self, url: url::Url, host: String, addrs: Vec<SocketAddr>) -> Result<Target, GuardError> {
        if addrs.is_empty() {
            return Err(GuardError::Unresolved(host));
        }
        for a in &addrs {
            self.check_ip(&host, a.ip())?;
        }
        Ok(Target { url, host, addrs })
    }

    /// Checks a URL, resolving its host (blocking DNS: call off the async workers).
    pub fn check_blocking(&self, raw: &str) -> Result<Target, GuardError> {
        let (url, host) = self.parse(raw)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                (host.as_str(), port).to_socket_addrs().map_err(|_| GuardError::Unresolved(host.clone()))?.collect()
            }
        };
        self.check_addrs(url, host, addrs)
    }

    /// Checks a URL, resolving its host on the runtime.
    pub async fn check(&self, raw: &str) -> Result<Target, GuardError> {
        let (url, host) = self.parse(raw)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| GuardError::Unresolved(host.clone()))?
                .collect(),
        };
        self.check_addrs(url, host, addrs)
    }

    /// For a URL given at registration (upload or endpoint): refused if it is malformed or resolves
    /// to a guarded address; a name that does not resolve now is accepted (delivery retries).
    pub fn admit(&self, raw: &str) -> Result<(), GuardError> {
        match self.check_blocking(raw) {
            Ok(_) | Err(GuardError::Unresolved(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The delay before attempt `attempt + 1`, after `attempt` failed.
pub fn backoff(opts: &WebhookOptions, attempt: u32) -> Duration {
    let base = opts.retry_base.as_secs_f64() * 4f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = base.min(opts.retry_max.as_secs_f64());
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    Duration::from_secs_f64(capped * jitter)
}

/// Drains the outbox until `stop` fires.
pub struct Notifier {
    pub journal: Arc<dyn Journal>,
    pub opts: WebhookOptions,
    pub metrics: Arc<Metrics>,
    pub clock: crate::clock::SharedClock,
}

/// How many deliveries are in flight at once.
const PARALLEL: usize = 8;
/// The longest sleep between looks at the outbox (new rows appear from other transactions).
const POLL: Duration = Duration::from_millis(250);
/// The part of a receiver's answer kept for the timeline.
const BODY_EXCERPT: usize = 200;

impl Notifier {
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let guard = Arc::new(Guard::new(&self.opts));
        let this = Arc::new(self);
        loop {
            if *stop.borrow() {
                return;
            }
            let j = this.journal.clone();
            let now = this.clock.now_ms();
            let due = tokio::task::spawn_blocking(move || j.claim_deliveries(now, PARALLEL * 4)).await;
            let due = match due {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "webhook outbox unavailable");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let busy = !due.is_empty();
            let mut set = tokio::task::JoinSet::new();
            for d in due {
                while set.len() >= PARALLEL {
                    set.join_next().await;
                }
                let (this, guard) = (this.clone(), guard.clone());
                set.spawn_local(async move { this.deliver(&guard, d).await });
            }
            while set.join_next().await.is_some() {}
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn deliver(&self, guard: &Guard, d: Delivery) {
        let started = Instant::now();
        let (status, error) = match self.attempt(guard, &d).await {
            Ok(s) if (200..300).contains(&s) => (Some(s), None),
            Ok(s) => (Some(s), Some(format!("the receiver answered {s}"))),
            Err(e) => (None, Some(e)),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let now = self.clock.now_ms();
        let retry_at: Option<Millis> = match &error {
            Some(_) if d.attempt < self.opts.max_attempts => {
                Some(now + backoff(&self.opts, d.attempt).as_millis() as Millis)
            }
            _ => None,
        };
        let outcome = match (&error, retry_at) {
            (None, _) => "delivered",
            (Some(_), Some(_)) => "retry",
            (Some(_), None) => "exhausted",
        };
        self.metrics.inc(metrics::WEBHOOK_ATTEMPTS, &[("event", &d.event_type), ("outcome", outcome)]);
        self.metrics.observe(metrics::WEBHOOK_SECONDS, &[], started.elapsed().as_secs_f64());
        match &error {
            None => {
                tracing::info!(webhook.id = %d.id, event = %d.event_type, attempt = d.attempt, status, latency_ms, "webhook delivered")
            }
            Some(e) => {
                tracing::warn!(webhook.id = %d.id, event = %d.event_type, attempt = d.attempt, error = %e, ?retry_at, "webhook attempt failed")
            }
        }
        let result = AttemptResult { status, latency_ms, error, retry_at };
        let j = self.journal.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = j.record_delivery(&d, &result, now) {
                tracing::warn!(error = %e, "could not record a webhook attempt (it will be retried)");
            }
        })
        .await;
    }

    /// One POST; `Ok(status)` when the receiver answered.
    async fn attempt(&self, guard: &Guard, d: &Delivery) -> Result<u16, String> {
        let target = guard.check(&d.url).await.map_err(|e| e.to_string())?;
        // A client per attempt: it is pinned to the addresses just checked (no second lookup).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.opts.timeout)
            .connect_timeout(self.opts.timeout.min(Duration::from_secs(5)))
            .resolve_to_addrs(&target.host, &target.addrs)
            .user_agent(concat!("lectern-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let ts = self.clock.now_ms() / 1000;
        let signature = sign(&d.secret, &d.id, ts, d.payload.as_bytes());
        let resp = client
            .post(target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .header("traceparent", crate::telemetry::traceparent(&d.job_id, "notify", d.attempt))
            .body(d.payload.clone())
            .send()
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return Err(format!("redirect ({status}) not followed"));
        }
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(BODY_EXCERPT).collect();
            return if excerpt.is_empty() {
                Ok(status)
            } else {
                Err(format!("the receiver answered {status}: {excerpt}"))
            };
        }
        Ok(status)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let g = Guard::new(&WebhookOptions::default());
        for bad in [
            "http://127.0.0.1/x",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://100.64.0.1/",
            "http://198.18.0.1/",
            "http://198.19.255.254/",
            "http://[2002:7f00:1::1]/",                       // 6to4 of 127.0.0.1
            "http://[2002:c0a8:101::1]/",                     // 6to4 of 192.168.1.1
            "http://[64:ff9b:1::a00:1]/",                     // local-use NAT64
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
            "http://0.0.0.0/",
            "http://2130706433/", // 127.0.0.1 in decimal
            "http://0x7f.1/",
            "http://localhost/",
        ] {
            assert!(matches!(g.check_blocking(bad), Err(GuardError::Private { .. })), "{bad} must be refused");
        }
        for bad in ["ftp://example.com/", "http://", "not a url", "http://exa mple.com/", "file:///etc/passwd"] {
            assert!(matches!(g.check_blocking(bad), Err(GuardError::Invalid(_))), "{bad} must be invalid");
        }
        assert!(g.check_blocking("http://93.184.216.34/hook").is_ok());
        let allow = WebhookOptions { allow: vec!["127.0.0.1".into(), "10.0.0.0/8".into()], ..Default::default() };
        let g = Guard::new(&allow);
        assert!(g.check_blocking("http://127.0.0.1:9/x").is_ok());
        assert!(g.check_blocking("http://10.9.9.9/").is_ok());
        assert!(g.check_blocking("http://192.168.1.1/").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = WebhookOptions {
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            ..Default::default()
        };
        let d1 = backoff(&o, 1).as_secs_f64();
        let d3 = backoff(&o, 3).as_secs_f64();
        assert!((4.0..=6.0).contains(&d1), "{d1}");
        assert!((64.0..=96.0).contains(&d3), "{d3}");
        assert!(backoff(&o, 30).as_secs_f64() <= 3600.0 * 1.2);
    }
}
