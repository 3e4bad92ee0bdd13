package stream

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/edge-gw/edge/internal/tcptest"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// helloConfigs are the crypto/tls clients whose ClientHellos the tests peek at, with
// the name each must give.
var helloConfigs = []struct {
	name string
	cfg  *tls.Config
	want string
}{
	{"SNI", &tls.Config{ServerName: "api.shop.example.com"}, "api.shop.example.com"},
	{"SNI in capitals", &tls.Config{ServerName: "API.Shop.Example.COM"}, "api.shop.example.com"},
	{"SNI and ALPN", &tls.Config{ServerName: "shop.example.com", NextProtos: []string{"h2", "http/1.1"}}, "shop.example.com"},
	{"TLS 1.2 only", &tls.Config{ServerName: "legacy.example.com", MaxVersion: tls.VersionTLS12}, "legacy.example.com"},
	{"TLS 1.3 only", &tls.Config{ServerName: "new.example.com", MinVersion: tls.VersionTLS13}, "new.example.com"},
	{"no SNI", &tls.Config{InsecureSkipVerify: true}, ""},
	{"an IP address: no SNI", &tls.Config{ServerName: "192.0.2.1"}, ""},
}

// Real ClientHellos, delivered in one piece, a byte a TCP segment, and re-framed into
// many records: the name comes out, the bytes returned are exactly what the client
// sent, and what the client sends next is left in the connection.
func TestPeekServerName(t *testing.T) {
	for _, hc := range helloConfigs {
		hello := clientHello(t, hc.cfg)
		f := func(how string, sent []byte, write func(c *net.TCPConn, b []byte)) {
			t.Helper()
			client, server := pair(t)
			go func() {
				write(client, sent)
				client.Write([]byte("next"))
			}()
			name, got, err := PeekServerName(server, 0, 10*time.Second)
			if err != nil || name != hc.want {
				t.Errorf("%s, %s: %q, %v; want %q", hc.name, how, name, err, hc.want)
			}
			if !bytes.Equal(got, sent) {
				t.Errorf("%s, %s: %d bytes returned, not the %d sent", hc.name, how, len(got), len(sent))
			}
			next := make([]byte, 4)
			if _, err := io.ReadFull(server, next); err != nil || string(next) != "next" {
				t.Errorf("%s, %s: then %q, %v", hc.name, how, next, err)
			}
		}
		whole := func(c *net.TCPConn, b []byte) { c.Write(b) }
		bytewise := func(c *net.TCPConn, b []byte) {
			for i := range b {
				c.Write(b[i : i+1])
			}
		}
		f("whole", hello, whole)
		f("a byte a write", hello, bytewise)
		f("1-byte records", reframe(hello, 1), whole)
		f("records of 1, 2, 3 then 500 bytes", reframe(hello, 1, 2, 3, 500), bytewise)
		f("100-byte records", reframe(hello, 100), whole)
	}
}

// What a TLS server behind the peek sees: the client's handshake completes with the
// upstream the name picked, so the bytes were forwarded as sent; and the server's own
// parse of the ClientHello agrees on the name.
func TestPeekThenForward(t *testing.T) {
	cert, pool := selfSigned(t, "api.shop.example.com", "*.shop.example.com")
	var mu sync.Mutex
	seen := map[string]string{} // upstream → the name its TLS server saw
	upstream := func(label string) string {
		cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mu.Lock()
			seen[label] = h.ServerName
			mu.Unlock()
			return &cert, nil
		}}
		return tcptest.Serve(t, func(c net.Conn) {
			tc := tls.Server(c, cfg)
			line := make([]byte, 4)
			if _, err := io.ReadFull(tc, line); err == nil {
				tc.Write([]byte(label + ":" + string(line)))
			}
		})
	}
	router, err := NewSNIRouter([]SNIRoute{
		{"api.shop.example.com", upstream("api")},
		{"*.shop.example.com", upstream("web")},
	}, "")
	if err != nil {
		t.Fatal(err)
	}

	// The stream: peek, pick, dial, forward the ClientHello, relay both ways.
	addr := tcptest.Serve(t, func(c net.Conn) {
		name, hello, err := PeekServerName(c, 0, 5*time.Second)
		if err != nil {
			t.Errorf("peek: %v", err)
			return
		}
		target, ok := router.Pick(name)
		if !ok {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		defer up.Close()
		up.Write(hello)
		go io.Copy(up, c)
		io.Copy(c, up)
	})

	f := func(serverName, want, wantSeen string) {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: serverName, RootCAs: pool})
		if err != nil {
			t.Errorf("%s: %v", serverName, err)
			return
		}
		defer c.Close()
		c.Write([]byte("ping"))
		got, _ := io.ReadAll(c)
		if string(got) != want {
			t.Errorf("%s: answer %q, want %q", serverName, got, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if s := seen[want[:3]]; s != wantSeen {
			t.Errorf("%s: the upstream's TLS server saw %q", serverName, s)
		}
	}
	f("api.shop.example.com", "api:ping", "api.shop.example.com")
	f("web.shop.example.com", "web:ping", "web.shop.example.com")
	f("API.shop.example.com", "api:ping", "API.shop.example.com") // the bytes are forwarded untouched
}

