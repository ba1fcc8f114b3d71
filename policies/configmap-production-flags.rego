# METADATA
# title: No debug or profiling flags in production
# description: >-
#   In production no ConfigMap may set DEBUG_MODE, DEBUG or ENABLE_PROFILING to true, 1 or
#   yes, or LOG_LEVEL to debug or trace (key names exact; values in any case, trimmed).
#   The rule only fires in the production environment, so development and staging may set
#   these freely; its action (deny) applies there.
# custom:
#   id: configmap-production-flags
#   severity: medium
#   category: Configuration
#   kinds: [ConfigMap]
#   action: deny
#   operations: [CREATE, UPDATE]
package regate.policies.configmap_production_flags

import data.regate.lib.regate
import rego.v1

# key -> the values (trimmed, lower-cased) it must not hold in production.
forbidden := {
	"DEBUG_MODE": {"true", "1", "yes"},
	"DEBUG": {"true", "1", "yes"},
	"ENABLE_PROFILING": {"true", "1", "yes"},
	"LOG_LEVEL": {"debug", "trace"},
}

deny contains {
	"msg": sprintf("key %q is %q; production must not enable debug or profiling settings", [key, value]),
	"path": sprintf("data[%s]", [key]),
} if {
	regate.environment == "production"
	regate.kind == "ConfigMap"
	some key, raw in regate.object_or_empty(object.get(regate.obj, "data", {}))
	values := forbidden[key]
	value := trim_space(regate.str(raw))
	lower(value) in values
}
