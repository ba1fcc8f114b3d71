//! What the rest of regate asks of a set's evaluation: [`PolicySet::evaluate`] answers for one
//! policy on one input, on the backend chosen for it when the set was built (the bytecode
//! backend, `policy::bytecode`, or the interpreter, `policy::eval`), and says which backend
//! that is and why.

use regorus::Value;

use crate::config::Environment;
use crate::policy::allowance;
use crate::policy::bytecode::{self, Accel, Backend, Strategy};
use crate::policy::eval::{EvalFailure, FailureReason, PolicyOutput, Wants};
use crate::policy::panics;
use crate::policy::set::PolicySet;

impl PolicySet {
    /// Evaluates `self.policies[index]`: exactly what the interpreter (`eval::evaluate`)
    /// answers, faster where the policy runs on bytecode. `selected` (ascending) are the
    /// policies the caller evaluates for this request: a pass over several policies at once
    /// runs only when every policy in it is selected, so a policy the caller skipped (waived,
    /// or not matching) never costs this request time.
    #[inline]
    pub fn evaluate(
        &self,
        index: usize,
        selected: &[usize],
        env: Environment,
        input: &Value,
        wants: Wants,
        redact: bool,
    ) -> PolicyOutput {
        let started = std::time::Instant::now();
        if allowance::spent() {
            // Stopped before it starts: the judgement is made again with its full time.
            allowance::overran();
            return PolicyOutput {
                failure: Some(EvalFailure {
                    reason: FailureReason::TimeLimit,
                    detail: String::new(),
                }),
                ..PolicyOutput::default()
            };
        }
        let evaluated = panics::caught(|| {
            self.accel
                .evaluate(&self.policies, index, selected, env, input, wants, redact)
        });
        match evaluated {
            Ok(output) => output,
            Err(panicked) => {
                // Whatever this thread cached may have stopped halfway: start afresh.
                bytecode::forget_thread_engines();
                let policy = self.policies.get(index).map_or("", |p| p.meta.id.as_str());
                tracing::error!(
                    policy,
                    at = panicked.location.as_deref().unwrap_or(""),
                    "the evaluator panicked; the policy fails for this request"
                );
                PolicyOutput {
                    failure: Some(EvalFailure {
                        reason: FailureReason::RuntimeError,
                        // The message may quote the input, as an engine error may.
                        detail: if redact {
                            String::new()
                        } else {
                            panicked.to_string()
                        },
                    }),
                    duration: started.elapsed(),
                    ..PolicyOutput::default()
                }
            }
        }
    }

    /// Ids of the policies that run as compiled bytecode in this set.
    pub fn compiled_policies(&self) -> Vec<&str> {
        self.accel.compiled()
    }

    /// Which evaluator answers for `self.policies[index]`, and for the interpreter, why.
    pub fn backend(&self, index: usize) -> Backend {
        self.accel.backend(index)
    }

    /// The evaluation strategy this set was built with.
    pub fn strategy(&self) -> Strategy {
        self.accel.strategy()
    }

    /// This set, evaluated with `strategy` (benchmarks and tests compare them).
    pub fn with_strategy(mut self, strategy: Strategy) -> PolicySet {
        self.accel = Accel::build_with(&mut self.policies, self.evaluation_timeout, strategy);
        self
    }
}
