package regate.policies.pod_no_privilege_escalation_test

import data.regate.lib.testing
import data.regate.policies.pod_no_privilege_escalation as policy
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

hardened := {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}

sc(c, s) := object.union(c, {"securityContext": s})

good(c) := sc(c, hardened)

ape_msg(name) := sprintf("container %q must set securityContext.allowPrivilegeEscalation=false", [name])

ape_true_msg(name) := sprintf("container %q must set securityContext.allowPrivilegeEscalation=false (it is true)", [name])

privileged_msg(name) := sprintf("container %q must not set securityContext.privileged=true", [name])

drop_msg(name) := sprintf("container %q must drop ALL capabilities: securityContext.capabilities.drop must include \"ALL\"", [name])

add_msg(name, cap) := sprintf("container %q must not add capability %q: securityContext.capabilities.add may only contain \"NET_BIND_SERVICE\"", [name, cap])

ape_op(pointer) := {"op": "add", "path": sprintf("%s/securityContext/allowPrivilegeEscalation", [pointer]), "value": false}

drop_op(pointer) := {"op": "add", "path": sprintf("%s/securityContext/capabilities/drop", [pointer]), "value": ["ALL"]}

append_op(pointer) := {"op": "add", "path": sprintf("%s/securityContext/capabilities/drop/-", [pointer]), "value": "ALL"}

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

test_hardened_containers_allowed if {
	r := testing.create(testing.pod({
		"containers": [good(app)],
		"initContainers": [good({"name": "init", "image": "busybox:1.36"})],
		"ephemeralContainers": [good({"name": "debug", "image": "busybox:1.36"})],
	}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_net_bind_service_may_be_added if {
	r := testing.create(testing.pod({"containers": [sc(app, {
		"allowPrivilegeEscalation": false,
		"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
	})]}))
	count(deny(r)) == 0
}

test_privileged_false_allowed if {
	r := testing.create(testing.pod({"containers": [sc(app, object.union(hardened, {"privileged": false}))]}))
	count(deny(r)) == 0
}

test_drop_all_among_others_allowed if {
	r := testing.create(testing.pod({"containers": [sc(app, {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW", "ALL"]}})]}))
	count(deny(r)) == 0
}

# --- denied ---------------------------------------------------------------------------------

test_allow_privilege_escalation_unset_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"capabilities": {"drop": ["ALL"]}})]}))
	deny(r) == {{"msg": ape_msg("app"), "path": "spec.containers[0].securityContext.allowPrivilegeEscalation"}}
}

test_allow_privilege_escalation_true_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"]}})]}))
	deny(r) == {{"msg": ape_true_msg("app"), "path": "spec.containers[0].securityContext.allowPrivilegeEscalation"}}
}

test_privileged_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {"privileged": true, "capabilities": {"drop": ["ALL"]}})]}))
	deny(r) == {
		{"msg": privileged_msg("app"), "path": "spec.containers[0].securityContext.privileged"},
		{"msg": ape_msg("app"), "path": "spec.containers[0].securityContext.allowPrivilegeEscalation"},
	}
}

test_drop_all_missing_denied if {
	every capabilities in [null, {}, {"drop": []}, {"drop": ["NET_RAW", "SYS_ADMIN"]}, {"drop": ["all"]}] {
		r := testing.create(testing.pod({"containers": [sc(app, {"allowPrivilegeEscalation": false, "capabilities": capabilities})]}))
		deny(r) == {{"msg": drop_msg("app"), "path": "spec.containers[0].securityContext.capabilities.drop"}}
	}
}

test_added_capabilities_other_than_net_bind_service_denied if {
	r := testing.create(testing.pod({"containers": [sc(app, {
		"allowPrivilegeEscalation": false,
		"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "NET_RAW", "chown", "CAP_NET_BIND_SERVICE"]},
	})]}))
	deny(r) == {
		{"msg": add_msg("app", "NET_RAW"), "path": "spec.containers[0].securityContext.capabilities.add"},
		{"msg": add_msg("app", "chown"), "path": "spec.containers[0].securityContext.capabilities.add"},
		{"msg": add_msg("app", "CAP_NET_BIND_SERVICE"), "path": "spec.containers[0].securityContext.capabilities.add"},
	}
}

