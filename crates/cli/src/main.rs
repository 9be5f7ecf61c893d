//! The `tiktok-edge` command: `up` serves a Spin app on the runtime
//! (`tiktok-edge-runtime`), in sandbox mode against the built-in TikTok mock when no
//! TikTok app is configured; the admin commands call a running app's admin API.

mod admin_client;
mod local_secrets;
mod sandbox;

use admin_client::AdminClient;
use anyhow::Context;
use clap::{Parser, Subcommand};
use sandbox::Mode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tiktok_edge_runtime::runtime_config::RuntimeConfig;
use tiktok_edge_runtime::variables::env_name;
use tiktok_edge_runtime::{App, AppOptions};

/// The serving threads allocate and free a lot (a request's headers and bodies, each
/// key and value crossing into a guest and back): glibc's allocator took about 8 % of
/// their time under load. Built without transparent huge pages (`no_thp`): with them its
/// arenas added 50-70 MB of peak RSS for no speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tiktok-edge",
    version,
    about = "TikTok for Business integration at the edge: runs tiktok-edge's WebAssembly components (and Spin apps) on wasmtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app described by a Spin manifest.
    Up {
        /// The Spin manifest (spin.toml, manifest version 2).
        #[arg(long, short = 'f', default_value = "spin.toml")]
        manifest: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000", env = "TIKTOK_EDGE_LISTEN")]
        listen: SocketAddr,
        /// Where key-value data and compiled components are kept.
        #[arg(long, default_value = ".tiktok-edge", env = "TIKTOK_EDGE_DATA_DIR")]
        data_dir: PathBuf,
        /// Host settings: limits, instance reuse, schedules (TOML). Default:
        /// runtime-config.toml next to the manifest, when there is one.
        #[arg(long)]
        runtime_config: Option<PathBuf>,
    },
    /// Organizations (tenants), through the admin API of a running app.
    Orgs {
        #[command(subcommand)]
        command: OrgsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// An organization's API keys, through the admin API.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// An organization's TikTok connections (never their tokens), through the admin API.
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-encrypts every stored token under the first key of token_encryption_keys.
    RotateTokenKeys {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the app runs and the admin token to use.
#[derive(clap::Args)]
struct AdminArgs {
    /// The running app.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:3000",
        env = "TIKTOK_EDGE_URL"
    )]
    url: String,
    /// The admin token; default: SPIN_VARIABLE_ADMIN_TOKEN, else the one `up` generated in --data-dir.
    #[arg(
        long,
        global = true,
        env = "TIKTOK_EDGE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// The data dir of the app (to find a generated admin token).
    #[arg(
        long,
        global = true,
        default_value = ".tiktok-edge",
        env = "TIKTOK_EDGE_DATA_DIR"
    )]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum OrgsCommand {
    /// Creates an organization.
    Create {
        /// 1-64 lowercase letters, digits or '-'.
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// A URL prefix the OAuth flow may return the browser to (repeatable).
        #[arg(long = "return-url")]
        return_urls: Vec<String>,
    },
    /// Lists organizations.
    List,
    /// Shows one organization.
    Show { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issues an API key; the key is printed once and stored only as a digest.
    Create {
        org: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists an organization's keys (prefixes only).
    List { org: String },
    /// Revokes a key.
    Revoke { org: String, key_id: String },
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    /// Lists an organization's connections.
    List { org: String },
    /// Starts an advertiser authorization; prints the URL to open.
    Start {
        org: String,
        #[arg(long)]
        return_url: Option<String>,
        /// Authorize a TikTok account (Spark Ads) instead of an advertiser.
        #[arg(long)]
        creator: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIKTOK_EDGE_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Up {
            manifest,
            listen,
            data_dir,
            runtime_config,
        } => runtime.block_on(up(manifest, listen, data_dir, runtime_config)),
        Command::Orgs { command, admin } => {
            let (method, path, body) = match command {
                OrgsCommand::Create {
                    id,
                    name,
                    return_urls,
                } => (
                    "POST",
                    "/v1/orgs".to_string(),
                    Some(json!({"id": id, "name": name, "allowed_return_urls": return_urls})),
                ),
                OrgsCommand::List => ("GET", "/v1/orgs".to_string(), None),
                OrgsCommand::Show { id } => ("GET", format!("/v1/orgs/{id}"), None),
            };
            runtime.block_on(admin_call(&admin, method, &path, body))
        }
        Command::Keys { command, admin } => {
            let (method, path, body) = match command {
                KeysCommand::Create { org, name } => (
                    "POST",
                    format!("/v1/orgs/{org}/keys"),
                    Some(json!({"name": name})),
                ),
                KeysCommand::List { org } => ("GET", format!("/v1/orgs/{org}/keys"), None),
                KeysCommand::Revoke { org, key_id } => {
                    ("DELETE", format!("/v1/orgs/{org}/keys/{key_id}"), None)
                }
            };
            runtime.block_on(admin_call(&admin, method, &path, body))
        }
        Command::Connections { command, admin } => {
            let (method, path, body) = match command {
                ConnectionsCommand::List { org } => {
                    ("GET", format!("/v1/orgs/{org}/connections"), None)
                }
                ConnectionsCommand::Start {
                    org,
                    return_url,
                    creator,
                } => (
                    "POST",
                    format!("/v1/orgs/{org}/connections/start"),
                    Some(json!({
                        "return_url": return_url,
                        "kind": if creator { "creator" } else { "advertiser" },
                    })),
                ),
            };
            runtime.block_on(admin_call(&admin, method, &path, body))
        }
        Command::RotateTokenKeys { admin } => runtime.block_on(admin_call(
            &admin,
            "POST",
            "/v1/admin/token-keys/rotate",
            None,
        )),
    }
}

/// Makes one admin API call and prints the JSON answer.
async fn admin_call(
    admin: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<()> {
    let token = match &admin.admin_token {
        Some(t) => t.clone(),
        None => match std::env::var(env_name(local_secrets::ADMIN_TOKEN)) {
            Ok(t) if !t.is_empty() => t,
            _ => local_secrets::admin_token(&admin.data_dir)?.with_context(|| {
                format!(
                    "no admin token: pass --admin-token, set TIKTOK_EDGE_ADMIN_TOKEN, or run from where `tiktok-edge up` keeps {}",
                    admin.data_dir.join(local_secrets::FILE_NAME).display()
                )
            })?,
        },
    };
    let answer = AdminClient::new(&admin.url, &token)
        .call(method, path, body)
        .await?;
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

async fn up(
    manifest: PathBuf,
    listen: SocketAddr,
    data_dir: PathBuf,
    runtime_config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let default_config = manifest
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("runtime-config.toml");
    let runtime_config =
        runtime_config.or_else(|| default_config.is_file().then_some(default_config));
    let mut options = AppOptions::new(manifest, data_dir);
    if let Some(file) = &runtime_config {
        options.runtime_config = RuntimeConfig::load(file)?;
    }
    let schedules = options.runtime_config.schedule.clone();
    let generated = local_secrets::apply(&mut options).context("preparing local secrets")?;
    let started = std::time::Instant::now();
    let mode = sandbox::prepare(&mut options)
        .await
        .context("starting the built-in TikTok mock")?;
    let app = tokio::task::spawn_blocking(move || App::load(options)).await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "Serving {} on http://{addr} (loaded in {} ms)",
        app.manifest().name,
        started.elapsed().as_millis()
    );
    match &mode {
        Mode::Sandbox(mock) => {
            let demo = mock.mock.demo_advertiser();
            println!(
                "Sandbox mode: no TikTok app credentials ({} / {}), so TikTok calls go to the built-in mock at {} (demo advertiser {} \"{}\")",
                env_name(sandbox::APP_ID),
                env_name(sandbox::APP_SECRET),
                mock.url(),
                demo.id,
                demo.name
            );
        }
        Mode::CustomApi(url) => println!("No TikTok app credentials set; TikTok calls go to {url}"),
        Mode::Live => {}
    }
    if let Some(file) = &generated {
        println!(
            "Admin token and token encryption key: generated in {} (set {} and {} to use your own)",
            file.display(),
            env_name(local_secrets::ADMIN_TOKEN),
            env_name(local_secrets::TOKEN_KEYS)
        );
    }
    if let Some(file) = &runtime_config {
        println!(
            "Runtime config {}: {} schedule(s)",
            file.display(),
            schedules.len()
        );
    }
    println!("Available routes:");
    for (route, component, kind) in app.routes() {
        println!("  {component}: http://{addr}{route} ({kind:?})");
    }
    println!("Ready; Ctrl-C stops (requests in flight finish first).");
    let app = Arc::new(app);
    let scheduled = tiktok_edge_runtime::scheduler::start(app.clone(), &schedules);
    tiktok_edge_runtime::server::serve(app, listener, shutdown_signal()).await?;
    scheduled.iter().for_each(|task| task.abort());
    drop(mode);
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
