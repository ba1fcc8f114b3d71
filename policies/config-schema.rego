# METADATA
# title: ConfigMaps and Secrets follow their declared JSON Schemas
# description: >-
#   Each entry of `schemas` names the ConfigMaps and Secrets it applies to (kinds, name and
#   namespace globs, a label selector) and a JSON Schema for their key/value map (a ConfigMap's
#   data; a Secret's decoded data merged with stringData), with a JSON Merge Patch per
#   environment over it. A value whose property declares type integer, number or boolean is
#   checked as that type. One violation per broken rule; messages name the entry, the key and
#   the rule, never a value. Does nothing until configured.
# custom:
#   id: config-schema
#   severity: high
#   category: Configuration
#   kinds: [ConfigMap, Secret]
#   action: deny
#   operations: [CREATE, UPDATE]
#   parameters:
#     schemas:
#       type: array
#       description: >-
#         Entries {name, match: {kinds, names, namespaces, labels}, schema, environments:
#         {development|staging|production: merge patch}}; see docs/policies.md.
#       default: []
package regate.policies.config_schema

import data.regate.lib.regate
import data.regate.lib.secret
import rego.v1

env := regate.environment

entries := [e | some e in regate.array_or_empty(regate.param("schemas", [])); is_object(e)]

metadata := regate.object_or_empty(object.get(regate.obj, "metadata", {}))

name := n if {
	n := metadata.name
	is_string(n)
} else := ""

namespace := ns if {
	ns := regate.request.namespace
	is_string(ns)
	ns != ""
} else := ns if {
	ns := metadata.namespace
	is_string(ns)
} else := ""

labels := regate.object_or_empty(object.get(metadata, "labels", {}))

# --- the key/value map -------------------------------------------------------------------------

# key -> value (a string), and key -> where it is written. (One definition each: regorus's
# bytecode would not report two that disagree.)
configmap_values := {key: text |
	regate.kind == "ConfigMap"
	some key, raw in regate.object_or_empty(object.get(regate.obj, "data", {}))
	text := regate.str(raw)
	is_string(text)
}

secret_values := {entry.key: entry.text | some entry in secret.entries; entry.valid}

values := object.union(configmap_values, secret_values)

sources := object.union(
	{key: "data" | some key, _ in configmap_values},
	{entry.key: entry.source | some entry in secret.entries; entry.valid},
)

# --- which entries apply -----------------------------------------------------------------------

match_of(entry) := regate.object_or_empty(object.get(entry, "match", {}))

kinds_of(entry) := ks if {
	ks := match_of(entry).kinds
	is_array(ks)
} else := ["ConfigMap", "Secret"]

# No globs: any name. Globs (no delimiters): `*` and `?` match any characters, dots included.
globs_admit(globs, _) if count(regate.array_or_empty(globs)) == 0

globs_admit(globs, text) if {
	some g in regate.array_or_empty(globs)
	is_string(g)
	glob.match(g, null, text)
}

selector_admits(selector) if {
	every key, value in regate.object_or_empty(object.get(selector, "matchLabels", {})) {
		labels[key] == value
	}
	every expression in regate.array_or_empty(object.get(selector, "matchExpressions", [])) {
		expression_admits(expression)
	}
}

expression_admits(e) if {
	e.operator == "In"
	labels[e.key] in regate.array_or_empty(object.get(e, "values", []))
}

expression_admits(e) if {
	e.operator == "NotIn"
	not labels[e.key] in regate.array_or_empty(object.get(e, "values", []))
}

expression_admits(e) if {
	e.operator == "Exists"
	is_string(labels[e.key])
}

expression_admits(e) if {
	e.operator == "DoesNotExist"
	not is_string(labels[e.key])
}

applies(entry) if {
	regate.kind in kinds_of(entry)
	globs_admit(object.get(match_of(entry), "names", []), name)
	globs_admit(object.get(match_of(entry), "namespaces", []), namespace)
	selector_admits(regate.object_or_empty(object.get(match_of(entry), "labels", {})))
}

# --- the schema for this environment -----------------------------------------------------------

base_schema(entry) := regate.object_or_empty(object.get(entry, "schema", {}))

# RFC 7386: object.union merges objects recursively and lets the patch win elsewhere; a null in
# the patch (outside arrays, which are replaced whole) then removes its key.
merge_patch(target, patch) := json.remove(object.union(target, patch), null_paths(patch))

