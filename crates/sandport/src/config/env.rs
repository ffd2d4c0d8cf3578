//! Environment overrides: `SANDPORT_<SECTION>_<KEY>=value` sets `[section] key = value`.
//!
//! Values are read as TOML values when they parse as one (`8080`, `true`, `["10.0.0.0/8"]`)
//! and as strings otherwise (`127.0.0.1:8080`). Variables for unknown sections are errors, so
//! a typo never silently does nothing.

use super::ConfigError;

/// The prefix every configuration variable carries.
pub const PREFIX: &str = "SANDPORT_";

/// Sections of the file, in the order of `config/example.toml`.
pub const SECTIONS: &[&str] = &[
    "server",
    "admin",
    "routing",
    "app",
    "identity",
    "discovery",
    "proxy",
    "rewrite",
    "log",
];

/// Variables with the prefix that are not configuration keys.
const NOT_CONFIG: &[&str] = &["SANDPORT_CONFIG"];

pub(super) fn apply_overrides(
    table: &mut toml::Table,
    env_vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env_vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if NOT_CONFIG.contains(&name.as_str()) {
            continue;
        }
        let (section, key) = split_name(rest).ok_or_else(|| not_a_key(&name))?;
        section_table(table, &section, &name)?.insert(key, parse_value(&raw));
    }
    Ok(())
}

/// The error for a prefixed variable that names no section: lists the sections, since the
/// usual cause is a misspelt one.
fn not_a_key(name: &str) -> ConfigError {
    ConfigError::Parse {
        origin: format!("environment variable {name}"),
        message: format!(
            "not a configuration key; sections are {}",
            SECTIONS.join(", ")
        ),
    }
}

/// The file's `[section]` table, created when the file has none; an error when the file
/// gives `section` a value that is not a table (variable `name` cannot go into it).
fn section_table<'a>(
    table: &'a mut toml::Table,
    section: &str,
    name: &str,
) -> Result<&'a mut toml::Table, ConfigError> {
    let section_table = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = section_table else {
        return Err(ConfigError::Parse {
            origin: format!("environment variable {name}"),
            message: format!("`{section}` is not a table in the file"),
        });
    };
    Ok(section_table)
}

fn split_name(rest: &str) -> Option<(String, String)> {
    let lower = rest.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let key = lower.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| ((*section).to_owned(), key.to_owned()))
    })
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}
