package proxy

import (
	"net/http"
	"strings"

	"github.com/edge-gw/edge/admin"
)

// purgeRequest is the body of POST /cache/purge: exactly one field is set.
type purgeRequest struct {
	URL   *string `json:"url,omitempty"`
	Route *string `json:"route,omitempty"`
	Tag   *string `json:"tag,omitempty"`
}

// adminCache registers the feature's admin endpoints.
func (p *Proxy) adminCache(api *admin.API) {
	api.Handle("POST /cache/purge", p.handlePurge)
}

// handlePurge invalidates entries by URL, route or Surrogate-Key tag. Purges are O(1)
// (generation counters), so the answer echoes what was purged rather than a count.
func (p *Proxy) handlePurge(w http.ResponseWriter, r *http.Request) {
	var in purgeRequest
	if !admin.Decode(w, r, &in) {
		return
	}
	n := 0
	for _, f := range []*string{in.URL, in.Route, in.Tag} {
		if f != nil {
			n++
		}
	}
	if n != 1 {
		admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_purge", "detail": "give exactly one of url, route, tag"})
		return
	}
	inst := p.cacheState.cur.Load()
	switch {
	case in.URL != nil:
		u := *in.URL
		if !validPurgeURL(u) {
			admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_url", "detail": "url must be a path starting with / or an absolute http(s) URL"})
			return
		}
		if inst != nil {
			inst.c.PurgeURL(u)
		}
		p.cacheState.purges.WithLabelValues("url", "admin").Inc()
		p.clusterPurged("url", u) // cluster.go: purge on the other edge nodes too
	case in.Route != nil:
		s := p.Current()
		if s == nil || cachedRoute(s, *in.Route) == nil {
			admin.JSON(w, http.StatusNotFound, map[string]string{"error": "unknown_route", "detail": "no cached route named " + *in.Route})
			return
		}
		inst.c.PurgeRoute(*in.Route)
		p.cacheState.purges.WithLabelValues("route", "admin").Inc()
		p.clusterPurged("route", *in.Route)
	case in.Tag != nil:
		t := *in.Tag
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_tag", "detail": "tag must be one non-empty Surrogate-Key token"})
			return
		}
		if inst != nil {
			inst.c.PurgeTag(t)
		}
		p.cacheState.purges.WithLabelValues("tag", "admin").Inc()
		p.clusterPurged("tag", t)
	}
	admin.JSON(w, http.StatusOK, map[string]any{"purged": in})
}

// validPurgeURL accepts "/path[?query]" and "http(s)://host/path[?query]".
func validPurgeURL(u string) bool {
	if strings.HasPrefix(u, "/") {
		return !strings.ContainsAny(u, " \t\r\n")
	}
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(u, "https://")
	}
	return ok && rest != "" && !strings.ContainsAny(u, " \t\r\n")
}
