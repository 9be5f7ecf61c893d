//! `spin.toml` (manifest version 2): the same file drives Spin and tiktok-edge.
//!
//! Only what the host acts on is modelled; Spin keys the host does not use (`build`,
//! `files`, `description`, …) are accepted and ignored so Spin apps load unchanged.
//! Every refusal names the file, the key and what is wrong.

use crate::routes::{Route, RouteError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A manifest the host refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// An application variable (`[variables]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    /// Documentation only.
    pub description: Option<String>,
}

/// One component of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDecl {
    pub id: String,
    /// Absolute path of the `.wasm` file.
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// Component variables: name → template over application variables (`"{{ name }}"`).
    pub variables: BTreeMap<String, String>,
    /// Environment variables given to the guest (`wasi:cli/environment`).
    pub environment: BTreeMap<String, String>,
}

/// An HTTP trigger: a route and the component serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    pub route: Route,
    pub component: String,
}

/// A loaded, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    pub version: Option<String>,
    pub variables: BTreeMap<String, VariableDecl>,
    pub components: BTreeMap<String, ComponentDecl>,
    pub http_triggers: Vec<HttpTrigger>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    version: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: RawRoute,
    component: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Deserialize)]
struct RawComponent {
    source: RawSource,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    Path(String),
    Remote { url: String },
}

impl Manifest {
    /// Reads and validates `file`; component sources are resolved relative to it.
    pub fn load(file: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Validates manifest `text` as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| ManifestError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };

        if raw.spin_manifest_version.as_integer() != Some(2) {
            return Err(invalid(
                "spin_manifest_version".into(),
                format!(
                    "must be 2 (got {}); convert older manifests with `spin doctor`",
                    raw.spin_manifest_version
                ),
            ));
        }
        if raw.application.name.trim().is_empty() {
            return Err(invalid(
                "application.name".into(),
                "must not be empty".into(),
            ));
        }
        for (name, decl) in &raw.variables {
            check_variable_name(name).map_err(|m| invalid(format!("variables.{name}"), m))?;
            if decl.required && decl.default.is_some() {
                return Err(invalid(
                    format!("variables.{name}"),
                    "cannot be both `required` and have a `default`".into(),
                ));
            }
        }

        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            check_component_id(&id).map_err(|m| invalid(format!("component.{id}"), m))?;
            let source = match c.source {
                RawSource::Path(p) if p.trim().is_empty() => {
                    return Err(invalid(
                        format!("component.{id}.source"),
                        "must name a .wasm file".into(),
                    ));
                }
                RawSource::Path(p) => base_dir.join(p),
                RawSource::Remote { url } => {
                    return Err(invalid(
                        format!("component.{id}.source"),
                        format!(
                            "remote sources ({url}) are not fetched by tiktok-edge; download the .wasm and name its path"
                        ),
                    ));
                }
            };
            // Entries with `{{ variable }}` templates are checked once variables are resolved.
            for (i, host) in c
                .allowed_outbound_hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.contains("{{"))
            {
                crate::outbound::AllowedHost::parse(host).map_err(|m| {
                    invalid(format!("component.{id}.allowed_outbound_hosts[{i}]"), m)
                })?;
            }
            for (i, store) in c.key_value_stores.iter().enumerate() {
                if store.is_empty()
                    || !store
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(invalid(
                        format!("component.{id}.key_value_stores[{i}]"),
                        format!("{store:?} is not a store label (letters, digits, '_' and '-')"),
                    ));
                }
            }
            for (name, template) in &c.variables {
                check_variable_name(name)
                    .map_err(|m| invalid(format!("component.{id}.variables.{name}"), m))?;
                for reference in template_references(template)
                    .map_err(|m| invalid(format!("component.{id}.variables.{name}"), m))?
                {
                    if !raw.variables.contains_key(&reference) {
                        return Err(invalid(
                            format!("component.{id}.variables.{name}"),
                            format!(
                                "refers to {{{{ {reference} }}}}, which is not declared in [variables]"
                            ),
                        ));
                    }
                }
            }
            components.insert(
                id.clone(),
                ComponentDecl {
                    id,
                    source,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    key_value_stores: c.key_value_stores,
                    variables: c.variables,
                    environment: c.environment,
                },
            );
        }

        let mut http_triggers = Vec::new();
        for (i, t) in raw.trigger.http.into_iter().enumerate() {
            let key = format!("trigger.http[{i}]");
            let Some(component) = t.component else {
                return Err(invalid(format!("{key}.component"), "is missing".into()));
            };
            if !components.contains_key(&component) {
                return Err(invalid(
                    format!("{key}.component"),
                    format!("no [component.{component}] in this manifest"),
                ));
            }
            let route = match t.route {
                RawRoute::Path(p) => Route::parse(&p).map_err(|e: RouteError| {
                    invalid(format!("{key}.route"), format!("{p:?}: {e}"))
                })?,
                // Private endpoints are reachable only by service chaining, which this host does not offer.
                RawRoute::Private { private: true } => continue,
                RawRoute::Private { private: false } => {
                    return Err(invalid(
                        format!("{key}.route"),
                        "give a path, or `{ private = true }`".into(),
                    ));
                }
            };
            http_triggers.push(HttpTrigger { route, component });
        }

        Ok(Manifest {
            file: file.to_path_buf(),
            name: raw.application.name,
            version: raw.application.version,
            variables: raw.variables,
            components,
            http_triggers,
        })
    }
}

