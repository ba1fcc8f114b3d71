# METADATA
# title: Generated secrets are long enough
# description: >-
#   Keys that hold generated secrets (JWT, encryption, signing, session, cookie, HMAC keys)
#   must hold at least min_length characters, counted exactly as decoded. A data value that is
#   not valid base64, under any key, is a violation too. Messages name keys and lengths only,
#   never a value.
# custom:
#   id: secret-min-length
#   severity: high
#   category: Secrets
#   kinds: [Secret]
#   action: deny
#   operations: [CREATE, UPDATE]
#   parameters:
#     keys:
#       type: array
#       description: >-
#         Globs over key names; a key is checked when its name, upper-cased with "-" and "."
#         read as "_", matches one of them (the globs are upper-cased too).
#       default: ["*JWT_SECRET*", "*ENCRYPTION_KEY*", "*SIGNING_KEY*", "*SESSION_SECRET*", "*COOKIE_SECRET*", "*HMAC_KEY*", "*SECRET_KEY*"]
#     min_length:
#       type: integer
#       description: Minimum length in characters of a checked key's value.
#       default: {development: 32, staging: 32, production: 64}
package regate.policies.secret_min_length

import data.regate.lib.regate
import data.regate.lib.secret
import rego.v1

default_keys := ["*JWT_SECRET*", "*ENCRYPTION_KEY*", "*SIGNING_KEY*", "*SESSION_SECRET*", "*COOKIE_SECRET*", "*HMAC_KEY*", "*SECRET_KEY*"]

default_min_length := {"development": 32, "staging": 32, "production": 64}

key_globs := [upper(g) | some g in regate.array_or_empty(regate.param("keys", default_keys)); is_string(g)]

min_length := regate.param("min_length", default_min_length[regate.environment])

checked(key) if {
	name := secret.normalized_key(key)
	some g in key_globs
	glob.match(g, null, name)
}

deny contains {
	"msg": sprintf(
		"key %q is %d characters; %s requires at least %d",
		[entry.key, entry.length, regate.environment, min_length],
	),
	"path": sprintf("%s[%s]", [entry.source, entry.key]),
} if {
	some entry in secret.entries
	entry.valid
	entry.length < min_length
	checked(entry.key)
}

# Under any key: a value that cannot be decoded has no length that could be checked.
deny contains {
	"msg": sprintf("key %q is not valid base64; its length cannot be checked", [entry.key]),
	"path": sprintf("data[%s]", [entry.key]),
} if {
	some entry in secret.entries
	not entry.valid
}
