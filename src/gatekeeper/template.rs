//! ConstraintTemplates (`templates.gatekeeper.sh/v1`, `v1beta1`, `v1alpha1`): the Rego of the
//! `admission.k8s.gatekeeper.sh` target and its `libs`, compiled once per template.

use std::time::Duration;

use regorus::Engine;
use serde_json::Value;

use crate::gatekeeper::inventory::{parse_requires_sync_data, SyncKind, REQUIRES_SYNC_DATA};
use crate::gatekeeper::rego_compat;
use crate::policy::error::LoadError;
use crate::policy::metadata;

pub const TEMPLATE_GROUP: &str = "templates.gatekeeper.sh";
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// Where a document came from, for every message about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based line where the YAML document starts.
    pub line: usize,
    /// The whole file, to point Rego errors at their line inside a block scalar.
    pub text: String,
}

impl Origin {
    pub fn error(&self, message: impl Into<String>) -> LoadError {
        LoadError::new(&self.file, self.line, 1, message)
    }

    /// An error at the first line at or after the document start that mentions `key:`.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> LoadError {
        let needle = format!("{key}:");
        let line = self
            .text
            .lines()
            .enumerate()
            .skip(self.line.saturating_sub(1))
            .find(|(_, l)| l.trim_start().trim_start_matches("- ").starts_with(&needle))
            .map(|(i, l)| (i + 1, l.len() - l.trim_start().len() + 1));
        match line {
            Some((line, column)) => LoadError::new(&self.file, line, column, message),
            None => self.error(message),
        }
    }

    /// The file line and indentation of the first line of `block` (a Rego block scalar) at or
    /// after the document start, so regorus's `line:col` inside the block maps back to the file.
    fn block_position(&self, block: &str) -> (usize, usize) {
        let Some((first_index, first)) = block
            .lines()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty())
        else {
            return (self.line, 0);
        };
        let found = self
            .text
            .lines()
            .enumerate()
            .skip(self.line.saturating_sub(1))
            .find(|(_, l)| l.trim() == first.trim() && l.ends_with(first.trim_end()));
        match found {
            Some((i, l)) => {
                let indent = l.len() - first.len();
                ((i + 1).saturating_sub(first_index), indent)
            }
            None => (self.line, 0),
        }
    }
}

/// One Rego text of a template and the name regorus knows it by.
#[derive(Debug, Clone)]
struct RegoPiece {
    name: String,
    text: String,
}

/// A parsed ConstraintTemplate.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// The Constraint kind it defines (`spec.crd.spec.names.kind`).
    pub kind: String,
    pub title: String,
    pub description: String,
    /// `openAPIV3Schema` for `spec.parameters`, when the template gives one.
    pub schema: Option<Value>,
    pub annotations: serde_json::Map<String, Value>,
    /// The kinds its Rego reads from `data.inventory`, as its `requires-sync-data` says.
    pub sync: Vec<SyncKind>,
    pub origin: Origin,
    rego: String,
    libs: Vec<String>,
}

/// A template with its Rego compiled (an engine holding the rego and libs, no data yet).
#[derive(Clone)]
pub struct CompiledTemplate {
    pub template: Template,
    /// `data.<package>` of the template's Rego.
    pub package: String,
    pub engine: Engine,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("name", &self.template.name)
            .field("kind", &self.template.kind)
            .field("package", &self.package)
            .finish()
    }
}

pub fn is_template(doc: &Value) -> bool {
    let group = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g);
    group == Some(TEMPLATE_GROUP)
        && doc.get("kind").and_then(Value::as_str) == Some("ConstraintTemplate")
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

