# Secrets: which Secrets the Secret policies judge and the values of their keys.
#
# The values computed here live only inside the evaluation of the Secret policies: a
# policy's messages may use an entry's `key`, `source` and `length`, NEVER its `text` or
# any part of it.
#
# API (package regate.lib.secret):
#   excluded_types  the Secret types that are not judged (service-account tokens, docker
#                   configs, TLS, bootstrap tokens)
#   judged          the request's object is a Secret of a judged type (type defaults to Opaque)
#   entries         set of one entry per key:
#                     {"key": "JWT_SECRET", "source": "data", "valid": true, "text": "...",
#                      "utf8": true, "length": 44}
#                   `source` is "data" (base64) or "stringData" (plain). A data value that is
#                   not valid base64 gives {"key", "source": "data", "valid": false} only.
#                   `text` is the decoded value, `utf8` whether the decoded bytes are UTF-8
#                   text, `length` its length in characters (code points) exactly as decoded,
#                   nothing trimmed; a binary (non-UTF-8) value counts its bytes.
#                   A key present in both data and stringData is taken from stringData only
#                   (the API server lets stringData win when it folds it into data).
#   normalized_key(k)  the key upper-cased, with "-" and "." read as "_": "jwt-secret" -> "JWT_SECRET"
package regate.lib.secret

import data.regate.lib.regate
import rego.v1

excluded_types := {
	"kubernetes.io/service-account-token",
	"kubernetes.io/dockercfg",
	"kubernetes.io/dockerconfigjson",
	"kubernetes.io/tls",
	"bootstrap.kubernetes.io/token",
}

default type := "Opaque"

type := t if {
	t := regate.obj.type
	is_string(t)
	t != ""
}

judged if {
	regate.kind == "Secret"
	not type in excluded_types
}

string_data := regate.object_or_empty(object.get(regate.obj, "stringData", {}))

string_data_keys := object.keys(string_data)

data_values := regate.object_or_empty(object.get(regate.obj, "data", {}))

normalized_key(k) := replace(replace(upper(k), "-", "_"), ".", "_")

# stringData: plain values. A non-string scalar (a manifest's unquoted `PORT: 8080`) is
# taken as printed.
entries contains entry if {
	judged
	some k, v in string_data
	text := regate.str(v)
	entry := {
		"key": k,
		"source": "stringData",
		"valid": true,
		"text": text,
		"utf8": true,
		"length": regate.char_count(text),
	}
}

# data: base64 values, each decoded once (the key's entry, valid or not, is one function
# call: checking validity in one rule and its absence in another decoded every value twice).
entries contains data_entry(k, v) if {
	judged
	some k, v in data_values
	not k in string_data_keys
}

# Standard, padded base64, as the API server decodes it: line breaks (a manifest's wrapped
# `base64` output) are ignored, any other whitespace is invalid.
# (base64.is_valid errors, aborting the evaluation in regorus, on a non-string: check first.)
data_entry(k, v) := entry if {
	is_string(v)
	b64 := unwrapped(v)
	base64.is_valid(b64)
	text := base64.decode(b64)
	utf8 := base64.encode(text) == b64
	entry := {
		"key": k,
		"source": "data",
		"valid": true,
		"text": text,
		"utf8": utf8,
		"length": decoded_length(b64, text, utf8),
	}
} else := {"key": k, "source": "data", "valid": false}

unwrapped(v) := replace(replace(v, "\n", ""), "\r", "")

# UTF-8 text: its characters. Binary: its bytes, from the length of the base64 text.
# (regorus decodes binary lossily, replacing invalid bytes; that the decoded text
# re-encodes to the original is how binary is told from text.)
decoded_length(_, text, true) := regate.char_count(text)

decoded_length(v, _, false) := ((count(v) / 4) * 3) - (count(v) - count(trim_right(v, "=")))
