//! The health checker against real local servers.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn localhost() -> Target {
    Target {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn spec(probe: Probe) -> HealthSpec {
    HealthSpec {
        probe,
        mesos: false,
        delay: Duration::ZERO,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        grace_period: Duration::ZERO,
        max_consecutive_failures: 3,
    }
}

/// An HTTP server answering every request with the status in `status`
/// (changeable while it runs).
async fn http_server(status: Arc<Mutex<u16>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let code = *status.lock().expect("lock");
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

async fn probe_once(spec: &HealthSpec) -> Verdict {
    let exec = ShellRunner {
        sandbox: std::env::temp_dir(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
    };
    probe::run(spec, &localhost(), &exec).await
}

#[tokio::test]
async fn http_status_codes_decide_health() {
    let status = Arc::new(Mutex::new(200));
    let port = http_server(status.clone()).await;
    let check = |ignore_1xx| {
        spec(Probe::Http {
            tls: false,
            port,
            path: "/health".into(),
            ignore_1xx,
        })
    };
    assert_eq!(probe_once(&check(false)).await, Verdict::Healthy);
    *status.lock().expect("lock") = 302;
    assert_eq!(probe_once(&check(false)).await, Verdict::Healthy);
    *status.lock().expect("lock") = 500;
    assert_eq!(
        probe_once(&check(false)).await,
        Verdict::Unhealthy("HTTP 500".into())
    );
    *status.lock().expect("lock") = 102;
    assert_eq!(probe_once(&check(true)).await, Verdict::Ignored);
    assert_eq!(
        probe_once(&check(false)).await,
        Verdict::Unhealthy("HTTP 102".into())
    );
}

#[tokio::test]
async fn https_accepts_a_self_signed_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![der], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    let check = spec(Probe::Http {
        tls: true,
        port,
        path: "/".into(),
        ignore_1xx: false,
    });
    assert_eq!(probe_once(&check).await, Verdict::Healthy);
    // Plain HTTP to a TLS port does not pass.
    let plain = spec(Probe::Http {
        tls: false,
        port,
        path: "/".into(),
        ignore_1xx: false,
    });
    assert!(matches!(probe_once(&plain).await, Verdict::Unhealthy(_)));
}

#[tokio::test]
async fn tcp_connects_or_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert_eq!(
        probe_once(&spec(Probe::Tcp { port })).await,
        Verdict::Healthy
    );
    drop(listener);
    assert!(matches!(
        probe_once(&spec(Probe::Tcp { port })).await,
        Verdict::Unhealthy(c) if c.contains("refused")
    ));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts (the kernel does) but never answers.
    let mut check = spec(Probe::Http {
        tls: false,
        port,
        path: "/".into(),
        ignore_1xx: false,
    });
    check.timeout = Duration::from_millis(200);
    assert!(matches!(
        probe_once(&check).await,
        Verdict::Unhealthy(c) if c.starts_with("timed out")
    ));
    drop(listener);
}

#[tokio::test]
async fn commands_pass_on_exit_zero() {
    let ok = spec(Probe::Command {
        command: "test -d .".into(),
    });
    assert_eq!(probe_once(&ok).await, Verdict::Healthy);
    let bad = spec(Probe::Command {
        command: "exit 3".into(),
    });
    assert_eq!(
        probe_once(&bad).await,
        Verdict::Unhealthy("command exited with status 3".into())
    );
    let mut slow = spec(Probe::Command {
        command: "sleep 5".into(),
    });
    slow.timeout = Duration::from_millis(100);
    assert!(matches!(probe_once(&slow).await, Verdict::Unhealthy(_)));
}

#[test]
fn the_policy_reports_changes_and_failures_up_to_the_maximum() {
    let mut s = spec(Probe::Tcp { port: 1 });
    s.grace_period = Duration::from_secs(10);
    s.max_consecutive_failures = 2;
    let start = Instant::now();
    let mut p = Policy::new(&s, start);
    let fail = || Verdict::Unhealthy("down".into());
    // Failures in the grace period before any success are ignored.
    assert_eq!(p.judge(fail(), start + Duration::from_secs(1)), None);
    let r = p
        .judge(Verdict::Healthy, start + Duration::from_secs(2))
        .expect("first success");
    assert!(r.healthy);
    assert_eq!(
        p.judge(Verdict::Healthy, start + Duration::from_secs(3)),
        None
    );
    // After a success the grace period no longer hides failures.
    let r = p
        .judge(fail(), start + Duration::from_secs(4))
        .expect("reported");
    assert_eq!((r.healthy, r.consecutive_failures), (false, 1));
    let r = p
        .judge(fail(), start + Duration::from_secs(5))
        .expect("reported");
    assert_eq!(r.consecutive_failures, 2);
    assert_eq!(p.judge(fail(), start + Duration::from_secs(6)), None);
    assert_eq!(
        p.judge(Verdict::Ignored, start + Duration::from_secs(6)),
        None
    );
    let r = p
        .judge(Verdict::Healthy, start + Duration::from_secs(7))
        .expect("recovered");
    assert!(r.healthy);
}

#[test]
fn specs_are_read_from_the_task_info() {
    let hc = pb::HealthCheck {
        r#type: pb::health_check::Type::Http as i32,
        http: Some(pb::health_check::HttpCheckInfo {
            scheme: "http".into(),
            port: 31000,
            path: "/health".into(),
            statuses: Vec::new(),
        }),
        interval_seconds: 2.0,
        timeout_seconds: 1.0,
        grace_period_seconds: 5.0,
        consecutive_failures: 3,
        protocol: "HTTP".into(),
        ignore_http1xx: true,
        ..Default::default()
    };
    let s = HealthSpec::from_proto(&hc).expect("valid");
    assert_eq!(
        s.probe,
        Probe::Http {
            tls: false,
            port: 31000,
            path: "/health".into(),
            ignore_1xx: true
        }
    );
    assert!(!s.mesos, "Marathon's HTTP starts at once");
    assert_eq!(s.interval, Duration::from_secs(2));
    let mesos = pb::HealthCheck {
        protocol: "MESOS_TCP".into(),
        r#type: pb::health_check::Type::Tcp as i32,
        tcp: Some(pb::health_check::TcpCheckInfo { port: 0 }),
        ..Default::default()
    };
    assert!(matches!(
        HealthSpec::from_proto(&mesos),
        Err(HealthError::NoPort("TCP"))
    ));
}

#[tokio::test]
async fn a_checker_reports_a_task_going_unhealthy_and_back() {
    let status = Arc::new(Mutex::new(200));
    let port = http_server(status.clone()).await;
    let results: Arc<Mutex<Vec<HealthResult>>> = Arc::default();
    let sink = results.clone();
    let mut s = spec(Probe::Http {
        tls: false,
        port,
        path: "/".into(),
        ignore_1xx: false,
    });
    s.max_consecutive_failures = 2;
    let exec = ShellRunner {
        sandbox: std::env::temp_dir(),
        env: Vec::new(),
    };
    let checker = Checker::spawn(s, localhost(), exec, move |r| {
        sink.lock().expect("lock").push(r)
    });
    let wait = |n: usize| {
        let results = results.clone();
        async move {
            for _ in 0..200 {
                if results.lock().expect("lock").len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "fewer than {n} results: {:?}",
                results.lock().expect("lock")
            );
        }
    };
    wait(1).await;
    *status.lock().expect("lock") = 503;
    wait(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    *status.lock().expect("lock") = 200;
    wait(4).await;
    checker.stop();
    let got: Vec<(bool, u32)> = results
        .lock()
        .expect("lock")
        .iter()
        .map(|r| (r.healthy, r.consecutive_failures))
        .collect();
    assert_eq!(got, vec![(true, 0), (false, 1), (false, 2), (true, 0)]);
}
