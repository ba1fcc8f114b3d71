# METADATA
# title: Containers cannot escalate privileges
# description: >-
#   Every container must set securityContext.allowPrivilegeEscalation=false, must not be
#   privileged, must drop ALL capabilities and may add no capability but NET_BIND_SERVICE.
#   Patch: allowPrivilegeEscalation=false where unset, and ALL added to capabilities.drop
#   where missing.
# custom:
#   id: pod-no-privilege-escalation
#   severity: high
#   category: Pod Security
#   kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate]
#   action: deny
#   operations: [CREATE, UPDATE]
#   subresources: [pods/ephemeralcontainers]
package regate.policies.pod_no_privilege_escalation

import data.regate.lib.workload
import rego.v1

# The only capability a container may add (names are matched exactly, as Pod Security
# Admission does: "net_bind_service" or "CAP_NET_BIND_SERVICE" are not it).
allowed_added_capabilities := {"NET_BIND_SERVICE"}

# securityContext.capabilities.drop and .add are read with one path lookup each, not through
# helper functions: a function call per container and rule costs far more than the lookup.
# object.get answers its default when capabilities is no object (null, a list, a string), as
# it would for {}; a drop or add list that is no array counts as empty.

# The judged containers the deny rules below walk: none when every one surely complies, else
# all of them. One pass over the containers decides it, with a stricter test than the rules'
# (any list of added capabilities counts against a container here, and a field that is
# missing where the test reads it fails it), so every container it passes is one no rule would
# deny. The VM pays for every loop iteration, and five rules that each walk every container
# cost several times this one pass.
checked := [] if {
	every entry in workload.judged_containers {
		sc := entry.security_context
		sc.allowPrivilegeEscalation == false
		not sc.privileged == true
		drop := sc.capabilities.drop
		is_array(drop)
		"ALL" in drop
		not sc.capabilities.add
	}
} else := workload.judged_containers

# allowPrivilegeEscalation: unset counts as a violation (the runtime default is true).
deny contains {
	"msg": sprintf("container %q must set securityContext.allowPrivilegeEscalation=false", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.allowPrivilegeEscalation"),
} if {
	some entry in checked
	object.get(entry.security_context, "allowPrivilegeEscalation", null) == null
}

deny contains {
	"msg": sprintf(
		"container %q must set securityContext.allowPrivilegeEscalation=false (it is %v)",
		[entry.name, value],
	),
	"path": workload.container_field_path(entry, "securityContext.allowPrivilegeEscalation"),
} if {
	some entry in checked
	value := object.get(entry.security_context, "allowPrivilegeEscalation", null)
	value != null
	value != false
}

deny contains {
	"msg": sprintf("container %q must not set securityContext.privileged=true", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.privileged"),
} if {
	some entry in checked
	object.get(entry.security_context, "privileged", false) == true
}

deny contains {
	"msg": sprintf("container %q must drop ALL capabilities: securityContext.capabilities.drop must include \"ALL\"", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.capabilities.drop"),
} if {
	some entry in checked
	not drops_all(entry)
}

drops_all(entry) if {
	drop := object.get(entry.security_context, ["capabilities", "drop"], [])
	is_array(drop)
	"ALL" in drop
}

deny contains {
	"msg": sprintf(
		"container %q must not add capability %v: securityContext.capabilities.add may only contain \"NET_BIND_SERVICE\"",
		[entry.name, quoted(cap)],
	),
	"path": workload.container_field_path(entry, "securityContext.capabilities.add"),
} if {
	some entry in checked
	add := object.get(entry.security_context, ["capabilities", "add"], [])
	is_array(add)
	some cap in add
	not cap in allowed_added_capabilities
}

quoted(s) := sprintf("%q", [s]) if is_string(s)

else := sprintf("%v", [s])

# Patch: allowPrivilegeEscalation=false where unset. Not on a container that is privileged
# or adds CAP_SYS_ADMIN: the API server rejects allowPrivilegeEscalation=false with either,
# so the patch would turn a denial (or, under a warn/audit action, an admitted object) into
# an API validation error; such a container is denied for its privilege instead.
patch contains {
	"op": "add",
	"path": workload.container_field_pointer(entry, "securityContext/allowPrivilegeEscalation"),
	"value": false,
} if {
	some entry in workload.patch_containers
	object.get(entry.security_context, "allowPrivilegeEscalation", null) == null
	not object.get(entry.security_context, "privileged", false) == true
	not adds_sys_admin(entry)
}

adds_sys_admin(entry) if {
	add := object.get(entry.security_context, ["capabilities", "add"], [])
	is_array(add)
	some cap in add
	cap in {"CAP_SYS_ADMIN", "SYS_ADMIN"}
}

# Patch: ALL into capabilities.drop where missing: a new list when there is none, else
# appended to the existing list.
patch contains {
	"op": "add",
	"path": workload.container_field_pointer(entry, "securityContext/capabilities/drop"),
	"value": ["ALL"],
} if {
	some entry in workload.patch_containers
	object.get(entry.security_context, ["capabilities", "drop"], null) == null
}

patch contains {
	"op": "add",
	"path": workload.container_field_pointer(entry, "securityContext/capabilities/drop/-"),
	"value": "ALL",
} if {
	some entry in workload.patch_containers
	drop := object.get(entry.security_context, ["capabilities", "drop"], null)
	is_array(drop)
	not "ALL" in drop
}
