//! Service ports: Marathon replaces `portDefinitions[].port: 0` (and
//! `portMappings[].servicePort: 0`) with a port from 10000–20000 that no
//! other app port uses; load balancers key their frontends on it.

use std::collections::BTreeSet;

use super::app::AppDefinition;
use super::ModelError;

/// Marathon's default `--local_port_min`.
pub const SERVICE_PORT_MIN: u32 = 10000;
/// Marathon's default `--local_port_max`.
pub const SERVICE_PORT_MAX: u32 = 20000;

/// Hands out free service ports, lowest first. Pure: it knows only the
/// ports it was told are taken and the ones it handed out.
#[derive(Debug, Clone)]
pub struct ServicePortAllocator {
    min: u32,
    max: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl ServicePortAllocator {
    /// An allocator over 10000–20000 with `used` taken (typically every
    /// service port of every other app; pass this app's old ports too unless
    /// it may get them back).
    pub fn new(used: impl IntoIterator<Item = u32>) -> Self {
        Self::with_range(SERVICE_PORT_MIN, SERVICE_PORT_MAX, used)
    }

    /// An allocator over `min..=max`.
    pub fn with_range(min: u32, max: u32, used: impl IntoIterator<Item = u32>) -> Self {
        Self {
            min,
            max,
            used: used.into_iter().collect(),
            next: min,
        }
    }

    /// Marks `port` as taken (a fixed port of the app being assigned).
    pub fn reserve(&mut self, port: u32) {
        self.used.insert(port);
    }

    /// True if `port` is taken.
    pub fn is_used(&self, port: u32) -> bool {
        self.used.contains(&port)
    }

    /// The lowest free port in the range, now taken.
    pub fn allocate(&mut self) -> Result<u32, ModelError> {
        while self.next <= self.max {
            let p = self.next;
            self.next += 1;
            if self.used.insert(p) {
                return Ok(p);
            }
        }
        Err(ModelError::ServicePortsExhausted {
            min: self.min,
            max: self.max,
        })
    }
}

/// Replaces every zero service port of `app` (host networking:
/// `portDefinitions[].port`; otherwise `container.portMappings[].servicePort`)
/// with a port from `alloc`; non-zero ports are kept and reserved first.
/// On error (range exhausted) `app` is left unchanged.
pub fn assign_service_ports(
    app: &mut AppDefinition,
    alloc: &mut ServicePortAllocator,
) -> Result<(), ModelError> {
    let mut draft = app.clone();
    for p in draft.service_ports() {
        if p != 0 {
            alloc.reserve(p);
        }
    }
    if draft.is_host_networking() {
        for pd in &mut draft.port_definitions {
            if pd.port == 0 {
                pd.port = alloc.allocate()?;
            }
        }
    } else if let Some(mappings) = draft
        .container
        .as_mut()
        .and_then(|c| c.port_mappings.as_mut())
    {
        for m in mappings {
            if m.service_port == 0 {
                m.service_port = alloc.allocate()?;
            }
        }
    }
    *app = draft;
    Ok(())
}
