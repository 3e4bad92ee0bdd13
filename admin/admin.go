// Package admin is edge's admin API: health, metrics, reload and the operator's
// endpoints that later packages register. It listens apart from client traffic
// (loopback by default) and requires the bearer token for every mutating call.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// API is the admin HTTP handler. Register endpoints before serving; it is safe for
// concurrent requests afterwards.
type API struct {
	mux   *http.ServeMux
	token func() string
}

// New returns an API serving GET /healthz and GET /metrics from gather. token
// returns the current admin token (it may change on reload); when it returns ""
// mutating calls are open, which config allows only on a loopback listener.
func New(gather prometheus.Gatherer, token func() string) *API {
	a := &API{mux: http.NewServeMux(), token: token}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	return a
}

// Handle registers h for pattern (net/http ServeMux syntax, with method). Calls
// with POST, PUT, PATCH or DELETE must carry the bearer token.
func (a *API) Handle(pattern string, h http.HandlerFunc) {
	a.mux.HandleFunc(pattern, h)
}

// ServeHTTP checks the token for mutating methods, then dispatches.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge"`)
			Error(w, http.StatusUnauthorized, "unauthorized")
			return
		}
	}
	h, pattern := a.mux.Handler(r)
	if pattern == "" {
		// Unknown path or method: answer JSON rather than the mux's plain text.
		rec := &statusOnly{}
		h.ServeHTTP(rec, r)
		if rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.Header().Get("Allow"))
			Error(w, http.StatusMethodNotAllowed, "method_not_allowed")
			return
		}
		Error(w, http.StatusNotFound, "not_found")
		return
	}
	a.mux.ServeHTTP(w, r)
}

func (a *API) authorized(r *http.Request) bool {
	want := a.token()
	if want == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) == 1
}

// statusOnly records what the mux's fallback handler would answer.
type statusOnly struct {
	h    http.Header
	code int
}

func (s *statusOnly) Header() http.Header {
	if s.h == nil {
		s.h = http.Header{}
	}
	return s.h
}
func (s *statusOnly) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusOnly) WriteHeader(code int)        { s.code = code }

// JSON writes v as a JSON answer with status code.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// Error writes {"error": code} with the HTTP status; code is a short machine word,
// never a Go error string.
func Error(w http.ResponseWriter, status int, code string) {
	JSON(w, status, map[string]string{"error": code})
}

// MaxBody is the largest admin request body read.
const MaxBody = 1 << 20

// Decode reads a JSON body into v, refusing unknown fields and oversized bodies.
// On failure it has written a 400 answer and returns false.
func Decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			Error(w, http.StatusRequestEntityTooLarge, "body_too_large")
			return false
		}
		JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_json", "detail": jsonProblem(err)})
		return false
	}
	return true
}

// jsonProblem describes a JSON decoding error without leaking internals.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON"
	case errors.As(err, &typ):
		return "field " + typ.Field + " has the wrong type"
	case errors.Is(err, io.EOF):
		return "empty body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "invalid JSON"
}
