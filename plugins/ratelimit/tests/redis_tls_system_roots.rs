//! `rediss://` without `tls.ca_path` trusts the operating system's roots (rustls-native-certs,
//! read once when the config is built; phigate-redis tests that reconnections do not re-read).
//! The test points them at its own CA with `SSL_CERT_FILE`, which is process-wide: this binary
//! holds this one test, which sets it before any other thread of its own starts.

mod common;

use common::pki::{self, Pki};
use common::{ctx, install_tls13_provider, ready, stage, tls_server};
use phigate_plugin::{ErrorCode, Stage};
use phigate_ratelimit::{BackendKind, LimitConfig, RateLimitConfig, RedisConfig};

#[test]
fn rediss_without_tls_block_trusts_the_system_roots() {
    let pki = Pki::new();
    std::env::set_var("SSL_CERT_FILE", pki.path(pki::CA));
    std::env::remove_var("SSL_CERT_DIR");
    install_tls13_provider();
    let server = tls_server(&pki, (pki::SERVER_CERT, pki::SERVER_KEY), false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    runtime.expect("runtime").block_on(async {
        let limit = LimitConfig { burst: Some(2), ..LimitConfig::new("system_roots", "principal", 2, 3600) };
        let mut cfg = RateLimitConfig::new(vec![limit]);
        cfg.backend = BackendKind::Redis;
        cfg.redis = Some(RedisConfig::new(server.tls_url()));
        let s = stage(cfg);
        ready(&s).await;
        assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
        assert!(s.on_request(&mut ctx(Some("alice"), 0)).await.is_ok());
        let d = s.on_request(&mut ctx(Some("alice"), 0)).await.expect_err("burst of 2 spent");
        assert_eq!(d.code, ErrorCode::RateLimited);
    });
}
