# METADATA
# title: Workload best practices
# description: >-
#   Advisory checks on every container of the `containers` list: CPU and memory requests and
#   limits set; liveness and readiness probes set (Deployments, StatefulSets and DaemonSets);
#   the image pinned by a digest or by a tag other than latest.
# custom:
#   id: workload-best-practices
#   severity: low
#   category: Best Practices
#   kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate]
#   action: warn
#   operations: [CREATE, UPDATE]
package regate.policies.workload_best_practices

import data.regate.lib.regate
import data.regate.lib.workload
import rego.v1

# Not the init or ephemeral containers: they run to completion or for a debugging session.
# An array, as workload.containers: building a set would compare whole containers.
app_containers := [entry |
	workload.is_workload
	regate.subresource == ""
	some entry in workload.containers
	entry.list == "containers"
]

resource_fields := [["requests", "cpu"], ["requests", "memory"], ["limits", "cpu"], ["limits", "memory"]]

# Long-running controllers: a Job's or a bare Pod's container may have no probes.
probed_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

deny contains {
	"msg": sprintf("container %q should set resources.%s.%s", [entry.name, group, resource]),
	"path": workload.container_field_path(entry, sprintf("resources.%s.%s", [group, resource])),
} if {
	some entry in app_containers
	some field in resource_fields
	[group, resource] := field
	object.get(entry.container, ["resources", group, resource], null) == null
}

deny contains {
	"msg": sprintf("container %q should set %s", [entry.name, probe]),
	"path": workload.container_field_path(entry, probe),
} if {
	regate.kind in probed_kinds
	some entry in app_containers
	some probe in ["livenessProbe", "readinessProbe"]
	object.get(entry.container, probe, null) == null
}

deny contains {
	"msg": sprintf(
		"container %q should pin its image %q by a digest (@sha256:...) or a tag other than latest",
		[entry.name, image],
	),
	"path": workload.container_field_path(entry, "image"),
} if {
	some entry in app_containers
	image := object.get(entry.container, "image", null)
	is_string(image)
	not pinned(image)
}

# A digest, with or without a tag: "app@sha256:...", "app:1.2@sha256:...".
pinned(image) if contains(image, "@sha256:")

# A tag other than latest. The tag is what follows the last ":" after the last "/", so
# "registry:5000/app" has none.
pinned(image) if {
	not contains(image, "@")
	tag := image_tag(image)
	tag != ""
	tag != "latest"
}

# The text after the last ":" of the last path segment (a registry's port is no tag).
image_tag(image) := tag if {
	name := array.reverse(split(image, "/"))[0]
	contains(name, ":")
	tag := array.reverse(split(name, ":"))[0]
	tag != ""
} else := ""
