//! `dnsward serve`: run the resolver until SIGINT/SIGTERM; SIGHUP reloads the configuration.

use std::path::Path;

use anyhow::Context as _;

use crate::app::RunningApp;

/// Load the configuration at `path`, start everything, serve until a signal, shut down cleanly.
///
/// # Errors
/// When the configuration is invalid or a listener cannot start.
pub fn run(path: &Path) -> anyhow::Result<()> {
    // A SIGHUP before the handlers below exist (while a large list compiles, say) would end the
    // process with the default action, an exit systemd counts as clean and does not restart:
    // until then a HUP only marks a reload as due, done once serving.
    early_hup::install();
    // Absolute from the start: a reload reads the same file by the same name, so the paths
    // inside it resolve alike and an unchanged file is seen as unchanged (started with a
    // relative `--config`, every reload warned that fixed settings had changed).
    let path = std::path::absolute(path)
        .with_context(|| format!("{}: cannot make the path absolute", path.display()))?;
    let cfg = super::load_config(&path)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.server.threads > 0 {
        rt.worker_threads(cfg.server.threads);
    }
    let rt = rt.build().context("starting the runtime")?;
    rt.block_on(async move {
        let app = RunningApp::start(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(
            udp = ?app.dns.udp_addrs,
            tcp = ?app.dns.tcp_addrs,
            dot = ?app.tls.dot_addrs,
            doh = ?app.tls.doh_addrs,
            admin = ?app.admin.as_ref().map(|a| a.addr),
            "dnsward serving"
        );
        wait_for_shutdown(&app).await?;
        tracing::info!("shutting down: finishing in-flight queries and flushing events");
        app.shutdown().await;
        Ok(())
    })
}

/// Serve until SIGINT/SIGTERM; SIGHUP reloads the configuration (a bad one is rejected and the
/// running policy stays).
async fn wait_for_shutdown(app: &RunningApp) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    if early_hup::take() {
        tracing::info!("a SIGHUP arrived while starting: reloading");
        let _ = app.control.reload(Some("SIGHUP"), None).await;
    }
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // The outcome is logged and recorded as a policy event by the control itself.
                // Certificates and the admin token are re-read by the control's reload hook.
                let _ = app.control.reload(Some("SIGHUP"), None).await;
            }
        }
    }
}

/// SIGHUP from process start until the runtime's handler takes over: remembered, not fatal.
mod early_hup {
    use std::sync::atomic::{AtomicBool, Ordering};

    static PENDING: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_hup(_: libc::c_int) {
        // Async-signal-safe: one atomic store.
        PENDING.store(true, Ordering::SeqCst);
    }

    /// Installs the remembering handler. tokio's registration later chains to it, so it keeps
    /// setting the flag for the life of the process (harmless: read once, after start-up).
    pub(super) fn install() {
        let handler: extern "C" fn(libc::c_int) = on_hup;
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGHUP, handler as libc::sighandler_t);
        }
    }

    /// Whether a SIGHUP arrived before the runtime's handler was installed.
    pub(super) fn take() -> bool {
        PENDING.swap(false, Ordering::SeqCst)
    }
}
