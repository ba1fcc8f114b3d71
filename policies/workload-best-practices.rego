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
# An array, as workload.containers: building a set would compare whole containers. (No
# workload.is_workload test: workload.containers is [] for an object that is no workload.)
app_containers := [entry |
	regate.subresource == ""
	some entry in workload.containers
	entry.list == "containers"
]

# Whole paths, looked up as they are: destructuring a [group, resource] pair per container
# and field costs more than the lookup.
resource_paths := [
	["resources", "requests", "cpu"],
	["resources", "requests", "memory"],
	["resources", "limits", "cpu"],
	["resources", "limits", "memory"],
]

# Long-running controllers: a Job's or a bare Pod's container may have no probes.
probed_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

# What an unset probe reads as below: null, a miss, where probes are required; else not.
unset_probe := null if regate.kind in probed_kinds

else := "not required"

# The app containers the deny rules below walk: none when every one surely follows every
# practice, else all of them. One pass decides it, with a stricter test than the rules' (an
# image pinned by a digest counts against a container here), so every container it passes is
# one no rule would warn about. The VM pays for every loop iteration, and the rules would
# walk every container (the resource rule four times, the probe rule twice).
checked := [] if {
	every entry in app_containers {
		c := entry.container
		c.resources.requests.cpu != null
		c.resources.requests.memory != null
		c.resources.limits.cpu != null
		c.resources.limits.memory != null
		object.get(c, "livenessProbe", unset_probe) != null
		object.get(c, "readinessProbe", unset_probe) != null
		image := c.image
		is_string(image)
		pinned_by_tag(image)
	}
} else := app_containers

deny contains {
	"msg": sprintf("container %q should set %s", [entry.name, concat(".", resource_path)]),
	"path": workload.container_field_path(entry, concat(".", resource_path)),
} if {
	some entry in checked
	some resource_path in resource_paths
	object.get(entry.container, resource_path, null) == null
}

deny contains {
	"msg": sprintf("container %q should set %s", [entry.name, probe]),
	"path": workload.container_field_path(entry, probe),
} if {
	regate.kind in probed_kinds
	some entry in checked
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
	some entry in checked
	image := object.get(entry.container, "image", null)
	is_string(image)
	# Pinned by a digest, with or without a tag: "app@sha256:...", "app:1.2@sha256:...".
	not contains(image, "@sha256:")
	not pinned_by_tag(image)
}

# A tag other than latest, and no other "@". The tag is what follows the last ":" when no
# "/" follows it, so "registry:5000/app" has none; an image without ":" is its own last part.
# (One split, no nested helper function and no array.reverse: the pass in `checked` runs it
# for every container.)
pinned_by_tag(image) if {
	not contains(image, "@")
	parts := split(image, ":")
	tag := parts[count(parts) - 1]
	tag != image
	not contains(tag, "/")
	tag != ""
	tag != "latest"
}
