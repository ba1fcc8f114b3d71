# Helpers for the policies' _test.rego files: AdmissionReviews as kube-apiserver sends them
# and pod-bearing objects of every kind. No rule here takes part in a decision.
#
# API (package regate.lib.testing):
#   repeat(s, n)                s repeated n times (regorus has no strings.repeat)
#   create(obj)                 an AdmissionReview CREATE of obj (kind from obj.kind)
#   update(obj)                 an UPDATE of obj (oldObject: obj)
#   subresource_update(obj, s)  an UPDATE of subresource s ("ephemeralcontainers", "status", ...)
#   delete(obj)                 a DELETE (object: null, oldObject: obj)
#   workload(kind, spec)        a pod-bearing object of that kind with `spec` as its pod spec
#   pod(spec)                   workload("Pod", spec)
#   msgs(results)               the messages of a set of deny/warn results
#   paths(results)              the paths of a set of deny/warn results
package regate.lib.testing

import rego.v1

groups := {
	"Pod": "",
	"PodTemplate": "",
	"ReplicationController": "",
	"Secret": "",
	"ConfigMap": "",
	"Deployment": "apps",
	"StatefulSet": "apps",
	"DaemonSet": "apps",
	"ReplicaSet": "apps",
	"Job": "batch",
	"CronJob": "batch",
	"NetworkPolicy": "networking.k8s.io",
}

resources := {
	"Pod": "pods",
	"PodTemplate": "podtemplates",
	"ReplicationController": "replicationcontrollers",
	"Secret": "secrets",
	"ConfigMap": "configmaps",
	"Deployment": "deployments",
	"StatefulSet": "statefulsets",
	"DaemonSet": "daemonsets",
	"ReplicaSet": "replicasets",
	"Job": "jobs",
	"CronJob": "cronjobs",
	"NetworkPolicy": "networkpolicies",
}

request(obj, operation) := {
	"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
	"kind": {"group": object.get(groups, obj.kind, ""), "version": "v1", "kind": obj.kind},
	"resource": {"group": object.get(groups, obj.kind, ""), "version": "v1", "resource": object.get(resources, obj.kind, "")},
	"requestKind": {"group": object.get(groups, obj.kind, ""), "version": "v1", "kind": obj.kind},
	"name": object.get(obj, ["metadata", "name"], ""),
	"namespace": "default",
	"operation": operation,
	"userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
	"object": obj,
	"dryRun": false,
}

review(req) := {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}

create(obj) := review(request(obj, "CREATE"))

update(obj) := review(object.union(request(obj, "UPDATE"), {"oldObject": obj}))

subresource_update(obj, sub) := review(object.union(request(obj, "UPDATE"), {"oldObject": obj, "subResource": sub}))

delete(obj) := review(object.union(request(obj, "DELETE"), {"object": null, "oldObject": obj}))

meta := {"name": "demo", "namespace": "default"}

template(spec) := {"metadata": {"labels": {"app": "demo"}}, "spec": spec}

selector := {"matchLabels": {"app": "demo"}}

workload("Pod", spec) := {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

workload("Deployment", spec) := {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"selector": selector, "template": template(spec)}}

workload("StatefulSet", spec) := {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": {"selector": selector, "serviceName": "demo", "template": template(spec)}}

workload("DaemonSet", spec) := {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta, "spec": {"selector": selector, "template": template(spec)}}

workload("ReplicaSet", spec) := {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta, "spec": {"selector": selector, "template": template(spec)}}

workload("ReplicationController", spec) := {"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta, "spec": {"selector": {"app": "demo"}, "template": template(spec)}}

workload("Job", spec) := {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"template": template(spec)}}

workload("CronJob", spec) := {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template(spec)}}}}

workload("PodTemplate", spec) := {"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta, "template": template(spec)}

pod(spec) := workload("Pod", spec)

msgs(results) := {m | some r in results; m := msg(r)}

msg(r) := r.msg if is_object(r)

else := r

paths(results) := {p | some r in results; p := r.path}

# repeat(s, n): s repeated n times (regorus has no strings.repeat).
repeat(s, n) := concat("", [s | some i in numbers.range(0, n); i < n])