impl Template {
    pub fn parse(doc: &Value, origin: Origin) -> Result<Template, LoadError> {
        let version = str_at(doc, "/apiVersion").unwrap_or("");
        if !matches!(
            version,
            "templates.gatekeeper.sh/v1"
                | "templates.gatekeeper.sh/v1beta1"
                | "templates.gatekeeper.sh/v1alpha1"
        ) {
            return Err(origin.error_at(
                "apiVersion",
                format!("ConstraintTemplate apiVersion {version:?} is not supported (v1, v1beta1)"),
            ));
        }
        let name = str_at(doc, "/metadata/name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| origin.error("ConstraintTemplate has no metadata.name"))?
            .to_string();
        let kind = str_at(doc, "/spec/crd/spec/names/kind")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                origin.error_at(
                    "spec",
                    format!("ConstraintTemplate {name}: spec.crd.spec.names.kind is missing"),
                )
            })?
            .to_string();
        // Gatekeeper requires the template's name to be its kind in lower case.
        if name != kind.to_ascii_lowercase() {
            return Err(origin.error_at(
                "name",
                format!(
                    "ConstraintTemplate {name}: metadata.name must be the lower-case kind {:?}",
                    kind.to_ascii_lowercase()
                ),
            ));
        }
        let annotations = doc
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let annotation = |k: &str| {
            annotations
                .get(k)
                .and_then(Value::as_str)
                .map(|s| s.trim().to_string())
        };
        let schema = doc
            .pointer("/spec/crd/spec/validation/openAPIV3Schema")
            .filter(|s| !s.is_null())
            .cloned();
        let targets = match doc.pointer("/spec/targets") {
            Some(Value::Array(t)) if !t.is_empty() => t,
            _ => {
                return Err(origin.error_at(
                    "spec",
                    format!("ConstraintTemplate {name} has no spec.targets"),
                ))
            }
        };
        if targets.len() != 1 {
            return Err(origin.error_at(
                "targets",
                format!(
                    "ConstraintTemplate {name}: exactly one target is allowed, found {}",
                    targets.len()
                ),
            ));
        }
        let target = &targets[0];
        let target_name = str_at(target, "/target").unwrap_or("");
        if target_name != TARGET {
            return Err(origin.error_at("target", format!("ConstraintTemplate {name}: target {target_name:?} is not supported; regate runs {TARGET}")));
        }
        let (rego, libs) = rego_of(target);
        let Some(rego) = rego else {
            let engines: Vec<&str> = target
                .get("code")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(|e| str_at(e, "/engine")).collect())
                .unwrap_or_default();
            let message = if engines.contains(&"K8sNativeValidation") {
                format!("ConstraintTemplate {name} is not supported: it has only a CEL (K8sNativeValidation) target, and regate runs Rego")
            } else {
                format!("ConstraintTemplate {name} has no Rego for target {TARGET}")
            };
            return Err(origin.error_at("targets", message));
        };
        let sync = match annotation(REQUIRES_SYNC_DATA) {
            Some(text) => parse_requires_sync_data(&text).map_err(|e| {
                origin.error_at(
                    REQUIRES_SYNC_DATA,
                    format!("ConstraintTemplate {name}: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        Ok(Template {
            sync,
            title: annotation("metadata.gatekeeper.sh/title").unwrap_or_else(|| name.clone()),
            description: annotation("description").unwrap_or_default(),
            name,
            kind,
            schema,
            annotations,
            origin,
            rego,
            libs,
        })
    }

    /// Compiles the Rego (classic v0 syntax, as Gatekeeper's driver does) and its libs.
    pub fn compile(self, timeout: Duration) -> Result<CompiledTemplate, Vec<LoadError>> {
        let origin = &self.origin;
        let mut engine = Engine::new();
        engine.set_rego_v0(true);
        engine.set_execution_timer_config(crate::policy::compiled::timer(timeout));
        // Gathered, never written to stderr: a print may quote a Secret (see `crate::secrets`).
        engine.set_gather_prints(true);
        if let Err(e) = rego_compat::install(&mut engine)
            .and_then(|()| crate::policy::bounded_builtins::install(&mut engine))
        {
            return Err(vec![
                origin.error(format!("ConstraintTemplate {}: {e}", self.name))
            ]);
        }
        let mut pieces: Vec<RegoPiece> = Vec::new();
        for (i, lib) in self.libs.iter().enumerate() {
            pieces.push(RegoPiece {
                name: format!("{}#{}.libs[{i}]", origin.file, self.name),
                text: lib.clone(),
            });
        }
        let main = RegoPiece {
            name: format!("{}#{}.rego", origin.file, self.name),
            text: self.rego.clone(),
        };
        pieces.push(main.clone());
        let mut errors = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let is_lib = i + 1 < pieces.len();
            if is_lib {
                let pkg = metadata::package_of(&piece.text)
                    .map(|(_, p)| p)
                    .unwrap_or_default();
                if !(pkg == "lib" || pkg.starts_with("lib.")) {
                    let (line, _) = origin.block_position(&piece.text);
                    errors.push(LoadError::new(
                        &origin.file,
                        line,
                        1,
                        format!("ConstraintTemplate {}: a lib's package must start with `lib.`, got {pkg:?}", self.name),
                    ));
                    continue;
                }
            }
            let mut text = rego_compat::normalize(&piece.text);
            if !is_lib {
                let libs: Vec<&str> = pieces[..i].iter().map(|p| p.text.as_str()).collect();
                text = rego_compat::observed_keys_only(&text, &["violation"], &libs);
            }
            if let Err(e) = engine.add_policy(
                piece.name.clone(),
                rego_compat::constant_functions_as_tables(&text),
            ) {
                errors.push(self.relocate(piece, &e.to_string()));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // A recursive rule would overflow the stack of the request that reaches it.
        let recursion: Vec<LoadError> = crate::policy::recursion::find_cycles(engine.get_modules())
            .into_iter()
            .map(|c| match pieces.iter().find(|p| p.name == c.file) {
                Some(piece) => self.relocate(
                    piece,
                    &format!("{}:{}:{}\nerror: {}", c.file, c.line, c.column, c.message()),
                ),
                None => self.origin.error(c.message()),
            })
            .collect();
        if !recursion.is_empty() {
            return Err(recursion);
        }
        let Some((_, package)) = metadata::package_of(&self.rego) else {
            return Err(vec![origin.error_at(
                "rego",
                format!("ConstraintTemplate {}: the Rego has no package", self.name),
            )]);
        };
        if !engine
            .has_declared_rule_rooted_at(&main.name, "violation")
            .unwrap_or(false)
        {
            let (line, _) = origin.block_position(&self.rego);
            return Err(vec![LoadError::new(
                &origin.file,
                line,
                1,
                format!(
                    "ConstraintTemplate {}: the Rego defines no `violation` rule",
                    self.name
                ),
            )]);
        }
        Ok(CompiledTemplate {
            package: format!("data.{package}"),
            template: self,
            engine,
        })
    }

    /// Points a regorus error inside a block scalar at the template file's own line and column.
    fn relocate(&self, piece: &RegoPiece, message: &str) -> LoadError {
        let what = piece.name.rsplit('#').next().unwrap_or("rego");
        let Some((line, column, text)) = regorus_position(&piece.name, message) else {
            return self.origin.error(format!("{what}: {}", message.trim()));
        };
        let (start, indent) = self.origin.block_position(&piece.text);
        LoadError::new(
            &self.origin.file,
            start + line.saturating_sub(1),
            column + indent,
            format!("{what}: {text}"),
        )
    }
}

/// `line`, `column` and the message of a regorus error about source `name`: regorus writes
/// `--> name:line:col`, a snippet, then `error: message` (or `name:line:col: error: message`).
fn regorus_position(name: &str, message: &str) -> Option<(usize, usize, String)> {
    let at = message.find(&format!("{name}:"))? + name.len() + 1;
    let mut parts = message[at..].splitn(3, |c: char| c == ':' || c.is_whitespace());
    let line = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    let text = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("error:").map(str::trim))
        .filter(|t| !t.is_empty())
        .unwrap_or(message.trim())
        .to_string();
    Some((line, column, text))
}

/// The Rego and libs of a target: the classic `rego`/`libs` fields, or the `Rego` engine of
/// the newer `code` list.
fn rego_of(target: &Value) -> (Option<String>, Vec<String>) {
    let libs_of = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(rego) = target
        .get("rego")
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
    {
        return (Some(rego.to_string()), libs_of(target.get("libs")));
    }
    let code = target.get("code").and_then(Value::as_array);
    for entry in code.into_iter().flatten() {
        if str_at(entry, "/engine") == Some("Rego") {
            let rego = str_at(entry, "/source/rego").map(str::to_string);
            return (rego, libs_of(entry.pointer("/source/libs")));
        }
    }
    (None, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sdemo
spec:
  crd:
    spec:
      names:
        kind: K8sDemo
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sdemo

        violation[{\"msg\": msg}] {
          x := input.review.object.metadata.name
          msg := sprintf(\"bad %v\", [x]
        }
";

    fn parse(text: &str) -> Result<Template, LoadError> {
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| LoadError::new("t.yaml", 1, 1, e.to_string()))?;
        Template::parse(
            &doc,
            Origin {
                file: "t.yaml".into(),
                line: 1,
                text: text.into(),
            },
        )
    }

    #[test]
    fn rego_errors_point_into_the_yaml_file() {
        let errors = parse(TEMPLATE)
            .unwrap()
            .compile(Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        // The Rego starts on line 13; the broken call is on line 17 of the file.
        assert_eq!(errors[0].file, "t.yaml");
        assert!((17..=18).contains(&errors[0].line), "{:?}", errors[0]);
        assert!(errors[0].column > 8, "{:?}", errors[0]);
    }

    #[test]
    fn cel_only_template_is_named_as_unsupported() {
        let text = "apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8scel
spec:
  crd:
    spec:
      names:
        kind: K8sCel
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: K8sNativeValidation
          source:
            validations:
              - expression: \"true\"
";
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("k8scel"), "{e}");
        assert!(e.message.contains("CEL (K8sNativeValidation)"), "{e}");
        assert_eq!(e.line, 10, "{e}");
    }

    #[test]
    fn code_rego_engine_is_used() {
        let text = "apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sdemo
spec:
  crd:
    spec:
      names:
        kind: K8sDemo
  targets:
    - target: admission.k8s.gatekeeper.sh
      code:
        - engine: K8sNativeValidation
          source:
            validations: []
        - engine: Rego
          source:
            rego: |
              package k8sdemo
              violation[{\"msg\": \"x\"}] { input.review.object.bad }
";
        let compiled = parse(text)
            .unwrap()
            .compile(Duration::from_secs(1))
            .unwrap();
        assert_eq!(compiled.package, "data.k8sdemo");
    }

    /// A template's recursion is reported at its line in the YAML file.
    #[test]
    fn a_recursive_template_is_refused() {
        let text = "apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sloop
spec:
  crd:
    spec:
      names:
        kind: K8sLoop
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sloop

        violation[{\"msg\": msg}] {
          msg := m(input.review)
        }

        m(x) = y {
          y := m(x)
        }
";
        let doc: serde_json::Value = serde_yaml::from_str(text).unwrap();
        let template = Template::parse(
            &doc,
            Origin {
                file: "t.yaml".into(),
                line: 1,
                text: text.into(),
            },
        )
        .unwrap();
        let errors = template
            .compile(std::time::Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].file.as_str(), errors[0].line),
            ("t.yaml", 19),
            "{errors:?}"
        );
        assert!(
            errors[0]
                .message
                .contains("rego_recursion_error: rule data.k8sloop.m is recursive"),
            "{errors:?}"
        );
    }
}
