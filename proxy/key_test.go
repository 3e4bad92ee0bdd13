package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/edge-gw/edge/config"
	"github.com/valyala/fasthttp"
)

// keyCtx is a request as Handler would see it, from peer 127.0.0.1.
func keyCtx(uri, host string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.SetRequestURI(uri)
	req.Header.SetHost(host)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

func mustKey(t testing.TB, parts ...string) *compiledKey {
	t.Helper()
	k := config.Key{Text: strings.Join(parts, "+")}
	for _, s := range parts {
		p, err := config.ParseKeyPart(s)
		if err != nil {
			t.Fatal(err)
		}
		k.Parts = append(k.Parts, p)
	}
	return compileKey(k)
}

func TestKeyExtraction(t *testing.T) {
	client := netip.MustParseAddr("203.0.113.7")
	ctx := keyCtx("/item/42/detail?sku=a%00b&day=today", "Shop.Example:8080",
		"X-User-Id", "u-1", "Cookie", "sid=s1; theme=dark")
	f := func(want string, wantOK bool, parts ...string) {
		t.Helper()
		k := mustKey(t, parts...)
		got, ok := k.appendKey([]byte("pre:"), ctx, client)
		if ok != wantOK || !bytes.HasPrefix(got, []byte("pre:")) || string(got[4:]) != want {
			t.Errorf("key %v = %q, %v; want %q, %v", parts, got, ok, "pre:"+want, wantOK)
		}
		h, hok := k.hashKey(ctx, client, 77)
		d := xxhash.NewWithSeed(77)
		d.Write(got[4:])
		if hok != wantOK || (ok && h != d.Sum64()) {
			t.Errorf("key %v: hashKey = %x, %v; want the seeded xxhash of appendKey's bytes %x", parts, h, hok, d.Sum64())
		}
	}
	f("203.0.113.7", true, "ip")
	f("shop.example", true, "host")
	f("u-1", true, "header:X-User-Id")
	f("u-1", true, "header:x-user-id")
	f("s1", true, "cookie:sid")
	f("dark", true, "cookie:theme")
	f("a\x00b", true, "query:sku")
	f("item", true, "path:1")
	f("42", true, "path:2")
	f("detail", true, "path:3")
	f("flash", true, "const:flash")
	// Several parts: each as uvarint length, then the bytes.
	f("\x03u-1\x0242", true, "header:X-User-Id", "path:2")
	f("\x05today\x03a\x00b", true, "query:day", "query:sku")
	// Missing: any empty part makes the whole key missing.
	f("", false, "header:X-None")
	f("", false, "cookie:none")
	f("", false, "query:none")
	f("", false, "path:4")
	f("", false, "header:X-User-Id", "path:9")
	f("", false, "const:x", "header:X-None")

	// No valid client address: ip is missing.
	if _, ok := mustKey(t, "ip").appendKey(nil, ctx, netip.Addr{}); ok {
		t.Errorf("ip key of an invalid address is not missing")
	}
	// The zero key is always missing.
	if _, ok := compileKey(config.Key{}).appendKey(nil, ctx, client); ok {
		t.Errorf("zero key is not missing")
	}
	// Host is case- and port-insensitive, IPv6 literals lose their brackets.
	for host, want := range map[string]string{"SHOP.example": "shop.example", "shop.example:443": "shop.example",
		"[2001:DB8::1]:8080": "2001:db8::1"} {
		if got, _ := mustKey(t, "host").appendKey(nil, keyCtx("/", host), client); string(got) != want {
			t.Errorf("host %q: key %q, want %q", host, got, want)
		}
	}
}

func TestPathSegment(t *testing.T) {
	f := func(path string, n int, want string) {
		t.Helper()
		if got := pathSegment([]byte(path), n); string(got) != want {
			t.Errorf("pathSegment(%q, %d) = %q, want %q", path, n, got, want)
		}
	}
	f("/item/42/detail", 1, "item")
	f("/item/42/detail", 2, "42")
	f("/item/42/detail", 3, "detail")
	f("/item/42/detail", 4, "")
	f("/item/42/", 3, "")
	f("/", 1, "")
	f("", 1, "")
	f("/a", 2, "")
}

// A long host is lower-cased through writeLower's chunks the same way appendKey does.
func TestHashKeyLongValues(t *testing.T) {
	host := strings.Repeat("AbC", 100)
	ctx := keyCtx("/x", host, "X-Long", strings.Repeat("v", 5000))
	for _, k := range []*compiledKey{mustKey(t, "host"), mustKey(t, "header:X-Long"), mustKey(t, "host", "header:X-Long", "ip")} {
		b, _ := k.appendKey(nil, ctx, netip.MustParseAddr("::1"))
		h, _ := k.hashKey(ctx, netip.MustParseAddr("::1"), 0)
		if h != xxhash.Sum64(b) {
			t.Errorf("key %s: hashKey differs from xxhash of appendKey", k.text)
		}
	}
}

// FuzzKey checks, for any header, cookie, query and path values, that key
// extraction does not panic, that hashKey hashes exactly what appendKey appends, and
// that the encoding of several parts decodes back to the parts' own values (so two
// different tuples never share a key).
func FuzzKey(f *testing.F) {
	f.Add("u1", "42", "a=b", "sid=x")
	f.Add("", "", "", "")
	f.Add("a\x01b", "%00%ff/x", "q=%00&q=2", "sid=\"quoted\"; a=b")
	f.Add(strings.Repeat("z", 300), "a//b/../c", "%zz", ";;=")
	parts := []string{"header:X-User-Id", "path:2", "query:q", "cookie:sid", "host", "ip", "const:c"}
	keys := []*compiledKey{}
	for i := range parts {
		keys = append(keys, mustKey(f, parts[i]))
		keys = append(keys, mustKey(f, parts[i], parts[(i+1)%len(parts)], parts[(i+3)%len(parts)]))
	}
	f.Fuzz(func(t *testing.T, user, path, query, cookie string) {
		var req fasthttp.Request
		req.SetRequestURI("/item/" + path + "?" + query)
		req.Header.SetHost("h.example")
		req.Header.Set("X-User-Id", user)
		req.Header.Set("Cookie", cookie)
		ctx := &fasthttp.RequestCtx{}
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, nil)
		client := netip.MustParseAddr("10.0.0.1")
		for _, k := range keys {
			b, ok := k.appendKey(nil, ctx, client)
			h, hok := k.hashKey(ctx, client, 5)
			d := xxhash.NewWithSeed(5)
			d.Write(b)
			if ok != hok || (ok && h != d.Sum64()) {
				t.Fatalf("key %s: appendKey %q %v, hashKey %x %v", k.text, b, ok, h, hok)
			}
			if !ok {
				continue
			}
			var vals [][]byte
			for i := range k.parts {
				v, lower := k.parts[i].value(ctx, client, make([]byte, 0, 48))
				if lower {
					v = bytes.ToLower(v)
				}
				vals = append(vals, append([]byte(nil), v...))
			}
			if len(vals) == 1 {
				if !bytes.Equal(b, vals[0]) {
					t.Fatalf("key %s = %q, want the value %q", k.text, b, vals[0])
				}
				continue
			}
			rest := b
			for i, v := range vals {
				n, w := binary.Uvarint(rest)
				if w <= 0 || uint64(len(rest)-w) < n || !bytes.Equal(rest[w:w+int(n)], v) {
					t.Fatalf("key %s = %q: part %d does not decode to %q", k.text, b, i, v)
				}
				rest = rest[w+int(n):]
			}
			if len(rest) != 0 {
				t.Fatalf("key %s = %q: %d bytes after the parts", k.text, b, len(rest))
			}
		}
	})
}
