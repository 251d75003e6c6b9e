//! App model: seed apps, validation table, round trips, updates, service
//! ports, timestamps.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use meseta_scheduler::model::{
    assign_service_ports, marathon_timestamp, parse_app_definition, parse_app_update, parse_json,
    render_app, AppChange, AppDefinition, AppUpdate, ConstraintOperator, ModelError, NetworkMode,
    ParseErrorKind, PathId, ServicePortAllocator,
};
use serde_json::{json, Value};

fn seed_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/seed-apps");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("seed apps directory {} is missing in CI", dir.display());
    }
    println!(
        "skipping: seed apps directory {} not present",
        dir.display()
    );
    None
}

fn app(json: Value) -> AppDefinition {
    parse_app_definition(json.to_string().as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn invalid(json: Value) -> meseta_scheduler::model::ValidationError {
    match parse_app_definition(json.to_string().as_bytes()) {
        Err(ModelError::Invalid(e)) => e,
        other => panic!("expected a validation error for {json}, got {other:?}"),
    }
}

fn round_trip(a: &AppDefinition) {
    let first = Value::Object(render_app(a));
    let again = parse_app_definition(first.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("rendered app does not parse: {e}\n{first:#}"));
    let mut stamped = again.clone();
    stamped.version = a.version;
    stamped.version_info = a.version_info;
    let second = Value::Object(render_app(&stamped));
    assert_eq!(first, second, "render → parse → render differs");
    // Stored form (Deserialize keeps versions) round-trips too.
    let stored: AppDefinition =
        serde_json::from_value(first.clone()).expect("stored form reads back");
    assert_eq!(Value::Object(render_app(&stored)), first);
}

/// Named `model` so that `cargo test -p meseta-scheduler model` selects these.
mod model {
    use super::*;

    #[test]
    fn every_seed_app_parses_and_validates() {
        let Some(dir) = seed_dir() else { return };
        let base = app(json!({"id": "/base", "cmd": "sleep 1000", "instances": 1}));
        let mut seen = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("readable dir")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            seen += 1;
            let body = std::fs::read(&path).expect("readable seed app");
            let update =
                parse_app_update(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if update.id.is_some() {
                let a = update
                    .to_app(None)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let rendered = render_app(&a);
                assert!(rendered["id"].as_str().is_some_and(|s| s.starts_with('/')));
                round_trip(&a);
            } else {
                // scale-2.json / scale-3.json: partial updates.
                assert!(update.is_scale_only(), "{}", path.display());
                let next = update
                    .apply_to(&base)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(base.change_to(&next), AppChange::ScaleOnly);
            }
        }
        assert!(seen >= 10, "only {seen} seed apps found");
    }

    #[test]
    fn seed_oddities() {
        let Some(dir) = seed_dir() else { return };
        let read = |name: &str| {
            let body = std::fs::read(dir.join(name)).expect("seed app exists");
            parse_app_definition(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let foo = read("foo-app.json");
        assert_eq!(foo.id.to_string(), "/foo-app");
        assert_eq!(
            foo.cpus, 1.0,
            "unknown key `cpu` is ignored, default cpus kept"
        );
        assert_eq!(foo.constraints.len(), 1);
        assert_eq!(foo.constraints[0].operator, ConstraintOperator::Unique);
        assert_eq!(
            render_app(&foo)["constraints"],
            json!([["hostname", "UNIQUE"]])
        );
        assert_eq!(foo.port_definitions[0].port, 8080);
        assert_eq!(render_app(&foo)["ports"], json!([8080]));
        assert_eq!(foo.fetch[0].uri, "http://example.invalid/foo-app.tgz");
        assert!(foo.fetch[0].extract);

        let reg = read("docker-registry.json");
        assert_eq!(reg.networks[0].mode, NetworkMode::ContainerBridge);
        assert!(
            reg.port_definitions.is_empty(),
            "ports are dropped with bridge networking"
        );
        let c = reg.container.as_ref().expect("container");
        assert_eq!(c.port_mappings().len(), 1);
        assert_eq!(c.port_mappings()[0].service_port, 5000);
        assert_eq!(
            c.volumes[0].host_path.as_deref(),
            Some("/local/path/to/store/packages")
        );
        assert_eq!(render_app(&reg)["ports"], json!([5000]));

        let web = read("webserver.json");
        let m = &web.container.as_ref().expect("container").port_mappings()[0];
        assert_eq!((m.container_port, m.host_port), (8080, Some(0)));
        assert_eq!(web.accepted_resource_roles, vec!["slave_public"]);

        let frontend = read("frontend.json");
        assert_eq!(frontend.mem, 128.0);
        assert_eq!(frontend.networks[0].mode, NetworkMode::Host);
        let hc = &render_app(&frontend)["healthChecks"][0];
        assert_eq!(hc["timeoutSeconds"], 20);
        assert_eq!(hc["delaySeconds"], 15);
        assert_eq!(hc["gracePeriodSeconds"], 10);
    }

    #[test]
    fn validation_table() {
        let base = json!({"id": "/ok", "cmd": "sleep 1"});
        let with = |patch: Value| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().expect("object") {
                v[k] = x.clone();
            }
            v
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (with(json!({"cpus": -1})), "/cpus", "must be greater than or equal to 0.001"),
            (with(json!({"mem": -5})), "/mem", "must be greater than or equal to 0"),
            (with(json!({"disk": -5})), "/disk", "must be greater than or equal to 0"),
            (with(json!({"gpus": -1})), "/gpus", "must be greater than or equal to 0"),
            (with(json!({"instances": -1})), "/instances", "must be greater than or equal to 0"),
            (with(json!({"backoffFactor": 0.5})), "/backoffFactor", "must be greater than or equal to 1"),
            (with(json!({"args": ["a"]})), "/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."),
            (json!({"id": "/nothing"}), "/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."),
            (with(json!({"id": "/Bad_Id"})), "/id", "must fully match regular expression"),
            (with(json!({"id": "/a/tasks"})), "/id", "must not end with any of the following reserved keywords"),
            (with(json!({"id": "/"})), "/id", "Path must contain at least one path element"),
            (with(json!({"portDefinitions": [{"port": 70000}]})), "/portDefinitions(0)/port", "must be between 0 and 65535"),
            (with(json!({"portDefinitions": [{"port": 0, "name": "a"}, {"port": 0, "name": "a"}]})), "/portDefinitions", "Port names must be unique."),
            (with(json!({"portDefinitions": [{"port": 80}, {"port": 80}]})), "/portDefinitions", "Ports must be unique."),
            (with(json!({"constraints": [["hostname", "NEAR"]]})), "/constraints(0)", "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS"),
            (with(json!({"constraints": [["hostname"]]})), "/constraints(0)", "Each constraint must have either 2 or 3 fields"),
            (with(json!({"constraints": [["hostname", "UNIQUE", "x"]]})), "/constraints(0)", "UNIQUE does not accept a value"),
            (with(json!({"constraints": [["rack", "MAX_PER", "two"]]})), "/constraints(0)", "MAX_PER requires an integer value"),
            (with(json!({"constraints": [["rack", "LIKE"]]})), "/constraints(0)", "LIKE and UNLIKE require a non-empty, regular expression value"),
            (with(json!({"healthChecks": [{"protocol": "GOPHER"}]})), "/healthChecks(0)/protocol", "unknown protocol GOPHER"),
            (with(json!({"healthChecks": [{"protocol": "HTTP", "portIndex": 3}]})), "/healthChecks(0)", "Health check port indices must address an element of the ports array or container port mappings."),
            (with(json!({"healthChecks": [{"protocol": "COMMAND"}]})), "/healthChecks(0)/command", "must be defined for COMMAND health checks"),
            (with(json!({"healthChecks": [{"protocol": "MESOS_HTTP"}, {"protocol": "MESOS_TCP"}]})), "/", "AppDefinition can contain at most one Mesos health check"),
            (with(json!({"upgradeStrategy": {"minimumHealthCapacity": 1.5}})), "/upgradeStrategy/minimumHealthCapacity", "must be between 0 and 1"),
            (with(json!({"upgradeStrategy": {"maximumOverCapacity": -0.1}})), "/upgradeStrategy/maximumOverCapacity", "must be between 0 and 1"),
            (with(json!({"env": {"A=B": "x"}})), "/env(A=B)", "must not contain '=' or NUL"),
            (with(json!({"env": {"P": {"secret": "nope"}}})), "/env(P)", "references an undefined secret named 'nope'"),
            (with(json!({"cmd": ""})), "/cmd", "must not be an empty string"),
            (with(json!({"container": {"type": "DOCKER", "docker": {"image": ""}}})), "/container/docker/image", "must not be empty"),
            (with(json!({"uris": ["http://a/x.tgz"], "fetch": [{"uri": "http://b/y"}]})), "/", "cannot specify both uris and fetch fields"),
            (with(json!({"ports": [1], "portDefinitions": [{"port": 2}]})), "/", "cannot specify both ports and port definitions"),
            (with(json!({"unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}})), "/unreachableStrategy/inactiveAfterSeconds", "must be less or equal to expungeAfterSeconds"),
            (with(json!({"readinessChecks": [{"portName": "nope"}]})), "/readinessChecks(0)/portName", "No port definition reference for portName nope"),
            (with(json!({"networks": [{"mode": "host"}, {"mode": "container", "name": "x"}]})), "/networks", "Must specify either a single host network"),
        ];
        for (body, path, message) in cases {
            let err = invalid(body.clone());
            assert_eq!(err.message, "Object is not valid");
            let errors = err.errors_at(path);
            assert!(
                errors.iter().any(|e| e.contains(message)),
                "{body}: expected {message:?} at {path}, got {:?}",
                err.details
            );
            // The serialized shape is Marathon's.
            let v = serde_json::to_value(&err).expect("serializes");
            assert!(v["details"][0]["path"].is_string() && v["details"][0]["errors"].is_array());
        }
    }

    #[test]
    fn all_violations_are_reported_at_once() {
        let err = invalid(json!({"id": "/x", "cmd": "a", "cpus": -1, "mem": -1, "instances": -3}));
        let paths: Vec<_> = err.details.iter().map(|d| d.path.as_str()).collect();
        assert!(
            paths.contains(&"/cpus") && paths.contains(&"/mem") && paths.contains(&"/instances"),
            "{paths:?}"
        );
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        for (body, kind, path) in [
            (&b"{not json"[..], ParseErrorKind::Syntax, None),
            (b"", ParseErrorKind::Syntax, None),
            (
                br#"{"id": "/x", "cpus": "lots"}"#,
                ParseErrorKind::Data,
                Some("/cpus"),
            ),
            (
                br#"{"id": "/x", "healthChecks": [{"intervalSeconds": "x"}]}"#,
                ParseErrorKind::Data,
                Some("/healthChecks(0)/intervalSeconds"),
            ),
            (
                br#"{"id": "/x", "labels": {"a": 1}}"#,
                ParseErrorKind::Data,
                Some("/labels/a"),
            ),
            (br#"[1, 2]"#, ParseErrorKind::Data, None),
            (br#"{"id": "/x"} trailing"#, ParseErrorKind::Syntax, None),
        ] {
            match parse_app_definition(body) {
                Err(e @ ModelError::Parse(_)) => {
                    let ModelError::Parse(p) = &e else {
                        unreachable!()
                    };
                    let expected_status = if kind == ParseErrorKind::Syntax {
                        400
                    } else {
                        422
                    };
                    assert_eq!(e.http_status(), expected_status);
                    assert_eq!(p.kind, kind, "{}", String::from_utf8_lossy(body));
                    if let Some(path) = path {
                        assert_eq!(p.path, path);
                    }
                    assert_eq!(e.to_json()["message"], "Invalid JSON");
                }
                other => panic!(
                    "{}: expected a parse error, got {other:?}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
        // Valid JSON, invalid definition: 422.
        let e =
            parse_app_definition(br#"{"id": "/x", "cmd": "a", "cpus": -1}"#).expect_err("invalid");
        assert_eq!(e.http_status(), 422);
        assert_eq!(e.to_json()["message"], "Object is not valid");
    }

    #[test]
    fn rendering_fills_defaults() {
        let mut a = app(json!({
            "id": "web",
            "cmd": "python3 -m http.server $PORT0",
            "healthChecks": [{"protocol": "HTTP"}]
        }));
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .expect("date");
        a.stamp_version(t, AppChange::Config);
        let r = render_app(&a);
        assert_eq!(r["id"], "/web");
        assert_eq!(r["labels"], json!({}));
        assert_eq!(r["env"], json!({}));
        assert_eq!(r["constraints"], json!([]));
        assert_eq!(r["uris"], json!([]));
        assert_eq!(r["fetch"], json!([]));
        assert_eq!(r["instances"], 1);
        assert_eq!(r["cpus"], 1.0);
        assert_eq!(r["mem"], 128.0);
        assert_eq!(r["disk"], 0.0);
        assert_eq!(r["gpus"], 0);
        assert_eq!(r["executor"], "");
        assert_eq!(r["backoffSeconds"], 1);
        assert_eq!(r["backoffFactor"], 1.15);
        assert_eq!(r["maxLaunchDelaySeconds"], 300);
        assert_eq!(r["killSelection"], "YOUNGEST_FIRST");
        assert_eq!(r["requirePorts"], false);
        assert_eq!(
            r["upgradeStrategy"],
            json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0})
        );
        assert_eq!(
            r["unreachableStrategy"],
            json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        );
        assert_eq!(r["networks"], json!([{"mode": "host"}]));
        assert_eq!(
            r["portDefinitions"],
            json!([{"port": 0, "protocol": "tcp", "name": "default"}])
        );
        assert_eq!(r["ports"], json!([0]));
        assert_eq!(
            r["healthChecks"][0],
            json!({
                "protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 300,
                "intervalSeconds": 60, "timeoutSeconds": 20, "maxConsecutiveFailures": 3,
                "delaySeconds": 15, "ignoreHttp1xx": false
            })
        );
        assert_eq!(r["version"], "2026-11-23T10:00:00.000Z");
        assert_eq!(
            r["versionInfo"],
            json!({"lastScalingAt": "2026-11-23T10:00:00.000Z", "lastConfigChangeAt": "2026-11-23T10:00:00.000Z"})
        );
        for absent in [
            "tty",
            "resourceLimits",
            "check",
            "role",
            "ipAddress",
            "args",
            "user",
            "container",
            "secrets",
        ] {
            assert!(
                !r.contains_key(absent),
                "{absent} must not be rendered when unset"
            );
        }
        round_trip(&a);
    }

    #[test]
    fn round_trip_of_a_rich_app() {
        let mut a = app(json!({
            "id": "/prod/api",
            "args": ["serve", "--port", "8080"],
            "user": "nobody",
            "env": {"A": "1", "PASSWORD": {"secret": "db"}},
            "secrets": {"db": {"source": "/db/password"}},
            "instances": 4, "cpus": 0.25, "mem": 64, "disk": 10,
            "constraints": [["rack", "GROUP_BY", "3"], ["hostname", "MAX_PER", "2"]],
            "fetch": [{"uri": "https://x/a.zip", "cache": true, "destPath": "a.zip"}],
            "container": {"type": "DOCKER", "docker": {"image": "nginx", "forcePullImage": true,
                "parameters": [{"key": "ulimit", "value": "nofile=1024"}]},
                "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}]},
            "networks": [{"mode": "container/bridge"}],
            "container_unused": true,
            "healthChecks": [{"protocol": "TCP", "portIndex": 0}, {"protocol": "COMMAND", "command": {"value": "true"}}],
            "readinessChecks": [{"portName": "default"}],
            "dependencies": ["../db"],
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0},
            "labels": {"HAPROXY_GROUP": "external"},
            "acceptedResourceRoles": ["*"],
            "taskKillGracePeriodSeconds": 30,
            "unreachableStrategy": "disabled",
            "killSelection": "OLDEST_FIRST",
            "role": "prod",
            "tty": true
        }));
        assert_eq!(a.dependencies[0].to_string(), "/db");
        let mut alloc = ServicePortAllocator::new([]);
        assign_service_ports(&mut a, &mut alloc).expect("ports left");
        a.stamp_version(Utc::now(), AppChange::Config);
        let r = render_app(&a);
        assert_eq!(r["container"]["portMappings"][0]["servicePort"], 10000);
        assert_eq!(r["container"]["portMappings"][0]["hostPort"], 0);
        assert_eq!(r["ports"], json!([10000]));
        assert_eq!(r["unreachableStrategy"], "disabled");
        assert_eq!(r["env"]["PASSWORD"], json!({"secret": "db"}));
        assert_eq!(r["tty"], true);
        round_trip(&a);
    }

    #[test]
    fn partial_update_keeps_absent_fields() {
        let current = app(json!({
            "id": "/web", "cmd": "serve", "instances": 2, "mem": 64,
            "env": {"A": "1"}, "labels": {"x": "y"}, "portDefinitions": [{"port": 10005}]
        }));
        let scale: AppUpdate = serde_json::from_value(json!({"instances": 5})).expect("parses");
        let scaled = scale.apply_to(&current).expect("valid");
        assert_eq!(scaled.instances, 5);
        assert_eq!(scaled.mem, 64.0);
        assert_eq!(scaled.env, current.env);
        assert_eq!(scaled.labels, current.labels);
        assert_eq!(scaled.port_definitions, current.port_definitions);
        assert_eq!(current.change_to(&scaled), AppChange::ScaleOnly);
        assert!(scale.is_scale_only());

        let env: AppUpdate = serde_json::from_value(json!({"env": {"B": "2"}})).expect("parses");
        let changed = env.apply_to(&current).expect("valid");
        assert_eq!(
            changed.env.len(),
            1,
            "a present field replaces the whole value"
        );
        assert_eq!(changed.instances, 2);
        assert_eq!(current.change_to(&changed), AppChange::Config);
        assert!(!env.is_scale_only());

        assert_eq!(current.change_to(&current.clone()), AppChange::None);

        // Replace mode: absent fields fall back to defaults.
        let replaced = env.to_app(Some(&current.id)).expect_err("no cmd: invalid");
        assert!(!replaced.errors_at("/").is_empty());
        let body: AppUpdate = serde_json::from_value(json!({"cmd": "other"})).expect("parses");
        let replaced = body.to_app(Some(&current.id)).expect("valid");
        assert_eq!(replaced.instances, 1);
        assert_eq!(replaced.mem, 128.0);
        assert!(replaced.env.is_empty());

        // Invalid partial update is reported, current untouched.
        let bad: AppUpdate = serde_json::from_value(json!({"cpus": -2})).expect("parses");
        assert!(bad.apply_to(&current).is_err());

        // version may only come with id.
        let rollback: AppUpdate =
            serde_json::from_value(json!({"version": "2026-01-01T00:00:00.000Z", "cmd": "x"}))
                .expect("parses");
        let err = rollback.apply_to(&current).expect_err("invalid");
        assert_eq!(
            err.errors_at("/"),
            vec!["The 'version' field may only be combined with the 'id' field."]
        );
    }

    #[test]
    fn version_stamps() {
        let mut a = app(json!({"id": "/v", "cmd": "x"}));
        let t1 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let t2 = Utc
            .with_ymd_and_hms(2026, 1, 2, 0, 0, 0)
            .single()
            .expect("date");
        a.stamp_version(t1, AppChange::Config);
        a.stamp_version(t2, AppChange::ScaleOnly);
        let vi = a.version_info.expect("stamped");
        assert_eq!(a.version, Some(t2));
        assert_eq!(vi.last_scaling_at, t2);
        assert_eq!(vi.last_config_change_at, t1);
    }

    #[test]
    fn ids_are_normalized() {
        for (input, expected) in [
            ("webserver", "/webserver"),
            ("a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/b/", "/a/b"),
            ("/a/./b/../c", "/a/c"),
        ] {
            assert_eq!(PathId::new(input).to_string(), expected);
            let a = app(json!({"id": input, "cmd": "x"}));
            assert_eq!(render_app(&a)["id"], expected);
        }
        assert_eq!(PathId::new("/a/b").safe_task_prefix(), "a_b");
        assert_eq!(PathId::new("/a/b").parent(), PathId::new("/a"));
    }

    #[test]
    fn service_ports_are_unique_and_in_range() {
        let mut used = std::collections::BTreeSet::new();
        let mut alloc = ServicePortAllocator::new([10000, 10002]);
        for i in 0..5 {
            let mut a = app(
                json!({"id": format!("/app{i}"), "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}, {"port": 12345}]}),
            );
            assign_service_ports(&mut a, &mut alloc).expect("ports left");
            let ports = a.service_ports();
            assert_eq!(ports[2], 12345, "fixed non-zero ports are kept");
            for p in &ports[..2] {
                assert!((10000..=20000).contains(p));
                assert!(*p != 10000 && *p != 10002 && *p != 12345);
                assert!(used.insert(*p), "port {p} handed out twice");
            }
            assert_eq!(render_app(&a)["ports"], json!(ports));
        }
        let mut tiny = ServicePortAllocator::with_range(10000, 10000, []);
        let mut a = app(json!({"id": "/x", "cmd": "x", "ports": [0, 0]}));
        let before = a.clone();
        let err = assign_service_ports(&mut a, &mut tiny).expect_err("exhausted");
        assert!(matches!(err, ModelError::ServicePortsExhausted { .. }));
        assert_eq!(a, before, "unchanged on error");
    }

    #[test]
    fn timestamps_have_millis_and_z() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .expect("date");
        assert_eq!(marathon_timestamp(t), "2026-11-23T10:00:00.000Z");
        let now = marathon_timestamp(Utc::now());
        assert!(now.ends_with('Z'));
        let (_, frac) = now.rsplit_once('.').expect("fraction");
        assert_eq!(frac.len(), 4, "{now}");
        // Input with an offset comes back in UTC.
        let u: AppUpdate =
            parse_json(br#"{"version": "2026-11-23T11:00:00+01:00"}"#).expect("parses");
        assert_eq!(
            u.version.map(marathon_timestamp).as_deref(),
            Some("2026-11-23T10:00:00.000Z")
        );
    }
}
