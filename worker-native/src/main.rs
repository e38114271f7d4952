//! `worker-native`: see `--help`.

use worker_native::{app, config};

fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{}", config::help());
        return std::process::ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        // The container's health check: exit 0 only when this host's worker is ready.
        let port = std::env::var("HEALTH_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or_else(config::default_health_port);
        return match worker_native::health::check(port, std::time::Duration::from_secs(3)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker-native healthcheck: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match config::Config::from_env() {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("worker-native: {} {}", p.field, p.message);
            }
            eprintln!("worker-native: see --help for every setting");
            return std::process::ExitCode::from(2);
        }
    };
    init_logs(config.json_logs);
    // Two TLS crypto providers are compiled in (the AWS SDK's and reqwest's): rustls
    // cannot choose, so Redis over TLS would panic at its first connection.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(app::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
