//! The `tiktok-edge` command: a thin CLI over the `tiktok_edge` library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tiktok_edge::runtime_config::RuntimeConfig;
use tiktok_edge::sandbox::{self, Mode};
use tiktok_edge::variables::env_name;
use tiktok_edge::{App, AppOptions};

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
        /// Host settings: limits and instance reuse (TOML).
        #[arg(long)]
        runtime_config: Option<PathBuf>,
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
    }
}

async fn up(
    manifest: PathBuf,
    listen: SocketAddr,
    data_dir: PathBuf,
    runtime_config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut options = AppOptions::new(manifest, data_dir);
    if let Some(file) = runtime_config {
        options.runtime_config = RuntimeConfig::load(&file)?;
    }
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
    println!("Available routes:");
    for (route, component, kind) in app.routes() {
        println!("  {component}: http://{addr}{route} ({kind:?})");
    }
    println!("Ready; Ctrl-C stops (requests in flight finish first).");
    tiktok_edge::server::serve(Arc::new(app), listener, shutdown_signal()).await?;
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
