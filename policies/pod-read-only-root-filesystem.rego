# METADATA
# title: Containers have a read-only root filesystem
# description: >-
#   Every container must set securityContext.readOnlyRootFilesystem=true. Patch: set it where
#   it is unset (never where it is false).
# custom:
#   id: pod-read-only-root-filesystem
#   severity: medium
#   category: Pod Security
#   kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate]
#   action: deny
#   operations: [CREATE, UPDATE]
#   subresources: [pods/ephemeralcontainers]
package regate.policies.pod_read_only_root_filesystem

import data.regate.lib.workload
import rego.v1

# The judged containers the deny rules below walk: none when every one sets
# readOnlyRootFilesystem=true, else all of them. One pass decides it; the VM pays for every
# loop iteration, and the two rules would each walk every container.
checked := [] if {
	every entry in workload.judged_containers {
		entry.security_context.readOnlyRootFilesystem == true
	}
} else := workload.judged_containers

deny contains {
	"msg": sprintf("container %q must set securityContext.readOnlyRootFilesystem=true", [entry.name]),
	"path": workload.container_field_path(entry, "securityContext.readOnlyRootFilesystem"),
} if {
	some entry in checked
	object.get(entry.security_context, "readOnlyRootFilesystem", null) == null
}

deny contains {
	"msg": sprintf(
		"container %q must set securityContext.readOnlyRootFilesystem=true (it is %v)",
		[entry.name, value],
	),
	"path": workload.container_field_path(entry, "securityContext.readOnlyRootFilesystem"),
} if {
	some entry in checked
	value := object.get(entry.security_context, "readOnlyRootFilesystem", null)
	value != null
	value != true
}

# Patch: set it where unset; an explicit false is never overwritten (it is denied).
patch contains {
	"op": "add",
	"path": workload.container_field_pointer(entry, "securityContext/readOnlyRootFilesystem"),
	"value": true,
} if {
	some entry in workload.patch_containers
	object.get(entry.security_context, "readOnlyRootFilesystem", null) == null
}
