//! `meseta-bench api`: offers → ACCEPT → TASK_RUNNING through the master's
//! two framework faces, side by side: gRPC (the sdk, as the Marathon
//! scheduler uses it) and Mesos' v1 HTTP API (`/api/v1/scheduler`, JSON
//! and protobuf bodies, RecordIO stream).
//!
//! Starts `--masters` masters (default 1) and one agent (posix isolation)
//! from the meseta binary (release if built, else debug, or `MESETA_BIN`),
//! then for each face: subscribes a framework and `--launches` times waits
//! for an offer, ACCEPTs it with one `sleep 1000` task (cpus 0.01, mem 16;
//! the rest refused for 0 s), and measures from the moment the OFFERS
//! event was read to the moment that task's TASK_RUNNING update was read;
//! then kills the task and waits for its end before the next launch.
//! Updates are acknowledged. The last line holds every face's p50/p99:
//! `grpc_ms_p50=… grpc_ms_p99=… http_json_ms_p50=… …`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use meseta_proto::mesos::v1 as m;
use meseta_proto::mesos::Encoding;
use meseta_sdk::{v1 as pb, SchedulerEvent};
use meseta_tests::masters::Masters;
use meseta_tests::mesos_api::{self, RecordStream};

use crate::launch::percentile;

/// How long one step may take before the bench gives up.
const STEP: Duration = Duration::from_secs(60);

/// Flags of `meseta-bench api`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Measured launches per face.
    #[arg(long, default_value_t = 20)]
    pub launches: usize,
    /// Unmeasured launches per face first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// How many masters (Raft replicas) to start.
    #[arg(long, default_value_t = 1)]
    pub masters: usize,
}

fn summary(name: &str, mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "{name}_ms_p50={:.2} {name}_ms_p99={:.2}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    )
}

/// Runs the bench and prints its figures.
pub fn run(args: &ApiArgs) -> Result<()> {
    if args.launches == 0 {
        bail!("--launches must be at least 1");
    }
    if std::env::var_os("MESETA_BIN").is_none() {
        let release = meseta_tests::binary::target_dir()
            .join("release")
            .join("meseta");
        if release.is_file() {
            std::env::set_var("MESETA_BIN", &release);
        }
    }
    println!(
        "starting {} master(s) and an agent ({})",
        args.masters,
        meseta_tests::meseta_binary().display()
    );
    let mut masters = Masters::start(args.masters)?;
    masters.start_agent("cpus:2;mem:2048;disk:1000;ports:[31000-31100]")?;
    let leader = masters.leader()?;
    let leader_addr = masters.addrs[leader].clone();
    let total = args.warmup + args.launches;

    let grpc = grpc_face(&masters.addrs, total)?;
    println!("grpc: {}", summary("grpc", grpc[args.warmup..].to_vec()));
    let json = http_face(&leader_addr, Encoding::Json, total)?;
    println!(
        "http json: {}",
        summary("http_json", json[args.warmup..].to_vec())
    );
    let protobuf = http_face(&leader_addr, Encoding::Protobuf, total)?;
    println!(
        "http protobuf: {}",
        summary("http_protobuf", protobuf[args.warmup..].to_vec())
    );
    println!(
        "launches={} {} {} {}",
        args.launches,
        summary("grpc", grpc[args.warmup..].to_vec()),
        summary("http_json", json[args.warmup..].to_vec()),
        summary("http_protobuf", protobuf[args.warmup..].to_vec())
    );
    Ok(())
}

