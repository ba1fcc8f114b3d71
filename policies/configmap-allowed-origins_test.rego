package regate.policies.configmap_allowed_origins_test

import data.regate.lib.testing
import data.regate.policies.configmap_allowed_origins as policy
import rego.v1

envs := ["development", "staging", "production"]

params := {"keys": ["CORS_ALLOWED_ORIGINS", "WS_ALLOWED_ORIGINS"]}

configmap(d) := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chat-config", "namespace": "default"}, "data": d}

cors(v) := testing.create(configmap({"CORS_ALLOWED_ORIGINS": v}))

ws(v) := testing.create(configmap({"WS_ALLOWED_ORIGINS": v}))

deny(env, review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as params
}

warn(env, review) := result if {
	result := policy.warn with input as review
		with data.regate.environment as env
		with data.regate.parameters as params
}

# The outcome of a review in an environment: "deny", "warn" or "allow".
outcome(env, review) := "deny" if {
	count(deny(env, review)) > 0
} else := "warn" if {
	count(warn(env, review)) > 0
} else := "allow"

# outcomes(v): the outcome of CORS_ALLOWED_ORIGINS = v in development, staging, production.
outcomes(v) := [outcome(env, cors(v)) | some env in envs]

invalid_msg(key, entry) := sprintf("key %q: %q is not a valid origin (scheme://host[:port] with scheme http or https, and no path)", [key, entry])

# --- row: not a valid origin, or null: deny / deny / deny ----------------------------------

test_invalid_origins_denied_everywhere if {
	every entry in [
		"example.com",
		"//example.com",
		"ftp://example.com",
		"ws://chat.example.com",
		"wss://chat.example.com",
		"https://",
		"https://example.com/",
		"https://example.com/path",
		"https://example.com?x=1",
		"https://example.com#top",
		"https://user@example.com",
		"https://user:pass@example.com",
		"https://exa mple.com",
		"https://ex_ample.com",
		"https://-example.com",
		"https://example-.com",
		"https://example..com",
		"https://example.com.",
		"https://example.com:",
		"https://example.com:0",
		"https://example.com:65536",
		"https://example.com:08080",
		"https://example.com:https",
		"https://999.1.1.1",
		"https://1.2.3",
		"https://01.2.3.4",
		"https://::1",
		"https://[::1",
		"https://[zz::1]",
		"https://[127.0.0.1]",
		"https://*example.com",
		"https://a.*.example.com",
		"https://*.*.example.com",
		"https://*.10.0.0.1",
		"https://*.[::1]",
		"*.example.com",
		"https://exämple.com",
	] {
		outcomes(entry) == ["deny", "deny", "deny"]
		every env in envs {
			deny(env, cors(entry)) == {{"msg": invalid_msg("CORS_ALLOWED_ORIGINS", entry), "path": "data[CORS_ALLOWED_ORIGINS]"}}
		}
	}
}

test_null_denied_everywhere_in_any_case if {
	every entry in ["null", "NULL", "Null"] {
		outcomes(entry) == ["deny", "deny", "deny"]
		every env in envs {
			deny(env, cors(entry)) == {{
				"msg": sprintf("key \"CORS_ALLOWED_ORIGINS\": the %q origin must not be allowed (any page can send it)", [entry]),
				"path": "data[CORS_ALLOWED_ORIGINS]",
			}}
		}
	}
}

test_invalid_entry_among_valid_ones_denied if {
	deny("development", cors("https://a.example.com, not-an-origin ,https://b.example.com")) == {{
		"msg": invalid_msg("CORS_ALLOWED_ORIGINS", "not-an-origin"),
		"path": "data[CORS_ALLOWED_ORIGINS]",
	}}
}

# --- row: list with no entries: warn / deny / deny -----------------------------------------

test_empty_list_warned_in_development_denied_elsewhere if {
	every v in ["", " ", "\n", ",", " , ,, ", ",,,"] {
		outcomes(v) == ["warn", "deny", "deny"]
	}
}