test_no_security_context_denied_on_every_count if {
	r := testing.create(testing.pod({"containers": [app]}))
	testing.msgs(deny(r)) == {ape_msg("app"), drop_msg("app")}
}

test_init_and_ephemeral_containers_judged if {
	r := testing.create(testing.pod({
		"containers": [good(app)],
		"initContainers": [sc({"name": "init", "image": "busybox:1.36"}, {"privileged": true, "allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"]}})],
		"ephemeralContainers": [sc({"name": "debug", "image": "busybox:1.36"}, {"allowPrivilegeEscalation": false})],
	}))
	deny(r) == {
		{"msg": privileged_msg("init"), "path": "spec.initContainers[0].securityContext.privileged"},
		{"msg": ape_true_msg("init"), "path": "spec.initContainers[0].securityContext.allowPrivilegeEscalation"},
		{"msg": drop_msg("debug"), "path": "spec.ephemeralContainers[0].securityContext.capabilities.drop"},
	}
}

test_every_pod_bearing_kind_denied_at_its_path if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [sc(app, {"capabilities": {"drop": ["ALL"]}})]}))
		deny(r) == {{"msg": ape_msg("app"), "path": sprintf("%s.containers[0].securityContext.allowPrivilegeEscalation", [prefixes[kind][0]])}}
	}
}

test_controllers_judged_on_update if {
	every kind in [k | some k in kinds; k != "Pod"] {
		r := testing.update(testing.workload(kind, {"containers": [app]}))
		testing.msgs(deny(r)) == {ape_msg("app"), drop_msg("app")}
		pointer := sprintf("%s/containers/0", [prefixes[kind][1]])
		patch(r) == {ape_op(pointer), drop_op(pointer)}
	}
}

# The rules walk the containers only when some container fails the policy's one-pass test;
# then they judge each container on its own.
test_one_failing_container_among_hardened_ones if {
	r := testing.create(testing.pod({"containers": [
		good(app),
		sc({"name": "priv", "image": "busybox:1.36"}, object.union(hardened, {"privileged": true})),
		good({"name": "sidecar", "image": "envoy:1.31"}),
	]}))
	deny(r) == {{"msg": privileged_msg("priv"), "path": "spec.containers[1].securityContext.privileged"}}
}

test_allowed_added_capability_beside_hardened_containers if {
	r := testing.create(testing.pod({"containers": [
		good(app),
		sc({"name": "web", "image": "nginx:1.27"}, {
			"allowPrivilegeEscalation": false,
			"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
		}),
	]}))
	count(deny(r)) == 0
}

test_capability_lists_that_are_no_arrays if {
	r := testing.create(testing.pod({"containers": [
		sc({"name": "a", "image": "a:1"}, {"allowPrivilegeEscalation": false, "capabilities": "ALL"}),
		sc({"name": "b", "image": "b:1"}, {"allowPrivilegeEscalation": false, "capabilities": {"drop": {"x": "ALL"}}}),
		sc({"name": "c", "image": "c:1"}, {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": "SYS_ADMIN"}}),
		sc({"name": "d", "image": "d:1"}, {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": false}}),
	]}))
	testing.msgs(deny(r)) == {drop_msg("a"), drop_msg("b")}
}

# --- special cases --------------------------------------------------------------------------

test_windows_pod_exempt if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"os": {"name": "windows"}, "containers": [sc(app, {"privileged": true})]}))
		count(deny(r)) == 0
		count(patch(r)) == 0
	}
}

test_bare_pod_update_not_judged_and_not_patched if {
	r := testing.update(testing.pod({"containers": [sc(app, {"privileged": true})]}))
	count(deny(r)) == 0
	count(patch(r)) == 0
}

test_ephemeral_containers_update_judges_ephemeral_containers_only if {
	spec := {
		"containers": [sc(app, {"privileged": true})],
		"ephemeralContainers": [good({"name": "debugger", "image": "busybox:1.36"}), {"name": "debugger-2", "image": "busybox:1.36"}],
	}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	deny(r) == {
		{"msg": ape_msg("debugger-2"), "path": "spec.ephemeralContainers[1].securityContext.allowPrivilegeEscalation"},
		{"msg": drop_msg("debugger-2"), "path": "spec.ephemeralContainers[1].securityContext.capabilities.drop"},
	}
	count(patch(r)) == 0
}

