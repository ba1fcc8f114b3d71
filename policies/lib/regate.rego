# Helpers for what regate hands every policy: the environment, the resolved parameters and
# the admission request. Every policy is compiled together with every lib file.
#
# regorus gotcha (differs from OPA): `not f(x)` is TRUE when `x` is undefined, and a builtin
# error (e.g. `lower(5)`) aborts the whole evaluation instead of making one expression
# undefined. Everything here therefore reads the request through `object.get` with a default,
# and the policies check `is_string` before any string builtin touches user data.
#
# API (package regate.lib.regate):
#   environment            "development" | "staging" | "production" (default "production")
#   parameters             this policy's resolved parameters ({} by default)
#   param(name, fallback)  one parameter, or fallback
#   request                input.request ({} when missing)
#   obj                    the object under review ({} for a DELETE or a missing object)
#   kind                   request.kind.kind, else the object's kind
#   operation              request.operation ("CREATE" when missing)
#   subresource            request.subResource ("" for the main resource)
#   object_or_empty(x), array_or_empty(x)  x, or {} / [] when x is not an object / array
#   str(x)                 a scalar as text ("8080" for 8080, "true" for true); undefined otherwise
#   char_count(s)          characters (code points) of s
package regate.lib.regate

import rego.v1

# The namespace's environment: "development", "staging" or "production". regate always
# injects it; when a policy is evaluated without it (e.g. plain `opa eval`), the strictest
# environment is assumed.
default environment := "production"

environment := env if {
	env := data.regate.environment
	env in {"development", "staging", "production"}
}

# This policy's parameters, resolved by regate for the environment ({} when none given).
default parameters := {}

parameters := p if {
	p := data.regate.parameters
	is_object(p)
}

# param(name, fallback): a parameter, or `fallback` when regate did not supply it.
# The fallbacks the policies pass are their metadata defaults, so the policy behaves the
# same when evaluated without regate.
param(name, fallback) := object.get(parameters, name, fallback)

# The admission request, always an object.
default request := {}

request := r if {
	r := input.request
	is_object(r)
}

# The object under review, or {} (e.g. a DELETE carries `object: null`).
default obj := {}

obj := o if {
	o := request.object
	is_object(o)
}

# request.kind.kind, falling back to the object's own kind.
kind := object.get(request, ["kind", "kind"], object.get(obj, "kind", ""))

operation := object.get(request, "operation", "CREATE")

# "" for a request on the main resource, e.g. "ephemeralcontainers" for a subresource.
# (The metadata names subresources as `pods/ephemeralcontainers`; the AdmissionRequest
# carries the resource and the subresource separately. Both spellings are accepted here.)
default subresource := ""

subresource := s if {
	s := request.subResource
	is_string(s)
}

# object_or_empty(x): x when it is an object, else {} (for null or missing fields).
object_or_empty(x) := x if is_object(x)

else := {}

# array_or_empty(x): x when it is an array, else [] (for null or missing fields).
array_or_empty(x) := x if is_array(x)

else := []

# str(x): a scalar as a string: strings as they are, numbers and booleans as printed
# (a manifest may write `DEBUG: true` unquoted). Undefined for null, arrays and objects.
str(x) := x if is_string(x)

else := sprintf("%v", [x]) if {
	is_number(x)
} else := sprintf("%v", [x]) if {
	is_boolean(x)
}

# char_count(s): the number of characters (Unicode code points) of a string.
# regorus's count(s) counts UTF-16 code units (an emoji counts 2), unlike OPA's, which counts
# code points. The last character sits at offset count(s) - 1 only when count(s) counts
# characters: always in OPA, and in regorus when no character needs two UTF-16 units (then
# both counts agree). Otherwise splitting on "" yields one element per code point in both;
# it builds a string per character, so it is kept for the rare text that needs it.
char_count(s) := n if {
	n := count(s)
	n > 0
	substring(s, n - 1, 1) != ""
} else := count(split(s, ""))
