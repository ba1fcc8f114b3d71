//! One judged object of `regate eval` (`audit -f` and `diff` judge through it too), and what the
//! results mean for the exit code: shared by the command and by its output formats.

use serde::Serialize;

use crate::admission::decision::Decision;
use crate::config::Action;

/// One judged object, as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct EvalResult {
    pub source: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    #[serde(flatten)]
    pub decision: Decision,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// 1 when a result fails under `fail_on`, else 0.
pub fn exit_code(results: &[EvalResult], fail_on: crate::audit::FailOn) -> i32 {
    use crate::audit::FailOn;
    let failing = |r: &EvalResult| match fail_on {
        FailOn::Never => false,
        // eval refuses the baseline modes before judging (it takes no --baseline).
        FailOn::Deny | FailOn::New => !r.decision.allowed || !r.decision.failures.is_empty(),
        FailOn::Warn | FailOn::NewWarn => {
            !r.decision.allowed || !r.decision.failures.is_empty() || warned(r)
        }
    };
    i32::from(results.iter().any(failing))
}

/// Whether an allowed object drew warnings (warn rules, or the warn action).
pub fn warned(r: &EvalResult) -> bool {
    !r.warnings.is_empty()
        || r.decision
            .violations
            .iter()
            .any(|v| v.action == Action::Warn)
}
