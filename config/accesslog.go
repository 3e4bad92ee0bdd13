package config

import (
	"fmt"
	"sort"
	"strings"
)

// LogPart is one piece of an access log template: literal Text, or the variable Var
// (without its "$"); for $http_NAME, Var is "http_" and Header the request header
// NAME (underscores read as dashes).
type LogPart struct {
	Text   string
	Var    string
	Header string
}

// LogVars are the variables an access log template may use, named as nginx's where
// nginx has one; the last five are edge's.
var LogVars = map[string]string{
	"remote_addr":            "the client address (after trusted_proxies and PROXY headers)",
	"remote_user":            `always "-" (edge does no HTTP authentication)`,
	"time_local":             "the request's start, 06/Dec/2026:15:04:05 +0000",
	"time_iso8601":           "the request's start, RFC 3339",
	"msec":                   "the request's start, Unix seconds with milliseconds",
	"request":                `the request line: "GET /path?query HTTP/1.1"`,
	"request_method":         "the method",
	"request_uri":            "the path and query as sent",
	"uri":                    "the path",
	"args":                   "the query, without ?",
	"server_protocol":        "HTTP/1.1 or HTTP/2.0",
	"host":                   "the Host header (or :authority)",
	"status":                 "the answer's status",
	"body_bytes_sent":        "the answer's body size",
	"request_time":           "seconds from the request's start to the log line, millisecond precision",
	"upstream_addr":          `the server the request went to, "-" for none`,
	"upstream_response_time": `seconds the upstream exchange took, "-" when none`,
	"request_id":             "X-Request-Id (generated when absent)",
	"http_":                  "$http_NAME: the request header NAME (http_user_agent, http_referer, …)",
	"route":                  "edge: the route's name",
	"cell":                   `edge: the cell that served (X-Edge-Cell), "-" otherwise`,
	"cache":                  `edge: HIT, MISS, STALE or BYPASS (X-Cache), "-" otherwise`,
	"limit":                  `edge: the limit that rejected the request, "-" otherwise`,
	"listener":               "edge: the listener's name",
}

// CombinedLog is nginx's combined format as a template.
const CombinedLog = `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`

// ParseLogTemplate splits a template into parts. A variable is "$" then letters, digits
// and underscores, or "${name}" when text follows at once; "$$" is a literal "$". It
// reports the first unknown variable.
func ParseLogTemplate(s string) ([]LogPart, error) {
	var parts []LogPart
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			parts = append(parts, LogPart{Text: text.String()})
			text.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			text.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			text.WriteByte('$')
			i++
			continue
		}
		var name string
		if i+1 < len(s) && s[i+1] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("template: ${ at byte %d is not closed", i)
			}
			name, i = s[i+2:i+end], i+end
		} else {
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			name, i = s[i+1:j], j-1
		}
		part := LogPart{Var: name}
		if h, ok := strings.CutPrefix(name, "http_"); ok && h != "" {
			part = LogPart{Var: "http_", Header: strings.ReplaceAll(h, "_", "-")}
		} else if _, ok := LogVars[name]; !ok || name == "http_" {
			known := make([]string, 0, len(LogVars))
			for k := range LogVars {
				if k != "http_" {
					known = append(known, "$"+k)
				}
			}
			sort.Strings(known)
			return nil, fmt.Errorf("template: unknown variable $%s; known: %s and $http_NAME", name, strings.Join(known, ", "))
		}
		flush()
		parts = append(parts, part)
	}
	flush()
	return parts, nil
}
