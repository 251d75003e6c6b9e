//! A role's settings from config files and the environment, under its flags.
//!
//! Every role (`meseta up`, `master`, `agent`, `scheduler`, `dns`, whichever
//! of them this binary has) reads the same sources, highest first:
//!
//! 1. a flag on the command line;
//! 2. the environment: `MESETA_<ROLE>_<FLAG>` (`MESETA_AGENT_WORK_DIR` for
//!    `meseta agent --work-dir`), and `MESETA_MASTERS` for every role that
//!    takes `--masters` (this is what `/etc/default/meseta` sets, through
//!    the systemd units' `EnvironmentFile=`);
//! 3. config files: `--config FILE` (or `MESETA_CONFIG`), else every
//!    `/etc/meseta/*.toml` in name order. Keys are the flags' long names
//!    (`data-dir`; `data_dir` is the same key). Top-level keys apply to every
//!    role that has the flag; a `[master]`, `[agent]`, … table to that role
//!    only and beats a top-level key; a later file beats an earlier one.
//!    Arrays are joined with the flag's delimiter (`masters = ["a:5050",
//!    "b:5050"]`), booleans switch a flag on (`no-switch-user = true`);
//! 4. the flag's default.
//!
//! The mechanism adds the settings found in 2 and 3 as flags (`--key=value`)
//! after the command line, only for flags the command line did not set, and
//! clap parses the whole again: values are validated exactly as flags are.
//! A key no role of this binary knows is an error naming the file; a table
//! for a role this binary does not have (`[dns]` before the DNS role
//! existed) is skipped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The subcommands that run a role and so read the config.
pub const ROLES: &[&str] = &["up", "master", "agent", "scheduler", "dns"];

/// Where the config files are looked for when no `--config` is given.
pub const DEFAULT_DIR: &str = "/etc/meseta";

/// The global flag (and its environment variable) naming one config file.
pub const CONFIG_FLAG: &str = "config";

/// What [`resolve`] produced: the arguments to parse, and for each setting
/// taken from a file or the environment where it came from (for messages).
#[derive(Debug, Default)]
pub struct Resolved {
    /// The command line with the settings appended as `--flag=value`.
    pub argv: Vec<OsString>,
    /// `--flag from SOURCE`, one per added setting.
    pub origins: Vec<String>,
    /// The config files that were read.
    pub files: Vec<PathBuf>,
}

/// Where the environment and the default directory come from (real ones in
/// `main`, fakes in tests).
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub default_dir: &'a Path,
}

/// One config file, parsed.
struct File {
    path: PathBuf,
    table: toml::Table,
}

/// Adds the config files' and the environment's settings to `raw` (the
/// process arguments, program name first) for the role it runs. A command
/// line clap rejects, or one that runs no role, comes back unchanged so that
/// clap reports it (or runs the client command) as usual.
pub fn resolve(cmd: &Command, raw: Vec<OsString>, sources: &Sources) -> Result<Resolved> {
    let Ok(matches) = cmd.clone().try_get_matches_from(&raw) else {
        return Ok(unchanged(raw));
    };
    let Some((role, role_matches)) = matches.subcommand() else {
        return Ok(unchanged(raw));
    };
    if !ROLES.contains(&role) || role_matches.subcommand().is_some() {
        return Ok(unchanged(raw));
    }
    let Some(role_cmd) = cmd.find_subcommand(role) else {
        return Ok(unchanged(raw));
    };
    let files = read_files(&[role_matches, &matches], sources)?;
    validate(cmd, &files)?;

    let mut resolved = Resolved {
        argv: raw,
        origins: Vec::new(),
        files: files.iter().map(|f| f.path.clone()).collect(),
    };
    for arg in role_cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_positional() || matches!(long, "help" | "version" | CONFIG_FLAG) {
            continue;
        }
        if given_on_command_line(role_matches, arg.get_id().as_str()) {
            continue;
        }
        let found = from_env(role, long, sources)
            .map(|(var, v)| (toml::Value::String(v), format!("${var}")))
            .or_else(|| from_files(role, long, &files));
        let Some((value, origin)) = found else {
            continue;
        };
        let flags = to_flags(arg, long, &value).with_context(|| format!("{origin}: {long}"))?;
        if !flags.is_empty() {
            resolved.origins.push(format!("--{long} from {origin}"));
        }
        resolved.argv.extend(flags);
    }
    Ok(resolved)
}

