package regate.policies.configmap_production_flags_test

import data.regate.lib.testing
import data.regate.policies.configmap_production_flags as policy
import rego.v1

configmap(d) := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "default"}, "data": d}

deny_in(env, review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as {}
}

deny(review) := deny_in("production", review)

msg(key, value) := sprintf("key %q is %q; production must not enable debug or profiling settings", [key, value])

test_debug_flags_denied_in_production if {
	every key in ["DEBUG_MODE", "DEBUG", "ENABLE_PROFILING"] {
		every value in ["true", "1", "yes"] {
			deny(testing.create(configmap({key: value}))) == {{"msg": msg(key, value), "path": sprintf("data[%s]", [key])}}
		}
	}
}

test_flag_values_any_case_and_trimmed if {
	every value in ["TRUE", "True", " yes ", "YES\n", "\t1"] {
		testing.msgs(deny(testing.create(configmap({"DEBUG_MODE": value})))) == {msg("DEBUG_MODE", trim_space(value))}
	}
}

test_verbose_log_levels_denied_in_production if {
	every value in ["debug", "trace", "DEBUG", " Trace "] {
		deny(testing.create(configmap({"LOG_LEVEL": value}))) == {{"msg": msg("LOG_LEVEL", trim_space(value)), "path": "data[LOG_LEVEL]"}}
	}
}

test_safe_values_allowed if {
	r := testing.create(configmap({
		"DEBUG_MODE": "false",
		"DEBUG": "0",
		"ENABLE_PROFILING": "no",
		"LOG_LEVEL": "info",
	}))
	count(deny(r)) == 0
	every value in ["warning", "warn", "error", "", "debugging", "tracing"] {
		count(deny(testing.create(configmap({"LOG_LEVEL": value})))) == 0
	}
	every value in ["", "on", "enabled", "y", "truee", "2"] {
		count(deny(testing.create(configmap({"DEBUG": value})))) == 0
	}
}

test_log_level_values_not_flags if {
	# LOG_LEVEL is judged by its own values only, the flags by theirs.
	count(deny(testing.create(configmap({"LOG_LEVEL": "true", "DEBUG": "debug"})))) == 0
}

test_key_names_match_exactly if {
	r := testing.create(configmap({
		"debug_mode": "true",
		"Debug": "true",
		"APP_DEBUG": "true",
		"DEBUG_MODE_ENABLED": "true",
		"log_level": "debug",
		"LOG-LEVEL": "trace",
	}))
	count(deny(r)) == 0
}

test_allowed_in_development_and_staging if {
	r := testing.create(configmap({"DEBUG_MODE": "true", "LOG_LEVEL": "debug", "ENABLE_PROFILING": "yes"}))
	count(deny_in("development", r)) == 0
	count(deny_in("staging", r)) == 0
	count(deny_in("production", r)) == 3
}

test_every_offending_key_reported if {
	r := testing.create(configmap({"DEBUG_MODE": "true", "DEBUG": "1", "ENABLE_PROFILING": "yes", "LOG_LEVEL": "trace", "OTHER": "true"}))
	testing.msgs(deny(r)) == {msg("DEBUG_MODE", "true"), msg("DEBUG", "1"), msg("ENABLE_PROFILING", "yes"), msg("LOG_LEVEL", "trace")}
}

test_unquoted_manifest_values if {
	# A manifest may hold `DEBUG: true` or `DEBUG: 1` unquoted.
	testing.msgs(deny(testing.create(configmap({"DEBUG": true, "ENABLE_PROFILING": 1, "DEBUG_MODE": false})))) == {msg("DEBUG", "true"), msg("ENABLE_PROFILING", "1")}
}

test_seed_production_settings if {
	# The seed's per-environment table: debug/true in development, warning/false in production.
	count(deny_in("development", testing.create(configmap({"LOG_LEVEL": "debug", "DEBUG_MODE": "true"})))) == 0
	count(deny(testing.create(configmap({"LOG_LEVEL": "warning", "DEBUG_MODE": "false"})))) == 0
}

test_update_judged_delete_and_other_kinds_not if {
	count(deny(testing.update(configmap({"DEBUG": "true"})))) == 1
	count(deny(testing.delete(configmap({"DEBUG": "true"})))) == 0
	s := {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"DEBUG": "true"}}
	count(deny(testing.create(s))) == 0
}

test_binary_data_not_judged if {
	r := testing.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "binaryData": {"DEBUG": "dHJ1ZQ=="}})
	count(deny(r)) == 0
}
