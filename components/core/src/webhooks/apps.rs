//! The webhook apps this deployment accepts deliveries for, with their secrets and limits.

use crate::ApiError;
use crate::platform::env::Env;

/// Extra apps and their secrets: `name:secret[:previous-secret],other:secret`. The
/// deployment's own app (`tiktok_app_id`, `tiktok_app_secret`) is always configured; an
/// entry with its name adds secrets to it (rotation).
pub const APPS_VARIABLE: &str = "webhook_apps";
/// Largest accepted gap between the signature's timestamp and now, in seconds.
pub const TOLERANCE_VARIABLE: &str = "webhook_tolerance_seconds";
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// Largest accepted body, in bytes.
pub const MAX_BODY_VARIABLE: &str = "webhook_max_body_bytes";
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// A configured app: its name in the URL and its active secrets.
#[derive(Clone)]
pub struct WebhookApp {
    pub name: String,
    pub(super) secrets: Vec<String>,
}

impl std::fmt::Debug for WebhookApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebhookApp({}, {} secrets)",
            self.name,
            self.secrets.len()
        )
    }
}

fn valid_app_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Every configured app, the deployment's own first.
pub fn apps(env: &Env) -> Result<Vec<WebhookApp>, ApiError> {
    let mut apps: Vec<WebhookApp> = Vec::new();
    let mut add = |name: &str, secret: &str| -> Result<(), ApiError> {
        if !valid_app_name(name) {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: app name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        if secret.is_empty() {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: app {name} has an empty secret"
            )));
        }
        match apps.iter_mut().find(|a| a.name == name) {
            Some(a) if !a.secrets.iter().any(|s| s == secret) => a.secrets.push(secret.into()),
            Some(_) => {}
            None => apps.push(WebhookApp {
                name: name.into(),
                secrets: vec![secret.into()],
            }),
        }
        Ok(())
    };
    if let (Some(id), Some(secret)) = (
        env.var(crate::platform::env::vars::APP_ID)?,
        env.var(crate::platform::env::vars::APP_SECRET)?,
    ) {
        add(&id, &secret)?;
    }
    for entry in env.var(APPS_VARIABLE)?.unwrap_or_default().split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let mut parts = entry.split(':');
        let name = parts.next().unwrap_or_default().trim();
        let mut any = false;
        for secret in parts {
            add(name, secret.trim())?;
            any = true;
        }
        if !any {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: entry for {name:?} has no secret (name:secret[:secret])"
            )));
        }
    }
    Ok(apps)
}

/// The app named in a webhook URL; 404 when it is not configured.
pub fn app(env: &Env, name: &str) -> Result<WebhookApp, ApiError> {
    apps(env)?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook app named {name:?}")))
}

pub fn tolerance_secs(env: &Env) -> Result<i64, ApiError> {
    env.int_var(TOLERANCE_VARIABLE, DEFAULT_TOLERANCE_SECS, 1..=86_400)
}

pub fn max_body(env: &Env) -> Result<usize, ApiError> {
    Ok(env.int_var(MAX_BODY_VARIABLE, DEFAULT_MAX_BODY as i64, 1..=1 << 20)? as usize)
}
