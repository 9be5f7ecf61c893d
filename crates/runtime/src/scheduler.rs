//! Calls the app's routes on a timer (creator-token refresh, pixel flush, metrics sync),
//! the way a cron trigger or an external scheduler would on Spin: an HTTP request through
//! the same routing, limits and logging as any other.
//!
//! ```toml
//! [[schedule]]
//! name = "refresh-creator-tokens"
//! path = "/v1/admin/tasks/refresh-creator-tokens"
//! every_secs = 900
//! headers = { authorization = "Bearer {{ admin_token }}" }   # templates use app variables
//! ```

use crate::App;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One scheduled call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    /// Path (and query) to call, e.g. `/v1/admin/tasks/refresh-creator-tokens`.
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Seconds between runs; the first run is one interval after start.
    pub every_secs: u64,
    /// Header values may use `{{ variable }}` templates of the app's variables.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "POST".into()
}

impl Schedule {
    /// Why this schedule cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !self.path.starts_with('/') {
            return Some(format!("schedule {}: path must start with '/'", self.name));
        }
        if self.every_secs == 0 {
            return Some(format!(
                "schedule {}: every_secs must be at least 1",
                self.name
            ));
        }
        if http::Method::from_bytes(self.method.as_bytes()).is_err() {
            return Some(format!(
                "schedule {}: method {:?} is not valid",
                self.name, self.method
            ));
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Some(format!(
                    "schedule {}: header name {name:?} is not valid",
                    self.name
                ));
            }
        }
        None
    }
}

/// Runs one scheduled call now; returns the status and (at most 4 KiB of) the body.
pub async fn run_once(app: &App, schedule: &Schedule) -> Result<(u16, String), String> {
    let mut request = http::Request::builder()
        .method(schedule.method.as_str())
        .uri(schedule.path.as_str())
        .header(http::header::HOST, "localhost");
    for (name, template) in &schedule.headers {
        let value = app
            .render(template)
            .ok_or_else(|| format!("header {name}: a variable in {template:?} is not set"))?;
        request = request.header(name.as_str(), value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let client = SocketAddr::from(([127, 0, 0, 1], 0));
    let response = app.handle(request, client).await;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned();
    Ok((status, text))
}

/// Starts a task per schedule; they stop when the returned handles are aborted or dropped.
pub fn start(app: Arc<App>, schedules: &[Schedule]) -> Vec<tokio::task::JoinHandle<()>> {
    schedules
        .iter()
        .cloned()
        .map(|schedule| {
            let app = app.clone();
            tokio::spawn(async move {
                let every = Duration::from_secs(schedule.every_secs);
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    match run_once(&app, &schedule).await {
                        Ok((status, body)) if status < 400 => {
                            tracing::info!(schedule = %schedule.name, status, %body, "scheduled call done")
                        }
                        Ok((status, body)) => {
                            tracing::warn!(schedule = %schedule.name, status, %body, "scheduled call failed")
                        }
                        Err(e) => tracing::warn!(schedule = %schedule.name, error = %e, "scheduled call not made"),
                    }
                }
            })
        })
        .collect()
}
