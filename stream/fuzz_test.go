package stream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzPeekServerName feeds PeekServerName any bytes, delivered in reads of any size,
// and checks that it never panics, never reads more than its limit, returns exactly
// the bytes it read, and that a name it returns is a lowercase host name.
func FuzzPeekServerName(f *testing.F) {
	for _, hc := range helloConfigs {
		hello := clientHello(f, hc.cfg)
		f.Add(hello, uint8(0))
		f.Add(reframe(hello, 1, 7, 300), uint8(5))
	}
	f.Add(record(handshake(1, helloBody(sni(entry(0, "a.example"))))), uint8(1))
	f.Add(record(handshake(1, helloBody())), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		const limit = 1024
		mc := &memConn{data: data, chunk: int(chunk)%64 + 1}
		name, hello, err := PeekServerName(mc, limit, 0)
		if mc.read > limit {
			t.Fatalf("read %d bytes, over the limit of %d", mc.read, limit)
		}
		if !bytes.Equal(hello, data[:mc.read]) {
			t.Fatalf("returned %d bytes, not the %d read", len(hello), mc.read)
		}
		if err != nil {
			if name != "" {
				t.Fatalf("name %q with error %v", name, err)
			}
			known := false
			for _, kind := range []error{ErrNotTLS, ErrMalformedHello, ErrHelloTooLarge, io.EOF, io.ErrUnexpectedEOF} {
				known = known || errors.Is(err, kind)
			}
			if !known || !strings.HasPrefix(err.Error(), "stream: ") {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if name != "" && (name != strings.ToLower(name) || checkHost([]byte(name)) != nil) {
			t.Fatalf("name %q is not a lowercase host name", name)
		}
		// The ClientHello ends the records read: reading them again from the bytes
		// alone, at once, gives the same answer.
		again, hello2, err := PeekServerName(&memConn{data: hello, chunk: len(hello)}, limit, 0)
		if err != nil || again != name || !bytes.Equal(hello2, hello) {
			t.Fatalf("again: %q, %v; first %q", again, err, name)
		}
	})
}
