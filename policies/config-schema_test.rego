package regate.policies.config_schema_test

import data.regate.lib.testing
import data.regate.policies.config_schema as policy
import rego.v1

# Secret values carry this marker: no message may contain it.
canary := "CANARY-7f3a"

app_schema := {
	"name": "app",
	"match": {"kinds": ["ConfigMap"], "names": ["app-*"]},
	"schema": {
		"type": "object",
		"required": ["LOG_LEVEL"],
		"properties": {
			"LOG_LEVEL": {"enum": ["debug", "info", "warn", "error"]},
			"PORT": {"type": "integer", "minimum": 1, "maximum": 65535},
			"RATIO": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
			"DEBUG_MODE": {"type": "boolean"},
			"REGION": {"const": "eu-west-1"},
			"CALLBACK_URL": {"format": "uri"},
			"ADMIN_EMAIL": {"format": "email"},
			"SERVICE_NAME": {"pattern": "^[a-z][a-z0-9-]*$", "minLength": 3, "maxLength": 12},
			"MODE": {"anyOf": [{"const": "a"}, {"const": "b"}]},
			"TIER": {"oneOf": [{"pattern": "^gold"}, {"pattern": "^g"}]},
			"SIZE": {"allOf": [{"minLength": 2}, {"maxLength": 4}]},
			"NAME": {"not": {"const": "root"}},
			"TLS_CERT": {},
			"TLS_KEY": {},
		},
		"dependentRequired": {"TLS_CERT": ["TLS_KEY"]},
	},
	"environments": {"production": {
		"properties": {
			"LOG_LEVEL": {"enum": ["warn", "error"]},
			"DEBUG_MODE": {"const": false},
			"TLS_KEY": null,
		},
		"required": ["LOG_LEVEL", "PORT"],
	}},
}

secret_schema := {
	"name": "app-secrets",
	"match": {"kinds": ["Secret"]},
	"schema": {
		"type": "object",
		"properties": {
			"JWT_SECRET": {"minLength": 32},
			"DATABASE_URL": {"pattern": "^postgres(ql)?://"},
			"POOL": {"type": "integer", "maximum": 10},
			"LEVEL": {"enum": ["a", "b"]},
			"URL": {"format": "uri"},
		},
		"anyOf": [{"required": ["OPENAI_API_KEY"]}, {"required": ["ANTHROPIC_API_KEY"]}],
		"additionalProperties": {"maxLength": 200},
	},
	"environments": {"production": {"properties": {"JWT_SECRET": {"minLength": 64}}}},
}

params := {"schemas": [app_schema, secret_schema]}

configmap(name, kv) := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": kv}

