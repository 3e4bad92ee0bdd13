package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func testAPI(t *testing.T, token string) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	a := New(reg, func() string { return token })
	a.Handle("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name string `json:"name"`
			N    int    `json:"n"`
		}
		if !Decode(w, r, &in) {
			return
		}
		JSON(w, 200, in)
	})
	a.Handle("GET /thing", func(w http.ResponseWriter, r *http.Request) { JSON(w, 200, map[string]int{"n": 1}) })
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestAPI(t *testing.T) {
	srv := testAPI(t, "s3cret")
	f := func(method, path, auth, body string, wantCode int, wantBody string) {
		t.Helper()
		code, got := call(t, method, srv.URL+path, auth, body)
		if code != wantCode || (wantBody != "" && got != wantBody) {
			t.Errorf("%s %s (auth %q) = %d %s; want %d %s", method, path, auth, code, got, wantCode, wantBody)
		}
	}
	f("GET", "/healthz", "", "", 200, "ok")
	f("GET", "/thing", "", "", 200, `{"n":1}`)
	f("POST", "/echo", "", `{"name":"a"}`, 401, `{"error":"unauthorized"}`)
	f("POST", "/echo", "Bearer wrong", `{"name":"a"}`, 401, `{"error":"unauthorized"}`)
	f("POST", "/echo", "Basic s3cret", `{"name":"a"}`, 401, `{"error":"unauthorized"}`)
	f("POST", "/echo", "Bearer s3cret", `{"name":"a","n":2}`, 200, `{"name":"a","n":2}`)
	f("POST", "/echo", "Bearer s3cret", `{"name":`, 400, `{"detail":"malformed JSON","error":"bad_json"}`)
	f("POST", "/echo", "Bearer s3cret", `{"nme":"a"}`, 400, `{"detail":"unknown field \"nme\"","error":"bad_json"}`)
	f("POST", "/echo", "Bearer s3cret", `{"n":"x"}`, 400, `{"detail":"field n has the wrong type","error":"bad_json"}`)
	f("POST", "/echo", "Bearer s3cret", ``, 400, `{"detail":"empty body","error":"bad_json"}`)
	f("POST", "/echo", "Bearer s3cret", `{"name":"`+strings.Repeat("x", MaxBody)+`"}`, 413, `{"error":"body_too_large"}`)
	f("GET", "/nothing", "", "", 404, `{"error":"not_found"}`)
	f("DELETE", "/thing", "Bearer s3cret", "", 405, `{"error":"method_not_allowed"}`)
	f("DELETE", "/thing", "", "", 401, `{"error":"unauthorized"}`)
	if _, m := call(t, "GET", srv.URL+"/metrics", "", ""); !strings.Contains(m, "edge_test_total 3") {
		t.Errorf("metrics: %s", m)
	}
}

// Without a token (allowed by config only on loopback) mutating calls are open.
func TestNoToken(t *testing.T) {
	srv := testAPI(t, "")
	if code, _ := call(t, "POST", srv.URL+"/echo", "", `{"name":"a"}`); code != 200 {
		t.Errorf("POST without configured token = %d, want 200", code)
	}
}
