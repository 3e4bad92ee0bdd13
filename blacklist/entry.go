// Package blacklist decides whether a client IP or a user id is banned.
//
// A List combines two parts:
//
//   - the static part, built from the config's ips and users and the optional list
//     file. It is immutable: a reload or a file change builds a new one off the hot
//     path and swaps it in with one atomic store. IP ranges are kept as sorted,
//     merged, non-overlapping ranges with a /16 index for IPv4, so a lookup costs a
//     few comparisons even with millions of entries.
//   - the dynamic part: bans made at runtime through the admin API or by auto-ban,
//     each with an optional expiry. Single addresses (and IPv6 /64s) live in a
//     sharded map, other CIDRs in a small copy-on-write list, so adding a ban never
//     rebuilds the static structure. Dynamic bans are kept in a JSON file in the
//     state dir and survive restarts.
//
// Lookups (BlockedIP, BlockedUser) are safe for concurrent use, allocate nothing and
// take no lock when there are no dynamic bans.
package blacklist

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is what an entry matches. The zero value KindNone means "no match".
type Kind uint8

// Kinds of entries. Their String values are the label values of the metrics
// edge_blacklist_entries{kind} and edge_blacklist_blocked_total{kind}.
const (
	KindNone Kind = iota // no match
	KindIP               // a single address (an IPv4 /32 or IPv6 /128)
	KindCIDR             // a range of addresses
	KindUser             // a user id
	numKinds
)

// String returns "ip", "cidr", "user", or "none".
func (k Kind) String() string {
	switch k {
	case KindIP:
		return "ip"
	case KindCIDR:
		return "cidr"
	case KindUser:
		return "user"
	}
	return "none"
}

// Source is where an entry comes from.
type Source uint8

// Sources of entries.
const (
	SourceConfig Source = iota // the config's ips and users
	SourceFile                 // the list file
	SourceAPI                  // the admin API
	SourceAuto                 // auto-ban
)

// String returns "config", "file", "api" or "auto".
func (s Source) String() string {
	switch s {
	case SourceConfig:
		return "config"
	case SourceFile:
		return "file"
	case SourceAPI:
		return "api"
	case SourceAuto:
		return "auto"
	}
	return "unknown"
}

func parseSource(s string) (Source, bool) {
	switch s {
	case "config":
		return SourceConfig, true
	case "file":
		return SourceFile, true
	case "api":
		return SourceAPI, true
	case "auto":
		return SourceAuto, true
	}
	return 0, false
}

// Entry is one ban as listed by List.Entries and kept in the state file. It is a
// plain value; the List keeps no reference to it.
type Entry struct {
	Kind    Kind
	Source  Source
	Prefix  netip.Prefix // for KindIP and KindCIDR: masked, IPv4-mapped addresses unmapped
	User    string       // for KindUser
	Reason  string       // free text; empty for config and file entries
	Created time.Time    // zero for config and file entries
	Expires time.Time    // zero: never expires
}

// Value returns the entry as it is written in a list file: "10.0.0.0/8", "1.2.3.4"
// (single addresses without /32 or /128) or "user:ID".
func (e Entry) Value() string {
	if e.Kind == KindUser {
		return userPrefix + e.User
	}
	return prefixString(e.Prefix)
}

func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// entryJSON is the wire form of an Entry, shared by the admin listing and the state
// file: {"ip":"1.2.3.0/24","kind":"cidr",...} or {"user":"u1","kind":"user",...},
// the same field names POST and DELETE /blacklist use.
type entryJSON struct {
	IP      string     `json:"ip,omitempty"`
	User    string     `json:"user,omitempty"`
	Kind    string     `json:"kind"`
	Source  string     `json:"source"`
	Reason  string     `json:"reason,omitempty"`
	Created *time.Time `json:"created_at,omitempty"`
	Expires *time.Time `json:"expires_at,omitempty"` // absent: never expires
}

