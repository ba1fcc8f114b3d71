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

# key -> value (a string), and key -> where it is written.
values[key] := regate.str(raw) if {
	regate.kind == "ConfigMap"
	some key, raw in regate.object_or_empty(object.get(regate.obj, "data", {}))
	regate.str(raw)
}

values[entry.key] := entry.text if {
	some entry in secret.entries
	entry.valid
}

sources[key] := "data" if {
	regate.kind == "ConfigMap"
	some key, _ in values
}

sources[entry.key] := entry.source if {
	some entry in secret.entries
	entry.valid
}

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

null_paths(patch) := [path |
	walk(patch, [path, value])
	value == null
	count([k | some k in path; not is_string(k)]) == 0
]

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

valid(instance, schema) if {
	[ok, _] := json.match_schema(instance, schema)
	ok == true
}

# `format` is an annotation in draft 2020-12: the validator asserts it in its draft-07 mode.
keyword_schema("format", rule) := {"$schema": "http://json-schema.org/draft-07/schema#", "format": rule}

keyword_schema(keyword, rule) := {keyword: rule} if keyword != "format"

value_keywords := [
	"type", "enum", "const", "pattern", "format", "minLength", "maxLength",
	"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
	"anyOf", "oneOf", "allOf", "not",
]

# --- what a broken rule says (never the value) -------------------------------------------------

shown(x) := x if is_string(x)

else := sprintf("%v", [x])

listed(xs) := concat(", ", [shown(x) | some x in regate.array_or_empty(xs)])

type_phrase("integer") := "an integer"

type_phrase("number") := "a number"

type_phrase("boolean") := "true or false"

type_phrase("string") := "a string"

type_phrase(t) := sprintf("of type %v", [t]) if not t in {"integer", "number", "boolean", "string"}

rule_text("type", t) := sprintf("must be %s", [type_phrase(t)]) if is_string(t)

rule_text("type", t) := sprintf("must be of one of the types %s", [listed(t)]) if is_array(t)

rule_text("enum", rule) := sprintf("must be one of %s", [listed(rule)])

rule_text("const", rule) := sprintf("must be %s", [shown(rule)])

rule_text("pattern", rule) := sprintf("does not match the required format %s", [shown(rule)])

rule_text("format", rule) := sprintf("is not a valid %s", [shown(rule)])

rule_text("minLength", rule) := sprintf("is shorter than %v characters", [rule])

rule_text("maxLength", rule) := sprintf("is longer than %v characters", [rule])

rule_text("minimum", rule) := sprintf("must be at least %v", [rule])

rule_text("maximum", rule) := sprintf("must be at most %v", [rule])

rule_text("exclusiveMinimum", rule) := sprintf("must be greater than %v", [rule])

rule_text("exclusiveMaximum", rule) := sprintf("must be less than %v", [rule])

rule_text("anyOf", _) := "matches none of its allowed alternatives (anyOf)"

rule_text("oneOf", _) := "must match exactly one of its alternatives (oneOf)"

rule_text("allOf", _) := "breaks one of its rules (allOf)"

rule_text("not", _) := "matches a schema it must not match (not)"

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
	not valid(value, keyword_schema(keyword, rule))
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
	not valid(coerce(other, raw), other)
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
	not valid(document(schema), {keyword: rule})
	msg := sprintf("%s: %s in %s", [entry_name(i, entry), whole_text(keyword, rule), env])
}

whole_text("anyOf", rule) := alternatives_text(rule)

whole_text("oneOf", _) := "the keys must match exactly one of the alternatives (oneOf)"

whole_text("allOf", _) := "the keys break one of the rules (allOf)"

whole_text("not", _) := "the keys match a schema they must not match (not)"

flagged_by_rules contains f.entry if some f in rule_findings

# Whatever the validator refuses that no rule above names (a nested keyword): one violation that
# names the entry, and nothing of the validator's own message, which may quote a value.
fallback_findings contains {"entry": i, "msg": msg, "path": "data"} if {
	some i, entry in entries
	applies(entry)
	not i in flagged_by_rules
	schema := schema_of(entry)
	not valid(document(schema), schema)
	msg := sprintf("%s: the keys do not satisfy the schema in %s", [entry_name(i, entry), env])
}

deny contains {"msg": f.msg, "path": f.path} if some f in rule_findings

deny contains {"msg": f.msg, "path": f.path} if some f in fallback_findings
