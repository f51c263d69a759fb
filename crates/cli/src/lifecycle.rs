//! How long-running subcommands (`… serve`) know when to stop.

/// Options every `serve` subcommand takes.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ServeLifecycle {
    /// Stop when standard input closes (used by `palisade up`, so that no child
    /// outlives it however it ends).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// Resolves on SIGINT, SIGTERM, or — with `--exit-with-parent` — when stdin closes.
pub async fn shutdown_signal(opts: ServeLifecycle) {
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let parent_gone = async {
            if !opts.exit_with_parent {
                return std::future::pending::<()>().await;
            }
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
            _ = term => tracing::info!("SIGTERM received; stopping"),
            _ = parent_gone => tracing::info!("parent process gone; stopping"),
        }
    }
}

/// A multi-threaded runtime (the log's storage bridge needs one).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Messages go to standard error, filtered by `RUST_LOG` (default `info`); as one JSON
/// object per line when `PALISADE_LOG_FORMAT=json` (for log shippers).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

/// A subcommand's exit status; an error is printed to standard error first.
pub fn exit_code(result: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        std::process::ExitCode::FAILURE
    })
}
