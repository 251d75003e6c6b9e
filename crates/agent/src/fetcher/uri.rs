//! What a `CommandInfo.URI` asks for: where the bytes come from, the name
//! they get in the sandbox, and whether that name is an archive. Pure: no IO.

use std::path::PathBuf;

use meseta_proto::v1::command_info::Uri;
use reqwest::Url;

use super::Failure;

/// Where a URI's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `http://` or `https://`.
    Http(Url),
    /// `file://PATH` or a plain path (a relative one is taken from the
    /// agent's working directory).
    Local(PathBuf),
}

/// The archive formats the fetcher unpacks, told by the name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArchiveKind {
    Tar,
    TarGz,
    TarBz2,
    TarXz,
    Zip,
    /// A single gzip-compressed file: decompressed beside it, without `.gz`.
    Gz,
}

impl ArchiveKind {
    /// The kind of archive `name` is, by its (case-insensitive) suffix.
    pub(super) fn of(name: &str) -> Option<ArchiveKind> {
        let name = name.to_ascii_lowercase();
        let kinds = [
            (".tar.gz", ArchiveKind::TarGz),
            (".tgz", ArchiveKind::TarGz),
            (".tar.bz2", ArchiveKind::TarBz2),
            (".tbz2", ArchiveKind::TarBz2),
            (".tar.xz", ArchiveKind::TarXz),
            (".txz", ArchiveKind::TarXz),
            (".tar", ArchiveKind::Tar),
            (".zip", ArchiveKind::Zip),
            (".gz", ArchiveKind::Gz),
        ];
        kinds
            .into_iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
            .map(|(_, kind)| kind)
    }
}

/// One URI, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) source: Source,
    /// The file's name in the sandbox: one path component, never empty,
    /// `.` or `..`.
    pub(super) name: String,
    /// The archive `name` is, whether or not it is to be extracted.
    pub(super) archive: Option<ArchiveKind>,
    pub(super) extract: bool,
    pub(super) executable: bool,
    pub(super) cache: bool,
}

impl Plan {
    pub(super) fn parse(uri: &Uri) -> Result<Plan, Failure> {
        let value = uri.value.as_str();
        if value.is_empty() {
            return Err(Failure::Invalid("the URI is empty".to_string()));
        }
        if value.contains('\0') {
            return Err(Failure::Invalid("the URI holds a NUL byte".to_string()));
        }
        let source = source(value)?;
        let name = if uri.output_file.is_empty() {
            let derived = match &source {
                Source::Http(url) => url
                    .path_segments()
                    .and_then(|mut segments| segments.next_back())
                    .map(percent_decode)
                    .unwrap_or_default(),
                Source::Local(path) => match path.file_name() {
                    Some(name) => name
                        .to_str()
                        .ok_or_else(|| {
                            Failure::Invalid(
                                "the file name is not UTF-8; set output_file".to_string(),
                            )
                        })?
                        .to_string(),
                    None => String::new(),
                },
            };
            valid_name(&derived).map_err(|why| {
                Failure::Invalid(format!(
                    "cannot name the fetched file after the URI ({why}); set output_file"
                ))
            })?;
            derived
        } else {
            valid_name(&uri.output_file)
                .map_err(|why| Failure::Invalid(format!("invalid output_file: {why}")))?;
            uri.output_file.clone()
        };
        Ok(Plan {
            source,
            archive: ArchiveKind::of(&name),
            name,
            extract: uri.extract,
            executable: uri.executable,
            cache: uri.cache,
        })
    }
}

fn source(value: &str) -> Result<Source, Failure> {
    let Some((scheme, _)) = value.split_once("://") else {
        return Ok(Source::Local(PathBuf::from(value)));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" => Url::parse(value)
            .map(Source::Http)
            .map_err(|e| Failure::Invalid(format!("not a valid URL: {e}"))),
        "file" => {
            let url =
                Url::parse(value).map_err(|e| Failure::Invalid(format!("not a valid URL: {e}")))?;
            match url.host_str() {
                None | Some("" | "localhost") => {}
                Some(host) => {
                    return Err(Failure::Invalid(format!(
                        "a file URI names the host '{host}'; only local files can be fetched"
                    )))
                }
            }
            url.to_file_path()
                .map(Source::Local)
                .map_err(|()| Failure::Invalid("not a valid file URI".to_string()))
        }
        _ => Err(Failure::Invalid(format!(
            "unsupported URI scheme '{scheme}' (the fetcher supports http, https, file and local paths)"
        ))),
    }
}

