//! The DNS face: a hickory-server request handler that answers the Mesos
//! domain from the record store and forwards every other name to the
//! `--resolvers`.
//!
//! - In the domain: A, AAAA, SRV (with the targets' addresses as
//!   additional records), ANY, SOA and NS at the apex. A name with no
//!   record at all is NXDOMAIN; a name that has records of another type is
//!   NOERROR with no answer (NODATA); both carry the SOA, whose minimum is
//!   the TTL, so a resolver caches the negative answer only that long.
//!   Answers are authoritative, with the configured (short) TTL, and
//!   rotate on each query so clients spread over the tasks.
//! - Elsewhere: the query goes to each resolver in turn over UDP within
//!   one overall deadline (`resolver_timeout`); the first answer is
//!   relayed, and when none answers in time the reply is SERVFAIL. A query
//!   never waits longer than the deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::metrics::Zone;
use crate::records::Records;
use crate::RecordStore;

/// The largest UDP answer this server sends with EDNS.
const EDNS_PAYLOAD: u16 = 1232;

pub(crate) struct Handler {
    pub store: Arc<RecordStore>,
    pub resolvers: Vec<SocketAddr>,
    pub resolver_timeout: Duration,
    pub ttl: u32,
    /// The server's own address, `ns1.{domain}` (none when it listens on
    /// every address).
    pub own: Option<IpAddr>,
    rotation: AtomicUsize,
}

/// An answer before it is sent.
struct Answer {
    rcode: ResponseCode,
    authoritative: bool,
    truncated: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn code(rcode: ResponseCode) -> Answer {
        Answer {
            rcode,
            authoritative: false,
            truncated: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// Response codes by their usual (dig) names.
pub(crate) fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

impl Handler {
    pub(crate) fn new(
        store: Arc<RecordStore>,
        resolvers: Vec<SocketAddr>,
        resolver_timeout: Duration,
        ttl: u32,
        listen: SocketAddr,
    ) -> Handler {
        Handler {
            store,
            resolvers,
            resolver_timeout,
            ttl,
            own: Some(listen.ip()).filter(|ip| !ip.is_unspecified()),
            rotation: AtomicUsize::new(0),
        }
    }

    /// The answer to one question, from the store or the resolvers.
    async fn answer(&self, query: &Query, recursion_desired: bool) -> (Zone, Answer) {
        let name = query.name().to_ascii().to_ascii_lowercase();
        let records = self.store.current();
        if records.in_domain(&name) {
            return (Zone::Mesos, self.local(&records, &name, query));
        }
        let started = Instant::now();
        let answer = self.forward(query, recursion_desired).await;
        self.store
            .metrics()
            .forward_seconds
            .observe(started.elapsed().as_secs_f64());
        (Zone::Forwarded, answer)
    }

    fn local(&self, records: &Records, name: &str, query: &Query) -> Answer {
        let mut out = Answer::code(ResponseCode::NoError);
        out.authoritative = true;
        let Ok(qname) = Name::from_ascii(name) else {
            return Answer::code(ResponseCode::FormErr);
        };
        let apex = name == records.domain;
        let qtype = query.query_type();
        let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        if want(RecordType::A) || want(RecordType::AAAA) {
            for ip in self.rotated(records.addresses_of(name)) {
                match ip {
                    IpAddr::V4(v4) if want(RecordType::A) => out.answers.push(Record::from_rdata(
                        qname.clone(),
                        self.ttl,
                        RData::A(A(*v4)),
                    )),
                    IpAddr::V6(v6) if want(RecordType::AAAA) => out.answers.push(
                        Record::from_rdata(qname.clone(), self.ttl, RData::AAAA(AAAA(*v6))),
                    ),
                    _ => {}
                }
            }
        }
        if want(RecordType::SRV) {
            let mut seen: Vec<&str> = Vec::new();
            for s in self.rotated(records.services_of(name)) {
                let Ok(target) = Name::from_ascii(&s.target) else {
                    continue;
                };
                out.answers.push(Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::SRV(SRV::new(0, 1, s.port, target.clone())),
                ));
                if seen.contains(&s.target.as_str()) {
                    continue;
                }
                seen.push(&s.target);
                for ip in records.addresses_of(&s.target) {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    out.additionals
                        .push(Record::from_rdata(target.clone(), self.ttl, rdata));
                }
            }
        }
        if name.strip_prefix("ns1.") == Some(records.domain.as_str()) {
            match self.own {
                Some(IpAddr::V4(v4)) if want(RecordType::A) => out
                    .answers
                    .push(Record::from_rdata(qname.clone(), self.ttl, RData::A(A(v4)))),
                Some(IpAddr::V6(v6)) if want(RecordType::AAAA) => out.answers.push(
                    Record::from_rdata(qname.clone(), self.ttl, RData::AAAA(AAAA(v6))),
                ),
                _ => {}
            }
        }
        if apex && want(RecordType::SOA) {
            out.answers.push(self.soa(records));
        }
        if apex && want(RecordType::NS) {
            if let Ok(ns) = Name::from_ascii(format!("ns1.{}", records.domain)) {
                out.answers.push(Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::NS(NS(ns)),
                ));
            }
        }
        let own_name =
            self.own.is_some() && name.strip_prefix("ns1.") == Some(records.domain.as_str());
        if out.answers.is_empty() {
            if !apex && !own_name && !records.has_name(name) {
                out.rcode = ResponseCode::NXDomain;
            }
            out.authority.push(self.soa(records));
        }
        out
    }

    fn soa(&self, records: &Records) -> Record {
        let domain = Name::from_ascii(&records.domain).unwrap_or_else(|_| Name::root());
        let mname =
            Name::from_ascii(format!("ns1.{}", records.domain)).unwrap_or_else(|_| domain.clone());
        let rname = Name::from_ascii(format!("root.ns1.{}", records.domain))
            .unwrap_or_else(|_| domain.clone());
        Record::from_rdata(
            domain,
            self.ttl,
            RData::SOA(SOA::new(
                mname,
                rname,
                records.serial,
                60,
                600,
                86400,
                self.ttl,
            )),
        )
    }

    /// The items rotated by a per-query counter (mesos-dns shuffles; a
    /// rotation spreads clients as well and costs nothing).
    fn rotated<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = &'a T> {
        let n = items.len().max(1);
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        items[start.min(items.len())..]
            .iter()
            .chain(items[..start.min(items.len())].iter())
    }

