package blacklist

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	f := func(line string, wantOK bool, want string, wantErr string) {
		t.Helper()
		e, ok, err := ParseLine(line)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("ParseLine(%q): err %v, want one containing %q", line, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseLine(%q): %v", line, err)
		}
		if ok != wantOK {
			t.Fatalf("ParseLine(%q): ok %v, want %v", line, ok, wantOK)
		}
		if ok && e.Value() != want {
			t.Fatalf("ParseLine(%q) = %q, want %q", line, e.Value(), want)
		}
		if ok && e.Source != SourceFile {
			t.Fatalf("ParseLine(%q): source %s, want file", line, e.Source)
		}
	}
	f("", false, "", "")
	f("   \t", false, "", "")
	f("# a comment", false, "", "")
	f("  # indented comment", false, "", "")
	f("1.2.3.4", true, "1.2.3.4", "")
	f("  1.2.3.4  ", true, "1.2.3.4", "")
	f("1.2.3.4\r", true, "1.2.3.4", "")
	f("1.2.3.4 # trailing comment", true, "1.2.3.4", "")
	f("1.2.3.4/32", true, "1.2.3.4", "")
	f("10.1.2.3/8", true, "10.0.0.0/8", "") // masked
	f("0.0.0.0/0", true, "0.0.0.0/0", "")
	f("2001:db8::1", true, "2001:db8::1", "")
	f("2001:DB8::/32", true, "2001:db8::/32", "")
	f("::ffff:1.2.3.4", true, "1.2.3.4", "")         // IPv4-mapped is IPv4
	f("::ffff:10.0.0.0/104", true, "10.0.0.0/8", "") // and so are its prefixes
	f("user:u-banned", true, "user:u-banned", "")    // user ids
	f("user:  spaced  ", true, "user:spaced", "")    // trimmed
	f("user:a#b", true, "user:a#b", "")              // # inside an id is kept
	f("user:a #b", true, "user:a", "")               // " #" starts a comment
	f("user:a\xffb", false, "", "not valid UTF-8")
	f("1.2.3", false, "", `invalid IP "1.2.3"`) // bad address
	f("1.2.3.4/33", false, "", `invalid CIDR "1.2.3.4/33"`)
	f("1.2.3.4 5.6.7.8", false, "", "one IP, CIDR or user:ID a line")
	f("fe80::1%eth0", false, "", "zones are not allowed")
	f("user:", false, "", "empty user id")
	f("user:a\x01b", false, "", "control character")
	f("host.example", false, "", `invalid IP "host.example"`)
}

func TestParsePrefix(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		p, err := ParsePrefix(in)
		if err != nil {
			t.Fatalf("ParsePrefix(%q): %v", in, err)
		}
		if p.String() != want {
			t.Fatalf("ParsePrefix(%q) = %s, want %s", in, p, want)
		}
	}
	f("1.2.3.4", "1.2.3.4/32")
	f("1.2.3.4/24", "1.2.3.0/24")
	f("::1", "::1/128")
	f("::ffff:1.2.3.4", "1.2.3.4/32")
	f("::ffff:0:0/96", "0.0.0.0/0")
	f("::ffff:0:0/95", "::fffe:0:0/95") // wider than the mapped space stays IPv6
}

func TestParseListBadLine(t *testing.T) {
	in := "# banned\n10.0.0.0/8\n\nnot-an-ip\nuser:u1\n1.2.3.4/99\n2001:db8::/32"
	entries, problems, err := ParseList(strings.NewReader(in), "list.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Value())
	}
	if strings.Join(got, ",") != "10.0.0.0/8,user:u1,2001:db8::/32" {
		t.Fatalf("entries %v", got)
	}
	if len(problems) != 2 {
		t.Fatalf("problems %v, want 2", problems)
	}
	if s := problems[0].Error(); !strings.HasPrefix(s, `list.txt:4: invalid IP "not-an-ip"`) {
		t.Fatalf("problem %q", s)
	}
	if s := problems[1].Error(); !strings.HasPrefix(s, `list.txt:6: invalid CIDR "1.2.3.4/99"`) {
		t.Fatalf("problem %q", s)
	}
}

func TestParseListLongLine(t *testing.T) {
	in := "1.1.1.1\n" + strings.Repeat("x", 100<<10) + "\n2.2.2.2\n"
	entries, problems, err := ParseList(strings.NewReader(in), "f")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[1].Value() != "2.2.2.2" {
		t.Fatalf("entries %v", entries)
	}
	if len(problems) != 1 || !strings.HasPrefix(problems[0].Error(), "f:2: line longer than") {
		t.Fatalf("problems %v", problems)
	}
}

func TestEntryJSONRoundTrip(t *testing.T) {
	f := func(e Entry) {
		t.Helper()
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var got Entry
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if got.Value() != e.Value() || got.Kind != e.Kind || got.Source != e.Source ||
			got.Reason != e.Reason || !got.Created.Equal(e.Created) || !got.Expires.Equal(e.Expires) {
			t.Fatalf("round trip of %s: %+v, want %+v", b, got, e)
		}
	}
	now := mustTime("2030-01-02T03:04:05.123456789Z")
	f(Entry{Kind: KindCIDR, Source: SourceAPI, Prefix: netip.MustParsePrefix("1.2.3.0/24"), Reason: "x", Created: now, Expires: now.Add(60e9)})
	f(Entry{Kind: KindIP, Source: SourceAuto, Prefix: netip.MustParsePrefix("2001:db8::1/128"), Created: now})
	f(Entry{Kind: KindUser, Source: SourceConfig, User: "u1"})

	b, _ := json.Marshal(Entry{Kind: KindIP, Source: SourceAPI, Prefix: netip.MustParsePrefix("1.2.3.4/32")})
	if string(b) != `{"ip":"1.2.3.4","kind":"ip","source":"api"}` {
		t.Fatalf("listing form %s", b)
	}
}

// FuzzParseLine: the parser never panics, and what it accepts prints back to a line
// that parses to the same entry.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "10.0.0.0/8", "2001:db8::/32", "user:u1", "# c", "::ffff:1.2.3.4/120", "user:a#b #c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, ok, err := ParseLine(line)
		if err != nil || !ok {
			return
		}
		again, ok2, err2 := ParseLine(e.Value())
		if err2 != nil || !ok2 {
			t.Fatalf("%q parsed to %q, which does not parse: %v", line, e.Value(), err2)
		}
		if again.Value() != e.Value() || again.Kind != e.Kind || again.Prefix != e.Prefix || again.User != e.User {
			t.Fatalf("%q parsed to %+v, then %+v", line, e, again)
		}
		if e.Kind != KindUser {
			if e.Prefix != e.Prefix.Masked() || e.Prefix.Addr().Is4In6() || e.Prefix.Addr().Zone() != "" {
				t.Fatalf("%q: prefix %s not normalized", line, e.Prefix)
			}
		}
	})
}
