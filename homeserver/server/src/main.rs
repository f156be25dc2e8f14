//! `plexus`: the homeserver binary.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use plexus::{
    config::{Config, LogFormat, Settings},
    error::ApiError,
    federation_router, router,
    service::Services,
};

#[derive(Parser)]
#[command(name = "plexus", version, about = "A Matrix homeserver")]
struct Cli {
    /// TOML config file; without it the embedded defaults apply (PLEXUS_* variables still do).
    #[arg(long, env = "PLEXUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// Create an account directly in the data dir (the server must not be running).
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        admin: bool,
    },
    /// Check the configuration and print the effective settings.
    CheckConfig,
    /// Index every stored message again from scratch (the server must not be running).
    RebuildSearchIndex,
}

fn main() -> ExitCode {
    bound_malloc_retention();
    private_files();
    let cli = Cli::parse();
    let settings = match Config::load(cli.config.as_deref()).and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plexus: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexus: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::CreateUser {
                username,
                password,
                admin,
            } => create_user(settings, &username, &password, admin).await,
            Command::CheckConfig => {
                println!("{settings:#?}");
                Ok(())
            }
            Command::RebuildSearchIndex => rebuild_search_index(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold after large frees, after which every Argon2 hash (19 MiB)
/// is carved from a per-thread arena and kept: RSS grew to ~280 MB under a login burst.
/// A fixed threshold hands such buffers back to the OS (measured: ~20 MB after the same load).
#[allow(unsafe_code, reason = "a libc call; see SAFETY below")]
fn bound_malloc_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes allocator parameters; called once before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Everything plexus creates (the data dir, the database, media, the signing and TLS keys) is
/// readable by its own user only: the database holds password hashes and private keys.
#[allow(unsafe_code, reason = "a libc call; see SAFETY below")]
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file creation mask; called before any threads start.
    unsafe {
        libc::umask(0o077);
    }
}

/// glibc keeps memory freed after a burst (thousands of requests at once) in its arenas; hand
/// it back to the OS now and then, so RSS comes down once the burst is over.
#[allow(unsafe_code, reason = "a libc call; see SAFETY below")]
async fn hand_back_freed_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the OS.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn init_tracing(s: &Settings) {
    let mut filter = tracing_subscriber::EnvFilter::new(&s.log_level);
    // ruma's state resolution narrates every resolution at info: without this a federating
    // server's log is nine parts auth chatter. A level that names it explicitly wins.
    if !s.log_level.contains("ruma") {
        if let Ok(d) = "ruma_state_res=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    if !s.log_level.contains(plexus::http::trace::SPAN_TARGET) {
        if let Ok(d) = format!("{}=info", plexus::http::trace::SPAN_TARGET).parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match s.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn create_user(
    settings: Settings,
    username: &str,
    password: &str,
    admin: bool,
) -> Result<(), String> {
    let app = Services::open(settings).map_err(|e| ApiError::from(e).to_string())?;
    // As Matrix errors, so the messages read as they always have.
    let failed = |e: ApiError| e.to_string();
    let user_id = app
        .accounts
        .parse_user_name(username)
        .map_err(|e| failed(e.into()))?;
    app.accounts
        .create_user(&user_id, Some(password), admin)
        .await
        .map_err(|e| failed(e.into()))?;
    app.store.flush().await.map_err(|e| failed(e.into()))?;
    println!("created {user_id}");
    Ok(())
}

async fn rebuild_search_index(settings: Settings) -> Result<(), String> {
    let app = Services::open(settings).map_err(|e| ApiError::from(e).to_string())?;
    let started = std::time::Instant::now();
    let svc = app.clone();
    let events =
        tokio::task::spawn_blocking(move || plexus::service::search::indexer::rebuild(&svc))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| ApiError::from(e).to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "indexed {events} events in {secs:.2} s ({:.0} events/s); {} searchable documents",
        events as f64 / secs.max(1e-9),
        app.search.index.num_docs()
    );
    Ok(())
}

async fn serve(settings: Settings) -> Result<(), String> {
    let addr: SocketAddr = settings.client_listen;
    let app = Services::open(settings).map_err(|e| ApiError::from(e).to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, server_name = %app.server_name(), registration = ?app.settings.registration, "plexus listening (client API)");
    app.spawn_typing_expiry();
    tokio::spawn(hand_back_freed_memory());
    plexus::service::push::gateway::Pushers::spawn(&app)
        .map_err(|e| ApiError::from(e).to_string())?;
    app.ensure_appservice_senders()
        .await
        .map_err(|e| ApiError::from(e).to_string())?;
    plexus::service::appservices::sender::start(&app);
    plexus::service::search::indexer::start(&app);
    for reg in &app.appservices.regs {
        tracing::info!(appservice = %reg.id, url = ?reg.url, "appservice registered");
    }
    if let Some(fed) = app.federation.clone() {
        let tls = plexus::service::federation::tls::load_or_generate(
            &fed.settings,
            &app.settings.data_dir,
            app.server_name().as_str(),
        )
        .map_err(|e| e.to_string())?;
        let addr = fed.settings.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "plexus listening (federation, TLS)");
        tokio::spawn(plexus::service::federation::tls::serve(
            listener,
            tls,
            federation_router(app.clone()),
        ));
        fed.sender.start(&app);
    }
    let store_app = app.clone();
    let stopping = app.stopping.clone();
    let mut stopped = app.stopping.subscribe();
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let serving = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing open requests");
        stopping.send_replace(true);
    });
    // Open requests get a few seconds to finish; a connection that never completes (a client
    // stalled mid-upload, a full disk) must not keep the process alive.
    let deadline = async {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served.map_err(|e| e.to_string())?,
        () = deadline => tracing::warn!("requests still open after {SHUTDOWN_GRACE:?}: stopping anyway"),
    }
    store_app.store.flush().await.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// How long open requests may take to finish once the server is told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