    async fn forward(&self, query: &Query, recursion_desired: bool) -> Answer {
        if self.resolvers.is_empty() {
            return Answer::code(ResponseCode::ServFail);
        }
        let deadline = tokio::time::Instant::now() + self.resolver_timeout;
        for (i, resolver) in self.resolvers.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // Each remaining resolver gets an equal share of what is left.
            let share = left / (self.resolvers.len() - i) as u32;
            match tokio::time::timeout(share, ask(*resolver, query, recursion_desired)).await {
                Ok(Ok(mut reply)) => {
                    let mut out = Answer::code(reply.response_code());
                    out.truncated = reply.truncated();
                    out.answers = reply.take_answers();
                    out.authority = reply.take_name_servers();
                    out.additionals = reply.take_additionals();
                    return out;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%resolver, error = %e, "resolver failed");
                }
                Err(_) => {
                    tracing::debug!(%resolver, "resolver did not answer in time");
                }
            }
        }
        Answer::code(ResponseCode::ServFail)
    }
}

/// One query to one upstream resolver over UDP.
async fn ask(
    resolver: SocketAddr,
    query: &Query,
    recursion_desired: bool,
) -> std::io::Result<Message> {
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(resolver).await?;
    let id: u16 = rand::random();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recursion_desired)
        .add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    let bytes = msg.to_vec().map_err(std::io::Error::other)?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Ok(reply) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        // A stray datagram (another id, another question) is not the answer.
        if reply.id() == id && reply.queries().first() == Some(query) {
            return Ok(reply);
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        let metrics = self.store.metrics().clone();
        let query = match request.request_info() {
            Ok(info) if request.op_code() == OpCode::Query => info.query.original().clone(),
            _ => {
                let code = if request.op_code() == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                metrics.request(Zone::Mesos, &rcode_name(code));
                let reply = builder.error_msg(request.header(), code);
                return send(&mut response_handle, reply, header).await;
            }
        };
        let (zone, answer) = self
            .answer(&query, request.header().recursion_desired())
            .await;
        metrics.request(zone, &rcode_name(answer.rcode));
        header.set_response_code(answer.rcode);
        header.set_authoritative(answer.authoritative);
        header.set_recursion_available(!self.resolvers.is_empty());
        header.set_truncated(answer.truncated);
        let mut builder = builder;
        if request.edns().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            builder.edns(edns);
        }
        let reply = builder.build(
            header,
            answer.answers.iter(),
            answer.authority.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        send(&mut response_handle, reply, header).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    reply: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    header: Header,
) -> ResponseInfo {
    match handle.send_response(reply).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "a DNS answer could not be sent");
            let mut h = header;
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}
