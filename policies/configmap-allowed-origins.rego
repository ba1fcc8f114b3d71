# METADATA
# title: Browser origin allow-lists are explicit and safe
# description: >-
#   The CORS and WebSocket origin allow-lists of a ConfigMap (comma-separated) must hold
#   valid origins (scheme://host[:port]). An empty list (every origin allowed) or "*" is a
#   warning in development and denied elsewhere; http:// and localhost origins are denied in
#   staging and production; wildcard subdomains are denied in production.
# custom:
#   id: configmap-allowed-origins
#   severity: high
#   category: Configuration
#   kinds: [ConfigMap]
#   action: deny
#   operations: [CREATE, UPDATE]
#   parameters:
#     keys:
#       type: array
#       description: The ConfigMap keys that hold origin allow-lists (matched exactly).
#       default: [CORS_ALLOWED_ORIGINS, WS_ALLOWED_ORIGINS]
package regate.policies.configmap_allowed_origins

import data.regate.lib.regate
import rego.v1

default_keys := ["CORS_ALLOWED_ORIGINS", "WS_ALLOWED_ORIGINS"]

keys := {k | some k in regate.array_or_empty(regate.param("keys", default_keys)); is_string(k)}

env := regate.environment

# The ConfigMap's data ({} when missing or not an object).
data_values := regate.object_or_empty(object.get(regate.obj, "data", {}))

# The checked lists: {"key": "CORS_ALLOWED_ORIGINS", "entries": ["https://a.example.com", ...]}.
# The rules look up the few configured keys in the data rather than walk every data key (a
# ConfigMap may hold hundreds; each loop iteration costs the VM far more than a lookup).
lists contains {"key": key, "entries": entries} if {
	regate.kind == "ConfigMap"
	some key in keys
	raw := data_values[key]
	value := text(raw)
	is_string(value)
	entries := [e | some part in split(value, ","); e := trim_space(part); e != ""]
}

# A non-string, non-scalar value (a manifest's list or map) is not a list of origins.
deny contains {
	"msg": sprintf("key %q must be a comma-separated list of origins", [key]),
	"path": sprintf("data[%s]", [key]),
} if {
	regate.kind == "ConfigMap"
	some key in keys
	raw := data_values[key]
	not text(raw)
}

# A value as text: strings as they are, unquoted scalars of a manifest as printed, null as "".
# (Every body before an `else` has a value that is surely defined: regorus's bytecode does not
# fall through to the `else` from a body whose value is undefined.)
text(raw) := "" if raw == null

else := regate.str(raw)

entries contains {"key": list.key, "entry": entry} if {
	some list in lists
	some entry in list.entries
}

# Every entry that is an origin, parsed once: entry -> origin(entry).
origins := {entry: o |
	some e in entries
	entry := e.entry
	o := origin(entry)
	is_object(o)
}

empty_message(key) := sprintf(
	"key %q lists no origins, which allows every origin; list the allowed origins explicitly",
	[key],
)

any_message(key) := sprintf("key %q allows every origin (\"*\"); list the allowed origins explicitly", [key])

# --- An empty list: every origin is allowed. ----------------------------------------------
warn contains {"msg": empty_message(list.key), "path": sprintf("data[%s]", [list.key])} if {
	env == "development"
	some list in lists
	count(list.entries) == 0
}

deny contains {"msg": empty_message(list.key), "path": sprintf("data[%s]", [list.key])} if {
	env != "development"
	some list in lists
	count(list.entries) == 0
}

# --- "*" ---------------------------------------------------------------------------------
warn contains {"msg": any_message(e.key), "path": sprintf("data[%s]", [e.key])} if {
	env == "development"
	some e in entries
	e.entry == "*"
}

deny contains {"msg": any_message(e.key), "path": sprintf("data[%s]", [e.key])} if {
	env != "development"
	some e in entries
	e.entry == "*"
}

# --- Not a valid origin, or "null" (sent by sandboxed frames and file: pages). -------------
deny contains {
	"msg": sprintf("key %q: %q is not a valid origin (scheme://host[:port] with scheme http or https, and no path)", [e.key, e.entry]),
	"path": sprintf("data[%s]", [e.key]),
} if {
	some e in entries
	e.entry != "*"
	lower(e.entry) != "null"
	not origins[e.entry]
}

deny contains {
	"msg": sprintf("key %q: the %q origin must not be allowed (any page can send it)", [e.key, e.entry]),
	"path": sprintf("data[%s]", [e.key]),
} if {
	some e in entries
	lower(e.entry) == "null"
}

