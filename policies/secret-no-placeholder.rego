# METADATA
# title: Secrets hold no placeholder values
# description: >-
#   No key of a Secret may hold a placeholder ("your-...", "changeme", "example", "xxxxxx",
#   "password", a character repeated 8 or more times, ...). Messages name the key only,
#   never the value or the form it matched.
# custom:
#   id: secret-no-placeholder
#   severity: high
#   category: Secrets
#   kinds: [Secret]
#   action: {development: warn, staging: deny, production: deny}
#   operations: [CREATE, UPDATE]
package regate.policies.secret_no_placeholder

import data.regate.lib.regate
import data.regate.lib.secret
import rego.v1

# Contained anywhere in the trimmed, lower-cased value.
placeholder_fragments := [
	"your-", "your_", "changeme", "change-me", "change_me", "replace-me", "replace_me",
	"placeholder", "example", "xxxxxx",
]

# The whole trimmed, lower-cased value.
placeholder_words := {"secret", "password", "admin", "test", "default", "todo", "none", "null"}

deny contains {
	"msg": sprintf("key %q holds a placeholder value; set a real secret", [entry.key]),
	"path": sprintf("%s[%s]", [entry.source, entry.key]),
} if {
	some entry in secret.entries
	entry.valid
	# Binary values are not text, so none of the textual forms applies.
	entry.utf8
	placeholder(lower(trim_space(entry.text)))
}

placeholder(v) if {
	some fragment in placeholder_fragments
	contains(v, fragment)
}

placeholder(v) if v in placeholder_words

# One character repeated 8 or more times ("aaaaaaaa", "00000000", "********"): nothing is
# left once every copy of the first character is removed. (Cheaper than splitting the value
# into a set of characters, which builds a string per character of every value.)
placeholder(v) if {
	replace(v, substring(v, 0, 1), "") == ""
	regate.char_count(v) >= 8
}