# The paths of the patch's nulls, outside arrays, down to six levels (`regate check` refuses a
# null deeper than that). No `walk`: regorus's bytecode compiler refuses it (and some
# short variable names, such as `v1` or `va`).
null_paths(patch) := array.concat(
	array.concat(
		[[key_one] | some key_one, val_one in patch; val_one == null],
		[[key_one, key_two] | some key_one, val_one in patch; is_object(val_one); some key_two, val_two in val_one; val_two == null],
	),
	array.concat(
		array.concat(
			[[key_one, key_two, key_three] |
				some key_one, val_one in patch; is_object(val_one)
				some key_two, val_two in val_one; is_object(val_two)
				some key_three, val_three in val_two; val_three == null
			],
			[[key_one, key_two, key_three, key_four] |
				some key_one, val_one in patch; is_object(val_one)
				some key_two, val_two in val_one; is_object(val_two)
				some key_three, val_three in val_two; is_object(val_three)
				some key_four, val_four in val_three; val_four == null
			],
		),
		array.concat(
			[[key_one, key_two, key_three, key_four, key_five] |
				some key_one, val_one in patch; is_object(val_one)
				some key_two, val_two in val_one; is_object(val_two)
				some key_three, val_three in val_two; is_object(val_three)
				some key_four, val_four in val_three; is_object(val_four)
				some key_five, val_five in val_four; val_five == null
			],
			[[key_one, key_two, key_three, key_four, key_five, key_six] |
				some key_one, val_one in patch; is_object(val_one)
				some key_two, val_two in val_one; is_object(val_two)
				some key_three, val_three in val_two; is_object(val_three)
				some key_four, val_four in val_three; is_object(val_four)
				some key_five, val_five in val_four; is_object(val_five)
				some key_six, val_six in val_five; val_six == null
			],
		),
	),
)

schema_of(entry) := merge_patch(base_schema(entry), patch) if {
	patch := object.get(entry, ["environments", env], null)
	is_object(patch)
} else := base_schema(entry)

entry_name(i, entry) := n if {
	n := entry.name
	is_string(n)
} else := sprintf("schemas[%d]", [i])

# --- values as the schema reads them -----------------------------------------------------------

declared_types(property) := {t | some t in property.type} if {
	is_array(property.type)
} else := {property.type} if {
	is_string(property.type)
} else := set()

# Kubernetes values are strings: "8080" is read as the integer 8080 when the property declares
# an integer; a string that does not parse stays a string, and `type` reports it.
coerce(property, raw) := to_number(raw) if {
	"integer" in declared_types(property)
	regex.match(`^-?[0-9]{1,15}$`, raw)
} else := to_number(raw) if {
	"number" in declared_types(property)
	regex.match(`^-?([0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15})([eE][-+]?[0-9]{1,3})?$`, raw)
} else := true if {
	"boolean" in declared_types(property)
	raw == "true"
} else := false if {
	"boolean" in declared_types(property)
	raw == "false"
} else := raw

properties_of(schema) := regate.object_or_empty(object.get(schema, "properties", {}))

# The schema a key's value is read with: its property, else additionalProperties.
property_of(schema, key) := p if {
	p := properties_of(schema)[key]
	is_object(p)
} else := p if {
	not properties_of(schema)[key]
	p := object.get(schema, "additionalProperties", {})
	is_object(p)
} else := {}

document(schema) := {key: coerce(property_of(schema, key), raw) | some key, raw in values}

# The validator's verdict only: its message may quote the value. (Read positively: a value
# read only under `not` would keep the policy off regorus's bytecode.)
invalid(instance, schema) if {
	[ok, _] := json.match_schema(instance, schema)
	ok == false
}

# `format` is an annotation in draft 2020-12: the validator asserts it in its draft-07 mode.
keyword_schema(keyword, rule) := {"$schema": "http://json-schema.org/draft-07/schema#", "format": rule} if {
	keyword == "format"
} else := {keyword: rule}

value_keywords := [
	"type", "enum", "const", "pattern", "format", "minLength", "maxLength",
	"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
	"anyOf", "oneOf", "allOf", "not",
]

# --- what a broken rule says (never the value) -------------------------------------------------

shown(x) := x if is_string(x)

else := sprintf("%v", [x])

listed(xs) := concat(", ", [shown(x) | some x in regate.array_or_empty(xs)])

type_phrase(t) := "an integer" if {
	t == "integer"
} else := "a number" if {
	t == "number"
} else := "true or false" if {
	t == "boolean"
} else := "a string" if {
	t == "string"
} else := sprintf("of type %v", [t])

# What a broken keyword of a property says. (One definition with `else`: regorus's bytecode
# would not report two definitions that disagree.)
rule_text(keyword, rule) := sprintf("must be %s", [type_phrase(rule)]) if {
	keyword == "type"
	is_string(rule)
} else := sprintf("must be of one of the types %s", [listed(rule)]) if {
	keyword == "type"
} else := sprintf("must be one of %s", [listed(rule)]) if {
	keyword == "enum"
} else := sprintf("must be %s", [shown(rule)]) if {
	keyword == "const"
} else := sprintf("does not match the required format %s", [shown(rule)]) if {
	keyword == "pattern"
} else := sprintf("is not a valid %s", [shown(rule)]) if {
	keyword == "format"
} else := sprintf("is shorter than %v characters", [rule]) if {
	keyword == "minLength"
} else := sprintf("is longer than %v characters", [rule]) if {
	keyword == "maxLength"
} else := sprintf("must be at least %v", [rule]) if {
	keyword == "minimum"
} else := sprintf("must be at most %v", [rule]) if {
	keyword == "maximum"
} else := sprintf("must be greater than %v", [rule]) if {
	keyword == "exclusiveMinimum"
} else := sprintf("must be less than %v", [rule]) if {
	keyword == "exclusiveMaximum"
} else := "matches none of its allowed alternatives (anyOf)" if {
	keyword == "anyOf"
} else := "must match exactly one of its alternatives (oneOf)" if {
	keyword == "oneOf"
} else := "breaks one of its rules (allOf)" if {
	keyword == "allOf"
} else := "matches a schema it must not match (not)"

