package regate.policies.secret_min_length_test

import data.regate.lib.testing
import data.regate.policies.secret_min_length as policy
import rego.v1

default_keys := ["*JWT_SECRET*", "*ENCRYPTION_KEY*", "*SIGNING_KEY*", "*SESSION_SECRET*", "*COOKIE_SECRET*", "*HMAC_KEY*", "*SECRET_KEY*"]

params := {
	"development": {"keys": default_keys, "min_length": 32},
	"staging": {"keys": default_keys, "min_length": 32},
	"production": {"keys": default_keys, "min_length": 64},
}

secret(fields) := object.union({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secrets", "namespace": "default"}}, fields)

# n characters of a value that is no placeholder.
value(n) := substring(testing.repeat("k9Qz7Lw2Xr4Tb8Ns", 10), 0, n)

b64(s) := base64.encode(s)

deny_in(env, review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as params[env]
}

deny(review) := deny_in("production", review)

length_msg(key, n, env, min) := sprintf("key %q is %d characters; %s requires at least %d", [key, n, env, min])

invalid_msg(key) := sprintf("key %q is not valid base64; its length cannot be checked", [key])

# --- the issue's example --------------------------------------------------------------------

test_issue_example_message if {
	# `openssl rand -base64 32`: 44 characters.
	r := testing.create(secret({"data": {"JWT_SECRET": b64("q2X0n3w9v1K7b5Z8c4M6a2P0s9D3f7G1h5J8k2L4m6E=")}}))
	deny(r) == {{"msg": "key \"JWT_SECRET\" is 44 characters; production requires at least 64", "path": "data[JWT_SECRET]"}}
}

# --- which keys -----------------------------------------------------------------------------

test_every_default_glob_matches if {
	every key in [
		"JWT_SECRET", "APP_JWT_SECRET_V2", "ENCRYPTION_KEY", "DB_ENCRYPTION_KEY", "SIGNING_KEY",
		"SESSION_SECRET", "COOKIE_SECRET", "HMAC_KEY", "SECRET_KEY", "DJANGO_SECRET_KEY",
	] {
		r := testing.create(secret({"data": {key: b64(value(20))}}))
		deny(r) == {{"msg": length_msg(key, 20, "production", 64), "path": sprintf("data[%s]", [key])}}
	}
}

test_key_names_normalized_dashes_dots_and_case if {
	every key in ["jwt-secret", "jwt.secret", "Encryption-Key", "app.session-secret", "cookie_secret"] {
		r := testing.create(secret({"data": {key: b64(value(20))}}))
		testing.msgs(deny(r)) == {length_msg(key, 20, "production", 64)}
	}
}

test_other_keys_not_checked if {
	r := testing.create(secret({
		"data": {"DB_PASSWORD": b64("short"), "API_TOKEN": b64("x"), "JWT": b64("y"), "SECRET": b64("z")},
		"stringData": {"USERNAME": "admin"},
	}))
	count(deny(r)) == 0
}

# --- lengths by environment -----------------------------------------------------------------

test_min_length_by_environment if {
	every env in ["development", "staging", "production"] {
		min := params[env].min_length
		count(deny_in(env, testing.create(secret({"data": {"JWT_SECRET": b64(value(min))}})))) == 0
		deny_in(env, testing.create(secret({"data": {"JWT_SECRET": b64(value(min - 1))}}))) == {{
			"msg": length_msg("JWT_SECRET", min - 1, env, min),
			"path": "data[JWT_SECRET]",
		}}
	}
}

test_development_allows_48_characters if {
	count(deny_in("development", testing.create(secret({"data": {"ENCRYPTION_KEY": b64(value(48))}})))) == 0
	testing.msgs(deny_in("production", testing.create(secret({"data": {"ENCRYPTION_KEY": b64(value(48))}})))) == {length_msg("ENCRYPTION_KEY", 48, "production", 64)}
}

test_trailing_newline_counts if {
	# 63 characters and a newline (`echo` without -n) make 64.
	r := testing.create(secret({"data": {"JWT_SECRET": b64(concat("", [value(63), "\n"]))}}))
	count(deny(r)) == 0
	r2 := testing.create(secret({"data": {"JWT_SECRET": b64(concat("", [value(62), "\n"]))}}))
	testing.msgs(deny(r2)) == {length_msg("JWT_SECRET", 63, "production", 64)}
}

test_surrounding_spaces_count if {
	r := testing.create(secret({"stringData": {"JWT_SECRET": concat("", ["  ", value(60), "  "])}}))
	count(deny(r)) == 0
}

test_length_counts_characters_not_bytes if {
	# 20 emoji: 80 bytes in UTF-8, 40 UTF-16 code units, 20 characters.
	emoji := testing.repeat("🔑", 20)
	testing.msgs(deny(testing.create(secret({"data": {"HMAC_KEY": b64(emoji)}})))) == {length_msg("HMAC_KEY", 20, "production", 64)}
	testing.msgs(deny(testing.create(secret({"stringData": {"HMAC_KEY": emoji}})))) == {length_msg("HMAC_KEY", 20, "production", 64)}

	# 40 two-byte characters.
	accents := testing.repeat("é", 40)
	testing.msgs(deny(testing.create(secret({"data": {"HMAC_KEY": b64(accents)}})))) == {length_msg("HMAC_KEY", 40, "production", 64)}

	# Mixed: 10 letters, then 10 emoji, then 10 letters: 30 characters, 40 UTF-16 code units.
	mixed := concat("", [testing.repeat("a", 10), testing.repeat("🔑", 10), testing.repeat("b", 10)])
	testing.msgs(deny(testing.create(secret({"stringData": {"HMAC_KEY": mixed}})))) == {length_msg("HMAC_KEY", 30, "production", 64)}
	testing.msgs(deny(testing.create(secret({"data": {"HMAC_KEY": b64(mixed)}})))) == {length_msg("HMAC_KEY", 30, "production", 64)}
}

test_binary_value_counts_bytes if {
	# 48 bytes of 0xff: not UTF-8 text, so its bytes are counted.
	binary := testing.repeat("/", 64)
	testing.msgs(deny(testing.create(secret({"data": {"ENCRYPTION_KEY": binary}})))) == {length_msg("ENCRYPTION_KEY", 48, "production", 64)}
	count(deny_in("development", testing.create(secret({"data": {"ENCRYPTION_KEY": binary}})))) == 0

	# 1 and 2 bytes: base64 padding.
	testing.msgs(deny(testing.create(secret({"data": {"SIGNING_KEY": "/w=="}})))) == {length_msg("SIGNING_KEY", 1, "production", 64)}
	testing.msgs(deny(testing.create(secret({"data": {"SIGNING_KEY": "//8="}})))) == {length_msg("SIGNING_KEY", 2, "production", 64)}
}

test_empty_value_is_zero_characters if {
	testing.msgs(deny(testing.create(secret({"data": {"JWT_SECRET": ""}})))) == {length_msg("JWT_SECRET", 0, "production", 64)}
	testing.msgs(deny(testing.create(secret({"stringData": {"JWT_SECRET": ""}})))) == {length_msg("JWT_SECRET", 0, "production", 64)}
}

# --- data and stringData --------------------------------------------------------------------

test_string_data_checked_as_plain_text if {
	r := testing.create(secret({"stringData": {"jwt-secret": value(40)}}))
	deny(r) == {{"msg": length_msg("jwt-secret", 40, "production", 64), "path": "stringData[jwt-secret]"}}
}

test_string_data_wins_over_data if {
	long := testing.create(secret({"data": {"JWT_SECRET": b64(value(10))}, "stringData": {"JWT_SECRET": value(64)}}))
	count(deny(long)) == 0
	short := testing.create(secret({"data": {"JWT_SECRET": b64(value(64))}, "stringData": {"JWT_SECRET": value(10)}}))
	testing.msgs(deny(short)) == {length_msg("JWT_SECRET", 10, "production", 64)}
}

test_every_key_of_both_checked if {
	r := testing.create(secret({
		"data": {"JWT_SECRET": b64(value(10)), "SESSION_SECRET": b64(value(64))},
		"stringData": {"COOKIE_SECRET": value(12)},
	}))
	testing.msgs(deny(r)) == {length_msg("JWT_SECRET", 10, "production", 64), length_msg("COOKIE_SECRET", 12, "production", 64)}
}

# --- invalid base64 -------------------------------------------------------------------------

test_invalid_base64_under_any_key_denied if {
	every v in ["not base64!", "YWJj ZA==", "YWJjZA", "YWJjZA=", "YWJjZA==\t", "-_-_", "%%%%"] {
		r := testing.create(secret({"data": {"DB_PASSWORD": v}}))
		deny(r) == {{"msg": invalid_msg("DB_PASSWORD"), "path": "data[DB_PASSWORD]"}}
	}
}

test_line_breaks_in_base64_ignored_as_the_api_server_does if {
	# `base64` wraps its output at 76 characters; the API server's decoder skips \r and \n.
	v := b64(value(64))
	wrapped := concat("\n", [substring(v, 0, 76), substring(v, 76, -1), ""])
	count(deny(testing.create(secret({"data": {"JWT_SECRET": wrapped}})))) == 0
	short := concat("\r\n", [substring(b64(value(40)), 0, 20), substring(b64(value(40)), 20, -1)])
	testing.msgs(deny(testing.create(secret({"data": {"JWT_SECRET": short}})))) == {length_msg("JWT_SECRET", 40, "production", 64)}
}

test_invalid_base64_under_a_checked_key_reports_only_that if {
	r := testing.create(secret({"data": {"JWT_SECRET": "@@not-base64@@"}}))
	testing.msgs(deny(r)) == {invalid_msg("JWT_SECRET")}
}

test_non_string_data_value_is_invalid if {
	r := testing.create(secret({"data": {"PORT": 8080, "EMPTY": null}}))
	testing.msgs(deny(r)) == {invalid_msg("PORT"), invalid_msg("EMPTY")}
}

test_invalid_base64_in_every_environment if {
	every env in ["development", "staging", "production"] {
		testing.msgs(deny_in(env, testing.create(secret({"data": {"token": "!!"}})))) == {invalid_msg("token")}
	}
}

# --- messages never carry a value -----------------------------------------------------------

test_messages_never_contain_the_value if {
	v := "SuperSecretValue-JWT-9f8e7d"
	r := testing.create(secret({"data": {"JWT_SECRET": b64(v), "BROKEN": concat("", [v, "!"])}, "stringData": {"SESSION_SECRET": v}}))
	count(deny(r)) == 3
	every d in deny(r) {
		not contains(d.msg, "SuperSecret")
		not contains(d.msg, "9f8e7d")
		not contains(d.msg, b64(v))
	}
}

# --- which Secrets --------------------------------------------------------------------------

test_excluded_types_not_judged if {
	every type in [
		"kubernetes.io/service-account-token",
		"kubernetes.io/dockercfg",
		"kubernetes.io/dockerconfigjson",
		"kubernetes.io/tls",
		"bootstrap.kubernetes.io/token",
	] {
		r := testing.create(secret({"type": type, "data": {"JWT_SECRET": b64("short"), "bad": "!!"}}))
		count(deny(r)) == 0
	}
}

test_other_types_judged if {
	every type in ["Opaque", "kubernetes.io/basic-auth", "example.com/custom", ""] {
		r := testing.create(secret({"type": type, "data": {"JWT_SECRET": b64(value(10))}}))
		testing.msgs(deny(r)) == {length_msg("JWT_SECRET", 10, "production", 64)}
	}
}

test_update_judged if {
	testing.msgs(deny(testing.update(secret({"data": {"JWT_SECRET": b64(value(10))}})))) == {length_msg("JWT_SECRET", 10, "production", 64)}
}

test_delete_and_other_kinds_not_judged if {
	count(deny(testing.delete(secret({"data": {"JWT_SECRET": b64(value(10))}})))) == 0
	count(deny(testing.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"JWT_SECRET": "short"}}))) == 0
}

