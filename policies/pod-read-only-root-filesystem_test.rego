package regate.policies.pod_read_only_root_filesystem_test

import data.regate.lib.testing
import data.regate.policies.pod_read_only_root_filesystem as policy
import rego.v1

kinds := ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "PodTemplate"]

prefixes := {
	"Pod": ["spec", "/spec"],
	"Deployment": ["spec.template.spec", "/spec/template/spec"],
	"StatefulSet": ["spec.template.spec", "/spec/template/spec"],
	"DaemonSet": ["spec.template.spec", "/spec/template/spec"],
	"ReplicaSet": ["spec.template.spec", "/spec/template/spec"],
	"ReplicationController": ["spec.template.spec", "/spec/template/spec"],
	"Job": ["spec.template.spec", "/spec/template/spec"],
	"CronJob": ["spec.jobTemplate.spec.template.spec", "/spec/jobTemplate/spec/template/spec"],
	"PodTemplate": ["template.spec", "/template/spec"],
}

app := {"name": "app", "image": "registry.example.com/app:1.0"}

ro(c) := object.union(c, {"securityContext": {"readOnlyRootFilesystem": true}})

sc(c, s) := object.union(c, {"securityContext": s})

unset_msg(name) := sprintf("container %q must set securityContext.readOnlyRootFilesystem=true", [name])

false_msg(name) := sprintf("container %q must set securityContext.readOnlyRootFilesystem=true (it is false)", [name])

patch_op(pointer) := {"op": "add", "path": sprintf("%s/securityContext/readOnlyRootFilesystem", [pointer]), "value": true}

deny(review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as "production"
		with data.regate.parameters as {}
}

patch(review) := result if {
	result := policy.patch with input as review
		with data.regate.environment as "production"
		with data.regate.parameters as {}
}

test_read_only_containers_allowed if {
	r := testing.create(testing.pod({
		"containers": [ro(app)],
		"initContainers": [ro({"name": "init", "image": "busybox:1.36"})],
	}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_unset_denied_with_message_and_path if {
	r := testing.create(testing.pod({"containers": [app]}))
	deny(r) == {{"msg": unset_msg("app"), "path": "spec.containers[0].securityContext.readOnlyRootFilesystem"}}
}

test_false_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"readOnlyRootFilesystem": false})]}))
	deny(r) == {{"msg": false_msg("app"), "path": "spec.containers[0].securityContext.readOnlyRootFilesystem"}}
}

# A pod has no readOnlyRootFilesystem of its own: only the container's counts.
test_pod_security_context_does_not_count if {
	r := testing.create(testing.pod({"securityContext": {"readOnlyRootFilesystem": true}, "containers": [app]}))
	testing.msgs(deny(r)) == {unset_msg("app")}
}

test_init_and_ephemeral_containers_judged if {
	r := testing.create(testing.pod({
		"containers": [ro(app)],
		"initContainers": [{"name": "init", "image": "busybox:1.36"}],
		"ephemeralContainers": [sc({"name": "debug", "image": "busybox:1.36"}, {"readOnlyRootFilesystem": false})],
	}))
	deny(r) == {
		{"msg": unset_msg("init"), "path": "spec.initContainers[0].securityContext.readOnlyRootFilesystem"},
		{"msg": false_msg("debug"), "path": "spec.ephemeralContainers[0].securityContext.readOnlyRootFilesystem"},
	}
}

test_null_security_context_counts_as_unset if {
	r := testing.create(testing.pod({"containers": [sc(app, null)]}))
	testing.msgs(deny(r)) == {unset_msg("app")}
	patch(r) == {patch_op("/spec/containers/0")}
}

test_every_pod_bearing_kind_denied_at_its_path if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [app]}))
		deny(r) == {{"msg": unset_msg("app"), "path": sprintf("%s.containers[0].securityContext.readOnlyRootFilesystem", [prefixes[kind][0]])}}
	}
}

test_controllers_judged_on_update if {
	every kind in [k | some k in kinds; k != "Pod"] {
		r := testing.update(testing.workload(kind, {"containers": [app]}))
		testing.msgs(deny(r)) == {unset_msg("app")}
		patch(r) == {patch_op(sprintf("%s/containers/0", [prefixes[kind][1]]))}
	}
}

test_windows_pod_exempt if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"os": {"name": "windows"}, "containers": [app]}))
		count(deny(r)) == 0
		count(patch(r)) == 0
	}
}

test_bare_pod_update_not_judged_and_not_patched if {
	r := testing.update(testing.pod({"containers": [app]}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_ephemeral_containers_update_judges_ephemeral_containers_only if {
	spec := {
		"containers": [app],
		"ephemeralContainers": [ro({"name": "debugger", "image": "busybox:1.36"}), {"name": "debugger-2", "image": "busybox:1.36"}],
	}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	deny(r) == {{"msg": unset_msg("debugger-2"), "path": "spec.ephemeralContainers[1].securityContext.readOnlyRootFilesystem"}}
	count(patch(r)) == 0
}

test_ephemeral_containers_update_allowed_when_read_only if {
	spec := {"containers": [app], "ephemeralContainers": [ro({"name": "debugger", "image": "busybox:1.36"})]}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	count(deny(r)) == 0
}

test_other_subresources_not_judged if {
	r := testing.subresource_update(testing.pod({"containers": [app]}), "status")
	count(deny(r)) == 0
}

test_patch_sets_it_where_unset_only if {
	r := testing.create(testing.pod({
		"containers": [app, sc({"name": "b", "image": "b:1"}, {"readOnlyRootFilesystem": false}), ro({"name": "c", "image": "c:1"})],
		"initContainers": [sc({"name": "init", "image": "busybox:1.36"}, {"runAsNonRoot": true})],
	}))
	patch(r) == {patch_op("/spec/containers/0"), patch_op("/spec/initContainers/0")}
}

test_patch_for_every_kind if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [app]}))
		patch(r) == {patch_op(sprintf("%s/containers/0", [prefixes[kind][1]]))}
	}
}

test_patched_object_is_allowed_and_gets_no_further_patch if {
	every kind in kinds {
		obj := testing.workload(kind, {"containers": [sc(app, {})], "initContainers": [sc({"name": "init", "image": "busybox:1.36"}, {})]})
		ops := [op | some op in patch(testing.create(obj))]
		count(ops) == 2
		patched := json.patch(obj, ops)
		count(deny(testing.create(patched))) == 0
		count(patch(testing.create(patched))) == 0
	}
}

test_patched_false_stays_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"readOnlyRootFilesystem": false})]}))
	count(patch(r)) == 0
	testing.msgs(deny(r)) == {false_msg("app")}
}
