# Pod-bearing workloads: where the pod spec lives, its containers, and the special cases of
# issue 10 (Windows pods, bare Pod UPDATEs, the pods/ephemeralcontainers subresource),
# encoded once for every policy that judges pods.
#
# API (all rules of package regate.lib.workload):
#   pod_spec_kinds       object: kind -> path segments of its pod spec, e.g.
#                        {"Deployment": ["spec", "template", "spec"], ...}
#   is_workload          true when the request's kind is pod-bearing and its pod spec is an object
#   segments             the pod spec's path segments, e.g. ["spec", "template", "spec"]
#   pod_spec             the pod spec object
#   pointer              JSON pointer of the pod spec, for patches: "/spec/template/spec"
#   path                 dotted path of the pod spec, for messages: "spec.template.spec"
#   pod_security_context the pod's securityContext ({} when unset)
#   is_windows           spec.os.name is "windows"
#   is_pod_update        a bare Pod UPDATE on the main resource (no subresource)
#   is_ephemeral_update  an UPDATE of the pods/ephemeralcontainers subresource
#   containers           array of every container (containers, initContainers, ephemeralContainers):
#                        {"list": "initContainers", "index": 0, "name": "init",
#                         "container": {...}, "security_context": {...}}
#   pod_security_judged  the pod-* policies judge this request
#   judged_containers    the containers the pod-* policies judge (an array): every container, or
#                        only the ephemeral ones for a pods/ephemeralcontainers UPDATE; empty
#                        when pod_security_judged is false
#   patchable            the pod-* policies may patch this request
#   patch_containers     the containers the pod-* policies may patch (an array, empty unless
#                        patchable)
#   container_field_path(entry, field)    "spec.containers[0].securityContext.runAsNonRoot"
#   container_field_pointer(entry, field) "/spec/containers/0/securityContext/runAsNonRoot"
#                        (field is dotted for the path, slash-separated for the pointer)
#   pod_field_path(field)    "spec.template.spec.securityContext.runAsNonRoot"
#   pod_field_pointer(field) "/spec/template/spec/securityContext/runAsNonRoot"
package regate.lib.workload

import data.regate.lib.regate
import rego.v1

pod_spec_kinds := {
	"Pod": ["spec"],
	"Deployment": ["spec", "template", "spec"],
	"StatefulSet": ["spec", "template", "spec"],
	"DaemonSet": ["spec", "template", "spec"],
	"ReplicaSet": ["spec", "template", "spec"],
	"ReplicationController": ["spec", "template", "spec"],
	"Job": ["spec", "template", "spec"],
	"CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
	"PodTemplate": ["template", "spec"],
}

container_lists := ["containers", "initContainers", "ephemeralContainers"]

segments := pod_spec_kinds[regate.kind]

pod_spec := spec if {
	spec := object.get(regate.obj, segments, null)
	is_object(spec)
}

default is_workload := false

is_workload if is_object(pod_spec)

pointer := concat("", ["/", concat("/", segments)])

path := concat(".", segments)

pod_security_context := regate.object_or_empty(object.get(pod_spec, "securityContext", {}))

default is_windows := false

is_windows if object.get(pod_spec, ["os", "name"], "") == "windows"

default is_ephemeral_subresource := false

is_ephemeral_subresource if regate.subresource in {"ephemeralcontainers", "pods/ephemeralcontainers"}

default is_pod_update := false

is_pod_update if {
	regate.kind == "Pod"
	regate.operation == "UPDATE"
	regate.subresource == ""
}

default is_ephemeral_update := false

is_ephemeral_update if {
	regate.kind == "Pod"
	regate.operation == "UPDATE"
	is_ephemeral_subresource
}

# Arrays, not sets: iterating a set compares whole entries, and nothing here can repeat. The
# paths and pointers of messages and patches are built only when one is needed.
# A list that is no array has no containers, as array_or_empty would make it; a securityContext
# that is no object reads as {}, as object_or_empty would make it. Both are written out here
# (the second as a lookup in {true: ..., false: ...}), not called: this runs for every list and
# container of every request, and each function call costs the VM more than the test in it.
containers := [entry |
	some list in container_lists
	specs := object.get(pod_spec, list, [])
	is_array(specs)
	some i, c in specs
	is_object(c)
	sc := object.get(c, "securityContext", {})
	entry := {
		"list": list,
		"index": i,
		"name": container_name(c, list, i),
		"container": c,
		"security_context": {true: sc, false: {}}[is_object(sc)],
	}
	# Always true (every field above always has a value); stated so that the bytecode path can
	# see that no row of the comprehension is undefined (see regate's policy::undefined_bindings).
	is_object(entry)
]

# A container's name, or e.g. "containers[1]" when it has none (a template being written).
container_name(c, list, i) := name if {
	name := c.name
	is_string(name)
} else := sprintf("%s[%d]", [list, i])

# A request on the main resource: CREATE of any workload, UPDATE of a controller or PodTemplate.
# A bare Pod UPDATE is not judged (its security fields are immutable and were judged at
# creation), nor is any subresource request other than pods/ephemeralcontainers.
default main_resource_judged := false

main_resource_judged if {
	regate.subresource == ""
	not is_pod_update
}

default pod_security_judged := false

pod_security_judged if {
	is_workload
	not is_windows
	main_resource_judged
}

pod_security_judged if {
	is_workload
	not is_windows
	is_ephemeral_update
}

# The first body is the common case, pod_security_judged on the main resource, spelled out so
# that it looks up the fewest rules (each lookup costs the VM a rule call, cached or not). It
# leaves out is_workload: for an object that is no workload, containers is [] anyway.
judged_containers := containers if {
	regate.subresource == ""
	not is_pod_update
	not is_windows
} else := [entry | some entry in containers; entry.list == "ephemeralContainers"] if {
	pod_security_judged
	is_ephemeral_update
} else := []

default patchable := false

patchable if {
	is_workload
	not is_windows
	main_resource_judged
}

patch_containers := containers if patchable else := []

container_field_path(entry, field) := sprintf("%s.%s[%d].%s", [path, entry.list, entry.index, field])

container_field_pointer(entry, field) := sprintf("%s/%s/%d/%s", [pointer, entry.list, entry.index, field])

pod_field_path(field) := concat(".", [path, field])

pod_field_pointer(field) := concat("/", [pointer, field])
