package regate.policies.networkpolicy_no_allow_all_test

import data.regate.lib.testing
import data.regate.policies.networkpolicy_no_allow_all as policy
import rego.v1

netpol(spec) := {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np", "namespace": "default"}, "spec": spec}

deny_in(env, review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as {}
}

deny(review) := deny_in("production", review)

ingress(rules) := testing.create(netpol({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules}))

egress(rules) := testing.create(netpol({"podSelector": {}, "policyTypes": ["Egress"], "egress": rules}))

open_ingress_msg(i) := sprintf("ingress rule %d allows all traffic from every source on every port: it lists no \"from\" peers and no ports", [i])

open_egress_msg(i) := sprintf("egress rule %d allows all traffic to every destination on every port: it lists no \"to\" peers and no ports", [i])

block_ingress_msg(i, j, cidr) := sprintf("ingress rule %d allows all traffic from every source on every port: its \"from\" peer %d is ipBlock %s with no except; list ports or narrow the block", [i, j, cidr])

block_egress_msg(i, j, cidr) := sprintf("egress rule %d allows all traffic to every destination on every port: its \"to\" peer %d is ipBlock %s with no except; list ports or narrow the block", [i, j, cidr])

port443 := [{"protocol": "TCP", "port": 443}]

# --- allowed --------------------------------------------------------------------------------

test_default_deny_allowed if {
	every types in [["Ingress"], ["Egress"], ["Ingress", "Egress"]] {
		count(deny(testing.create(netpol({"podSelector": {}, "policyTypes": types})))) == 0
	}
	count(deny(testing.create(netpol({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []})))) == 0
}

test_seed_policies_allowed if {
	r := testing.create(netpol({
		"podSelector": {"matchLabels": {"app": "chatbox"}},
		"policyTypes": ["Ingress", "Egress"],
		"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nginx-ingress"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}],
		"egress": [
			{"to": [{"podSelector": {"matchLabels": {"app": "mongodb"}}}], "ports": [{"protocol": "TCP", "port": 27017}]},
			{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]},
		],
	}))
	count(deny(r)) == 0
}

test_public_ingress_to_listed_ports_allowed if {
	count(deny(ingress([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": port443}]))) == 0
	count(deny(ingress([{"ports": port443}]))) == 0
	count(deny(ingress([{"from": [], "ports": port443}]))) == 0
	count(deny(egress([{"to": [{"ipBlock": {"cidr": "::/0"}}], "ports": port443}]))) == 0
}

test_peers_other_than_everything_allowed if {
	count(deny(ingress([{"from": [{"podSelector": {}}]}]))) == 0
	count(deny(ingress([{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]))) == 0
	count(deny(ingress([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]))) == 0
	count(deny(egress([{"to": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}]))) == 0
}

test_whole_address_space_with_exceptions_allowed if {
	count(deny(ingress([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]))) == 0
	count(deny(egress([{"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}]}]))) == 0
}

# --- ingress --------------------------------------------------------------------------------

test_ingress_rule_without_from_and_ports_denied if {
	every rule in [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}, {"from": null}] {
		deny(ingress([rule])) == {{"msg": open_ingress_msg(0), "path": "spec.ingress[0]"}}
	}
}

test_ingress_from_everywhere_without_ports_denied if {
	every cidr in ["0.0.0.0/0", "::/0"] {
		every block in [{"cidr": cidr}, {"cidr": cidr, "except": []}, {"cidr": cidr, "except": null}] {
			deny(ingress([{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}, {"ipBlock": block}]}])) == {{
				"msg": block_ingress_msg(0, 1, cidr),
				"path": "spec.ingress[0].from[1].ipBlock",
			}}
		}
	}
}

test_ingress_rule_index_reported if {
	r := ingress([{"from": [{"podSelector": {}}], "ports": port443}, {}])
	deny(r) == {{"msg": open_ingress_msg(1), "path": "spec.ingress[1]"}}
}

# --- egress ---------------------------------------------------------------------------------

test_egress_rule_without_to_and_ports_denied if {
	every rule in [{}, {"to": []}, {"ports": []}] {
		deny(egress([rule])) == {{"msg": open_egress_msg(0), "path": "spec.egress[0]"}}
	}
}

test_egress_to_everywhere_without_ports_denied if {
	every cidr in ["0.0.0.0/0", "::/0"] {
		deny(egress([{"to": [{"ipBlock": {"cidr": cidr}}]}])) == {{
			"msg": block_egress_msg(0, 0, cidr),
			"path": "spec.egress[0].to[0].ipBlock",
		}}
	}
}

test_ingress_and_egress_both_reported if {
	r := testing.create(netpol({
		"podSelector": {},
		"policyTypes": ["Ingress", "Egress"],
		"ingress": [{}],
		"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]}],
	}))
	testing.msgs(deny(r)) == {open_ingress_msg(0), block_egress_msg(0, 0, "0.0.0.0/0"), block_egress_msg(0, 1, "::/0")}
}

# The environment picks the action (warn in development and staging, deny in production).
test_same_result_in_every_environment if {
	every env in ["development", "staging", "production"] {
		testing.msgs(deny_in(env, ingress([{}]))) == {open_ingress_msg(0)}
	}
}

test_update_judged_delete_and_other_kinds_not if {
	count(deny(testing.update(netpol({"podSelector": {}, "ingress": [{}]})))) == 1
	count(deny(testing.delete(netpol({"podSelector": {}, "ingress": [{}]})))) == 0
	count(deny(testing.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "spec": {"ingress": [{}]}}))) == 0
}

test_malformed_policy_not_fatal if {
	count(deny(testing.create(netpol("not-a-spec")))) == 0
	count(deny(testing.create(netpol({"ingress": "x", "egress": {"a": 1}})))) == 0
	# A null rule reads as an empty rule, which admits everything.
	testing.msgs(deny(ingress([null]))) == {open_ingress_msg(0)}
	count(deny(ingress([{"from": ["x", {"ipBlock": "y"}, {"ipBlock": {"cidr": 0}}]}]))) == 0
}
