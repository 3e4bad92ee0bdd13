package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// zeros reads n zero bytes without holding them.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// rssPeak samples the resident set of process pid every 50ms until the returned
// function stops it and says the peak, in bytes.
func rssPeak(pid int) func() int64 {
	var peak atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range bytes.Split(b, []byte("\n")) {
					if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
						kb, _ := strconv.ParseInt(f[1], 10, 64)
						peak.Store(max(peak.Load(), kb<<10))
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak.Load()
	}
}

// A 10 GB download and a 10 GB upload (generated, never stored) pass through the edge
// binary with its resident memory under 100 MB, over HTTP/1.1 and then over HTTP/2 (h2c
// by prior knowledge, so the client's TLS does not take the CPU the transfer needs).
func TestBinaryLargeTransfers(t *testing.T) {
	size := int64(10 << 30)
	if raceEnabled || testing.Short() {
		size = 1 << 30 // the race detector slows this process's client and origin tenfold
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v", n, err)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.CopyBuffer(w, &zeros{left: size}, make([]byte, 256<<10))
	}))
	t.Cleanup(origin.Close)
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen = "127.0.0.1:0"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
listener "h2c" {
  address   = "127.0.0.1:0"
  protocols = ["h2c"]
}
upstream "o" {
  servers = [%q]
  timeout = "10s"
}
route "sink" {
  match { path = "/sink/" }
  upstream      = "o"
  max_body_size = "unlimited"
}
route "all" {
  match { path = "/" }
  upstream = "o"
}
`, strings.TrimPrefix(origin.URL, "http://")))
	e := &tlsEdge{Edge: edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	for _, tr := range []struct {
		name string
		addr string
		c    *http.Client
	}{
		{"HTTP/1.1", e.Addr, http.DefaultClient},
		{"HTTP/2", e.addr(t, "h2c"), &http.Client{Transport: &http.Transport{Protocols: &h2c}}},
	} {
		peak := rssPeak(e.Cmd.Process.Pid)
		start := time.Now()
		resp, err := tr.c.Get("http://" + tr.addr + "/big")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, bufio.NewReaderSize(resp.Body, 256<<10), make([]byte, 256<<10))
		resp.Body.Close()
		if err != nil || n != size || resp.ProtoMajor != int(tr.name[5]-'0') {
			t.Fatalf("%s download: %d of %d bytes over %s, %v", tr.name, n, size, resp.Proto, err)
		}
		down := time.Since(start)
		start = time.Now()
		req, _ := http.NewRequest("POST", "http://"+tr.addr+"/sink/big", &zeros{left: size}) // no length
		resp, err = tr.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d <nil>", size); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("%s upload: %d %q, want 200 %q", tr.name, resp.StatusCode, got, want)
		}
		up := time.Since(start)
		rss := peak()
		t.Logf("%s: %d MiB down in %v (%.0f MiB/s) and up in %v (%.0f MiB/s) through edge: peak RSS %d MiB", tr.name,
			size>>20, down.Round(time.Millisecond), float64(size>>20)/down.Seconds(),
			up.Round(time.Millisecond), float64(size>>20)/up.Seconds(), rss>>20)
		if rss > 100<<20 {
			t.Errorf("%s: peak RSS %d MiB, want under 100 MiB", tr.name, rss>>20)
		}
	}
}
