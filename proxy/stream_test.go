package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// genOrigin answers every request on a keep-alive connection with size generated
// bytes (a repeating pattern, never held whole): with a Content-Length, or chunked in
// 32 KiB chunks when chunked is set. written counts the body bytes it wrote.
func genOrigin(t testing.TB, size int64, chunked bool, written *atomic.Int64) (string, *atomic.Int64) {
	return rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		block := []byte(strings.Repeat("0123456789abcdef", 2048)) // 32 KiB
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			bw := bufio.NewWriterSize(c, 64<<10)
			if chunked {
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			} else {
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size)
			}
			for left := size; left > 0; {
				b := block[:min(int64(len(block)), left)]
				if chunked {
					fmt.Fprintf(bw, "%x\r\n", len(b))
				}
				if _, err := bw.Write(b); err != nil {
					return
				}
				if chunked {
					bw.WriteString("\r\n")
				}
				left -= int64(len(b))
				written.Add(int64(len(b)))
			}
			if chunked {
				bw.WriteString("0\r\nX-Trailer: t\r\n\r\n")
			}
			if bw.Flush() != nil {
				return
			}
		}
	})
}

// streamRoute is a route without cache or idempotency: answers stream.
func streamConfig(origin string) string {
	return fmt.Sprintf(`
upstream "big" {
  servers = [%q]
  timeout = "2s"
  max_response_size = "1MB"
}
route "big" {
  match { path = "/" }
  upstream = "big"
}
`, origin)
}

// Large answers, with a length or chunked, pass through whole and far beyond
// max_response_size, while edge's heap stays small; the upstream connection is reused
// after a body read to its end.
func TestStreamedDownload(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled {
		size = 64 << 20
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var written atomic.Int64
			addr, conns := genOrigin(t, size, chunked, &written)
			e := startEdge(t, streamConfig(addr))
			peak := heapPeak()
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 64<<10)
			want := sha256.New()
			block := []byte(strings.Repeat("0123456789abcdef", 2048))
			for left := size; left > 0; left -= min(int64(len(block)), left) {
				want.Write(block[:min(int64(len(block)), left)])
			}
			for i := range 2 {
				fmt.Fprintf(c, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				n, err := io.Copy(h, resp.Body)
				resp.Body.Close()
				if err != nil || n != size || string(h.Sum(nil)) != string(want.Sum(nil)) {
					t.Fatalf("download %d: %d bytes, %v; want %d intact", i, n, err, size)
				}
				if chunked && resp.ContentLength != -1 || !chunked && resp.ContentLength != size {
					t.Errorf("Content-Length to the client = %d", resp.ContentLength)
				}
			}
			top := peak()
			if n := conns.Load(); n != 1 {
				t.Errorf("%d upstream connections for two downloads, want 1 (reused)", n)
			}
			t.Logf("2 × %d MiB: peak heap in use %d MiB", size>>20, top>>20)
			if p := top; p > 256<<20 { // far below the 1 GiB a held body needs; other tests' garbage counts too
				t.Errorf("peak heap in use %d MiB while streaming", p>>20)
			}
		})
	}
}

// A slow client paces the upstream: what the origin has written runs ahead of what
// the client read by no more than socket buffers and one edge buffer, not the body.
func TestStreamBackpressure(t *testing.T) {
	var written atomic.Int64
	size := int64(256 << 20)
	addr, _ := genOrigin(t, size, false, &written)
	e := startEdge(t, streamConfig(addr))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var read int64
	buf := make([]byte, 64<<10)
	var ahead int64
	for range 100 { // 6.4 MiB over about a second
		n, err := io.ReadFull(resp.Body, buf)
		read += int64(n)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		ahead = max(ahead, written.Load()-read)
	}
	t.Logf("origin ahead of the client by at most %d KiB", ahead>>10)
	if ahead > 48<<20 {
		t.Errorf("origin wrote %d MiB ahead of a slow client: edge is buffering", ahead>>20)
	}
}

// Server-sent events and other chunked answers reach the client chunk by chunk, as
// the origin writes them, not when the answer ends; a stream that keeps talking
// outlives the upstream timeout (250ms here, the events take 500ms), which limits
// silence, not the whole answer.
func TestStreamedEvents(t *testing.T) {
	const events = 5
	var sent [events]atomic.Int64
	addr, _ := rawOrigin(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := range events {
			time.Sleep(100 * time.Millisecond)
			ev := fmt.Sprintf("data: %d\n\n", i)
			sent[i].Store(time.Now().UnixNano())
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(ev), ev)
		}
		io.WriteString(c, "0\r\n\r\n")
	})
	e := startEdge(t, strings.Replace(streamConfig(addr), `timeout = "2s"`, `timeout = "250ms"`, 1))
	resp, err := http.Get("http://" + e.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range events {
		line, err := br.ReadString('\n')
		arrived := time.Now().UnixNano()
		if err != nil || line != "data: "+strconv.Itoa(i)+"\n" {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		br.ReadString('\n')
		lag := time.Duration(arrived - sent[i].Load())
		t.Logf("event %d arrived %v after the origin wrote it", i, lag)
		if lag > 50*time.Millisecond {
			t.Errorf("event %d arrived %v after it was written: buffered", i, lag)
		}
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("after the last event: %q", rest)
	}
}

// A small chunked answer is streamed too and arrives intact; the connection to the
// origin is reused afterwards.
func TestStreamedSmallChunked(t *testing.T) {
	var written atomic.Int64
	addr, conns := genOrigin(t, 100, true, &written)
	e := startEdge(t, streamConfig(addr))
	for i := range 3 {
		resp := e.do(t, "GET", "/small")
		if resp.StatusCode() != 200 || string(resp.Body()) != strings.Repeat("0123456789abcdef", 7)[:100] {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode(), resp.Body())
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for three answers, want 1 (reused)", n)
	}
}

// On a cached route an answer larger than max_entry streams through uncached
// (X-Cache: BYPASS), also beyond max_response_size (smaller ones: cache_test.go).
func TestCacheBypassStreams(t *testing.T) {
	var written atomic.Int64
	big, _ := genOrigin(t, 100<<20, false, &written)
	e := startEdge(t, fmt.Sprintf(`
upstream "big" {
  servers = [%q]
  max_response_size = "1MB"
}
route "cached" {
  match { path = "/" }
  upstream = "big"
  cache {
    ttl       = "1m"
    max_entry = "2MB"
  }
}
`, big))
	for i := range 2 {
		resp, err := http.Get("http://" + e.addr + "/big")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != 100<<20 || resp.Header.Get("X-Cache") != "BYPASS" {
			t.Errorf("GET %d: %d, %d bytes, %v, X-Cache %q; want 200, 100 MiB, BYPASS", i, resp.StatusCode, n, err, resp.Header.Get("X-Cache"))
		}
	}
}

// heapPeak samples the heap in use every 20ms, after a GC (earlier tests' garbage is
// not the measured transfer's), until the returned function stops it and says the peak.
func heapPeak() func() uint64 {
	runtime.GC()
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), ms.HeapInuse))
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		return peak.Load()
	}
}