# Alternatives that only require keys read as "at least one of these keys".
required_only(alternatives) if {
	count(regate.array_or_empty(alternatives)) > 0
	every a in alternatives {
		is_object(a)
		object.keys(a) == {"required"}
	}
}

alternatives_text(alternatives) := sprintf("at least one of %s must be set", [listed(keys)]) if {
	required_only(alternatives)
	keys := [k | some a in alternatives; some k in regate.array_or_empty(a.required)]
} else := "the keys match none of the allowed alternatives (anyOf)"

# --- rule_findings: {"entry": i, "msg": ..., "path": ...} -----------------------------------------

# A present key breaks a rule of its property.
rule_findings contains {"entry": i, "msg": msg, "path": path} if {
	some i, entry in entries
	applies(entry)
	schema := schema_of(entry)
	some key, raw in values
	property := properties_of(schema)[key]
	is_object(property)
	value := coerce(property, raw)
	some keyword in value_keywords
	some k, rule in property
	k == keyword
	invalid(value, keyword_schema(keyword, rule))
	msg := sprintf("%s: %s %s in %s", [entry_name(i, entry), key, rule_text(keyword, rule), env])
	path := sprintf("%s[%s]", [sources[key], key])
}

# A required key is missing.
rule_findings contains {"entry": i, "msg": msg, "path": sprintf("data[%s]", [key])} if {
	some i, entry in entries
	applies(entry)
	some key in regate.array_or_empty(object.get(schema_of(entry), "required", []))
	is_string(key)
	not values[key]
	msg := sprintf("%s: %s is required in %s", [entry_name(i, entry), key, env])
}

# A key is set without the keys it depends on.
rule_findings contains {"entry": i, "msg": msg, "path": sprintf("data[%s]", [needed])} if {
	some i, entry in entries
	applies(entry)
	some key, needs in regate.object_or_empty(object.get(schema_of(entry), "dependentRequired", {}))
	values[key]
	some needed in regate.array_or_empty(needs)
	not values[needed]
	msg := sprintf("%s: %s is required when %s is set in %s", [entry_name(i, entry), needed, key, env])
}

# A key the schema does not name, when others are forbidden.
rule_findings contains {"entry": i, "msg": msg, "path": sprintf("%s[%s]", [sources[key], key])} if {
	some i, entry in entries
	applies(entry)
	schema := schema_of(entry)
	object.get(schema, "additionalProperties", true) == false
	some key, _ in values
	not properties_of(schema)[key]
	msg := sprintf("%s: %s is not an allowed key in %s", [entry_name(i, entry), key, env])
}

# A key the schema does not name breaks the schema given for such keys.
rule_findings contains {"entry": i, "msg": msg, "path": sprintf("%s[%s]", [sources[key], key])} if {
	some i, entry in entries
	applies(entry)
	schema := schema_of(entry)
	other := object.get(schema, "additionalProperties", true)
	is_object(other)
	some key, raw in values
	not properties_of(schema)[key]
	invalid(coerce(other, raw), other)
	msg := sprintf("%s: %s breaks the rules for keys not listed in properties in %s", [entry_name(i, entry), key, env])
}

# Rules over the whole map (anyOf, oneOf, allOf, not at the top of the schema).
rule_findings contains {"entry": i, "msg": msg, "path": "data"} if {
	some i, entry in entries
	applies(entry)
	schema := schema_of(entry)
	some keyword in ["anyOf", "oneOf", "allOf", "not"]
	some k, rule in schema
	k == keyword
	invalid(document(schema), {keyword: rule})
	msg := sprintf("%s: %s in %s", [entry_name(i, entry), whole_text(keyword, rule), env])
}

whole_text(keyword, rule) := alternatives_text(rule) if {
	keyword == "anyOf"
} else := "the keys must match exactly one of the alternatives (oneOf)" if {
	keyword == "oneOf"
} else := "the keys break one of the rules (allOf)" if {
	keyword == "allOf"
} else := "the keys match a schema they must not match (not)"

flagged_by_rules contains f.entry if some f in rule_findings

# Whatever the validator refuses that no rule above names (a nested keyword): one violation that
# names the entry, and nothing of the validator's own message, which may quote a value.
fallback_findings contains {"entry": i, "msg": msg, "path": "data"} if {
	some i, entry in entries
	applies(entry)
	not i in flagged_by_rules
	schema := schema_of(entry)
	invalid(document(schema), schema)
	msg := sprintf("%s: the keys do not satisfy the schema in %s", [entry_name(i, entry), env])
}

deny contains {"msg": f.msg, "path": f.path} if some f in rule_findings

deny contains {"msg": f.msg, "path": f.path} if some f in fallback_findings
