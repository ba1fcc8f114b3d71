#!/usr/bin/env bash
# Builds regate against a copy of regorus 0.14.1 whose VM no longer does two kinds of work it
# throws away, to measure what that work costs (docs/BENCHMARKS.md, "What regorus's VM costs"):
#   1. every `.ok_or(VmError::…)` in src/rvm/vm builds its error value on every call, also when
#      nothing fails (the register reads, the instruction fetch, each rule call), and drops it;
#      `.ok_or_else(|| …)` builds it only on failure;
#   2. every rule or function call clones the rule's `RuleInfo` (its name, definitions and
#      parameters) out of the program; it is borrowed through a clone of the program's `Arc`.
# Neither changes what the VM computes. regate itself does not use this build: it depends on
# regorus as published (Cargo.toml pins =0.14.1); this is a proposal for upstream, measured.
#
#   bench/regorus_vm_patch.sh            # → target/regorus-vm-patch/release/regate
#   REGATE=target/regorus-vm-patch/release/regate bench/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

registry() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/regorus-0.14.1 2>/dev/null | head -n1 || true; }
registry=$(registry)
if [[ -z "$registry" ]]; then
  cargo fetch --quiet
  registry=$(registry)
fi
if [[ -z "$registry" ]]; then
  echo "regorus 0.14.1's source is not in cargo's registry cache, even after cargo fetch" >&2
  exit 1
fi
out=target/regorus-vm-patch
copy=$out/regorus-0.14.1
rm -rf "$copy"
mkdir -p "$out"
cp -r "$registry" "$copy"
chmod -R u+w "$copy"

sed -i 's/\.ok_or(/.ok_or_else(|| /g' "$copy"/src/rvm/vm/*.rs

python3 - "$copy/src/rvm/vm/rules.rs" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
# The first rule_info clone in rules.rs is the one in execute_call_rule_common, on every call.
edits = [
    ("""        let rule_info = self
            .program
            .rule_infos
""",
     """        let program = self.program.clone();
        let rule_info = program
            .rule_infos
"""),
    ("""            })?
            .clone();

        let is_function_rule""",
     """            })?;

        let is_function_rule"""),
    ("        let rule_definitions = rule_info.definitions.clone();\n",
     "        let rule_definitions = &rule_info.definitions;\n"),
    (".execute_rule_definitions_common(&rule_definitions, &rule_info, function_call_params)?;",
     ".execute_rule_definitions_common(rule_definitions, rule_info, function_call_params)?;"),
]
for old, new in edits:
    if src.count(old) < 1:
        sys.exit(f"{path}: the text to change was not found (not regorus 0.14.1?):\n{old[:200]}")
    src = src.replace(old, new, 1)
open(path, "w").write(src)
EOF

# The patch rewrites Cargo.lock's entry for regorus (a path, no checksum); the repository's
# lock file is put back afterwards.
cp Cargo.lock "$out/Cargo.lock.orig"
trap 'cp "$out/Cargo.lock.orig" Cargo.lock' EXIT
CARGO_TARGET_DIR=$out cargo build --release \
  --config "patch.crates-io.regorus.path=\"$PWD/$copy\""
echo "$out/release/regate"