/// A file name the fetcher may create in the sandbox root.
fn valid_name(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("the name is empty"),
        "." | ".." => Err("the name is '.' or '..'"),
        _ if name.contains('/') => Err("the name must be a single path component"),
        _ if name.contains('\0') => Err("the name holds a NUL byte"),
        _ => Ok(()),
    }
}

/// `%xx` escapes decoded; an invalid escape is kept as it is, and bytes
/// that are not UTF-8 become U+FFFD.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI for messages and logs: a password in it is shown as `****`.
pub(super) fn redacted(value: &str) -> String {
    if let Ok(mut url) = Url::parse(value) {
        if url.password().is_some() && url.set_password(Some("****")).is_ok() {
            return url.to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str, output_file: &str) -> Uri {
        Uri {
            value: value.to_string(),
            executable: false,
            extract: true,
            cache: false,
            output_file: output_file.to_string(),
        }
    }

    #[test]
    fn names_come_from_the_last_path_segment_or_output_file() {
        // (value, output_file, the name, or None when refused)
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("http://h/a/pkg.tgz", "", Some("pkg.tgz")),
            ("http://h/a/pkg.tgz?token=1&x=2", "", Some("pkg.tgz")),
            ("http://h/a/pkg.tgz#frag", "", Some("pkg.tgz")),
            ("https://h/my%20app.zip", "", Some("my app.zip")),
            (
                "http://h/a/pkg.tgz",
                "renamed.tar.gz",
                Some("renamed.tar.gz"),
            ),
            ("file:///opt/pkgs/tool", "", Some("tool")),
            ("file://localhost/opt/x.tar", "", Some("x.tar")),
            ("/opt/pkgs/run.sh", "", Some("run.sh")),
            ("relative/dir/run.sh", "", Some("run.sh")),
            ("http://h/", "", None),
            ("http://h", "", None),
            ("http://h/dir/", "", None),
            ("http://h/a/%2e%2e", "", None),
            ("http://h/a/..%2Fetc", "", None),
            ("/", "", None),
            ("http://h/a/pkg.tgz", "..", None),
            ("http://h/a/pkg.tgz", ".", None),
            ("http://h/a/pkg.tgz", "a/b", None),
            ("http://h/a/pkg.tgz", "/etc/passwd", None),
            ("", "", None),
            ("ftp://h/pkg.tgz", "", None),
            ("hdfs://h/pkg.tgz", "", None),
            ("file://otherhost/pkg.tgz", "", None),
        ];
        for (value, output, want) in cases {
            let got = Plan::parse(&uri(value, output)).ok().map(|p| p.name);
            assert_eq!(got.as_deref(), *want, "{value:?} output_file {output:?}");
        }
    }

    #[test]
    fn sources_by_scheme() {
        let plan = Plan::parse(&uri("HTTPS://example.com/x.zip", "")).expect("https");
        assert!(matches!(plan.source, Source::Http(_)));
        let plan = Plan::parse(&uri("file:///a%20b/c.txt", "")).expect("file");
        assert_eq!(plan.source, Source::Local(PathBuf::from("/a b/c.txt")));
        assert_eq!(plan.name, "c.txt");
        let plan = Plan::parse(&uri("./here/c.txt", "")).expect("relative");
        assert_eq!(plan.source, Source::Local(PathBuf::from("./here/c.txt")));
    }

    #[test]
    fn archives_are_told_by_suffix() {
        let cases = [
            ("a.tgz", Some(ArchiveKind::TarGz)),
            ("a.tar.gz", Some(ArchiveKind::TarGz)),
            ("A.TAR.GZ", Some(ArchiveKind::TarGz)),
            ("a.tar.bz2", Some(ArchiveKind::TarBz2)),
            ("a.tbz2", Some(ArchiveKind::TarBz2)),
            ("a.tar.xz", Some(ArchiveKind::TarXz)),
            ("a.txz", Some(ArchiveKind::TarXz)),
            ("a.tar", Some(ArchiveKind::Tar)),
            ("a.zip", Some(ArchiveKind::Zip)),
            ("a.json.gz", Some(ArchiveKind::Gz)),
            ("a.sh", None),
            ("tar", None),
            (".zip", None),
            ("a.tar.zst", None),
        ];
        for (name, want) in cases {
            assert_eq!(ArchiveKind::of(name), want, "{name}");
        }
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        assert_eq!(
            redacted("https://bob:secret@h/p.tgz"),
            "https://bob:****@h/p.tgz"
        );
        assert_eq!(redacted("https://h/p.tgz?x=1"), "https://h/p.tgz?x=1");
        assert_eq!(redacted("/opt/p.tgz"), "/opt/p.tgz");
    }
}
