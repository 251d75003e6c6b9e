//! Mesos' v1 HTTP API messages (`proto/mesos/v1`), with the two encodings
//! Mesos clients speak, and RecordIO framing for event streams.
//!
//! - **Protobuf** (`application/x-protobuf`): the generated prost types,
//!   with Mesos' field numbers.
//! - **JSON** (`application/json`): Mesos' mapping, i.e. proto field names
//!   (`framework_id`, not `frameworkId`), enums by name, `bytes` as base64,
//!   64-bit integers as JSON numbers, unset fields left out. [`to_json`] and
//!   [`from_json`] go through the compiled descriptors (prost-reflect), so
//!   the JSON shape follows the `.proto` files and cannot drift from the
//!   protobuf one. Unknown JSON fields are ignored, as Mesos does.
//! - **RecordIO** ([`recordio`]): each record is its length in bytes in
//!   ASCII decimal, a `\n`, then the record.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

/// Generated code of `mesos.v1` and its sub-packages.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mesos.v1");
    /// `mesos.v1.scheduler`: the scheduler API's Call and Event.
    pub mod scheduler {
        tonic::include_proto!("mesos.v1.scheduler");
    }
    /// `mesos.v1.master`: the operator API's Call, Response and Event.
    pub mod master {
        tonic::include_proto!("mesos.v1.master");
    }
}

const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptors.bin"));

/// Why a body could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("invalid JSON for {message}: {detail}")]
    Json {
        message: &'static str,
        detail: String,
    },
    #[error("invalid protobuf for {message}: {source}")]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("no descriptor for {0}")]
    UnknownMessage(&'static str),
}

/// A top-level Mesos message that travels as an HTTP body or stream record.
pub trait MesosMessage: prost::Message + Default + Sized {
    /// Full protobuf name, e.g. `mesos.v1.scheduler.Call`.
    const NAME: &'static str;
}

macro_rules! mesos_message {
    ($($ty:path => $name:literal),* $(,)?) => {
        $(impl MesosMessage for $ty { const NAME: &'static str = $name; })*
    };
}

mesos_message! {
    v1::scheduler::Call => "mesos.v1.scheduler.Call",
    v1::scheduler::Event => "mesos.v1.scheduler.Event",
    v1::master::Call => "mesos.v1.master.Call",
    v1::master::Response => "mesos.v1.master.Response",
    v1::master::Event => "mesos.v1.master.Event",
    v1::MasterInfo => "mesos.v1.MasterInfo",
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS)
            .expect("the descriptors were produced by protox at build time from the same files")
    })
}

/// `msg` as Mesos JSON.
pub fn to_json<M: MesosMessage>(msg: &M) -> Result<serde_json::Value, CodecError> {
    let desc = pool()
        .get_message_by_name(M::NAME)
        .ok_or(CodecError::UnknownMessage(M::NAME))?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|source| {
            CodecError::Protobuf {
                message: M::NAME,
                source,
            }
        })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CodecError::Json {
            message: M::NAME,
            detail: e.to_string(),
        })
}

/// `msg` as Mesos JSON text.
pub fn to_json_bytes<M: MesosMessage>(msg: &M) -> Result<Vec<u8>, CodecError> {
    let value = to_json(msg)?;
    serde_json::to_vec(&value).map_err(|e| CodecError::Json {
        message: M::NAME,
        detail: e.to_string(),
    })
}

/// Read Mesos JSON into `M`. Names as in the `.proto` (camelCase JSON
/// names are accepted too), enums by name or number, bytes as base64.
pub fn from_json<M: MesosMessage>(body: &[u8]) -> Result<M, CodecError> {
    let desc = pool()
        .get_message_by_name(M::NAME)
        .ok_or(CodecError::UnknownMessage(M::NAME))?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic =
        DynamicMessage::deserialize_with_options(desc, &mut de, &options).map_err(|e| {
            CodecError::Json {
                message: M::NAME,
                detail: e.to_string(),
            }
        })?;
    de.end().map_err(|e| CodecError::Json {
        message: M::NAME,
        detail: e.to_string(),
    })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|source| CodecError::Protobuf {
        message: M::NAME,
        source,
    })
}

/// Read a protobuf body into `M`.
pub fn from_protobuf<M: MesosMessage>(body: &[u8]) -> Result<M, CodecError> {
    M::decode(body).map_err(|source| CodecError::Protobuf {
        message: M::NAME,
        source,
    })
}

/// The two body encodings of Mesos' HTTP APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// The media type of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }

    /// The encoding a `Content-Type` names (parameters such as
    /// `; charset=utf-8` are ignored); `None` for anything else.
    pub fn from_media_type(value: &str) -> Option<Encoding> {
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else {
            None
        }
    }

    /// Decode a body in this encoding.
    pub fn decode<M: MesosMessage>(self, body: &[u8]) -> Result<M, CodecError> {
        match self {
            Encoding::Json => from_json(body),
            Encoding::Protobuf => from_protobuf(body),
        }
    }

    /// Encode a message in this encoding.
    pub fn encode<M: MesosMessage>(self, msg: &M) -> Result<Vec<u8>, CodecError> {
        match self {
            Encoding::Json => to_json_bytes(msg),
            Encoding::Protobuf => Ok(msg.encode_to_vec()),
        }
    }
}

