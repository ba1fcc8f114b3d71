# METADATA
# title: NetworkPolicies do not open everything
# description: >-
#   A NetworkPolicy rule must not admit all traffic: an ingress (egress) rule with no ports
#   and no peers, or with no ports and a peer ipBlock of 0.0.0.0/0 or ::/0 without exceptions.
#   Rules limited to listed ports are fine, and so is a default-deny policy.
# custom:
#   id: networkpolicy-no-allow-all
#   severity: high
#   category: Network
#   kinds: [NetworkPolicy]
#   action: {development: warn, staging: warn, production: deny}
#   operations: [CREATE, UPDATE]
package regate.policies.networkpolicy_no_allow_all

import data.regate.lib.regate
import rego.v1

# direction -> the field of a rule that lists its peers.
directions := {"ingress": "from", "egress": "to"}

# Words for the messages.
sources := {"ingress": "from every source", "egress": "to every destination"}

rules contains {"direction": direction, "index": i, "rule": rule} if {
	regate.kind == "NetworkPolicy"
	spec := regate.object_or_empty(object.get(regate.obj, "spec", {}))
	some direction, _ in directions
	some i, r in regate.array_or_empty(object.get(spec, direction, []))
	rule := regate.object_or_empty(r)
}

# An empty or missing list counts as none.
no_ports(rule) if count(regate.array_or_empty(object.get(rule, "ports", []))) == 0

peers(r) := regate.array_or_empty(object.get(r.rule, directions[r.direction], []))

# No peers and no ports: the rule admits all traffic.
deny contains {
	"msg": sprintf(
		"%s rule %d allows all traffic %s on every port: it lists no %q peers and no ports",
		[r.direction, r.index, sources[r.direction], directions[r.direction]],
	),
	"path": sprintf("spec.%s[%d]", [r.direction, r.index]),
} if {
	some r in rules
	no_ports(r.rule)
	count(peers(r)) == 0
}

# No ports and a peer that is the whole address space with no exceptions.
deny contains {
	"msg": sprintf(
		"%s rule %d allows all traffic %s on every port: its %q peer %d is ipBlock %s with no except; list ports or narrow the block",
		[r.direction, r.index, sources[r.direction], directions[r.direction], j, cidr],
	),
	"path": sprintf("spec.%s[%d].%s[%d].ipBlock", [r.direction, r.index, directions[r.direction], j]),
} if {
	some r in rules
	no_ports(r.rule)
	some j, peer in peers(r)
	block := regate.object_or_empty(object.get(regate.object_or_empty(peer), "ipBlock", {}))
	cidr := object.get(block, "cidr", "")
	whole_address_space(cidr)
	count(regate.array_or_empty(object.get(block, "except", []))) == 0
}

# 0.0.0.0/0 and ::/0, however written: any block with a /0 prefix.
whole_address_space(cidr) if {
	is_string(cidr)
	endswith(trim_space(cidr), "/0")
}
