package listener

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/edge-gw/edge/h2"
)

// FuzzSniff sends any bytes, in writes of any size, then closes, and checks the h2c
// look (over net.Pipe, whose reads return at most one write): it says HTTP/2 exactly
// when the bytes begin with the client preface, fails only on an empty connection, and
// the conn it returns reads back every byte sent, in order.
func FuzzSniff(f *testing.F) {
	for _, s := range []string{h2.ClientPreface, h2.ClientPreface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n", "PRI * HTTP/1.1\r\n\r\n", "", "P"} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		client, server := net.Pipe()
		defer server.Close()
		written := make(chan int, 1)
		go func() {
			defer client.Close()
			n := 0
			for n < len(data) {
				k, err := client.Write(data[n:min(len(data), n+max(int(chunk), 1))])
				n += k
				if err != nil {
					break
				}
			}
			written <- n
		}()
		c, isH2, err := sniff(server)
		if err != nil {
			if len(data) > 0 {
				t.Fatalf("sniff(%q): %v", data, err)
			}
			return
		}
		if want := bytes.HasPrefix(data, []byte(h2.ClientPreface)); isH2 != want {
			t.Fatalf("sniff(%q) says HTTP/2 %v", data, isH2)
		}
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("sniff(%q) replays %q, %v", data, got, err)
		}
		if n := <-written; n != len(data) {
			t.Fatalf("the client wrote %d of %d bytes", n, len(data))
		}
	})
}
