//! The policy flavors this program builds its sets with, wired into the engine from above:
//! `policy/` defines how a flavor plugs in (`policy::flavor`) and names none; Gatekeeper's
//! loaders are passed in here, for everyone who builds a set for the whole program (the
//! command line, the server, audit, tests).

use std::sync::Arc;

use crate::config::Config;
use crate::environment::NamespaceLabels;
use crate::policy::error::LoadErrors;
use crate::policy::loader::YamlLoader;
use crate::policy::set::PolicySet;
use crate::policy::source::PolicySource;

/// What the YAML among a policy directory's files may hold: Gatekeeper's templates,
/// constraints, mutators and expansion templates.
pub static YAML_LOADERS: &dyn YamlLoader = &crate::gatekeeper::YamlLoaders;

/// A set of every policy among `sources`, Rego and YAML alike, or every problem found.
pub fn build(
    sources: &[PolicySource],
    config: Arc<Config>,
    labels: NamespaceLabels,
) -> Result<PolicySet, LoadErrors> {
    PolicySet::build_with(sources, config, labels, YAML_LOADERS)
}
