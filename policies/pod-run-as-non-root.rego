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

# A container's own securityContext value wins; the pod's applies where the container leaves
# the field unset (null counts as unset). The pod's values are read once; each rule tests them
# before it walks the containers, so a pod that sets runAsNonRoot=true skips the rules about
# inherited values outright, and a container costs one lookup per rule, not a function call.
pod_run_as_non_root := object.get(workload.pod_security_context, "runAsNonRoot", null)

pod_run_as_user := object.get(workload.pod_security_context, "runAsUser", null)

# runAsNonRoot: set by nobody.
deny contains {
	"msg": sprintf("container %q must set securityContext.runAsNonRoot=true", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.runAsNonRoot"),
} if {
	pod_run_as_non_root == null
	some entry in workload.judged_containers
	object.get(entry.security_context, "runAsNonRoot", null) == null
}

# runAsNonRoot: the container's own value is not true.
deny contains {
	"msg": sprintf(
		"container %q must set securityContext.runAsNonRoot=true (it is %v)",
		[entry.name, value],
	),
	"path": workload.container_field_path(entry, "securityContext.runAsNonRoot"),
} if {
	some entry in workload.judged_containers
	value := object.get(entry.security_context, "runAsNonRoot", null)
	value != null
	value != true
}

# runAsNonRoot: inherited from the pod and not true.
deny contains {
	"msg": sprintf(
		"container %q must set securityContext.runAsNonRoot=true (the pod's securityContext.runAsNonRoot is %v)",
		[entry.name, pod_run_as_non_root],
	),
	"path": workload.pod_field_path("securityContext.runAsNonRoot"),
} if {
	pod_run_as_non_root != null
	pod_run_as_non_root != true
	some entry in workload.judged_containers
	object.get(entry.security_context, "runAsNonRoot", null) == null
}

# runAsUser 0, set on the container.
deny contains {
	"msg": sprintf("container %q must not run as root: securityContext.runAsUser is 0", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.runAsUser"),
} if {
	some entry in workload.judged_containers
	object.get(entry.security_context, "runAsUser", null) == 0
}

# runAsUser 0, inherited from the pod.
deny contains {
	"msg": sprintf(
		"container %q must not run as root: the pod's securityContext.runAsUser is 0",
		[entry.name],
	),
	"path": workload.pod_field_path("securityContext.runAsUser"),
} if {
	pod_run_as_user == 0
	some entry in workload.judged_containers
	object.get(entry.security_context, "runAsUser", null) == null
}

# Patch: the pod does not set runAsNonRoot and at least one container leaves it unset.
# A container's explicit false, or a runAsUser 0, is never overwritten: it is denied.
patch contains {
	"op": "add",
	"path": workload.pod_field_pointer("securityContext/runAsNonRoot"),
	"value": true,
} if {
	workload.patchable
	pod_run_as_non_root == null
	some entry in workload.patch_containers
	object.get(entry.security_context, "runAsNonRoot", null) == null
}