test_empty_list_message if {
	m := {"msg": "key \"WS_ALLOWED_ORIGINS\" lists no origins, which allows every origin; list the allowed origins explicitly", "path": "data[WS_ALLOWED_ORIGINS]"}
	warn("development", ws("")) == {m}
	count(deny("development", ws(""))) == 0
	deny("staging", ws("")) == {m}
	deny("production", ws("")) == {m}
}

test_null_value_is_an_empty_list if {
	r := testing.create(configmap({"WS_ALLOWED_ORIGINS": null}))
	[outcome(env, r) | some env in envs] == ["warn", "deny", "deny"]
}

# --- row: "*": warn / deny / deny ----------------------------------------------------------

test_star_warned_in_development_denied_elsewhere if {
	every v in ["*", " * ", "https://app.example.com,*"] {
		outcomes(v) == ["warn", "deny", "deny"]
	}
}

test_star_message if {
	m := {"msg": "key \"CORS_ALLOWED_ORIGINS\" allows every origin (\"*\"); list the allowed origins explicitly", "path": "data[CORS_ALLOWED_ORIGINS]"}
	warn("development", cors("*")) == {m}
	deny("production", cors("*")) == {m}
}

# --- row: http:// origin: allowed / deny / deny --------------------------------------------

test_http_origin_allowed_in_development_denied_elsewhere if {
	every v in ["http://app.example.com", "http://app.example.com:8080", "HTTP://app.example.com", "http://10.1.2.3"] {
		outcomes(v) == ["allow", "deny", "deny"]
	}
}

test_http_message if {
	deny("staging", cors("http://app.example.com")) == {{
		"msg": "key \"CORS_ALLOWED_ORIGINS\": origin \"http://app.example.com\" uses http; staging requires https",
		"path": "data[CORS_ALLOWED_ORIGINS]",
	}}
}

# --- row: localhost: allowed / deny / deny -------------------------------------------------

test_localhost_allowed_in_development_denied_elsewhere if {
	every v in [
		"https://localhost",
		"https://localhost:3000",
		"https://LOCALHOST:3000",
		"https://127.0.0.1",
		"https://127.0.0.1:8080",
		"https://[::1]",
		"https://[::1]:8443",
		"https://[0:0:0:0:0:0:0:1]",
	] {
		outcomes(v) == ["allow", "deny", "deny"]
	}
}

test_localhost_message if {
	deny("production", cors("https://localhost:3000")) == {{
		"msg": "key \"CORS_ALLOWED_ORIGINS\": origin \"https://localhost:3000\" is a localhost origin, allowed in development only",
		"path": "data[CORS_ALLOWED_ORIGINS]",
	}}
}

test_seed_development_origins if {
	# The seed's development ConfigMap: http and localhost both.
	v := "http://localhost:3000,http://localhost:8080"
	outcomes(v) == ["allow", "deny", "deny"]
	count(deny("staging", cors(v))) == 4
}

# --- row: wildcard subdomain: allowed / allowed / deny -------------------------------------

test_wildcard_subdomain_denied_in_production_only if {
	every v in ["https://*.example.com", "https://*.example.com:8443", "https://*.app.example.com"] {
		outcomes(v) == ["allow", "allow", "deny"]
	}
}

test_wildcard_message if {
	deny("production", cors("https://*.example.com")) == {{
		"msg": "key \"CORS_ALLOWED_ORIGINS\": origin \"https://*.example.com\" allows every subdomain; production requires exact origins",
		"path": "data[CORS_ALLOWED_ORIGINS]",
	}}
}

test_http_wildcard_denied_for_both_in_production if {
	testing.msgs(deny("production", cors("http://*.example.com"))) == {
		"key \"CORS_ALLOWED_ORIGINS\": origin \"http://*.example.com\" uses http; production requires https",
		"key \"CORS_ALLOWED_ORIGINS\": origin \"http://*.example.com\" allows every subdomain; production requires exact origins",
	}
}

