//! Helpers for a role's [`Collector`](prometheus_client::collector::Collector),
//! which reads the role's state on each scrape and writes it as constant
//! gauges and counters.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Label sets with their values.
pub type Samples = [(Vec<(&'static str, String)>, i64)];

/// A gauge family: one sample per label set (an empty set: one value).
pub fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &Samples,
) -> Result<(), std::fmt::Error> {
    let mut metric = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// One counter value (`name` without `_total`; the encoder adds it).
pub fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A single unlabelled gauge value for [`gauges`].
pub fn one(value: i64) -> [(Vec<(&'static str, String)>, i64); 1] {
    [(Vec::new(), value)]
}