/// Spin's rule: lowercase letters, digits and `_`, starting with a letter.
fn check_variable_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variable name (lowercase letters, digits and '_', starting with a letter)"
        ))
    }
}

/// Spin's rule: kebab-case words of lowercase letters and digits.
fn check_component_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && id.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a component id (kebab-case: lowercase letters and digits)"
        ))
    }
}

/// A part of a variable template: literal text or a `{{ variable }}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart<'a> {
    Literal(&'a str),
    Variable(String),
}

/// Splits `"https://{{ host }}/x"` into parts; `{{` without a closing `}}` is an error.
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(TemplatePart::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed '{{{{' in {template:?}"))?;
        let name = after[..end].trim();
        check_variable_name(name)?;
        parts.push(TemplatePart::Variable(name.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest));
    }
    Ok(parts)
}

fn template_references(template: &str) -> Result<Vec<String>, String> {
    Ok(parse_template(template)?
        .into_iter()
        .filter_map(|p| match p {
            TemplatePart::Variable(v) => Some(v),
            TemplatePart::Literal(_) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
spin_manifest_version = 2

[application]
name = "demo"

[variables]
api_base = { default = "http://127.0.0.1:9000" }
token = { required = true, secret = true, description = "an API token" }

[[trigger.http]]
route = "/hello/..."
component = "hello"

[[trigger.http]]
route = { private = true }
component = "hello"

[component.hello]
source = "hello.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
key_value_stores = ["default"]
[component.hello.variables]
base = "{{ api_base }}/v1"
[component.hello.build]
command = "cargo build"
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/app/spin.toml"), text)
    }

    fn refusal(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_routes_components_and_variables() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.http_triggers.len(), 1, "private routes are not served");
        assert_eq!(m.http_triggers[0].route.raw(), "/hello/...");
        let c = &m.components["hello"];
        assert_eq!(c.source, Path::new("/app/hello.wasm"));
        assert_eq!(c.key_value_stores, ["default"]);
        assert_eq!(c.variables["base"], "{{ api_base }}/v1");
        assert!(m.variables["token"].required && m.variables["token"].secret);
    }

    #[test]
    fn refuses_wrong_manifest_version() {
        let e = refusal(&GOOD.replace("spin_manifest_version = 2", "spin_manifest_version = 1"));
        assert!(
            e.starts_with("/app/spin.toml: `spin_manifest_version`: must be 2"),
            "{e}"
        );
    }

    #[test]
    fn refuses_trigger_for_unknown_component() {
        let e = refusal(&GOOD.replace(
            "component = \"hello\"\n\n[[trigger.http]]",
            "component = \"nope\"\n\n[[trigger.http]]",
        ));
        assert!(
            e.contains("`trigger.http[0].component`: no [component.nope]"),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_route() {
        let e = refusal(&GOOD.replace("\"/hello/...\"", "\"/a/.../b\""));
        assert!(
            e.contains("`trigger.http[0].route`") && e.contains("'...' is allowed only"),
            "{e}"
        );
    }

    #[test]
    fn refuses_missing_source_naming_the_line() {
        let e = refusal(&GOOD.replace("source = \"hello.wasm\"", ""));
        assert!(
            e.starts_with("/app/spin.toml: ") && e.contains("source"),
            "{e}"
        );
    }

    #[test]
    fn refuses_undeclared_template_variable() {
        let e = refusal(&GOOD.replace("{{ api_base }}", "{{ nope }}"));
        assert!(
            e.contains("`component.hello.variables.base`") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn refuses_required_variable_with_default() {
        let e = refusal(&GOOD.replace(
            "required = true, secret = true",
            "required = true, default = \"x\"",
        ));
        assert!(e.contains("`variables.token`"), "{e}");
    }

    #[test]
    fn refuses_bad_outbound_host() {
        let e = refusal(&GOOD.replace("http://127.0.0.1:*", "127.0.0.1"));
        assert!(
            e.contains("`component.hello.allowed_outbound_hosts[0]`"),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_store_label() {
        let e = refusal(&GOOD.replace("[\"default\"]", "[\"a b\"]"));
        assert!(e.contains("`component.hello.key_value_stores[0]`"), "{e}");
    }

    #[test]
    fn templates_split_into_parts() {
        assert_eq!(
            parse_template("a{{ x }}b{{y}}").unwrap(),
            vec![
                TemplatePart::Literal("a"),
                TemplatePart::Variable("x".into()),
                TemplatePart::Literal("b"),
                TemplatePart::Variable("y".into())
            ]
        );
        assert!(parse_template("{{ x").is_err());
        assert!(parse_template("{{ X }}").is_err());
    }
}
