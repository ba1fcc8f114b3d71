package regate.policies.secret_no_placeholder_test

import data.regate.lib.testing
import data.regate.policies.secret_no_placeholder as policy
import rego.v1

secret(fields) := object.union({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secrets", "namespace": "default"}}, fields)

b64(s) := base64.encode(s)

deny_in(env, review) := result if {
	result := policy.deny with input as review
		with data.regate.environment as env
		with data.regate.parameters as {}
}

deny(review) := deny_in("production", review)

msg(key) := sprintf("key %q holds a placeholder value; set a real secret", [key])

# Denied from data (base64) and from stringData (plain), with the message naming the key only.
placeholder(v) if {
	deny(testing.create(secret({"data": {"DB_PASSWORD": b64(v)}}))) == {{"msg": msg("DB_PASSWORD"), "path": "data[DB_PASSWORD]"}}
	deny(testing.create(secret({"stringData": {"API_KEY": v}}))) == {{"msg": msg("API_KEY"), "path": "stringData[API_KEY]"}}
}

allowed(v) if {
	count(deny(testing.create(secret({"data": {"DB_PASSWORD": b64(v)}})))) == 0
	count(deny(testing.create(secret({"stringData": {"API_KEY": v}})))) == 0
}

# --- contains ... ---------------------------------------------------------------------------

test_your_dash if placeholder("your-api-key-here")

test_your_underscore if placeholder("YOUR_TOKEN")

test_changeme if placeholder("changeme123")

test_change_dash_me if placeholder("please-Change-Me")

test_change_underscore_me if placeholder("change_me_now")

test_replace_dash_me if placeholder("REPLACE-ME")

test_replace_underscore_me if placeholder("replace_me_before_deploy")

test_placeholder if placeholder("<placeholder>")

test_example if placeholder("sk_live_EXAMPLE_123456")

test_six_x if placeholder("sk-xxxxxx")

test_six_x_any_case if placeholder("XXXXXXXXXXXXXXXX")

test_five_x_allowed if allowed("ab-xxxxx-cd")

test_seed_placeholders if {
	# The seed documents' own examples.
	placeholder("your-development-jwt-secret-min-32-chars")
	placeholder("your-production-jwt-secret-64-chars-minimum")
	placeholder("your-production-encryption-key-64-chars-minimum")
}

# --- exactly ... ----------------------------------------------------------------------------

test_exact_words if {
	every word in ["secret", "password", "admin", "test", "default", "todo", "none", "null"] {
		placeholder(word)
	}
}

test_exact_words_any_case_and_trimmed if {
	every word in ["Secret", "PASSWORD", "  admin  ", "Test\n", "\tDefault", "TODO", "None", "NULL"] {
		placeholder(word)
	}
}

test_words_within_longer_values_allowed if {
	every v in ["supersecret-9f8e7d6c", "password1-Zq8!", "administrator-Kp3", "testing-R4nd0m", "nonempty-7Gh2", "todo-list-Vb6"] {
		allowed(v)
	}
}

# --- one character repeated -----------------------------------------------------------------

test_one_character_repeated_8_times if placeholder("aaaaaaaa")

test_one_character_repeated_many_times if placeholder("0000000000000000")

test_repeated_symbol_trimmed if placeholder("  ********  \n")

test_repeated_any_case if placeholder("AAAAaaaa")

test_repeated_7_times_allowed if allowed("aaaaaaa")

test_two_characters_alternating_allowed if allowed("abababab")

test_repeated_only_at_the_start_allowed if allowed("aaaaaaaab")

# Counted in characters: an emoji is two UTF-16 units in regorus's count, one character here.
test_repeated_emoji_8_times if placeholder("🔑🔑🔑🔑🔑🔑🔑🔑")

test_repeated_emoji_4_times_allowed if allowed("🔑🔑🔑🔑")

test_repeated_accented_letter_8_times if placeholder("éééééééé")

test_repeated_accented_letter_7_times_allowed if allowed("ééééééé")

# --- not placeholders -----------------------------------------------------------------------

test_empty_and_whitespace_allowed if {
	every v in ["", " ", "   \n\t "] {
		allowed(v)
	}
}

test_real_values_allowed if {
	every v in ["q2X0n3w9v1K7b5Z8c4M6a2P0s9D3f7G1h5J8k2L4m6E=", "postgres://app@db:5432/app", "s3cr3t-R0tat3d-2024-Kp9"] {
		allowed(v)
	}
}

test_binary_values_not_checked if {
	# 8 bytes of 0xff: binary, not text.
	count(deny(testing.create(secret({"data": {"KEY": "//////////8="}})))) == 0
}

test_invalid_base64_left_to_secret_min_length if {
	count(deny(testing.create(secret({"data": {"KEY": "changeme"}})))) == 0
}

# --- every key, every environment, no value in messages ------------------------------------

test_every_key_checked if {
	r := testing.create(secret({
		"data": {"A": b64("changeme"), "B": b64("fine-Value-83Jd"), "C": b64("todo")},
		"stringData": {"D": "your-key", "E": "still-fine-2Kd9"},
	}))
	deny(r) == {
		{"msg": msg("A"), "path": "data[A]"},
		{"msg": msg("C"), "path": "data[C]"},
		{"msg": msg("D"), "path": "stringData[D]"},
	}
}

test_string_data_wins_over_data if {
	count(deny(testing.create(secret({"data": {"A": b64("changeme")}, "stringData": {"A": "real-Value-93kd"}})))) == 0
}

test_same_result_in_every_environment if {
	# The environment picks the action (warn in development, deny elsewhere), not the result.
	r := testing.create(secret({"stringData": {"A": "changeme"}}))
	every env in ["development", "staging", "production"] {
		deny_in(env, r) == {{"msg": msg("A"), "path": "stringData[A]"}}
	}
}

test_messages_never_contain_the_value if {
	r := testing.create(secret({"stringData": {"TOKEN": "your-token-AbCdEf"}}))
	every d in deny(r) {
		not contains(lower(d.msg), "your-")
		not contains(d.msg, "AbCdEf")
	}
}

test_excluded_types_not_judged if {
	every type in [
		"kubernetes.io/service-account-token",
		"kubernetes.io/dockercfg",
		"kubernetes.io/dockerconfigjson",
		"kubernetes.io/tls",
		"bootstrap.kubernetes.io/token",
	] {
		count(deny(testing.create(secret({"type": type, "stringData": {"A": "changeme"}})))) == 0
	}
}

test_basic_auth_judged if {
	r := testing.create(secret({"type": "kubernetes.io/basic-auth", "stringData": {"username": "app", "password": "password"}}))
	testing.msgs(deny(r)) == {msg("password")}
}

test_update_judged_delete_not if {
	count(deny(testing.update(secret({"stringData": {"A": "changeme"}})))) == 1
	count(deny(testing.delete(secret({"stringData": {"A": "changeme"}})))) == 0
}
