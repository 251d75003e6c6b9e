//! What meseta's two web UIs (Marathon's on the scheduler, the Mesos
//! master's on the master) share: the page layout, a few widgets (bars,
//! badges, pagers, times), a line diff, the compiled-in assets (one style
//! sheet, one plain script), and the security policy every UI response
//! carries.
//!
//! Pages are rendered on the server with [`maud`], which escapes every
//! value it interpolates; the script never builds HTML from data (it sets
//! `textContent`), and live updates swap in regions of a freshly rendered
//! page parsed with `DOMParser` (scripts in a parsed document never run;
//! the Content-Security-Policy forbids inline script besides). Each role's
//! pages live in that role's crate (`ui/` module); this crate knows nothing
//! of Marathon or Mesos.

pub mod assets;
pub mod diff;
pub mod layout;
pub mod security;
pub mod widgets;

pub use maud;
pub use maud::{html, Markup, PreEscaped};

pub use layout::{Live, Page};
pub use security::{cross_site, html_response, refuse_cross_site, secure_headers};