secret(kv) := {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secrets", "namespace": "shop"}, "stringData": kv}

deny_in(env, obj, p) := result if {
	# The API server sends the object's namespace as the request's.
	review := object.union(testing.create(obj), {"request": {"namespace": object.get(obj, ["metadata", "namespace"], "default")}})
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as p
}

messages(env, obj) := {v.msg | some v in deny_in(env, obj, params)}

ok_data := {"LOG_LEVEL": "warn", "PORT": "8080"}

cm(extra) := configmap("app-web", object.union(ok_data, extra))

# --- nothing configured, nothing matched ---------------------------------------------------------

test_does_nothing_unconfigured if {
	count(deny_in("production", cm({"PORT": "x"}), {})) == 0
}

test_matched_by_nothing if {
	count(deny_in("production", configmap("other", {"PORT": "x"}), params)) == 0
}

test_valid_configmap if {
	count(messages("production", cm({"RATIO": "0.5", "DEBUG_MODE": "false", "REGION": "eu-west-1"}))) == 0
}

# --- each keyword on a ConfigMap -----------------------------------------------------------------

test_required if {
	messages("development", configmap("app-web", {})) == {"app: LOG_LEVEL is required in development"}
}

test_enum_merge_patch_narrows_in_production if {
	messages("production", cm({"LOG_LEVEL": "debug"})) == {"app: LOG_LEVEL must be one of warn, error in production"}
	count(messages("development", cm({"LOG_LEVEL": "debug"}))) == 0
}

test_merge_patch_adds_required if {
	messages("production", configmap("app-web", {"LOG_LEVEL": "warn"})) == {"app: PORT is required in production"}
	count(messages("staging", configmap("app-web", {"LOG_LEVEL": "warn"}))) == 0
}

test_merge_patch_null_removes_a_property if {
	# TLS_KEY is removed from properties in production; the schema has no additionalProperties.
	count(messages("production", cm({"TLS_KEY": "x", "TLS_CERT": "y"}))) == 0
}

test_type_integer_coerced if {
	count(messages("production", cm({"PORT": "443"}))) == 0
	messages("production", cm({"PORT": "abc"})) == {"app: PORT must be an integer in production"}
	messages("production", cm({"PORT": "1.5"})) == {"app: PORT must be an integer in production"}
}

test_minimum_maximum_on_coerced_integers if {
	messages("staging", cm({"PORT": "0"})) == {"app: PORT must be at least 1 in staging"}
	messages("staging", cm({"PORT": "70000"})) == {"app: PORT must be at most 65535 in staging"}
}

test_number_exclusive_bounds if {
	messages("staging", cm({"RATIO": "0"})) == {"app: RATIO must be greater than 0 in staging"}
	messages("staging", cm({"RATIO": "1"})) == {"app: RATIO must be less than 1 in staging"}
	messages("staging", cm({"RATIO": "half"})) == {"app: RATIO must be a number in staging"}
}

test_boolean_coerced_and_const_from_patch if {
	count(messages("development", cm({"DEBUG_MODE": "true"}))) == 0
	messages("development", cm({"DEBUG_MODE": "yes"})) == {"app: DEBUG_MODE must be true or false in development"}
	messages("production", cm({"DEBUG_MODE": "true"})) == {"app: DEBUG_MODE must be false in production"}
}

test_const if {
	messages("staging", cm({"REGION": "us-east-1"})) == {"app: REGION must be eu-west-1 in staging"}
}

test_format_uri_and_email if {
	count(messages("staging", cm({"CALLBACK_URL": "https://a.example.com/cb", "ADMIN_EMAIL": "ops@example.com"}))) == 0
	messages("staging", cm({"CALLBACK_URL": "not a uri"})) == {"app: CALLBACK_URL is not a valid uri in staging"}
	messages("staging", cm({"ADMIN_EMAIL": "nobody"})) == {"app: ADMIN_EMAIL is not a valid email in staging"}
}

test_pattern_and_lengths if {
	messages("staging", cm({"SERVICE_NAME": "Web"})) == {"app: SERVICE_NAME does not match the required format ^[a-z][a-z0-9-]*$ in staging"}
	messages("staging", cm({"SERVICE_NAME": "ab"})) == {"app: SERVICE_NAME is shorter than 3 characters in staging"}
	messages("staging", cm({"SERVICE_NAME": "abcdefghijklm"})) == {"app: SERVICE_NAME is longer than 12 characters in staging"}
}

test_combinators_on_a_key if {
	messages("staging", cm({"MODE": "c"})) == {"app: MODE matches none of its allowed alternatives (anyOf) in staging"}
	messages("staging", cm({"TIER": "gold"})) == {"app: TIER must match exactly one of its alternatives (oneOf) in staging"}
	count(messages("staging", cm({"TIER": "green"}))) == 0
	messages("staging", cm({"SIZE": "large"})) == {"app: SIZE breaks one of its rules (allOf) in staging"}
	messages("staging", cm({"NAME": "root"})) == {"app: NAME matches a schema it must not match (not) in staging"}
}

test_dependent_required if {
	messages("staging", cm({"TLS_CERT": "c"})) == {"app: TLS_KEY is required when TLS_CERT is set in staging"}
}

test_one_violation_per_broken_rule_with_path if {
	d := deny_in("production", configmap("app-web", {"LOG_LEVEL": "debug", "PORT": "0", "SERVICE_NAME": "X"}), params)
	d == {
		{"msg": "app: LOG_LEVEL must be one of warn, error in production", "path": "data[LOG_LEVEL]"},
		{"msg": "app: PORT must be at least 1 in production", "path": "data[PORT]"},
		{"msg": "app: SERVICE_NAME does not match the required format ^[a-z][a-z0-9-]*$ in production", "path": "data[SERVICE_NAME]"},
		{"msg": "app: SERVICE_NAME is shorter than 3 characters in production", "path": "data[SERVICE_NAME]"},
	}
}

# --- selectors -------------------------------------------------------------------------------------

selected(m) := {"schemas": [{"name": "sel", "match": m, "schema": {"required": ["X"]}}]}

fires(m, obj) if count(deny_in("staging", obj, selected(m))) == 1

labelled(labels) := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web.conf", "namespace": "shop-prod", "labels": labels}, "data": {}}

test_selector_by_name_glob_across_dots if {
	fires({"names": ["web*"]}, labelled({}))
	not fires({"names": ["api*"]}, labelled({}))
}

test_selector_by_namespace if {
	fires({"namespaces": ["shop-*"]}, labelled({}))
	not fires({"namespaces": ["billing"]}, labelled({}))
}

test_selector_by_kind if {
	fires({"kinds": ["ConfigMap"]}, labelled({}))
	not fires({"kinds": ["Secret"]}, labelled({}))
	fires({}, secret({}))
}

test_selector_by_labels if {
	fires({"labels": {"matchLabels": {"app": "web"}}}, labelled({"app": "web"}))
	not fires({"labels": {"matchLabels": {"app": "web"}}}, labelled({"app": "api"}))
	fires({"labels": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}, labelled({"tier": "b"}))
	not fires({"labels": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}}, labelled({}))
	fires({"labels": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}}, labelled({}))
	fires({"labels": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}, labelled({"tier": ""}))
	not fires({"labels": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}, labelled({"tier": "x"}))
}

