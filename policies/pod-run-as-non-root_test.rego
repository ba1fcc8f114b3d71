package regate.policies.pod_run_as_non_root_test

import data.regate.lib.testing
import data.regate.policies.pod_run_as_non_root as policy
import rego.v1

kinds := ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "PodTemplate"]

# The pod spec's dotted path and JSON pointer, per kind.
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

sc(c, s) := object.union(c, {"securityContext": s})

unset_msg(name) := sprintf("container %q must set securityContext.runAsNonRoot=true", [name])

patch_op(pointer) := {"op": "add", "path": sprintf("%s/securityContext/runAsNonRoot", [pointer]), "value": true}

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

# --- allowed --------------------------------------------------------------------------------

test_pod_level_run_as_non_root_allowed if {
	r := testing.create(testing.pod({"securityContext": {"runAsNonRoot": true}, "containers": [app]}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_container_level_run_as_non_root_allowed if {
	r := testing.create(testing.pod({
		"containers": [sc(app, {"runAsNonRoot": true})],
		"initContainers": [sc({"name": "init", "image": "busybox:1.36"}, {"runAsNonRoot": true})],
	}))
	count(deny(r)) == 0
}

test_non_zero_run_as_user_allowed if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
		"containers": [sc(app, {"runAsUser": 1001})],
	}))
	count(deny(r)) == 0
}

# The container's value wins over the pod's.
test_container_true_overrides_pod_false_allowed if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": false},
		"containers": [sc(app, {"runAsNonRoot": true})],
	}))
	count(deny(r)) == 0
}

test_container_user_overrides_pod_root_allowed if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": true, "runAsUser": 0},
		"containers": [sc(app, {"runAsUser": 1000})],
	}))
	count(deny(r)) == 0
}

# --- denied ---------------------------------------------------------------------------------

test_unset_denied_with_message_and_path if {
	r := testing.create(testing.pod({"containers": [app]}))
	deny(r) == {{
		"msg": "container \"app\" must set securityContext.runAsNonRoot=true",
		"path": "spec.containers[0].securityContext.runAsNonRoot",
	}}
}

test_empty_and_null_security_contexts_count_as_unset if {
	r := testing.create(testing.pod({
		"securityContext": null,
		"containers": [sc(app, null), sc({"name": "b", "image": "b:1"}, {}), sc({"name": "c", "image": "c:1"}, {"runAsNonRoot": null})],
	}))
	testing.msgs(deny(r)) == {unset_msg("app"), unset_msg("b"), unset_msg("c")}
}

test_container_false_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"runAsNonRoot": false})]}))
	testing.msgs(deny(r)) == {"container \"app\" must set securityContext.runAsNonRoot=true (it is false)"}
}

test_container_false_overrides_pod_true_denied if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": true},
		"containers": [sc(app, {"runAsNonRoot": false})],
	}))
	deny(r) == {{
		"msg": "container \"app\" must set securityContext.runAsNonRoot=true (it is false)",
		"path": "spec.containers[0].securityContext.runAsNonRoot",
	}}
}

test_pod_false_inherited_denied if {
	r := testing.create(testing.pod({"securityContext": {"runAsNonRoot": false}, "containers": [app]}))
	deny(r) == {{
		"msg": "container \"app\" must set securityContext.runAsNonRoot=true (the pod's securityContext.runAsNonRoot is false)",
		"path": "spec.securityContext.runAsNonRoot",
	}}
}

test_container_run_as_user_zero_denied if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": true},
		"containers": [sc(app, {"runAsUser": 0})],
	}))
	deny(r) == {{
		"msg": "container \"app\" must not run as root: securityContext.runAsUser is 0",
		"path": "spec.containers[0].securityContext.runAsUser",
	}}
}

test_pod_run_as_user_zero_denied if {
	r := testing.create(testing.pod({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}, "containers": [app]}))
	deny(r) == {{
		"msg": "container \"app\" must not run as root: the pod's securityContext.runAsUser is 0",
		"path": "spec.securityContext.runAsUser",
	}}
}

test_container_run_as_user_zero_overrides_pod_user_denied if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
		"containers": [sc(app, {"runAsUser": 0})],
	}))
	testing.msgs(deny(r)) == {"container \"app\" must not run as root: securityContext.runAsUser is 0"}
}

test_init_and_ephemeral_containers_judged if {
	r := testing.create(testing.pod({
		"securityContext": {"runAsUser": 1000},
		"containers": [sc(app, {"runAsNonRoot": true})],
		"initContainers": [{"name": "init", "image": "busybox:1.36"}],
		"ephemeralContainers": [{"name": "debug", "image": "busybox:1.36"}],
	}))
	deny(r) == {
		{"msg": unset_msg("init"), "path": "spec.initContainers[0].securityContext.runAsNonRoot"},
		{"msg": unset_msg("debug"), "path": "spec.ephemeralContainers[0].securityContext.runAsNonRoot"},
	}
}

test_unnamed_container_named_by_position if {
	r := testing.create(testing.pod({"containers": [app, {"image": "x:1"}]}))
	testing.msgs(deny(r)) == {unset_msg("app"), unset_msg("containers[1]")}
}

test_every_pod_bearing_kind_denied_at_its_path if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [app]}))
		deny(r) == {{"msg": unset_msg("app"), "path": sprintf("%s.containers[0].securityContext.runAsNonRoot", [prefixes[kind][0]])}}
	}
}

