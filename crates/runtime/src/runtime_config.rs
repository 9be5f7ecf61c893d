//! Host-only settings (limits, instance reuse), kept out of `spin.toml` as Spin keeps
//! its runtime config separate. Read from an optional TOML file:
//!
//! ```toml
//! [limits]
//! request_timeout_ms = 30000      # a request still running after this gets 504
//! max_request_body_bytes = 1048576  # larger bodies get 413 before any guest runs
//! max_memory_bytes = 134217728    # per instance linear memory cap
//! max_concurrent_requests = 512   # beyond this, requests wait
//! max_connections = 4096          # beyond this, connections wait to be accepted
//!
//! [key_value]                     # the embedded SQLite store
//! write_buffer_keys = 1835008     # new small keys (dedup marks) held in memory before
//!                                 # they are merged into the table, ~160 bytes each; 0: off
//!
//! [component.pixel-collector]
//! max_instance_reuse = 128        # requests one instance serves before it is replaced
//! max_concurrent_reuse = 16       # concurrent requests per instance (wasi:http 0.3 only)
//!
//! [component.campaign-ops]
//! max_request_body_bytes = 524288000  # this component's limit; its bodies are streamed
//! request_timeout_ms = 900000         # this component's timeout (long uploads)
//!
//! [[schedule]]                    # routes called on a timer (see `scheduler`)
//! name = "refresh-creator-tokens"
//! path = "/v1/admin/tasks/refresh-creator-tokens"
//! every_secs = 900
//! headers = { authorization = "Bearer {{ admin_token }}" }
//! ```

use crate::scheduler::Schedule;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tiktok_edge_kv_sqlite::SqliteOptions;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub limits: Limits,
    /// The embedded SQLite store's settings (unused when an embedder brings its own).
    #[serde(default)]
    pub key_value: SqliteOptions,
    #[serde(default)]
    pub component: BTreeMap<String, ComponentSettings>,
    /// Routes the host calls on a timer (see [`crate::scheduler`]).
    #[serde(default)]
    pub schedule: Vec<Schedule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub request_timeout_ms: u64,
    pub max_request_body_bytes: usize,
    pub max_memory_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Open client connections; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout_ms: 30_000,
            max_request_body_bytes: 1 << 20,
            max_memory_bytes: 128 << 20,
            max_concurrent_requests: 512,
            max_connections: 4096,
        }
    }
}

impl Limits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Per-component instance reuse; the default (1 and 1) is a fresh instance per request, as Spin does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentSettings {
    pub max_instance_reuse: usize,
    pub max_concurrent_reuse: usize,
    /// This component's body limit instead of `limits.max_request_body_bytes`. Its
    /// request bodies are then streamed to it as they arrive rather than read first, so
    /// a large upload (an ad video) is never held by the host.
    pub max_request_body_bytes: Option<usize>,
    /// This component's request timeout instead of `limits.request_timeout_ms`.
    pub request_timeout_ms: Option<u64>,
}

impl Default for ComponentSettings {
    fn default() -> Self {
        ComponentSettings {
            max_instance_reuse: 1,
            max_concurrent_reuse: 1,
            max_request_body_bytes: None,
            request_timeout_ms: None,
        }
    }
}