test_several_matching_entries_each_apply if {
	p := {"schemas": [
		{"name": "one", "schema": {"required": ["A"]}},
		{"name": "two", "match": {"names": ["web*"]}, "schema": {"required": ["B"]}},
	]}
	{v.msg | some v in deny_in("staging", labelled({}), p)} == {"one: A is required in staging", "two: B is required in staging"}
}

test_unnamed_entry_named_by_index if {
	{v.msg | some v in deny_in("staging", labelled({}), {"schemas": [{"schema": {"required": ["A"]}}]})} == {"schemas[0]: A is required in staging"}
}

# --- Secrets: decoded data and stringData, never a value ------------------------------------------

jwt(n) := substring(concat("", [canary, "-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"]), 0, n)

secret_ok := {"OPENAI_API_KEY": concat("", [canary, "-key"])}

test_secret_min_length_per_environment if {
	s := secret(object.union(secret_ok, {"JWT_SECRET": jwt(40)}))
	count(messages("development", s)) == 0
	messages("production", s) == {"app-secrets: JWT_SECRET is shorter than 64 characters in production"}
}

test_secret_decoded_data if {
	s := {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {
		"JWT_SECRET": base64.encode(jwt(20)),
		"OPENAI_API_KEY": base64.encode(canary),
	}}
	deny_in("staging", s, params) == {{"msg": "app-secrets: JWT_SECRET is shorter than 32 characters in staging", "path": "data[JWT_SECRET]"}}
}

test_secret_path_names_string_data if {
	deny_in("staging", secret(object.union(secret_ok, {"JWT_SECRET": jwt(5)})), params) == {{"msg": "app-secrets: JWT_SECRET is shorter than 32 characters in staging", "path": "stringData[JWT_SECRET]"}}
}

test_secret_at_least_one_key if {
	messages("staging", secret({"JWT_SECRET": jwt(40)})) == {"app-secrets: at least one of OPENAI_API_KEY, ANTHROPIC_API_KEY must be set in staging"}
}

# Every kind of failing rule on a Secret: no message holds the canary.
test_secret_messages_never_hold_a_value if {
	s := secret({
		"JWT_SECRET": jwt(12),
		"DATABASE_URL": concat("", ["mysql://", canary]),
		"POOL": concat("", ["12", canary]),
		"LEVEL": canary,
		"URL": concat("", [canary, " not a uri"]),
		"EXTRA": concat("", [canary, testing.repeat("x", 210)]),
	})
	m := messages("production", s)
	count(m) == 7
	every msg in m {
		not contains(msg, canary)
		not contains(msg, "CANARY")
	}
}

test_secret_number_over_range_without_value if {
	messages("staging", secret(object.union(secret_ok, {"POOL": "11"}))) == {"app-secrets: POOL must be at most 10 in staging"}
}

# --- the safety net: a nested rule the keyword checks do not name ---------------------------------

test_nested_failure_named_without_validator_text if {
	p := {"schemas": [{"name": "nested", "schema": {"properties": {"A": {"anyOf": [{"not": {"minLength": 1}}]}}}}]}
	{v.msg | some v in deny_in("staging", configmap("x", {"A": canary}), p)} == {"nested: A matches none of its allowed alternatives (anyOf) in staging"}
}

test_merge_patch_rfc7386 if {
	policy.merge_patch({"a": {"b": 1, "c": 2}, "d": [1, 2]}, {"a": {"b": null, "e": 3}, "d": [null]}) == {"a": {"c": 2, "e": 3}, "d": [null]}
	policy.merge_patch({"a": "x"}, {"a": {"b": null, "c": 1}}) == {"a": {"c": 1}}
}

# A schema the keyword checks do not take apart (here `type` of the whole map): one violation
# naming the entry, and nothing of the validator's own message.
test_unnamed_failure_falls_back_to_one_message if {
	p := {"schemas": [{"name": "shape", "schema": {"type": "array"}}]}
	deny_in("staging", configmap("x", {"A": canary}), p) == {{"msg": "shape: the keys do not satisfy the schema in staging", "path": "data"}}
}