test_every_pod_bearing_kind_judged_on_update if {
	every kind in [k | some k in kinds; k != "Pod"] {
		r := testing.update(testing.workload(kind, {"containers": [app]}))
		testing.msgs(deny(r)) == {unset_msg("app")}
		patch(r) == {patch_op(prefixes[kind][1])}
	}
}

# --- special cases --------------------------------------------------------------------------

test_windows_pod_exempt if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"os": {"name": "windows"}, "containers": [sc(app, {"runAsUser": 0})]}))
		count(deny(r)) == 0
		count(patch(r)) == 0
	}
}

test_linux_pod_judged if {
	r := testing.create(testing.pod({"os": {"name": "linux"}, "containers": [app]}))
	testing.msgs(deny(r)) == {unset_msg("app")}
}

test_bare_pod_update_not_judged_and_not_patched if {
	r := testing.update(testing.pod({"containers": [sc(app, {"runAsUser": 0, "runAsNonRoot": false})]}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_ephemeral_containers_update_judges_ephemeral_containers_only if {
	spec := {
		"containers": [sc(app, {"runAsUser": 0})],
		"initContainers": [{"name": "init", "image": "busybox:1.36"}],
		"ephemeralContainers": [
			sc({"name": "debugger", "image": "busybox:1.36"}, {"runAsNonRoot": true}),
			{"name": "debugger-2", "image": "busybox:1.36"},
		],
	}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	deny(r) == {{"msg": unset_msg("debugger-2"), "path": "spec.ephemeralContainers[1].securityContext.runAsNonRoot"}}
	count(patch(r)) == 0
}

test_ephemeral_containers_update_uses_pod_security_context if {
	spec := {
		"securityContext": {"runAsNonRoot": true},
		"containers": [app],
		"ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36"}],
	}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	count(deny(r)) == 0
}

test_ephemeral_containers_update_windows_exempt if {
	spec := {"os": {"name": "windows"}, "containers": [app], "ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36"}]}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	count(deny(r)) == 0
}

test_other_subresources_not_judged if {
	r := testing.subresource_update(testing.pod({"containers": [app]}), "status")
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_delete_not_judged if {
	r := testing.delete(testing.pod({"containers": [app]}))
	count(deny(r)) == 0
}

test_other_kinds_not_judged if {
	r := testing.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"containers": [app]}})
	count(deny(r)) == 0
	count(patch(r)) == 0
}

# --- patch ----------------------------------------------------------------------------------

test_patch_adds_pod_run_as_non_root_for_every_kind if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [app]}))
		patch(r) == {patch_op(prefixes[kind][1])}
	}
}

test_patch_when_one_container_of_several_leaves_it_unset if {
	r := testing.create(testing.pod({
		"containers": [sc(app, {"runAsNonRoot": true})],
		"initContainers": [{"name": "init", "image": "busybox:1.36"}],
	}))
	patch(r) == {patch_op("/spec")}
}

test_patch_does_not_overwrite_container_false if {
	# The pod-level patch is added (another container leaves the field unset), but the
	# container's explicit false still wins over it, so the object stays denied.
	spec := {"containers": [sc(app, {"runAsNonRoot": false}), {"name": "b", "image": "b:1"}]}
	patch(testing.create(testing.pod(spec))) == {patch_op("/spec")}
	patched := object.union(spec, {"securityContext": {"runAsNonRoot": true}})
	testing.msgs(deny(testing.create(testing.pod(patched)))) == {"container \"app\" must set securityContext.runAsNonRoot=true (it is false)"}
}

test_no_patch_when_every_container_sets_it if {
	r := testing.create(testing.pod({"containers": [sc(app, {"runAsNonRoot": false})]}))
	count(patch(r)) == 0
}

test_no_patch_when_pod_sets_it if {
	every value in [true, false] {
		r := testing.create(testing.pod({"securityContext": {"runAsNonRoot": value}, "containers": [app]}))
		count(patch(r)) == 0
	}
}

test_patch_does_not_fix_run_as_user_zero if {
	spec := {"securityContext": {"runAsUser": 0}, "containers": [app]}
	patch(testing.create(testing.pod(spec))) == {patch_op("/spec")}
	patched := {"securityContext": {"runAsUser": 0, "runAsNonRoot": true}, "containers": [app]}
	testing.msgs(deny(testing.create(testing.pod(patched)))) == {"container \"app\" must not run as root: the pod's securityContext.runAsUser is 0"}
}

test_patched_object_is_allowed_and_gets_no_further_patch if {
	every kind in kinds {
		obj := testing.workload(kind, {"securityContext": {}, "containers": [app]})
		ops := [op | some op in patch(testing.create(obj))]
		patched := json.patch(obj, ops)
		count(deny(testing.create(patched))) == 0
		count(patch(testing.create(patched))) == 0
	}
}

test_malformed_fields_are_judged_not_fatal if {
	r := testing.create(testing.pod({
		"securityContext": ["bad"],
		"containers": [sc(app, {"runAsNonRoot": "yes", "runAsUser": "0"}), 42],
		"ephemeralContainers": {"not": "a list"},
	}))
	testing.msgs(deny(r)) == {"container \"app\" must set securityContext.runAsNonRoot=true (it is yes)"}
	count(patch(r)) == 0
}
