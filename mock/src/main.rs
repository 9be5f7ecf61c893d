//! `tiktok-mock --listen 127.0.0.1:PORT [--seed N]`: the mock as a standalone server.

use clap::Parser;
use tiktok_mock::{MockConfig, MockServer};

#[derive(Parser)]
#[command(
    name = "tiktok-mock",
    version,
    about = "A local fake of the TikTok Business API v1.3"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9930")]
    listen: std::net::SocketAddr,
    /// Seeds ids and synthetic data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests per second per app and endpoint before code 40100 (0 disables the limit).
    #[arg(long, default_value_t = 10.0)]
    qps: f64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let config = MockConfig {
        seed: cli.seed,
        qps_per_endpoint: (cli.qps > 0.0).then_some(cli.qps),
        ..MockConfig::default()
    };
    let server = MockServer::start_on(cli.listen, config.clone()).await?;
    let demo = server.mock.demo_advertiser();
    println!(
        "tiktok-mock serving TikTok Business API v1.3 on {}/open_api/v1.3/",
        server.url()
    );
    println!("  app_id {} secret {}", config.app_id, config.app_secret);
    println!(
        "  advertiser {} \"{}\" ({}, {})",
        demo.id, demo.name, demo.currency, demo.timezone
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
