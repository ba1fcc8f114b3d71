//! Makes a compiled program's source table name the file each instruction came from.
//!
//! regorus 0.14's compiler numbers source files in the order it first emits an instruction from
//! each, and records that number in every instruction's span, but it fills the program's source
//! table (`Program::sources`) in module order. The two orders differ whenever the first rule
//! compiled is not in the first module: a Gatekeeper template whose libs come before it, a
//! policy whose library files are listed first. A span then names the wrong file, and every
//! reading of a program by place went wrong with it: the guards `undefined_bindings` inserts
//! after `:=` bindings (found by file, line and column) were not inserted at all, so on
//! bytecode `spec := input.review.object.spec` went on with an undefined `spec` where the
//! interpreter fails the body; error locations named the wrong file.
//!
//! [`repair`] reorders the table by what the program itself says: every rule body starts at an
//! instruction of its rule's module, found by the rule's package (in a package several files
//! share, by the file that defines the rule).

use std::collections::BTreeMap;

use regorus::rvm::Program;
use regorus::unstable::{Module, Ref};

use crate::policy::recursion;

/// Reorders `program.sources` (compiled from `modules`) so that `sources[i]` is the file whose
/// instructions carry source index `i`. An error when a body's file cannot be told (two files
/// of its package define its rule), rather than a guess.
pub fn repair(program: &mut Program, modules: &[Ref<Module>]) -> Result<(), String> {
    // Each module's package as a rule path prefix (`data.lib.exclude_update.`), its file, and
    // the names its rules define (`is_update`).
    let packages: Vec<(String, String, Vec<String>)> = modules
        .iter()
        .map(|m| {
            let span = m.package.refr.span();
            let names = m
                .policy
                .iter()
                .filter_map(|r| recursion::name_in_package(r))
                .map(|path| path.join("."))
                .collect();
            (
                format!("data.{}.", span.text()),
                span.source.get_path().clone(),
                names,
            )
        })
        .collect();
    let mut file_of_index: BTreeMap<usize, String> = BTreeMap::new();
    for rule in &program.rule_infos {
        let Some(longest) = packages
            .iter()
            .filter(|(prefix, ..)| rule.name.starts_with(prefix.as_str()))
            .map(|(prefix, ..)| prefix.len())
            .max()
        else {
            return Err(format!("rule {} is in no module's package", rule.name));
        };
        let in_package: Vec<&(String, String, Vec<String>)> = packages
            .iter()
            .filter(|(prefix, ..)| {
                prefix.len() == longest && rule.name.starts_with(prefix.as_str())
            })
            .collect();
        // A package several files declare: the file that defines the rule.
        let local = &rule.name[longest..];
        let defines = |names: &[String]| {
            names.iter().any(|n| {
                n == local
                    || local
                        .strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            })
        };
        let files: Vec<&String> = match in_package[..] {
            [(_, file, _)] => vec![file],
            _ => in_package
                .iter()
                .filter(|(_, _, names)| defines(names))
                .map(|(_, file, _)| file)
                .collect(),
        };
        let [file] = files[..] else {
            return Err(format!(
                "rule {} is defined in {} files of one package ({}), and regorus's program does not say which of them each instruction came from",
                rule.name,
                files.len(),
                files.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
            ));
        };
        for &pc in rule.definitions.iter().flatten() {
            let Some(Some(span)) = program.instruction_spans.get(pc as usize) else {
                continue;
            };
            match file_of_index.get(&span.source_index) {
                Some(known) if known != file => {
                    return Err(format!(
                        "instructions of source {} come from both {known} and {file}",
                        span.source_index
                    ));
                }
                Some(_) => {}
                None => {
                    file_of_index.insert(span.source_index, file.clone());
                }
            }
        }
    }
    if file_of_index.keys().any(|&i| i >= program.sources.len()) {
        return Err("an instruction names a source index the program does not have".to_string());
    }
    // Files no rule body starts in (only an entry point's own instructions name them) take the
    // indices left, in the table's order.
    let mut rest = program
        .sources
        .iter()
        .filter(|s| !file_of_index.values().any(|f| *f == s.name));
    let mut sources = Vec::with_capacity(program.sources.len());
    for index in 0..program.sources.len() {
        let source = match file_of_index.get(&index) {
            Some(file) => program.sources.iter().find(|s| s.name == *file),
            None => rest.next(),
        };
        sources.push(
            source
                .cloned()
                .ok_or_else(|| format!("no file for source index {index}"))?,
        );
    }
    program.sources = sources;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::languages::rego::compiler::Compiler;
    use regorus::{Engine, Value};

    const LIB: &str =
        "package lib\nimport rego.v1\nallowed(spec) if {\n\tfg := spec.fsGroup\n\tfg > 0\n}\n";
    const MAIN: &str =
        "package p\nimport rego.v1\nv if {\n\tspec := input.object.spec\n\tnot data.lib.allowed(spec)\n}\n";

    /// `data.p.v` of `files` (added in that order) on `input`: the program as regorus compiles
    /// it, its modules, and the interpreter's answer.
    fn compiled(
        files: &[(&str, &str)],
        input: &serde_json::Value,
    ) -> (Program, Vec<Ref<Module>>, Value) {
        let mut engine = Engine::new();
        for (name, text) in files {
            engine.add_policy((*name).into(), (*text).into()).unwrap();
        }
        engine.set_input(Value::from(input.clone()));
        let interpreted = engine.clone().eval_rule("data.p.v".into()).unwrap();
        let policy = engine.compile_with_entrypoint(&"data.p.v".into()).unwrap();
        let program = (*Compiler::compile_from_policy(&policy, &["data.p.v"]).unwrap()).clone();
        (program, policy.get_modules().to_vec(), interpreted)
    }

    /// The file the first body of `rule` names.
    fn file_of(program: &Program, rule: &str) -> String {
        let info = program.rule_infos.iter().find(|r| r.name == rule).unwrap();
        let pc = info.definitions[0][0] as usize;
        let span = program.instruction_spans[pc].as_ref().unwrap();
        program.sources[span.source_index].name.clone()
    }

    fn run(program: Program, input: &serde_json::Value) -> Value {
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(std::sync::Arc::new(program));
        vm.set_input(Value::from(input.clone()));
        vm.execute_entry_point_by_name("data.p.v").unwrap()
    }

    #[test]
    fn every_rule_body_names_its_own_file_after_repair() {
        let (mut program, modules, _) = compiled(
            &[("lib.rego", LIB), ("main.rego", MAIN)],
            &serde_json::json!({}),
        );
        // regorus's own table: the main rule's body names the library (the defect repaired).
        assert_eq!(file_of(&program, "data.p.v"), "lib.rego");
        repair(&mut program, &modules).unwrap();
        assert_eq!(file_of(&program, "data.p.v"), "main.rego");
        assert_eq!(file_of(&program, "data.lib.allowed"), "lib.rego");
    }

    /// `spec := input.object.spec` with no `spec` fails the body on the interpreter; on
    /// bytecode it did not (its guard was never inserted) until the table was repaired.
    #[test]
    fn a_binding_in_a_later_module_is_guarded_once_repaired() {
        let input = serde_json::json!({});
        let (program, modules, interpreted) =
            compiled(&[("lib.rego", LIB), ("main.rego", MAIN)], &input);
        assert_eq!(interpreted, Value::Undefined);
        let mut unrepaired = program.clone();
        crate::policy::undefined_bindings::guard(&mut unrepaired, &modules, false).unwrap();
        assert_eq!(run(unrepaired, &input), Value::from(true));
        let mut repaired = program;
        repair(&mut repaired, &modules).unwrap();
        crate::policy::undefined_bindings::guard(&mut repaired, &modules, false).unwrap();
        assert_eq!(run(repaired, &input), interpreted);
    }

    #[test]
    fn a_package_split_across_files_is_told_apart_by_its_rules() {
        let (mut program, modules, _) = compiled(
            &[
                ("a.rego", "package p\nimport rego.v1\nw := input.w\n"),
                (
                    "b.rego",
                    "package p\nimport rego.v1\nv if { x := input.a.b; w; x }\n",
                ),
            ],
            &serde_json::json!({}),
        );
        repair(&mut program, &modules).unwrap();
        assert_eq!(file_of(&program, "data.p.v"), "b.rego");
        assert_eq!(file_of(&program, "data.p.w"), "a.rego");
    }

    #[test]
    fn a_rule_two_files_define_is_refused_not_guessed() {
        let (mut program, modules, _) = compiled(
            &[
                (
                    "a.rego",
                    "package p\nimport rego.v1\nv if { x := input.a; x }\n",
                ),
                ("b.rego", "package p\nimport rego.v1\nv if { input.b }\n"),
            ],
            &serde_json::json!({}),
        );
        let refused = repair(&mut program, &modules).unwrap_err();
        assert!(
            refused.contains("defined in 2 files of one package (a.rego, b.rego)"),
            "{refused}"
        );
    }
}
