//! Decision webhooks (`[notify]`): every event the timeline records (a
//! divert, a fail-back, a kernel fallback, a cache shrink, bypass or
//! restore, isolation, a config reload, ...) is POSTed to a URL, as JSON or
//! as a Slack-compatible `{"text": ...}`. The timeline only queues (a
//! bounded channel, a full one drops and counts), after the same trigger
//! and action within `min_interval` was suppressed, so a flood of one
//! event never crowds another out of the queue: sending, timeouts and
//! retries happen on a task of their own, so a dead receiver never delays
//! a decision.

use prometheus::IntCounterVec;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Events waiting to be sent; more are dropped (and counted).
const QUEUE: usize = 256;
/// Tries per event (the first and two retries), with backoff between.
const TRIES: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(500);

/// `[notify] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as a JSON object.
    Json,
    /// `{"text": "..."}`, as Slack's incoming webhooks take it.
    Slack,
}

/// Where and how decisions are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// `http://HOST:PORT/PATH`, resolved.
    pub server: SocketAddr,
    /// `Host` field.
    pub host: String,
    /// Request target.
    pub path: String,
    /// JSON or Slack.
    pub format: Format,
    /// Longest time for one POST (connect to answer).
    pub timeout: Duration,
    /// The same trigger and action within this time is sent once.
    pub min_interval: Duration,
    /// The pod's name (`HOSTNAME`), in every message.
    pub pod: String,
}

/// One timeline event, as sent.
#[derive(Debug, Clone)]
pub struct Event {
    /// What set it off.
    pub trigger: String,
    /// The measured value.
    pub value: String,
    /// What was done.
    pub action: String,
    /// How it went.
    pub result: String,
    /// Unix milliseconds.
    pub time_unix_ms: u64,
}

/// The queue side, held by the timeline.
pub struct Notifier {
    config: Mutex<Option<NotifyConfig>>,
    tx: mpsc::Sender<Event>,
    counts: IntCounterVec,
    /// When each (trigger, action) was last queued.
    last: Mutex<HashMap<(String, String), Instant>>,
}

/// What the sending task reports back: failures go to the timeline
/// without being notified again.
pub type Failed = Box<dyn Fn(&str, &str) + Send + Sync>;

impl Notifier {
    /// A notifier (sending nothing until configured) and its sending task,
    /// to be spawned on the control runtime. `counts` is
    /// `ultragate_webhook_notifications_total{result}`.
    pub fn new(
        counts: IntCounterVec,
        failed: Failed,
    ) -> (Arc<Notifier>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let me = Arc::new(Notifier {
            config: Mutex::new(None),
            tx,
            counts,
            last: Mutex::new(HashMap::new()),
        });
        let task = me.clone().run(rx, failed);
        (me, task)
    }

    /// Sets or clears the webhook (start and reload).
    pub fn configure(&self, cfg: Option<NotifyConfig>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    fn config(&self) -> Option<NotifyConfig> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues an event unless the same trigger and action was queued
    /// within `min_interval`; never waits.
    pub fn send(&self, event: Event) {
        let Some(cfg) = self.config() else {
            return;
        };
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let key = (event.trigger.clone(), event.action.clone());
            if last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < cfg.min_interval)
            {
                self.counts.with_label_values(&["suppressed"]).inc();
                return;
            }
            last.insert(key, now);
            // Bounded memory: forget keys older than the interval.
            if last.len() > 1024 {
                last.retain(|_, t| now.duration_since(*t) < cfg.min_interval);
            }
        }
        if self.tx.try_send(event).is_err() {
            self.counts.with_label_values(&["dropped"]).inc();
        }
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Event>, failed: Failed) {
        while let Some(event) = rx.recv().await {
            let Some(cfg) = self.config() else {
                continue;
            };
            let body = body(&cfg, &event).to_string();
            let mut error = String::new();
            let mut sent = false;
            for attempt in 0..TRIES {
                if attempt > 0 {
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                }
                match tokio::time::timeout(cfg.timeout, post(&cfg, &body)).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        sent = true;
                        break;
                    }
                    Ok(Ok(status)) => error = format!("answered {status}"),
                    Ok(Err(e)) => error = e.to_string(),
                    Err(_) => error = format!("no answer within {:?}", cfg.timeout),
                }
            }
            if sent {
                self.counts.with_label_values(&["sent"]).inc();
            } else {
                self.counts.with_label_values(&["failed"]).inc();
                failed(
                    &format!("{} after {TRIES} tries", event.action),
                    &format!("webhook {}: {error}", cfg.server),
                );
            }
        }
    }
}

/// The message for `event`.
pub fn body(cfg: &NotifyConfig, e: &Event) -> Value {
    match cfg.format {
        Format::Json => json!({
            "source": "ultragate",
            "pod": cfg.pod,
            "time_unix_ms": e.time_unix_ms,
            "trigger": e.trigger,
            "value": e.value,
            "action": e.action,
            "result": e.result,
        }),
        Format::Slack => json!({
            "text": format!(
                "ultragate {}: {} ({}: {}) → {}",
                cfg.pod, e.action, e.trigger, e.value, e.result
            ),
        }),
    }
}

/// One POST; the status code.
async fn post(cfg: &NotifyConfig, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(cfg.server).await?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ultragate-notify\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cfg.path,
        cfg.host,
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut head[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    std::str::from_utf8(head.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_suppressed_before_the_queue_so_another_event_gets_in() {
        let counts = IntCounterVec::new(prometheus::Opts::new("n", "n"), &["result"]).unwrap();
        let (notifier, _task) = Notifier::new(counts.clone(), Box::new(|_, _| {}));
        notifier.configure(Some(NotifyConfig {
            server: SocketAddr::from(([127, 0, 0, 1], 9)),
            host: "h".into(),
            path: "/".into(),
            format: Format::Json,
            timeout: Duration::from_secs(1),
            min_interval: Duration::from_secs(60),
            pod: "p".into(),
        }));
        let event = |trigger: &str, action: &str| Event {
            trigger: trigger.into(),
            value: "v".into(),
            action: action.into(),
            result: "ok".into(),
            time_unix_ms: 0,
        };
        // The sending task is not running: the queue only fills.
        for _ in 0..10 * QUEUE {
            notifier.send(event("memory", "cache shrink"));
        }
        notifier.send(event("p99_over_threshold", "divert to fallback"));
        let n = |r: &str| counts.with_label_values(&[r]).get();
        assert_eq!(n("dropped"), 0, "the divert alert was queued");
        assert_eq!(n("suppressed"), 10 * QUEUE as u64 - 1);
    }
}