/// RecordIO, the framing of Mesos' event streams: `<length>\n<record>`.
pub mod recordio {
    /// The largest record a reader accepts (64 MiB); a longer length
    /// prefix is a broken stream.
    pub const MAX_RECORD: usize = 64 << 20;

    /// One record, framed.
    pub fn frame(record: &[u8]) -> Vec<u8> {
        let mut out = format!("{}\n", record.len()).into_bytes();
        out.extend_from_slice(record);
        out
    }

    /// Splits a byte stream, fed in any pieces, into records.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    /// A stream that is not RecordIO.
    #[derive(Debug, thiserror::Error, PartialEq)]
    pub enum RecordIoError {
        #[error("record length is not a decimal number: {0:?}")]
        BadLength(String),
        #[error("record of {0} bytes is longer than the {MAX_RECORD} allowed")]
        TooLong(usize),
    }

    impl Decoder {
        /// An empty decoder.
        pub fn new() -> Decoder {
            Decoder::default()
        }

        /// Add received bytes.
        pub fn push(&mut self, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }

        /// The next complete record, if one has arrived.
        pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordIoError> {
            let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > 20 {
                    return Err(RecordIoError::BadLength(
                        String::from_utf8_lossy(&self.buf[..20]).into_owned(),
                    ));
                }
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&self.buf[..nl]).into_owned();
            let len: usize = text
                .trim()
                .parse()
                .map_err(|_| RecordIoError::BadLength(text.clone()))?;
            if len > MAX_RECORD {
                return Err(RecordIoError::TooLong(len));
            }
            if self.buf.len() < nl + 1 + len {
                return Ok(None);
            }
            let record = self.buf[nl + 1..nl + 1 + len].to_vec();
            self.buf.drain(..nl + 1 + len);
            Ok(Some(record))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::scheduler::{call, event, Call, Event};
    use super::v1::{FrameworkId, FrameworkInfo, TaskId, TaskState, TaskStatus};
    use super::*;

    #[test]
    fn json_uses_proto_field_names_enum_names_and_base64() {
        let event = Event {
            r#type: Some(event::Type::Update as i32),
            update: Some(event::Update {
                status: TaskStatus {
                    task_id: TaskId { value: "t1".into() },
                    state: TaskState::TaskStarting as i32,
                    uuid: Some(vec![1, 2, 3]),
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        let json = to_json(&event).expect("encodes");
        assert_eq!(json["type"], "UPDATE");
        // TASK_STARTING is 0 in Mesos, and still written: the field is set.
        assert_eq!(json["update"]["status"]["state"], "TASK_STARTING");
        assert_eq!(json["update"]["status"]["task_id"]["value"], "t1");
        assert_eq!(json["update"]["status"]["uuid"], "AQID");
        let back: Event = from_json(json.to_string().as_bytes()).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn json_calls_decode_with_defaults_and_unknown_fields() {
        let body = br#"{"type": "SUBSCRIBE", "whatever": 1,
            "subscribe": {"framework_info": {"user": "root", "name": "x", "failover_timeout": 60}}}"#;
        let call: Call = from_json(body).expect("decodes");
        assert_eq!(call.r#type(), call::Type::Subscribe);
        let info: FrameworkInfo = call.subscribe.expect("subscribe").framework_info;
        assert_eq!(info.name, "x");
        assert_eq!(info.failover_timeout(), 60.0);
        assert_eq!(info.role(), "*");
        assert!(info.id.is_none());
        // An unknown enum name is left unset (UNKNOWN), as unknown fields
        // are: the API then answers that the call type is unknown.
        let odd: Call = from_json(br#"{"type": "NOT_A_CALL"}"#).expect("decodes");
        assert_eq!(odd.r#type(), call::Type::Unknown);
        assert!(from_json::<Call>(b"{\"type\": ").is_err());
        let id = FrameworkId { value: "f".into() };
        assert_eq!(id.value, "f");
    }

    #[test]
    fn recordio_round_trip_in_pieces() {
        let mut stream = recordio::frame(b"hello");
        stream.extend(recordio::frame(b""));
        stream.extend(recordio::frame(b"{\"a\":1}"));
        let mut d = recordio::Decoder::new();
        let mut out = Vec::new();
        for b in stream.chunks(3) {
            d.push(b);
            while let Some(r) = d.next_record().expect("valid") {
                out.push(r);
            }
        }
        assert_eq!(
            out,
            vec![b"hello".to_vec(), Vec::new(), b"{\"a\":1}".to_vec()]
        );
        let mut bad = recordio::Decoder::new();
        bad.push(b"x1\nabc");
        assert!(bad.next_record().is_err());
    }
}
