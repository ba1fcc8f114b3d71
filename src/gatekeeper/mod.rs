//! Gatekeeper compatibility: ConstraintTemplates, Constraints and `verify` suites.