test_secret_without_data_allowed if {
	count(deny(testing.create(secret({})))) == 0
	count(deny(testing.create(secret({"data": null, "stringData": null})))) == 0
}

# --- parameters -----------------------------------------------------------------------------

test_parameters_override_keys_and_min_length if {
	r := testing.create(secret({"data": {"API_TOKEN": b64(value(20)), "JWT_SECRET": b64(value(20))}}))
	result := policy.deny with input as r
		with data.regate.environment as "staging"
		with data.regate.parameters as {"keys": ["*token*"], "min_length": 24}
	testing.msgs(result) == {length_msg("API_TOKEN", 20, "staging", 24)}
}

test_defaults_apply_without_parameters if {
	r := testing.create(secret({"data": {"JWT_SECRET": b64(value(40))}}))
	dev := policy.deny with input as r
		with data.regate.environment as "development"
		with data.regate.parameters as {}
	count(dev) == 0
	prod := policy.deny with input as r
		with data.regate.environment as "production"
		with data.regate.parameters as {}
	testing.msgs(prod) == {length_msg("JWT_SECRET", 40, "production", 64)}
}

test_malformed_secret_not_fatal if {
	count(deny(testing.create(secret({"data": "not-a-map", "stringData": ["x"]})))) == 0
	testing.msgs(deny(testing.create(secret({"type": null, "data": {"JWT_SECRET": {"nested": "x"}}})))) == {invalid_msg("JWT_SECRET")}
	testing.msgs(deny(testing.create(secret({"stringData": {"JWT_SECRET": 12345}})))) == {length_msg("JWT_SECRET", 5, "production", 64)}
}