fn unchanged(argv: Vec<OsString>) -> Resolved {
    Resolved {
        argv,
        ..Resolved::default()
    }
}

fn given_on_command_line(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// `--config FILE` (or `MESETA_CONFIG`): that file, which must exist. Else
/// every `*.toml` in the default directory, in name order (none when the
/// directory does not exist).
fn read_files(matches: &[&ArgMatches], sources: &Sources) -> Result<Vec<File>> {
    let named = matches
        .iter()
        .find_map(|m| m.try_get_one::<PathBuf>(CONFIG_FLAG).ok().flatten())
        .cloned()
        .or_else(|| (sources.env)("MESETA_CONFIG").map(PathBuf::from));
    let paths = match named {
        Some(path) => vec![path],
        None => match std::fs::read_dir(sources.default_dir) {
            Ok(entries) => {
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                    .collect();
                paths.sort();
                paths
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("reading the config dir {}", sources.default_dir.display())
                })
            }
        },
    };
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the config file {}", path.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("parsing the config file {}", path.display()))?;
            Ok(File { path, table })
        })
        .collect()
}

/// The long flag names of a role, normalised.
fn flags_of(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional())
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "help" | "version" | CONFIG_FLAG))
        .map(str::to_string)
        .collect()
}

fn normalise(key: &str) -> String {
    key.replace('_', "-")
}

/// Every key must be a flag: top-level keys of some role of this binary,
/// role tables' keys of that role. Tables of roles this binary does not
/// have are skipped.
fn validate(cmd: &Command, files: &[File]) -> Result<()> {
    let roles: BTreeMap<&str, Vec<String>> = ROLES
        .iter()
        .filter_map(|r| cmd.find_subcommand(r).map(|c| (*r, flags_of(c))))
        .collect();
    for file in files {
        let path = file.path.display();
        for (key, value) in &file.table {
            if ROLES.contains(&key.as_str()) {
                let toml::Value::Table(table) = value else {
                    bail!("{path}: [{key}] must be a table of {key} flags");
                };
                let Some(flags) = roles.get(key.as_str()) else {
                    continue;
                };
                for k in table.keys() {
                    if !flags.contains(&normalise(k)) {
                        bail!(
                            "{path}: [{key}] {k}: `meseta {key}` has no flag --{}",
                            normalise(k)
                        );
                    }
                }
            } else if !roles.values().any(|f| f.contains(&normalise(key))) {
                bail!(
                    "{path}: {key}: no role has a flag --{} (role tables: [{}])",
                    normalise(key),
                    ROLES.join("], [")
                );
            }
        }
    }
    Ok(())
}

/// `MESETA_<ROLE>_<FLAG>`, then (for `--masters`) `MESETA_MASTERS`. An
/// empty variable counts as unset (an `EnvironmentFile=` line left blank).
fn from_env(role: &str, long: &str, sources: &Sources) -> Option<(String, String)> {
    let var = format!("MESETA_{role}_{long}")
        .to_ascii_uppercase()
        .replace('-', "_");
    let mut candidates = vec![var];
    if long == "masters" {
        candidates.push("MESETA_MASTERS".into());
    }
    candidates.into_iter().find_map(|var| {
        (sources.env)(&var)
            .filter(|v| !v.is_empty())
            .map(|v| (var, v))
    })
}

/// The last file's value wins; in a file, the role's table beats the top
/// level.
fn from_files(role: &str, long: &str, files: &[File]) -> Option<(toml::Value, String)> {
    let lookup = |table: &toml::Table| {
        table
            .iter()
            .find(|(k, _)| normalise(k) == long)
            .map(|(_, v)| v.clone())
    };
    files.iter().rev().find_map(|f| {
        let in_role = f
            .table
            .get(role)
            .and_then(toml::Value::as_table)
            .and_then(lookup)
            .map(|v| (v, format!("{} [{role}]", f.path.display())));
        in_role.or_else(|| lookup(&f.table).map(|v| (v, f.path.display().to_string())))
    })
}