// MarshalJSON encodes the entry for the admin listing and the state file. Times are
// RFC 3339 in UTC; created_at and expires_at are left out when zero.
func (e Entry) MarshalJSON() ([]byte, error) {
	j := entryJSON{Kind: e.Kind.String(), Source: e.Source.String(), Reason: e.Reason}
	if e.Kind == KindUser {
		j.User = e.User
	} else {
		j.IP = prefixString(e.Prefix)
	}
	if !e.Created.IsZero() {
		t := e.Created.UTC()
		j.Created = &t
	}
	if !e.Expires.IsZero() {
		t := e.Expires.UTC()
		j.Expires = &t
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes and validates what MarshalJSON writes.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var out Entry
	src, ok := parseSource(j.Source)
	if !ok {
		return fmt.Errorf("unknown source %q", j.Source)
	}
	out.Source = src
	switch {
	case j.User != "" && j.IP != "":
		return errors.New("entry has both ip and user")
	case j.User != "":
		if err := checkUser(j.User); err != nil {
			return err
		}
		out.Kind, out.User = KindUser, j.User
	case j.IP != "":
		p, err := ParsePrefix(j.IP)
		if err != nil {
			return err
		}
		out.Kind, out.Prefix = prefixKind(p), p
	default:
		return errors.New("entry has neither ip nor user")
	}
	if j.Kind != out.Kind.String() {
		return fmt.Errorf("entry %q has kind %q, want %q", out.Value(), j.Kind, out.Kind)
	}
	out.Reason = j.Reason
	if j.Created != nil {
		out.Created = *j.Created
	}
	if j.Expires != nil {
		out.Expires = *j.Expires
	}
	*e = out
	return nil
}

const (
	userPrefix = "user:"
	// MaxUserLen is the longest user id accepted, in bytes.
	MaxUserLen = 256
)

// ParsePrefix parses an IP address ("1.2.3.4", "2001:db8::1") or a CIDR
// ("10.0.0.0/8"). The result is masked ("10.1.2.3/8" becomes "10.0.0.0/8"),
// IPv4-mapped IPv6 forms are turned into IPv4, and an address is returned as a
// single-address prefix (/32 or /128). Zones are refused. The admin API uses it for
// the "ip" field and the ?ip= parameter.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.IndexByte(s, '/') >= 0 {
		q, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: %w", s, trimNetipErr(err))
		}
		p = q
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid IP %q: %w", s, trimNetipErr(err))
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid IP %q: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return normalizePrefix(p)
}

// normalizePrefix masks p and unmaps IPv4-mapped IPv6 prefixes of /96 or longer.
func normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("invalid prefix")
	}
	a := p.Addr()
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: zones are not allowed", p)
	}
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// trimNetipErr drops netip's own quoting of the input, which the caller already
// names, keeping the reason.
func trimNetipErr(err error) error {
	msg := err.Error()
	if i := strings.LastIndex(msg, "): "); i >= 0 {
		return errors.New(msg[i+3:])
	}
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return errors.New(msg[i+2:])
	}
	return err
}

func prefixKind(p netip.Prefix) Kind {
	if p.IsSingleIP() {
		return KindIP
	}
	return KindCIDR
}

// checkUser refuses user ids that cannot come from a header or would not survive a
// list file: empty, too long, surrounding spaces or control characters.
func checkUser(u string) error {
	if u == "" {
		return errors.New("empty user id")
	}
	if len(u) > MaxUserLen {
		return fmt.Errorf("user id longer than %d bytes", MaxUserLen)
	}
	if strings.TrimSpace(u) != u {
		return fmt.Errorf("user id %q has surrounding spaces", u)
	}
	if !utf8.ValidString(u) {
		return fmt.Errorf("user id %q is not valid UTF-8", u)
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("user id %q has a control character", u)
		}
	}
	return nil
}

// ParseLine parses one line of a list file: an IP, a CIDR or "user:ID". Blank lines
// and comments ("#" at the start of the line or after a space) give ok=false and no
// error. Source is SourceFile. It never panics, whatever the input (fuzzed).
func ParseLine(line string) (e Entry, ok bool, err error) {
	s := stripComment(line)
	s = strings.TrimSpace(s)
	if s == "" {
		return Entry{}, false, nil
	}
	if strings.HasPrefix(s, userPrefix) {
		u := strings.TrimSpace(s[len(userPrefix):])
		if err := checkUser(u); err != nil {
			return Entry{}, false, fmt.Errorf("invalid entry %q: %w", s, err)
		}
		return Entry{Kind: KindUser, Source: SourceFile, User: u}, true, nil
	}
	if strings.ContainsAny(s, " \t") {
		return Entry{}, false, fmt.Errorf("invalid entry %q: want one IP, CIDR or user:ID a line", s)
	}
	p, err := ParsePrefix(s)
	if err != nil {
		return Entry{}, false, err
	}
	return Entry{Kind: prefixKind(p), Source: SourceFile, Prefix: p}, true, nil
}

// stripComment cuts a "#" comment that starts the line or follows a blank, so a user
// id may contain "#".
func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}
