package compress

import (
	"testing"

	"github.com/valyala/fasthttp"
)

func TestNegotiate(t *testing.T) {
	for ae, want := range map[string]Encoding{
		"":                          Identity,
		"gzip":                      Gzip,
		"br":                        Brotli,
		"gzip, deflate, br":         Brotli,
		"gzip;q=1.0, br;q=0.5":      Gzip,
		"br;q=0, gzip;q=0":          Identity,
		"identity":                  Identity,
		"GZIP":                      Gzip,
		"br;q=0.9, gzip;q=0.9":      Brotli,
		"gzip;q=0.001, *;q=0":       Gzip,
		"br;q=bogus, gzip":          Gzip,
		"x-gzip;q=0.7":              Gzip,
		"deflate;q=1, zstd":         Identity,
		"br ; q=0.3 , gzip ; q=0.2": Brotli,
	} {
		if got := Negotiate([]byte(ae)); got != want {
			t.Errorf("Negotiate(%q) = %d, want %d", ae, got, want)
		}
	}
}

func TestTypes(t *testing.T) {
	ts := NewTypes([]string{"text/", "application/JSON"})
	for ct, want := range map[string]bool{"text/html; charset=utf-8": true, "application/json": true,
		"Application/Json;x=1": true, "text/": false, "image/png": false, "application/jsonx": false} {
		if got := ts.Match([]byte(ct)); got != want {
			t.Errorf("Match(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestAddVary(t *testing.T) {
	for have, want := range map[string]string{"": "Accept-Encoding", "Cookie": "Cookie, Accept-Encoding",
		"accept-encoding": "accept-encoding", "*": "*"} {
		var h fasthttp.ResponseHeader
		if have != "" {
			h.Set("Vary", have)
		}
		AddVary(&h)
		if got := string(h.Peek("Vary")); got != want {
			t.Errorf("Vary %q → %q, want %q", have, got, want)
		}
	}
}