# --- valid, exact https origins: allowed everywhere ----------------------------------------

test_exact_https_origins_allowed_everywhere if {
	every v in [
		"https://app.example.com",
		"https://admin.yourdomain.com,https://dashboard.yourdomain.com",
		"https://chat.example.com, https://app.example.com , https://mobile.example.com,",
		"https://app.example.com:8443",
		"https://App.Example.COM",
		"HTTPS://app.example.com",
		"https://10.0.0.1",
		"https://10.0.0.1:443",
		"https://[2001:db8::1]",
		"https://[2001:db8::1]:8443",
		"https://intranet",
		"https://xn--bcher-kva.example",
		"https://a-b.c-d.example.com:1",
		"https://example.com:65535",
	] {
		outcomes(v) == ["allow", "allow", "allow"]
	}
}

test_seed_production_origins_allowed if {
	r := testing.create(configmap({
		"CORS_ALLOWED_ORIGINS": "https://admin.example.com,https://dashboard.example.com",
		"WS_ALLOWED_ORIGINS": "https://chat.example.com,https://app.example.com",
	}))
	count(deny("production", r)) == 0
	count(warn("production", r)) == 0
}

# --- keys ----------------------------------------------------------------------------------

test_both_keys_checked if {
	r := testing.create(configmap({"CORS_ALLOWED_ORIGINS": "*", "WS_ALLOWED_ORIGINS": "http://chat.example.com"}))
	testing.msgs(deny("production", r)) == {
		"key \"CORS_ALLOWED_ORIGINS\" allows every origin (\"*\"); list the allowed origins explicitly",
		"key \"WS_ALLOWED_ORIGINS\": origin \"http://chat.example.com\" uses http; production requires https",
	}
}

test_other_keys_not_checked if {
	r := testing.create(configmap({"ALLOWED_HOSTS": "*", "cors_allowed_origins": "*", "ORIGINS": ""}))
	count(deny("production", r)) == 0
	count(warn("development", r)) == 0
}

test_parameter_keys if {
	r := testing.create(configmap({"ALLOWED_ORIGINS": "*", "CORS_ALLOWED_ORIGINS": "*"}))
	result := policy.deny with input as r
		with data.regate.environment as "production"
		with data.regate.parameters as {"keys": ["ALLOWED_ORIGINS"]}
	testing.msgs(result) == {"key \"ALLOWED_ORIGINS\" allows every origin (\"*\"); list the allowed origins explicitly"}
}

test_default_keys_without_parameters if {
	result := policy.deny with input as cors("*")
		with data.regate.environment as "production"
		with data.regate.parameters as {}
	count(result) == 1
}

test_non_text_value_denied if {
	r := testing.create(configmap({"CORS_ALLOWED_ORIGINS": ["https://a.example.com"]}))
	testing.msgs(deny("development", r)) == {"key \"CORS_ALLOWED_ORIGINS\" must be a comma-separated list of origins"}
}

# --- requests ------------------------------------------------------------------------------

test_update_judged if {
	count(deny("production", testing.update(configmap({"CORS_ALLOWED_ORIGINS": "*"})))) == 1
}

test_delete_and_other_kinds_not_judged if {
	count(deny("production", testing.delete(configmap({"CORS_ALLOWED_ORIGINS": "*"})))) == 0
	s := {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"CORS_ALLOWED_ORIGINS": "*"}}
	count(deny("production", testing.create(s))) == 0
}

test_configmap_without_data_allowed if {
	count(deny("production", testing.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))) == 0
}

test_malformed_configmap_not_fatal if {
	count(deny("production", testing.create(configmap("not-a-map")))) == 0
	count(deny("production", testing.create(configmap({"CORS_ALLOWED_ORIGINS": 42})))) == 1
}