/// The flags that say `value` for `arg`.
fn to_flags(arg: &clap::Arg, long: &str, value: &toml::Value) -> Result<Vec<OsString>> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    if switch {
        let on = match value {
            toml::Value::Boolean(b) => *b,
            toml::Value::String(s) => match s.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => bail!("expects true or false, got {other:?}"),
            },
            other => bail!("expects true or false, got {other}"),
        };
        return Ok(if on {
            vec![OsString::from(format!("--{long}"))]
        } else {
            Vec::new()
        });
    }
    let scalar = |v: &toml::Value| -> Result<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(anyhow!("expects a string or a number, got {other}")),
        }
    };
    let values: Vec<String> = match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_>>()?,
        other => vec![scalar(other)?],
    };
    let flag = |v: &str| OsString::from(format!("--{long}={v}"));
    match (values.len(), arg.get_value_delimiter()) {
        (0, _) => Ok(Vec::new()),
        (1, _) => Ok(vec![flag(&values[0])]),
        (_, Some(d)) => Ok(vec![flag(&values.join(&d.to_string()))]),
        (_, None) if matches!(arg.get_action(), ArgAction::Append) => {
            Ok(values.iter().map(|v| flag(v)).collect())
        }
        (n, None) => bail!("expects one value, got {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Master(Role),
        Agent(Role),
        Log { id: String },
    }

    #[derive(Args, Debug)]
    struct Role {
        #[arg(long, default_value = "0.0.0.0:5050")]
        listen: String,
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
        #[arg(long)]
        data_dir: Option<String>,
        #[arg(long)]
        no_switch_user: bool,
    }

    fn role(cli: &Cli) -> &Role {
        match &cli.command {
            Cmd::Master(r) | Cmd::Agent(r) => r,
            Cmd::Log { .. } => panic!("not a role"),
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        env: BTreeMap<String, String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().expect("a temp dir"),
                env: BTreeMap::new(),
            }
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).expect("writing a config file");
            path
        }

        fn resolve(&self, args: &[&str]) -> Result<(Cli, Resolved)> {
            use clap::CommandFactory;
            let env = |k: &str| self.env.get(k).cloned();
            let sources = Sources {
                env: &env,
                default_dir: self.dir.path(),
            };
            let raw = std::iter::once("meseta")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect();
            let resolved = resolve(&Cli::command(), raw, &sources)?;
            let cli = Cli::try_parse_from(&resolved.argv)?;
            Ok((cli, resolved))
        }
    }

    #[test]
    fn a_file_value_is_used_and_a_flag_overrides_it() -> Result<()> {
        let f = Fixture::new();
        f.file(
            "meseta.toml",
            "masters = [\"a:5050\", \"b:5050\"]\n[master]\nlisten = \"10.0.0.1:5050\"\ndata-dir = \"/var/lib/m\"\n",
        );
        let (cli, resolved) = f.resolve(&["master"])?;
        assert_eq!(role(&cli).listen, "10.0.0.1:5050");
        assert_eq!(role(&cli).masters, ["a:5050", "b:5050"]);
        assert_eq!(role(&cli).data_dir.as_deref(), Some("/var/lib/m"));
        assert_eq!(resolved.origins.len(), 3);

        let (cli, _) = f.resolve(&["master", "--listen", "127.0.0.1:1"])?;
        assert_eq!(role(&cli).listen, "127.0.0.1:1");
        assert_eq!(role(&cli).data_dir.as_deref(), Some("/var/lib/m"));
        Ok(())
    }

    #[test]
    fn role_tables_apply_to_their_role_only() -> Result<()> {
        let f = Fixture::new();
        f.file(
            "meseta.toml",
            "data_dir = \"/top\"\n[agent]\ndata-dir = \"/agent\"\nno-switch-user = true\n",
        );
        let (agent, _) = f.resolve(&["agent"])?;
        assert_eq!(role(&agent).data_dir.as_deref(), Some("/agent"));
        assert!(role(&agent).no_switch_user);
        let (master, _) = f.resolve(&["master"])?;
        assert_eq!(role(&master).data_dir.as_deref(), Some("/top"));
        assert!(!role(&master).no_switch_user);
        Ok(())
    }

    #[test]
    fn the_environment_beats_files_and_loses_to_flags() -> Result<()> {
        let mut f = Fixture::new();
        f.file(
            "a.toml",
            "masters = \"file:1\"\n[master]\nlisten = \"1.1.1.1:1\"\n",
        );
        f.env.insert("MESETA_MASTERS".into(), "env:1,env:2".into());
        f.env
            .insert("MESETA_MASTER_LISTEN".into(), "2.2.2.2:2".into());
        f.env.insert("MESETA_MASTER_DATA_DIR".into(), String::new());
        let (cli, _) = f.resolve(&["master"])?;
        assert_eq!(role(&cli).masters, ["env:1", "env:2"]);
        assert_eq!(role(&cli).listen, "2.2.2.2:2");
        assert_eq!(role(&cli).data_dir, None, "an empty variable is unset");
        let (cli, _) = f.resolve(&["master", "--masters", "flag:1"])?;
        assert_eq!(role(&cli).masters, ["flag:1"]);
        Ok(())
    }

    #[test]
    fn later_files_win_and_config_names_one_file() -> Result<()> {
        let f = Fixture::new();
        f.file("10-base.toml", "[master]\nlisten = \"1.1.1.1:1\"\n");
        f.file("20-site.toml", "[master]\nlisten = \"2.2.2.2:2\"\n");
        let (cli, resolved) = f.resolve(&["master"])?;
        assert_eq!(role(&cli).listen, "2.2.2.2:2");
        assert_eq!(resolved.files.len(), 2);
        let only = f.file("only.conf", "[master]\nlisten = \"3.3.3.3:3\"\n");
        let path = only.display().to_string();
        let (cli, resolved) = f.resolve(&["--config", &path, "master"])?;
        assert_eq!(role(&cli).listen, "3.3.3.3:3");
        assert_eq!(resolved.files, [only]);
        Ok(())
    }

    #[test]
    fn unknown_keys_are_errors_and_unknown_roles_are_skipped() {
        let f = Fixture::new();
        f.file(
            "a.toml",
            "[dns]\nresolvers = [\"1.1.1.1\"]\n[master]\nlistn = \"x\"\n",
        );
        let err = f.resolve(&["master"]).expect_err("a misspelled key");
        assert!(
            format!("{err:#}").contains("has no flag --listn"),
            "{err:#}"
        );

        let g = Fixture::new();
        g.file("a.toml", "bogus = 1\n[dns]\nresolvers = [\"1.1.1.1\"]\n");
        let err = g
            .resolve(&["master"])
            .expect_err("an unknown top-level key");
        assert!(
            format!("{err:#}").contains("no role has a flag --bogus"),
            "{err:#}"
        );

        let h = Fixture::new();
        h.file("a.toml", "[dns]\nresolvers = [\"1.1.1.1\"]\n");
        assert!(
            h.resolve(&["master"]).is_ok(),
            "[dns] is skipped without a dns role"
        );
    }

    #[test]
    fn client_commands_and_bad_command_lines_pass_through() -> Result<()> {
        let f = Fixture::new();
        f.file("a.toml", "this is not toml");
        let (cli, resolved) = f.resolve(&["log", "t1"])?;
        assert!(matches!(cli.command, Cmd::Log { .. }));
        assert!(resolved.files.is_empty());
        let env = |_: &str| None;
        let sources = Sources {
            env: &env,
            default_dir: f.dir.path(),
        };
        use clap::CommandFactory;
        let raw = vec![OsString::from("meseta"), OsString::from("--bogus")];
        let resolved = resolve(&Cli::command(), raw.clone(), &sources)?;
        assert_eq!(resolved.argv, raw);
        Ok(())
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let f = Fixture::new();
        f.file("a.toml", "listen = ");
        let err = f.resolve(&["master"]).expect_err("broken TOML");
        assert!(format!("{err:#}").contains("a.toml"), "{err:#}");
    }
}