test_ephemeral_containers_update_allowed_when_hardened if {
	spec := {"containers": [app], "ephemeralContainers": [good({"name": "debugger", "image": "busybox:1.36"})]}
	r := testing.subresource_update(testing.pod(spec), "ephemeralcontainers")
	count(deny(r)) == 0
}

test_other_subresources_not_judged if {
	r := testing.subresource_update(testing.pod({"containers": [app]}), "status")
	count(deny(r)) == 0
}

# --- patch ----------------------------------------------------------------------------------

test_patch_for_every_kind if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [app]}))
		pointer := sprintf("%s/containers/0", [prefixes[kind][1]])
		patch(r) == {ape_op(pointer), drop_op(pointer)}
	}
}

test_patch_appends_all_to_an_existing_drop_list if {
	r := testing.create(testing.pod({"containers": [sc(app, {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW"]}})]}))
	patch(r) == {append_op("/spec/containers/0")}
}

test_patch_never_overwrites_allow_privilege_escalation_true if {
	r := testing.create(testing.pod({"containers": [sc(app, {"allowPrivilegeEscalation": true, "capabilities": {"drop": ["ALL"]}})]}))
	count(patch(r)) == 0
}

test_patch_skips_allow_privilege_escalation_when_privileged_or_sys_admin if {
	# The API server rejects allowPrivilegeEscalation=false next to privileged=true or an
	# added CAP_SYS_ADMIN; these containers are denied for their privilege instead.
	r := testing.create(testing.pod({"containers": [
		sc(app, {"privileged": true}),
		sc({"name": "b", "image": "b:1"}, {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}),
	]}))
	patch(r) == {drop_op("/spec/containers/0"), drop_op("/spec/containers/1")}
}

test_patch_for_init_and_ephemeral_containers if {
	r := testing.create(testing.pod({
		"containers": [good(app)],
		"initContainers": [{"name": "init", "image": "busybox:1.36"}],
	}))
	patch(r) == {ape_op("/spec/initContainers/0"), drop_op("/spec/initContainers/0")}
}

test_patched_object_is_allowed_and_gets_no_further_patch if {
	every kind in kinds {
		obj := testing.workload(kind, {"containers": [
			sc(app, {"capabilities": {}}),
			sc({"name": "b", "image": "b:1"}, {"capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE"]}}),
		]})
		ops := [op | some op in patch(testing.create(obj))]
		count(ops) == 4
		patched := json.patch(obj, ops)
		count(deny(testing.create(patched))) == 0
		count(patch(testing.create(patched))) == 0
	}
}

# --- malformed objects (e.g. `regate eval` on a hand-written manifest) never abort evaluation

test_malformed_fields_are_judged_not_fatal if {
	r := testing.create(testing.pod({
		"securityContext": "bad",
		"initContainers": "not-a-list",
		"containers": [
			sc(app, "bad"),
			"not-a-container",
			sc({"name": "b", "image": "b:1"}, {"allowPrivilegeEscalation": false, "capabilities": {"drop": "ALL", "add": "NET_RAW"}}),
		],
	}))
	testing.msgs(deny(r)) == {ape_msg("app"), drop_msg("app"), drop_msg("b")}
	# No append to a drop "list" that is not a list.
	patch(r) == {ape_op("/spec/containers/0"), drop_op("/spec/containers/0")}
}

test_kind_taken_from_the_object_when_the_request_has_none if {
	r := {"request": {"operation": "CREATE", "object": testing.pod({"containers": [app]})}}
	testing.msgs(deny(r)) == {ape_msg("app"), drop_msg("app")}
}

test_no_request_no_result if {
	count(deny({})) == 0
	count(deny({"request": null})) == 0
	count(deny({"request": {"kind": {"kind": "Pod"}, "operation": "CREATE", "object": {"kind": "Pod", "spec": "x"}}})) == 0
}