impl ComponentSettings {
    /// The request timeout for this component.
    pub fn request_timeout(&self, limits: &Limits) -> Duration {
        self.request_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| limits.request_timeout())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl RuntimeConfig {
    pub fn load(file: &Path) -> Result<Self, RuntimeConfigError> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| RuntimeConfigError::Read {
            file: name.clone(),
            source,
        })?;
        Self::parse(&name, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, RuntimeConfigError> {
        let invalid = |message: String| RuntimeConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        let config: RuntimeConfig =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let l = &config.limits;
        if l.request_timeout_ms == 0 {
            return Err(invalid(
                "`limits.request_timeout_ms` must be at least 1".into(),
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid(
                "`limits.max_connections` must be at least 1".into(),
            ));
        }
        if l.max_concurrent_requests == 0 {
            return Err(invalid(
                "`limits.max_concurrent_requests` must be at least 1".into(),
            ));
        }
        if l.max_memory_bytes < (1 << 16) {
            return Err(invalid(
                "`limits.max_memory_bytes` must be at least one 64 KiB page".into(),
            ));
        }
        for (id, c) in &config.component {
            if c.max_instance_reuse == 0 || c.max_concurrent_reuse == 0 {
                return Err(invalid(format!(
                    "`component.{id}`: reuse counts must be at least 1"
                )));
            }
            if c.max_request_body_bytes == Some(0) || c.request_timeout_ms == Some(0) {
                return Err(invalid(format!(
                    "`component.{id}`: max_request_body_bytes and request_timeout_ms must be at least 1"
                )));
            }
        }
        if let Some(problem) = config.schedule.iter().find_map(Schedule::problem) {
            return Err(invalid(problem));
        }
        Ok(config)
    }

    pub fn component(&self, id: &str) -> ComponentSettings {
        self.component.get(id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_fresh_instance_per_request() {
        let c = RuntimeConfig::parse("rc.toml", "").unwrap();
        assert_eq!(c.component("x").max_instance_reuse, 1);
        assert_eq!(c.limits.max_request_body_bytes, 1 << 20);
    }

    #[test]
    fn reads_limits_and_reuse() {
        let c = RuntimeConfig::parse(
            "rc.toml",
            "[limits]\nmax_request_body_bytes = 10\n[component.a]\nmax_instance_reuse = 128\nmax_concurrent_reuse = 16\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_request_body_bytes, 10);
        assert_eq!(c.component("a").max_concurrent_reuse, 16);
    }

    #[test]
    fn reads_the_stores_write_buffer_size_and_refuses_a_negative_one() {
        let c = RuntimeConfig::parse("rc.toml", "").unwrap();
        assert_eq!(c.key_value.write_buffer_keys, 1_835_008);
        let c = RuntimeConfig::parse(
            "rc.toml",
            "[key_value]
write_buffer_keys = 0
",
        )
        .unwrap();
        assert_eq!(c.key_value.write_buffer_keys, 0);
        for bad in ["write_buffer_keys = -1", "write_buffer = 5"] {
            let e = RuntimeConfig::parse("rc.toml", &format!("[key_value]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("write_buffer"), "{e}");
        }
    }

    #[test]
    fn reads_schedules_and_refuses_bad_ones() {
        let c = RuntimeConfig::parse(
            "rc.toml",
            "[[schedule]]\nname = \"r\"\npath = \"/t\"\nevery_secs = 5\nheaders = { authorization = \"Bearer {{ admin_token }}\" }\n",
        )
        .unwrap();
        assert_eq!(
            (c.schedule[0].method.as_str(), c.schedule[0].every_secs),
            ("POST", 5)
        );
        let e = RuntimeConfig::parse(
            "rc.toml",
            "[[schedule]]\nname = \"r\"\npath = \"t\"\nevery_secs = 5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("schedule r: path"), "{e}");
        let e = RuntimeConfig::parse(
            "rc.toml",
            "[[schedule]]\nname = \"r\"\npath = \"/t\"\nevery_secs = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("every_secs"), "{e}");
    }

    #[test]
    fn refuses_unknown_keys_and_zero_limits() {
        let e = RuntimeConfig::parse("rc.toml", "[limits]\nmax_body = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rc.toml: ") && e.contains("max_body"), "{e}");
        let e = RuntimeConfig::parse("rc.toml", "[component.a]\nrequest_timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("component.a") && e.contains("request_timeout_ms"),
            "{e}"
        );
        let c = RuntimeConfig::parse(
            "rc.toml",
            "[component.a]\nmax_request_body_bytes = 500\nrequest_timeout_ms = 90000\n",
        )
        .unwrap();
        assert_eq!(c.component("a").max_request_body_bytes, Some(500));
        assert_eq!(
            c.component("a").request_timeout(&c.limits),
            Duration::from_secs(90)
        );
        assert_eq!(
            c.component("b").request_timeout(&c.limits),
            Duration::from_secs(30)
        );
        let e = RuntimeConfig::parse("rc.toml", "[component.a]\nmax_instance_reuse = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("component.a"), "{e}");
    }
}
