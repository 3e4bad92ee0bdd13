package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// nginxCombined is the regular expression log pipelines use for nginx's combined format.
var nginxCombined = regexp.MustCompile(`^(\S+) - (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$`)

// logLines waits until path holds n lines and returns them.
func logLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	eventually(t, fmt.Sprintf("%d lines in %s", n, path), func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		return len(b) > 0 && len(lines) >= n
	})
	return lines
}

// format = "combined" writes nginx's combined lines; a template names nginx's variables
// and edge's own ($route, $cache, $limit, $cell, $upstream_response_time, …).
func TestAccessLogFormats(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(20 * time.Millisecond)
		ctx.WriteString("hello")
	})
	routes := fmt.Sprintf(`
upstream "o" { servers = [%q] }
route "limited" {
  match { path = "/limited" }
  upstream = "o"
  limit "one" {
    key   = "ip"
    rate  = "1r/m"
    burst = 1
  }
}
route "cached" {
  match { path = "/cached" }
  upstream = "o"
  cache { ttl = "1m" }
}
`, o.Addr)
	dir := t.TempDir()

	combined := filepath.Join(dir, "combined.log")
	e := startEdge(t, routes+fmt.Sprintf("access_log {\n  path = %q\n  format = \"combined\"\n}\n", combined))
	e.do(t, "GET", "/limited?a=1", "User-Agent", `curl "quoted"`, "Referer", "https://shop.test/")
	line := logLines(t, combined, 1)[0]
	m := nginxCombined.FindStringSubmatch(line)
	if m == nil || m[1] != "127.0.0.1" || m[4] != "GET" || m[5] != "/limited?a=1" || m[6] != "HTTP/1.1" ||
		m[7] != "200" || m[8] != "5" || m[9] != "https://shop.test/" || m[10] != `curl \x22quoted\x22` {
		t.Errorf("combined line %q does not parse as nginx's: %q", line, m)
	}
	if _, err := time.Parse("02/Jan/2006:15:04:05 -0700", m[3]); err != nil {
		t.Errorf("time_local %q: %v", m[3], err)
	}

	tmpl := filepath.Join(dir, "template.log")
	e2 := startEdge(t, routes+fmt.Sprintf("access_log {\n  path = %q\n  template = %q\n}\n", tmpl,
		"$status $route $limit $cache $upstream_addr $upstream_response_time $request_time $http_x_custom $uri|$args|$$"))
	e2.do(t, "GET", "/limited", "X-Custom", "c1")
	e2.do(t, "GET", "/limited")
	e2.do(t, "GET", "/cached?x=1")
	e2.do(t, "GET", "/cached?x=1")
	lines := logLines(t, tmpl, 4)
	want := []*regexp.Regexp{
		regexp.MustCompile(`^200 limited - - 127\.0\.0\.1:\d+ 0\.0[2-9]\d 0\.\d{3} c1 /limited\|\|\$$`),
		regexp.MustCompile(`^429 limited one - - - 0\.\d{3} - /limited\|\|\$$`),
		regexp.MustCompile(`^200 cached - MISS 127\.0\.0\.1:\d+ 0\.0[2-9]\d 0\.\d{3} - /cached\|x=1\|\$$`),
		regexp.MustCompile(`^200 cached - HIT - - 0\.\d{3} - /cached\|x=1\|\$$`),
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q, want %s", i+1, lines[i], re)
		}
	}
}
