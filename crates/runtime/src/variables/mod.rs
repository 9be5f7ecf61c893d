//! Application variables: manifest defaults overridden by `SPIN_VARIABLE_<NAME>`
//! environment variables (Spin's convention), rendered into each component's variables.
//!
//! Resolution happens once at start: a required variable without a value stops the host
//! with a message naming it. Secret values are never logged: [`ComponentVariables`]'s
//! `Debug` shows names only.

mod spin_v2;
mod spin_v3;
mod wasi_config_draft;
mod wasi_config_rc1;

use crate::manifest::{Manifest, TemplatePart, parse_template};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VariableError {
    #[error(
        "variable `{name}` is required but has no value: set {env} (or give it a default in {file})"
    )]
    RequiredMissing {
        name: String,
        env: String,
        file: String,
    },
}

/// Where values come from besides manifest defaults, in order of precedence.
pub trait VariableSource {
    fn value(&self, name: &str) -> Option<String>;
}

/// `SPIN_VARIABLE_<NAME>` from the process environment.
pub struct EnvSource;

impl VariableSource for EnvSource {
    fn value(&self, name: &str) -> Option<String> {
        std::env::var(env_name(name)).ok()
    }
}

/// Fixed values (tests, embedders, sandbox mode).
impl VariableSource for HashMap<String, String> {
    fn value(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The environment variable Spin reads for application variable `name`.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Resolved application variables.
#[derive(Clone)]
pub struct AppVariables {
    values: HashMap<String, String>,
    secrets: Vec<String>,
}

impl AppVariables {
    /// Resolves every declared variable: first source with a value wins, then the default.
    pub fn resolve(
        manifest: &Manifest,
        sources: &[&dyn VariableSource],
    ) -> Result<Self, VariableError> {
        let mut values = HashMap::new();
        for (name, decl) in &manifest.variables {
            let value = sources
                .iter()
                .find_map(|s| s.value(name))
                .or_else(|| decl.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None if decl.required => {
                    return Err(VariableError::RequiredMissing {
                        name: name.clone(),
                        env: env_name(name),
                        file: manifest.file.display().to_string(),
                    });
                }
                None => {}
            }
        }
        let secrets = manifest
            .variables
            .iter()
            .filter(|(_, d)| d.secret)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(AppVariables { values, secrets })
    }

    /// Renders a template; `None` when it refers to a variable without a value.
    pub fn render(&self, template: &str) -> Option<String> {
        let mut out = String::new();
        for part in parse_template(template).ok()? {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Variable(v) => out.push_str(self.values.get(&v)?),
            }
        }
        Some(out)
    }

    /// The variables component `id` may read, rendered.
    pub fn for_component(&self, variables: &BTreeMap<String, String>) -> ComponentVariables {
        let secret = |template: &str| {
            parse_template(template)
                .map(|parts| {
                    parts
                        .iter()
                        .any(|p| matches!(p, TemplatePart::Variable(v) if self.secrets.contains(v)))
                })
                .unwrap_or(false)
        };
        ComponentVariables {
            values: variables
                .iter()
                .map(|(name, template)| (name.clone(), (self.render(template), secret(template))))
                .collect(),
        }
    }
}

/// Names only: values may be secret.
impl fmt::Debug for AppVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// One component's variables: name → (value if resolvable, whether secret).
#[derive(Clone, Default)]
pub struct ComponentVariables {
    values: BTreeMap<String, (Option<String>, bool)>,
}

/// Why a guest's variable lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    InvalidName(String),
    Undefined(String),
}

impl ComponentVariables {
    pub fn get(&self, name: &str) -> Result<String, LookupError> {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(LookupError::InvalidName(format!(
                "{name:?} is not a variable name"
            )));
        }
        match self.values.get(name) {
            Some((Some(v), _)) => Ok(v.clone()),
            Some((None, _)) => Err(LookupError::Undefined(format!(
                "variable {name} has no value"
            ))),
            None => Err(LookupError::Undefined(format!(
                "variable {name} is not declared for this component"
            ))),
        }
    }

    /// All variables that have values.
    pub fn all(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .filter_map(|(n, (v, _))| v.clone().map(|v| (n.clone(), v)))
            .collect()
    }
}

impl fmt::Debug for ComponentVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, (value, secret)) in &self.values {
            match (value, secret) {
                (_, true) => m.entry(name, &"<secret>"),
                (Some(v), false) => m.entry(name, v),
                (None, false) => m.entry(name, &"<unset>"),
            };
        }
        m.finish()
    }
}

/// What a variables host call needs from the store data.
pub struct VarsView<'a> {
    pub vars: &'a Arc<ComponentVariables>,
}

/// [`HasData`] marker for linking the variable interfaces.
pub struct VarsData;

impl HasData for VarsData {
    type Data<'a> = VarsView<'a>;
}

/// Adds every variables interface version a guest may import to `linker`:
/// `wasi:config/store` (two versions) and Spin's `variables` (2.0 sync, 3.0 async), all
/// over one [`ComponentVariables`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> VarsView<'_>,
) -> wasmtime::Result<()> {
    wasi_config_draft::add_to_linker(linker, get)?;
    wasi_config_rc1::add_to_linker(linker, get)?;
    spin_v2::add_to_linker(linker, get)?;
    spin_v3::add_to_linker(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            Path::new("/app/spin.toml"),
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
base = { default = "http://mock" }
token = { required = true, secret = true }
optional = {}
[component.c]
source = "c.wasm"
[component.c.variables]
url = "{{ base }}/api"
token = "{{ token }}"
maybe = "{{ optional }}"
"#,
        )
        .unwrap()
    }

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_variable_without_value_refuses_start() {
        let e = AppVariables::resolve(&manifest(), &[&source(&[])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "variable `token` is required but has no value: set SPIN_VARIABLE_TOKEN (or give it a default in /app/spin.toml)"
        );
    }

    #[test]
    fn sources_override_defaults_and_templates_render() {
        let app = AppVariables::resolve(
            &manifest(),
            &[&source(&[("token", "s3cret"), ("base", "http://override")])],
        )
        .unwrap();
        let c = app.for_component(&manifest().components["c"].variables);
        assert_eq!(c.get("url").unwrap(), "http://override/api");
        assert_eq!(c.get("token").unwrap(), "s3cret");
        assert!(matches!(c.get("maybe"), Err(LookupError::Undefined(_))));
        assert!(matches!(c.get("other"), Err(LookupError::Undefined(_))));
        assert!(matches!(
            c.get("Bad-Name"),
            Err(LookupError::InvalidName(_))
        ));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let app = AppVariables::resolve(&manifest(), &[&source(&[("token", "s3cret")])]).unwrap();
        let c = app.for_component(&manifest().components["c"].variables);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("<secret>") && shown.contains("http://mock/api"),
            "{shown}"
        );
    }

    #[test]
    fn env_names_follow_spin() {
        assert_eq!(
            env_name("tiktok_api_base_url"),
            "SPIN_VARIABLE_TIKTOK_API_BASE_URL"
        );
    }
}