// handshake is a ClientHello message with body as its body.
func handshake(typ byte, body []byte) []byte {
	return append([]byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// record is one TLS handshake record carrying payload.
func record(payload []byte) []byte {
	return append([]byte{0x16, 3, 1, byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

// helloBody is a ClientHello body by hand: version, random, an empty session ID, one
// cipher suite, the null compression, then the extensions given (none: no extensions
// block at all).
func helloBody(exts ...[]byte) []byte {
	b := append([]byte{3, 3}, make([]byte, 32)...)
	b = append(b, 0, 0, 2, 0x13, 0x01, 1, 0)
	if len(exts) == 0 {
		return b
	}
	all := bytes.Join(exts, nil)
	return append(append(b, u16(len(all))...), all...)
}

func ext(typ int, data []byte) []byte {
	return append(append(u16(typ), u16(len(data))...), data...)
}

// sni is a server_name extension listing entries made by entry.
func sni(entries ...[]byte) []byte {
	list := bytes.Join(entries, nil)
	return ext(0, append(u16(len(list)), list...))
}

func entry(typ byte, name string) []byte {
	return append(append([]byte{typ}, u16(len(name))...), name...)
}

// Hand-made ClientHellos: those well formed give their name, the others an error that
// says what is wrong.
func TestPeekHandMade(t *testing.T) {
	f := func(in []byte, wantName string, kind error, wantMsg string) {
		t.Helper()
		name, got, err := PeekServerName(&memConn{data: in, chunk: len(in)}, 0, 0)
		switch {
		case kind == nil && (err != nil || name != wantName):
			t.Errorf("%q: %q, %v; want %q", in, name, err, wantName)
		case kind != nil && (!errors.Is(err, kind) || err.Error() != wantMsg):
			t.Errorf("%q:\n got %v\nwant %s", in, err, wantMsg)
		case !bytes.HasPrefix(in, got):
			t.Errorf("%q: returned %q, not a prefix of the input", in, got)
		}
	}
	ok := func(name string, exts ...[]byte) {
		t.Helper()
		f(record(handshake(1, helloBody(exts...))), name, nil, "")
	}
	bad := func(kind error, msg string, exts ...[]byte) {
		t.Helper()
		f(record(handshake(1, helloBody(exts...))), "", kind, msg)
	}
	ok("")
	ok("", ext(16, []byte{0, 3, 2, 'h', '2'}))
	ok("a.example", ext(16, []byte{0, 3, 2, 'h', '2'}), sni(entry(0, "a.example")), ext(0xFF01, []byte{0}))
	ok("under_score-1.example", sni(entry(0, "Under_Score-1.Example")))
	ok("", sni(entry(7, "other type, skipped")))
	ok("x", sni(entry(7, "other"), entry(0, "x")))
	ok(strings.Repeat("a.", 126)+"a", sni(entry(0, strings.Repeat("a.", 126)+"a")))

	bad(ErrMalformedHello, `stream: ClientHello: two server_name extensions`, sni(entry(0, "a")), sni(entry(0, "b")))
	bad(ErrMalformedHello, `stream: ClientHello: two host_name entries in server_name`, sni(entry(0, "a"), entry(0, "b")))
	bad(ErrMalformedHello, `stream: ClientHello: empty host_name in server_name`, sni(entry(0, "")))
	bad(ErrMalformedHello, `stream: ClientHello: server_name_list length 0, but 0 bytes follow`, ext(0, u16(0)))
	bad(ErrMalformedHello, `stream: ClientHello: server_name_list length 9, but 4 bytes follow`, ext(0, append(u16(9), entry(0, "a")...)))
	bad(ErrMalformedHello, `stream: ClientHello: server_name_list length needs 2 bytes, 0 left`, ext(0, nil))
	bad(ErrMalformedHello, `stream: ClientHello: server name needs 5 bytes, 1 left`, ext(0, []byte{0, 4, 0, 0, 5, 'a'}))
	bad(ErrMalformedHello, `stream: ClientHello: server_name "shop.example.com.": a trailing dot`, sni(entry(0, "shop.example.com.")))
	bad(ErrMalformedHello, `stream: ClientHello: server_name "a..b": empty label at byte 2`, sni(entry(0, "a..b")))
	bad(ErrMalformedHello, `stream: ClientHello: server_name "a b": byte 1 (' ') is not a letter, digit, '-', '_' or '.'`, sni(entry(0, "a b")))
	bad(ErrMalformedHello, `stream: ClientHello: server_name "[::1]": byte 0 ('[') is not a letter, digit, '-', '_' or '.'`, sni(entry(0, "[::1]")))
	long := strings.Repeat("a", 64)
	bad(ErrMalformedHello, `stream: ClientHello: server_name "`+long+`": a label longer than 63 bytes`, sni(entry(0, long)))
	long = strings.Repeat("a.", 127)
	bad(ErrMalformedHello, `stream: ClientHello: server_name "`+long+`": 254 bytes, a host name has 1 to 253`, sni(entry(0, long)))
	bad(ErrMalformedHello, `stream: ClientHello: extension data needs 9 bytes, 2 left`, sni(entry(0, "a")), []byte{0, 16, 0, 9, 1, 2})

	body := helloBody(sni(entry(0, "a")))
	f(record(handshake(1, append(body, 0))), "", ErrMalformedHello, `stream: ClientHello: extensions length 10, but 11 bytes follow`)
	f(record(handshake(1, body[:34])), "", ErrMalformedHello, `stream: ClientHello: legacy_session_id length needs 1 bytes, 0 left`)
	f(record(handshake(1, body[:20])), "", ErrMalformedHello, `stream: ClientHello: random needs 32 bytes, 18 left`)
	set := func(i int, v ...byte) []byte {
		b := bytes.Clone(body)
		copy(b[i:], v)
		return record(handshake(1, b))
	}
	f(set(34, 33), "", ErrMalformedHello, `stream: ClientHello: session ID of 33 bytes, at most 32`)
	f(set(35, 0, 3), "", ErrMalformedHello, `stream: ClientHello: cipher_suites of 3 bytes, not a positive even number`)
	f(set(35, 0, 0), "", ErrMalformedHello, `stream: ClientHello: cipher_suites of 0 bytes, not a positive even number`)
	f(set(39, 0), "", ErrMalformedHello, `stream: ClientHello: no compression method`)

	// Not TLS, or not a ClientHello.
	f([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "", ErrNotTLS, `stream: ClientHello: first byte 0x47 is not a TLS handshake record (0x16)`)
	f([]byte("\x80\x2e\x01\x00\x02"), "", ErrNotTLS, `stream: ClientHello: first byte 0x80 is not a TLS handshake record (0x16)`)
	f([]byte("\x15\x03\x03\x00\x02\x02\x28"), "", ErrNotTLS, `stream: ClientHello: first byte 0x15 is not a TLS handshake record (0x16)`)
	f([]byte("\x16\x02\x00\x00\x02ab"), "", ErrNotTLS, `stream: ClientHello: record version 0x0200 is not TLS (0x03xx)`)
	f(record(handshake(2, body)), "", ErrNotTLS, `stream: ClientHello: handshake message type 2 is not a ClientHello (1)`)

	// Record layer.
	hs := handshake(1, body)
	f([]byte("\x16\x03\x01\x00\x00"), "", ErrMalformedHello, `stream: ClientHello: record 1 is empty`)
	f([]byte("\x16\x03\x01\x40\x01"), "", ErrMalformedHello, `stream: ClientHello: record 1 of 16385 bytes, over TLS's 16384`)
	f(append(record(hs[:10]), 0x15, 3, 3, 0, 2, 2, 40), "", ErrMalformedHello, `stream: ClientHello: record 2 has type 21, not handshake (22), before the ClientHello ends`)
	f(append(record(hs[:10]), 0x16, 4, 3, 0, 2, 2, 40), "", ErrMalformedHello, `stream: ClientHello: record 2 has version 0x0403, not TLS (0x03xx)`)
	// The handshake header itself split across records.
	split := append(append(record(hs[:1]), record(hs[1:3])...), record(hs[3:])...)
	f(split, "a", nil, "")
	// Bytes after the message in its last record are returned, unread.
	f(record(append(bytes.Clone(hs), "more"...)), "a", nil, "")
}

// A ClientHello cut at any length is an unexpected end of file (plain end of file
// before the first byte), in one record or many, in reads of any size, over memory and
// over TCP.
func TestPeekTruncated(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "api.shop.example.com"})
	kind := func(k int) error {
		if k == 0 {
			return io.EOF
		}
		return io.ErrUnexpectedEOF
	}
	for _, in := range [][]byte{hello, reframe(hello, 3, 50)} {
		for k := range len(in) {
			for _, chunk := range []int{1, 1000} {
				_, got, err := PeekServerName(&memConn{data: in[:k], chunk: chunk}, 0, 0)
				if !errors.Is(err, kind(k)) || !bytes.Equal(got, in[:k]) {
					t.Fatalf("%d of %d bytes in %d-byte reads: %v, %d bytes returned", k, len(in), chunk, err, len(got))
				}
			}
		}
	}
	for _, k := range []int{0, 1, 4, 5, 6, 9, 100, len(hello) - 1} {
		client, server := pair(t)
		client.Write(hello[:k])
		client.CloseWrite()
		_, _, err := PeekServerName(server, 0, 10*time.Second)
		if !errors.Is(err, kind(k)) {
			t.Errorf("%d bytes over TCP: %v", k, err)
		}
	}
	_, _, err := PeekServerName(&memConn{data: hello[:100], chunk: 1}, 0, 0)
	if want := "stream: ClientHello: connection closed inside it, after 100 bytes"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// A slow client is cut by the timeout; a ClientHello that arrives in time leaves the
// conn without a deadline.
func TestPeekTimeout(t *testing.T) {
	client, server := pair(t)
	client.Write([]byte{0x16, 3, 1})
	stop := time.AfterFunc(5*time.Second, func() { server.Close() }) // fail, not hang, without a deadline
	defer stop.Stop()
	_, got, err := PeekServerName(server, 0, 100*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "stream: no whole ClientHello within 100ms (3 bytes read)") || len(got) != 3 {
		t.Errorf("slow client: %v, %d bytes returned", err, len(got))
	}

	client, server = pair(t)
	client.Write(clientHello(t, &tls.Config{ServerName: "a.example"}))
	if _, _, err := PeekServerName(server, 0, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // past the peek's deadline: it must be gone
	client.Write([]byte("late"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "late" {
		t.Errorf("after the ClientHello: %q, %v", b, err)
	}
}

// The limit holds, record headers included, and is enforced before the bytes over it
// are waited for: the client here holds its connection open, so a peek that waited
// would end in its timeout instead.
func TestPeekOversize(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "api.shop.example.com"})
	f := func(in []byte, limit int, wantErr string) {
		t.Helper()
		client, server := pair(t)
		client.Write(in)
		name, _, err := PeekServerName(server, limit, 10*time.Second)
		switch {
		case wantErr == "" && (err != nil || name != "api.shop.example.com"):
			t.Errorf("limit %d: %q, %v", limit, name, err)
		case wantErr != "" && (!errors.Is(err, ErrHelloTooLarge) || err.Error() != wantErr):
			t.Errorf("limit %d:\n got %v\nwant %s", limit, err, wantErr)
		}
	}
	n := len(hello)
	f(hello, n, "")
	f(hello, n-1, fmt.Sprintf("stream: ClientHello: record 1 of %d bytes takes it to %d bytes, the limit is %d", n-5, n, n-1))
	h := n - 5 // the handshake message
	many := reframe(hello, 100)
	last := (h-1)/100 + 1
	f(many, len(many), "")
	f(many, len(many)-1, fmt.Sprintf("stream: ClientHello: record %d of %d bytes takes it to %d bytes, the limit is %d", last, h-100*(last-1), len(many), len(many)-1))
	f(many, n-1, fmt.Sprintf("stream: ClientHello: %d bytes long (%d with a record header), the limit is %d", h, n, n-1))
	ones := reframe(hello, 1) // 6 bytes a record: with a limit of 6k+4, record k+1's header is over it
	k := (n - 4 + 5) / 6
	f(ones, 6*k+4, fmt.Sprintf("stream: ClientHello: not whole after %d bytes, the limit is %d", 6*k, 6*k+4))
	// Only headers arrive: a record of 16 KiB, a message of 16 MiB.
	f([]byte{0x16, 3, 1, 0x40, 0}, 0, fmt.Sprintf("stream: ClientHello: record 1 of 16384 bytes takes it to 16389 bytes, the limit is %d", DefaultMaxHello))
	f([]byte{0x16, 3, 1, 0, 4, 1, 0xFF, 0xFF, 0xFF}, 0, fmt.Sprintf("stream: ClientHello: 16777219 bytes long (16777224 with a record header), the limit is %d", DefaultMaxHello))
}