# --- http:// origins: development only. ---------------------------------------------------
deny contains {
	"msg": sprintf("key %q: origin %q uses http; %s requires https", [e.key, e.entry, env]),
	"path": sprintf("data[%s]", [e.key]),
} if {
	env != "development"
	some e in entries
	origins[e.entry].scheme == "http"
}

# --- localhost origins: development only. -------------------------------------------------
deny contains {
	"msg": sprintf("key %q: origin %q is a localhost origin, allowed in development only", [e.key, e.entry]),
	"path": sprintf("data[%s]", [e.key]),
} if {
	env != "development"
	some e in entries
	loopback(origins[e.entry].host)
}

# --- Wildcard subdomains: not in production. ----------------------------------------------
deny contains {
	"msg": sprintf("key %q: origin %q allows every subdomain; production requires exact origins", [e.key, e.entry]),
	"path": sprintf("data[%s]", [e.key]),
} if {
	env == "production"
	some e in entries
	origins[e.entry].wildcard
}

# --- Origins ------------------------------------------------------------------------------
# origin(s): {"scheme", "host", "wildcard"} when s is scheme://host[:port] with scheme http or
# https (any case), host a DNS name, an IPv4 address or a bracketed IPv6 address, optionally
# preceded by a "*." label wildcard (DNS names only), a port 1-65535, and nothing else: no
# path (not even "/"), query, fragment or user info. Undefined otherwise.
origin_pattern := `^([A-Za-z][A-Za-z0-9+.-]*)://(\*\.)?([^/?#@:\[\]]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`

origin(s) := o if {
	[_, scheme_raw, star, host_raw, port] := regex.find_all_string_submatch_n(origin_pattern, s, 1)[0]
	scheme := lower(scheme_raw)
	scheme in {"http", "https"}
	host := lower(host_raw)
	valid_host(host, star != "")
	valid_port(port)
	o := {"scheme": scheme, "host": host, "wildcard": star != ""}
}

valid_port(port) if port == ""

# ":" and 1 to 5 digits, the first not 0, tested with string builtins, not a regex: in regorus
# every regex call rebuilds the compiled regex's cache, which costs more than all of these.
# (to_number is only given digits without a leading zero: in regorus, a builtin error
# such as to_number("08") aborts the whole evaluation.)
valid_port(port) if {
	startswith(port, ":")
	digits := substring(port, 1, -1)
	all_digits(digits)
	# (Counted once known to be ASCII digits: regorus and OPA then count alike.)
	count(digits) <= 5
	not startswith(digits, "0")
	to_number(digits) <= 65535
}

# s is one or more ASCII digits (as `^[0-9]+$` matches), without a regex (see valid_port).
all_digits(s) if {
	s != ""
	trim(s, "0123456789") == ""
}

# The host's last label (the text after its last ".", all of it when it has none) is all
# ASCII digits, as in an IPv4 address.
numeric_last_label(host) if {
	labels := split(host, ".")
	all_digits(labels[count(labels) - 1])
}

dns_label := `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`

dns_name_pattern := sprintf(`^%s(\.%s)*$`, [dns_label, dns_label])

# A DNS name (at least one label; a name whose last label is all digits must be an IPv4
# address, as URL parsers read it). The last label is tested first, and the IPv4 rule below
# tests it too, so that a host costs one of the two regexes, not both.
valid_host(host, _) if {
	not numeric_last_label(host)
	regex.match(dns_name_pattern, host)
	count(host) <= 253
}

valid_host(host, false) if {
	numeric_last_label(host)
	ipv4(host)
}

valid_host(host, false) if ipv6(host)

ipv4_octet := `(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])`

# Dotted decimal, no leading zeros (URL parsers read "010" as octal).
ipv4_pattern := sprintf(`^%s(\.%s){3}$`, [ipv4_octet, ipv4_octet])

ipv4(host) if regex.match(ipv4_pattern, host)

ipv6(host) if {
	startswith(host, "[")
	endswith(host, "]")
	address := substring(host, 1, count(host) - 2)
	contains(address, ":")
	net.cidr_is_valid(concat("", [address, "/128"]))
}

loopback(host) if host == "localhost"

loopback(host) if {
	numeric_last_label(host)
	ipv4(host)
	net.cidr_contains("127.0.0.0/8", host)
}

loopback(host) if {
	ipv6(host)
	net.cidr_contains("::1/128", substring(host, 1, count(host) - 2))
}