fn grpc_task(id: &str, agent: &str) -> pb::TaskInfo {
    use meseta_core::Resources;
    pb::TaskInfo {
        name: id.into(),
        task_id: Some(pb::TaskId { value: id.into() }),
        agent_id: Some(pb::AgentId {
            value: agent.into(),
        }),
        resources: Resources::parse("cpus:0.01;mem:16")
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        command: Some(pb::CommandInfo {
            value: "sleep 1000".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The next framework event, or an error after [`STEP`].
async fn next(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<SchedulerEvent>,
) -> Result<SchedulerEvent> {
    tokio::time::timeout(STEP, events.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("no event from the master within {STEP:?}"))
}

/// The gRPC face through the sdk: one sample per launch, in ms.
fn grpc_face(masters: &[String], launches: usize) -> Result<Vec<f64>> {
    let runtime = tokio::runtime::Runtime::new().context("starting a tokio runtime")?;
    runtime.block_on(async {
        let info = pb::FrameworkInfo {
            user: "root".into(),
            name: "bench-grpc".into(),
            ..Default::default()
        };
        let (client, mut events) = meseta_sdk::start(masters.to_vec(), info, None, false);

        let mut samples = Vec::new();
        for i in 0..launches {
            let task_id = format!("grpc-{i}");
            // Wait for an offer.
            let (offer, offered_at) = loop {
                if let SchedulerEvent::Offers(offers) = next(&mut events).await? {
                    if let Some(o) = offers.into_iter().next() {
                        break (o, Instant::now());
                    }
                }
            };
            let agent = offer.agent_id.clone().map(|a| a.value).unwrap_or_default();
            let offer_id = offer.id.clone().map(|o| o.value).unwrap_or_default();
            client
                .accept(&[offer_id], vec![grpc_task(&task_id, &agent)], 0.0)
                .await
                .map_err(|e| anyhow!("ACCEPT: {e}"))?;
            let mut running_at = None;
            loop {
                match next(&mut events).await? {
                    SchedulerEvent::Update(st) => {
                        let _ = client.acknowledge(&st).await;
                        let ours = st.task_id.as_ref().is_some_and(|t| t.value == task_id);
                        if ours
                            && st.state == pb::TaskState::TaskRunning as i32
                            && running_at.is_none()
                        {
                            running_at = Some(Instant::now());
                            client
                                .kill(&task_id, Some(&agent), Some(0.0))
                                .await
                                .map_err(|e| anyhow!("KILL: {e}"))?;
                        }
                        if ours
                            && running_at.is_some()
                            && st.state != pb::TaskState::TaskRunning as i32
                        {
                            break;
                        }
                    }
                    SchedulerEvent::Offers(offers) => {
                        let ids: Vec<String> = offers
                            .iter()
                            .filter_map(|o| o.id.clone().map(|i| i.value))
                            .collect();
                        let _ = client.decline(&ids, 0.0).await;
                    }
                    _ => {}
                }
            }
            let took = running_at.unwrap_or(offered_at) - offered_at;
            println!(
                "grpc launch {}/{launches}: {:.2} ms",
                i + 1,
                took.as_secs_f64() * 1e3
            );
            samples.push(took.as_secs_f64() * 1e3);
        }
        let _ = client.teardown().await;
        Ok(samples)
    })
}

fn scalar(name: &str, value: f64) -> m::Resource {
    m::Resource {
        name: name.into(),
        r#type: m::value::Type::Scalar as i32,
        scalar: Some(m::value::Scalar { value }),
        ..Default::default()
    }
}

/// The HTTP face, `encoding` bodies: one sample per launch, in ms.
fn http_face(master: &str, encoding: Encoding, launches: usize) -> Result<Vec<f64>> {
    use m::scheduler as ms;
    let name = match encoding {
        Encoding::Json => "http-json",
        Encoding::Protobuf => "http-protobuf",
    };
    let subscribe = ms::Call {
        r#type: Some(ms::call::Type::Subscribe as i32),
        subscribe: Some(ms::call::Subscribe {
            framework_info: m::FrameworkInfo {
                user: "root".into(),
                name: format!("bench-{name}"),
                ..Default::default()
            },
            suppressed_roles: Vec::new(),
        }),
        ..Default::default()
    };
    let stream = RecordStream::open(
        master,
        "/api/v1/scheduler",
        encoding,
        &encoding.encode(&subscribe)?,
    )?;
    let stream_id = stream.stream_id.clone().unwrap_or_default();
    let framework_id = stream.wait_for::<ms::Event, _>("SUBSCRIBED", STEP, |e, _| {
        e.subscribed.as_ref().map(|s| s.framework_id.clone())
    })?;
    let send = |kind: ms::call::Type, fill: &dyn Fn(&mut ms::Call)| -> Result<()> {
        let mut call = ms::Call {
            framework_id: Some(framework_id.clone()),
            r#type: Some(kind as i32),
            ..Default::default()
        };
        fill(&mut call);
        let (reply, _) = mesos_api::post(
            &stream.master,
            "/api/v1/scheduler",
            encoding,
            Some(&stream_id),
            encoding.encode(&call)?,
        )?;
        if reply.status != 202 {
            bail!("{}: {reply}", kind.as_str_name());
        }
        Ok(())
    };
    let mut samples = Vec::new();
    for i in 0..launches {
        let task_id = format!("{name}-{i}");
        let (offer, offered_at) = stream.wait_for::<ms::Event, _>("OFFERS", STEP, |e, at| {
            e.offers
                .as_ref()
                .and_then(|o| o.offers.first().cloned())
                .map(|o| (o, at))
        })?;
        let task = m::TaskInfo {
            name: task_id.clone(),
            task_id: m::TaskId {
                value: task_id.clone(),
            },
            agent_id: offer.agent_id.clone(),
            resources: vec![scalar("cpus", 0.01), scalar("mem", 16.0)],
            command: Some(m::CommandInfo {
                value: Some("sleep 1000".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        send(ms::call::Type::Accept, &|c| {
            c.accept = Some(ms::call::Accept {
                offer_ids: vec![offer.id.clone()],
                operations: vec![m::offer::Operation {
                    r#type: Some(m::offer::operation::Type::Launch as i32),
                    launch: Some(m::offer::operation::Launch {
                        task_infos: vec![task.clone()],
                    }),
                    ..Default::default()
                }],
                filters: Some(m::Filters {
                    refuse_seconds: Some(0.0),
                }),
            })
        })?;
        let mut running_at = None;
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (event, at) = stream
                .next_message::<ms::Event>(left)?
                .ok_or_else(|| anyhow!("{task_id} did not run and end within {STEP:?}"))?;
            if let Some(offers) = &event.offers {
                let ids: Vec<m::OfferId> = offers.offers.iter().map(|o| o.id.clone()).collect();
                send(ms::call::Type::Decline, &|c| {
                    c.decline = Some(ms::call::Decline {
                        offer_ids: ids.clone(),
                        filters: Some(m::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    })
                })?;
            }
            let Some(update) = event.update else { continue };
            let st = update.status;
            if let (Some(agent), Some(uuid)) = (st.agent_id.clone(), st.uuid.clone()) {
                send(ms::call::Type::Acknowledge, &|c| {
                    c.acknowledge = Some(ms::call::Acknowledge {
                        agent_id: agent.clone(),
                        task_id: st.task_id.clone(),
                        uuid: uuid.clone(),
                    })
                })?;
            }
            if st.task_id.value != task_id {
                continue;
            }
            if st.state() == m::TaskState::TaskRunning && running_at.is_none() {
                running_at = Some(at);
                send(ms::call::Type::Kill, &|c| {
                    c.kill = Some(ms::call::Kill {
                        task_id: st.task_id.clone(),
                        agent_id: Some(offer.agent_id.clone()),
                        kill_policy: Some(m::KillPolicy {
                            grace_period: Some(m::DurationInfo { nanoseconds: 0 }),
                        }),
                    })
                })?;
            } else if running_at.is_some() && st.state() != m::TaskState::TaskRunning {
                break;
            }
        }
        let took = running_at.unwrap_or(offered_at) - offered_at;
        println!(
            "{name} launch {}/{launches}: {:.2} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        );
        samples.push(took.as_secs_f64() * 1e3);
    }
    send(ms::call::Type::Teardown, &|_| {})?;
    Ok(samples)
}
