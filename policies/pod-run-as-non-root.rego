# METADATA
# title: Containers run as non-root
# description: >-
#   Every container must run as non-root: its effective securityContext.runAsNonRoot (the
#   container's value, else the pod's) must be true and its effective runAsUser must not be 0.
#   Patch: runAsNonRoot=true on the pod's securityContext when neither the pod nor some
#   container sets it.
# custom:
#   id: pod-run-as-non-root
#   severity: high
#   category: Pod Security
#   kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate]
#   action: deny
#   operations: [CREATE, UPDATE]
#   subresources: [pods/ephemeralcontainers]
package regate.policies.pod_run_as_non_root

import data.regate.lib.workload
import rego.v1

# effective(entry, field): the container's securityContext value when set, else the pod's;
# {"value": v, "from": "container" | "pod"}, or {"value": null, "from": "none"}.
effective(entry, field) := {"value": v, "from": "container"} if {
	v := object.get(entry.security_context, field, null)
	v != null
} else := {"value": v, "from": "pod"} if {
	v := object.get(workload.pod_security_context, field, null)
	v != null
} else := {"value": null, "from": "none"}

# Each judged container with its effective runAsNonRoot and runAsUser, worked out once.
judged := [{"entry": entry, "non_root": effective(entry, "runAsNonRoot"), "user": effective(entry, "runAsUser")} |
	some entry in workload.judged_containers
]

# runAsNonRoot: set by nobody.
deny contains {
	"msg": sprintf("container %q must set securityContext.runAsNonRoot=true", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.runAsNonRoot"),
} if {
	some c in judged
	entry := c.entry
	c.non_root.from == "none"
}

# runAsNonRoot: the container's own value is not true.
deny contains {
	"msg": sprintf(
		"container %q must set securityContext.runAsNonRoot=true (it is %v)",
		[entry.name, eff.value],
	),
	"path": workload.container_field_path(entry, "securityContext.runAsNonRoot"),
} if {
	some c in judged
	entry := c.entry
	eff := c.non_root
	eff.from == "container"
	eff.value != true
}

# runAsNonRoot: inherited from the pod and not true.
deny contains {
	"msg": sprintf(
		"container %q must set securityContext.runAsNonRoot=true (the pod's securityContext.runAsNonRoot is %v)",
		[entry.name, eff.value],
	),
	"path": workload.pod_field_path("securityContext.runAsNonRoot"),
} if {
	some c in judged
	entry := c.entry
	eff := c.non_root
	eff.from == "pod"
	eff.value != true
}

# runAsUser 0, set on the container.
deny contains {
	"msg": sprintf("container %q must not run as root: securityContext.runAsUser is 0", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.runAsUser"),
} if {
	some c in judged
	entry := c.entry
	eff := c.user
	eff.from == "container"
	eff.value == 0
}

# runAsUser 0, inherited from the pod.
deny contains {
	"msg": sprintf(
		"container %q must not run as root: the pod's securityContext.runAsUser is 0",
		[entry.name],
	),
	"path": workload.pod_field_path("securityContext.runAsUser"),
} if {
	some c in judged
	entry := c.entry
	eff := c.user
	eff.from == "pod"
	eff.value == 0
}

# Patch: the pod does not set runAsNonRoot and at least one container leaves it unset.
# A container's explicit false, or a runAsUser 0, is never overwritten: it is denied.
patch contains {
	"op": "add",
	"path": workload.pod_field_pointer("securityContext/runAsNonRoot"),
	"value": true,
} if {
	workload.patchable
	object.get(workload.pod_security_context, "runAsNonRoot", null) == null
	some entry in workload.patch_containers
	object.get(entry.security_context, "runAsNonRoot", null) == null
}
