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

import data.regate.lib.regate
import data.regate.lib.workload
import rego.v1

# The only capability a container may add (names are matched exactly, as Pod Security
# Admission does: "net_bind_service" or "CAP_NET_BIND_SERVICE" are not it).
allowed_added_capabilities := {"NET_BIND_SERVICE"}

capabilities(entry) := regate.object_or_empty(object.get(entry.security_context, "capabilities", {}))

dropped(entry) := regate.array_or_empty(object.get(capabilities(entry), "drop", []))

added(entry) := regate.array_or_empty(object.get(capabilities(entry), "add", []))

# allowPrivilegeEscalation: unset counts as a violation (the runtime default is true).
deny contains {
	"msg": sprintf("container %q must set securityContext.allowPrivilegeEscalation=false", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.allowPrivilegeEscalation"),
} if {
	some entry in workload.judged_containers
	object.get(entry.security_context, "allowPrivilegeEscalation", null) == null
}

deny contains {
	"msg": sprintf(
		"container %q must set securityContext.allowPrivilegeEscalation=false (it is %v)",
		[entry.name, value],
	),
	"path": workload.container_field_path(entry, "securityContext.allowPrivilegeEscalation"),
} if {
	some entry in workload.judged_containers
	value := object.get(entry.security_context, "allowPrivilegeEscalation", null)
	value != null
	value != false
}

deny contains {
	"msg": sprintf("container %q must not set securityContext.privileged=true", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.privileged"),
} if {
	some entry in workload.judged_containers
	object.get(entry.security_context, "privileged", false) == true
}

deny contains {
	"msg": sprintf("container %q must drop ALL capabilities: securityContext.capabilities.drop must include \"ALL\"", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.capabilities.drop"),
} if {
	some entry in workload.judged_containers
	not "ALL" in dropped(entry)
}

deny contains {
	"msg": sprintf(
		"container %q must not add capability %v: securityContext.capabilities.add may only contain \"NET_BIND_SERVICE\"",
		[entry.name, quoted(cap)],
	),
	"path": workload.container_field_path(entry, "securityContext.capabilities.add"),
} if {
	some entry in workload.judged_containers
	some cap in added(entry)
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
	some cap in added(entry)
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
	object.get(capabilities(entry), "drop", null) == null
}

patch contains {
	"op": "add",
	"path": workload.container_field_pointer(entry, "securityContext/capabilities/drop/-"),
	"value": "ALL",
} if {
	some entry in workload.patch_containers
	drop := object.get(capabilities(entry), "drop", null)
	is_array(drop)
	not "ALL" in drop
}
