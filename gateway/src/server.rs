//! Building and running the pingora server: the public TLS listeners with the proxy, the admin
//! service, and a background service (certificate reload, SIGHUP, stage tasks, upstream health
//! checks).
//!
//! The library is the extension point: a custom binary adds its own stages with
//! [`GatewayBuilder::stage`], the pingora way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phigate_plugin::{BackgroundTask, ChangeTrigger, Stage};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::LoadedConfig;
use crate::pipeline::Pipeline;
use crate::proxy::GatewayProxy;
use crate::runtime::{BuildError, Runtime};
use crate::tls::{build_listener_tls, install_tls13_only_provider, ReloadableCert};

/// How often listener certificate files are checked for changes.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    loaded: LoadedConfig,
    stages: Vec<Arc<dyn Stage>>,
    upgrade: bool,
}

/// A built gateway, ready to run.
pub struct Gateway {
    server: Server,
    runtime: Arc<Runtime>,
    reloader: Reloader,
}

/// Reloads listener certificates and the stages' files (what SIGHUP does).
#[derive(Clone)]
pub struct Reloader {
    certs: Arc<Vec<Arc<ReloadableCert>>>,
    runtime: Arc<Runtime>,
}

impl Reloader {
    /// Everything SIGHUP reloads: certificates, then each stage's files (changes are recorded
    /// with trigger `sighup`).
    pub fn reload_all(&self) {
        self.reload_certs_by(ChangeTrigger::Sighup);
        self.runtime.pipeline.reload();
    }

    /// Re-reads every listener certificate, as the periodic check does (changes are recorded with
    /// trigger `watch`); returns how many changed.
    pub fn reload_certs(&self) -> usize {
        self.reload_certs_by(ChangeTrigger::Watch)
    }

    fn reload_certs_by(&self, trigger: ChangeTrigger) -> usize {
        self.certs.iter().filter(|c| matches!(c.reload_by(trigger), Ok(true))).count()
    }
}

impl Gateway {
    /// A builder for a gateway over a loaded, validated config.
    pub fn builder(loaded: LoadedConfig) -> GatewayBuilder {
        GatewayBuilder { loaded, stages: Vec::new(), upgrade: false }
    }

    /// The runtime (routes, upstreams, stages), for inspection.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A handle that reloads certificates on demand (what SIGHUP does).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Runs until `shutdown` fires, then drains within the configured grace period.
    pub fn run(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs { shutdown_signal: shutdown });
    }

    /// Runs until a signal: SIGTERM drains gracefully, SIGINT stops fast, SIGQUIT hands the
    /// listening sockets to a new process started with `--upgrade`.
    /// The last log lines (pingora's own shutdown lines, this one) are written before the
    /// process exits: the log writer thread is flushed after pingora returns.
    pub fn run_forever(self) -> ! {
        self.server.run(RunArgs::default());
        log::info!(target: "phigate", "stopped");
        crate::logsink::flush();
        std::process::exit(0)
    }
}

impl GatewayBuilder {
    /// Adds a custom stage. Custom stages run after the built-in decision stages and before
    /// audit, so the audit record describes the request exactly as forwarded.
    pub fn stage(mut self, stage: Arc<dyn Stage>) -> Self {
        self.stages.push(stage);
        self
    }

    /// Take the listening sockets over from a running old process (zero-downtime upgrade).
    pub fn upgrade(mut self, upgrade: bool) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// Builds the server: loads TLS material, resolves upstreams, wires the services.
    ///
    /// # Errors
    /// When TLS material or addresses fail.
    pub fn build(self) -> Result<Gateway, BuildError> {
        install_tls13_only_provider();
        crate::request::preload()
            .map_err(|e| BuildError::Invalid(format!("FHIR compartment definition: {}", e.reason())))?;
        let cfg = &self.loaded.config;
        let dir = &self.loaded.dir;
        let built = crate::stages::build_stages(&self.loaded, &crate::runtime::route_metas(cfg))?;
        let actions =
            crate::admin::AdminActions::load(&cfg.admin, dir, built.exfil.clone(), built.audit.clone())
                .map_err(|e| BuildError::Invalid(e.to_string()))?;
        let audit = built.audit.clone();
        let decide = built.decide.into_iter().chain(self.stages).collect();
        let pipeline = Pipeline::with_record(decide, built.record);
        let runtime = Arc::new(Runtime::build(cfg, dir, pipeline)?);
        let conf = ServerConf {
            threads: cfg.server.threads,
            grace_period_seconds: Some(cfg.server.grace_period_secs),
            graceful_shutdown_timeout_seconds: Some(cfg.server.graceful_shutdown_timeout_secs),
            upgrade_sock: cfg.server.upgrade_sock.display().to_string(),
            pid_file: cfg.server.pid_file.display().to_string(),
            ..ServerConf::default()
        };
        let opt = Opt { upgrade: self.upgrade, ..Opt::default() };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let mut proxy = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            GatewayProxy::new(runtime.clone()),
            "phigate proxy",
        );
        let mut certs = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            let tls = build_listener_tls(&l.name, &l.tls, dir, l.http2, &runtime.metrics)?;
            proxy.add_tls_with_settings(&l.address, None, tls.settings);
            certs.push(tls.cert);
        }
        let mut admin = Service::new(
            "phigate admin".to_owned(),
            AdminApp::new(runtime.clone()).with_actions(actions).with_assertion(built.assertion),
        );
        admin.add_tcp(&cfg.admin.address);
        let mut tasks = Vec::new();
        // Changes are recorded only where there is a trail: without audit nothing is attached.
        if let Some(audit) = audit {
            let (changes, router) = crate::changes::route_to_audit(audit, runtime.metrics.clone());
            runtime.pipeline.attach_changes(&changes);
            certs.iter().for_each(|c| c.attach_changes(changes.clone()));
            tasks.push(router);
        }
        tasks.extend(runtime.pipeline.background_tasks());
        tasks.extend(crate::upstream::health::tasks(&runtime.upstreams, &runtime.metrics));
        tasks.extend(crate::upstream::dns::tasks(&runtime.upstreams, &runtime.metrics));
        let reloader = Reloader { certs: Arc::new(certs), runtime: runtime.clone() };
        let background = Background { reloader: reloader.clone(), tasks: Mutex::new(tasks) };
        server.add_service(proxy);
        server.add_service(admin);
        server.add_service(background_service("phigate background", background));
        Ok(Gateway { server, runtime, reloader })
    }
}

/// Runs stage tasks, watches certificate files and handles SIGHUP.
struct Background {
    reloader: Reloader,
    tasks: Mutex<Vec<BackgroundTask>>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.reloader.reload_certs(); }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    log::info!("SIGHUP: reloading certificates and stage files");
                    self.reloader.reload_all();
                }
                _ = shutdown.changed() => break,
            }
        }
        for h in handles {
            h.abort();
        }
        // Spans still queued go to the collector before the process exits (best effort: a
        // request that ends after this point is not exported).
        let runtime = self.reloader.runtime.clone();
        if runtime.telemetry.is_some() {
            let flushed =
                tokio::task::spawn_blocking(move || runtime.telemetry.as_ref().map(|t| t.flush())).await;
            if let Ok(Some(Err(_))) = flushed {
                log::warn!("tracing: the spans queued at shutdown could not be exported");
            }
        }
        // Log lines waiting for the writer thread go out before the process exits.
        let _ = tokio::task::spawn_blocking(crate::logsink::flush).await;
    }
}
