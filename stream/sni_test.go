package stream

import (
	"strings"
	"testing"
)

func TestSNIRouterPick(t *testing.T) {
	r, err := NewSNIRouter([]SNIRoute{
		{"api.shop.example.com", "api-tls"},
		{"*.shop.example.com", "web-tls"},
		{"*.EU.Shop.Example.com", "eu-tls"},
		{"Exact.Example", "exact"},
	}, "default-tls")
	if err != nil {
		t.Fatal(err)
	}
	f := func(name, want string) {
		t.Helper()
		if got, ok := r.Pick(name); got != want || !ok {
			t.Errorf("Pick(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	f("api.shop.example.com", "api-tls")      // exact before wildcard
	f("web.shop.example.com", "web-tls")      // one label
	f("x.eu.shop.example.com", "eu-tls")      // the longer wildcard, by its suffix
	f("eu.shop.example.com", "web-tls")       // eu is the one label of *.shop
	f("a.b.shop.example.com", "default-tls")  // a wildcard stands for one label only
	f("shop.example.com", "default-tls")      // nor for none
	f(".shop.example.com", "default-tls")     // an empty label is no label
	f("exact.example", "exact")               // patterns are lowercased
	f("API.Shop.Example.COM", "api-tls")      // and so are names
	f("", "default-tls")                      // no SNI
	f("unknown.example", "default-tls")       // unknown name
	f("api.shop.example.com.", "default-tls") // PeekServerName refuses a trailing dot; Pick does not strip one
	f("xapi.shop.example.com", "web-tls")

	r, err = NewSNIRouter([]SNIRoute{{"a.example", "a"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "b.example", "x.a.example"} {
		if got, ok := r.Pick(name); ok || got != "" {
			t.Errorf("no default: Pick(%q) = %q, %v", name, got, ok)
		}
	}
	if r, err := NewSNIRouter(nil, "d"); err != nil {
		t.Error(err)
	} else if got, ok := r.Pick("any.example"); got != "d" || !ok {
		t.Errorf("only a default: %q, %v", got, ok)
	}
}

// Every bad pattern is reported at once, each by name.
func TestSNIRouterErrors(t *testing.T) {
	_, err := NewSNIRouter([]SNIRoute{
		{"ok.example", "t"},
		{"*", "t"},
		{"*.", "t"},
		{"a.*.example", "t"},
		{"*a.example", "t"},
		{"*.*.example", "t"},
		{"", "t"},
		{"trailing.dot.", "t"},
		{"sp ace.example", "t"},
		{"OK.example", "u"},
		{"empty.example", ""},
		{strings.Repeat("a", 64) + ".example", "t"},
	}, "")
	want := []string{
		`stream: sni pattern "*": not a host name, or "*." and a host name: byte 0 ('*') is not a letter, digit, '-', '_' or '.'`,
		`stream: sni pattern "*.": not a host name after "*.": 0 bytes, a host name has 1 to 253`,
		`stream: sni pattern "a.*.example": not a host name, or "*." and a host name: byte 2 ('*') is not a letter, digit, '-', '_' or '.'`,
		`stream: sni pattern "*a.example": not a host name, or "*." and a host name: byte 0 ('*') is not a letter, digit, '-', '_' or '.'`,
		`stream: sni pattern "*.*.example": not a host name after "*.": byte 0 ('*') is not a letter, digit, '-', '_' or '.'`,
		`stream: sni pattern "": not a host name: 0 bytes, a host name has 1 to 253`,
		`stream: sni pattern "trailing.dot.": not a host name: a trailing dot`,
		`stream: sni pattern "sp ace.example": not a host name: byte 2 (' ') is not a letter, digit, '-', '_' or '.'`,
		`stream: sni pattern "OK.example": given twice (also as "ok.example")`,
		`stream: sni pattern "empty.example": empty target`,
		`stream: sni pattern "` + strings.Repeat("a", 64) + `.example": not a host name: a label longer than 63 bytes`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("got\n%v\nwant\n%s", err, strings.Join(want, "\n"))
	}
}
