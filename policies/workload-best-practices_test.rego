package regate.policies.workload_best_practices_test

import data.regate.lib.testing
import data.regate.policies.workload_best_practices as policy
import rego.v1

kinds := ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob", "PodTemplate"]

probed_kinds := {"Deployment", "StatefulSet", "DaemonSet"}

prefixes := {
	"Pod": "spec",
	"Deployment": "spec.template.spec",
	"StatefulSet": "spec.template.spec",
	"DaemonSet": "spec.template.spec",
	"ReplicaSet": "spec.template.spec",
	"ReplicationController": "spec.template.spec",
	"Job": "spec.template.spec",
	"CronJob": "spec.jobTemplate.spec.template.spec",
	"PodTemplate": "template.spec",
}

resources := {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}

probe := {"httpGet": {"path": "/healthz", "port": 8080}}

good := {
	"name": "app",
	"image": "registry.example.com/app:1.4.2",
	"resources": resources,
	"livenessProbe": probe,
	"readinessProbe": probe,
}

with_image(image) := object.union(good, {"image": image})

image_msg(image) := sprintf("container \"app\" should pin its image %q by a digest (@sha256:...) or a tag other than latest", [image])

digest := "sha256:4c5e8b1f0a3d2e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"

deny(review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as "production"
		with data.regate.parameters as {}
}

test_good_containers_allowed_for_every_kind if {
	every kind in kinds {
		r := testing.create(testing.workload(kind, {"containers": [good]}))
		count(deny(r)) == 0
	}
}

test_missing_resources_warned_per_field if {
	r := testing.create(testing.workload("Deployment", {"containers": [object.union(object.remove(good, ["resources"]), {"resources": {"requests": {"cpu": "100m"}, "limits": {}}})]}))
	deny(r) == {
		{"msg": "container \"app\" should set resources.requests.memory", "path": "spec.template.spec.containers[0].resources.requests.memory"},
		{"msg": "container \"app\" should set resources.limits.cpu", "path": "spec.template.spec.containers[0].resources.limits.cpu"},
		{"msg": "container \"app\" should set resources.limits.memory", "path": "spec.template.spec.containers[0].resources.limits.memory"},
	}
}

test_no_resources_at_all_warned if {
	r := testing.create(testing.pod({"containers": [object.remove(good, ["resources"])]}))
	testing.msgs(deny(r)) == {
		"container \"app\" should set resources.requests.cpu",
		"container \"app\" should set resources.requests.memory",
		"container \"app\" should set resources.limits.cpu",
		"container \"app\" should set resources.limits.memory",
	}
}

test_probes_required_for_deployments_statefulsets_daemonsets if {
	every kind in probed_kinds {
		r := testing.create(testing.workload(kind, {"containers": [object.remove(good, ["livenessProbe", "readinessProbe"])]}))
		deny(r) == {
			{"msg": "container \"app\" should set livenessProbe", "path": sprintf("%s.containers[0].livenessProbe", [prefixes[kind]])},
			{"msg": "container \"app\" should set readinessProbe", "path": sprintf("%s.containers[0].readinessProbe", [prefixes[kind]])},
		}
	}
}

test_probes_not_required_for_other_kinds if {
	every kind in [k | some k in kinds; not k in probed_kinds] {
		r := testing.create(testing.workload(kind, {"containers": [object.remove(good, ["livenessProbe", "readinessProbe"])]}))
		count(deny(r)) == 0
	}
}

test_missing_liveness_probe_only if {
	r := testing.create(testing.workload("StatefulSet", {"containers": [object.remove(good, ["livenessProbe"])]}))
	testing.msgs(deny(r)) == {"container \"app\" should set livenessProbe"}
}

test_init_and_ephemeral_containers_not_checked if {
	r := testing.create(testing.workload("Deployment", {
		"containers": [good],
		"initContainers": [{"name": "init", "image": "busybox"}],
		"ephemeralContainers": [{"name": "debug", "image": "busybox:latest"}],
	}))
	count(deny(r)) == 0
}

test_pinned_images_allowed if {
	every image in [
		"nginx:1.27",
		"registry.example.com/team/app:v2",
		"registry:5000/app:1.0",
		sprintf("nginx@%s", [digest]),
		sprintf("nginx:latest@%s", [digest]),
		sprintf("registry:5000/app:1.0@%s", [digest]),
		sprintf("registry:5000/app@%s", [digest]),
	] {
		r := testing.create(testing.pod({"containers": [with_image(image)]}))
		count(deny(r)) == 0
	}
}

test_unpinned_images_warned if {
	every image in [
		"nginx",
		"nginx:latest",
		"registry.example.com/team/app",
		"registry.example.com/team/app:latest",
		"registry:5000/app",
		"registry:5000/app:latest",
		"localhost:5000/app:",
	] {
		r := testing.create(testing.pod({"containers": [with_image(image)]}))
		deny(r) == {{"msg": image_msg(image), "path": "spec.containers[0].image"}}
	}
}

test_every_container_of_the_list_checked if {
	r := testing.create(testing.pod({"containers": [good, object.union(good, {"name": "sidecar", "image": "envoy"})]}))
	deny(r) == {{
		"msg": "container \"sidecar\" should pin its image \"envoy\" by a digest (@sha256:...) or a tag other than latest",
		"path": "spec.containers[1].image",
	}}
}

# Only the pod-* policies skip bare Pod updates and Windows pods.
# The rules walk the containers only when some container fails the policy's one-pass test
# (a digest-pinned image fails it); then they judge each container on its own.
test_digest_pinned_image_beside_a_container_without_resources if {
	r := testing.create(testing.workload("Deployment", {"containers": [
		with_image(sprintf("registry.example.com/app@%s", [digest])),
		object.union(object.remove(good, ["resources"]), {"name": "sidecar"}),
	]}))
	testing.msgs(deny(r)) == {
		"container \"sidecar\" should set resources.requests.cpu",
		"container \"sidecar\" should set resources.requests.memory",
		"container \"sidecar\" should set resources.limits.cpu",
		"container \"sidecar\" should set resources.limits.memory",
	}
}

test_job_without_probes_beside_an_unpinned_image if {
	no_probes := object.remove(good, ["livenessProbe", "readinessProbe"])
	r := testing.create(testing.workload("Job", {"containers": [
		no_probes,
		object.union(no_probes, {"name": "sidecar", "image": "envoy"}),
	]}))
	testing.msgs(deny(r)) == {"container \"sidecar\" should pin its image \"envoy\" by a digest (@sha256:...) or a tag other than latest"}
}

test_pod_update_and_windows_still_checked if {
	r := testing.update(testing.pod({"os": {"name": "windows"}, "containers": [with_image("nginx")]}))
	testing.msgs(deny(r)) == {image_msg("nginx")}
}

test_subresource_requests_not_checked if {
	r := testing.subresource_update(testing.pod({"containers": [with_image("nginx")]}), "ephemeralcontainers")
	count(deny(r)) == 0
}

test_other_kinds_not_checked if {
	r := testing.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"containers": [{"name": "x"}]}})
	count(deny(r)) == 0
}
