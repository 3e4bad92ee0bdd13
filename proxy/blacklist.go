package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/blacklist"
	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// How often the blacklist's pollers run. Expired bans stop matching at once
// whatever the sweep interval; the sweep only drops them from memory and the
// metrics, and saves auto-bans to state_dir. Variables so tests can shorten them.
var (
	blacklistSweepEvery = time.Second
	blacklistWatchEvery = time.Second
)

var errBlocked = jsonError(403, "blocked")

// snapBlacklist is the blacklist of one snapshot (issue 7). The List itself is
// long-lived (blacklistState); the snapshot holds how to read the user id and the
// pollers it started.
type snapBlacklist struct {
	list    *blacklist.List
	user    *compiledKey // user_key
	autoBan bool

	mu      sync.Mutex
	pollers []*blacklist.Poller
	stopped bool
}

// stop ends the snapshot's pollers; it is a stop hook, so it runs on retire,
// also for a snapshot that never started.
func (b *snapBlacklist) stop() {
	b.mu.Lock()
	ps := b.pollers
	b.pollers, b.stopped = nil, true
	b.mu.Unlock()
	for _, p := range ps {
		p.Stop()
	}
}

// listConfig turns the config block into the leaf's Config.
func listConfig(bc *config.Blacklist) blacklist.Config {
	lc := blacklist.Config{IPs: bc.IPs, Users: bc.Users, File: bc.File}
	if ab := bc.AutoBan; ab != nil {
		lc.AutoBan = blacklist.AutoBanConfig{Rejects: ab.Rejects, Window: ab.Window, Ban: ab.Ban}
	}
	return lc
}

// buildBlacklist sets s.blacklist from the config's blacklist block.
//
// The first build with a blacklist block creates the List (loading the bans saved
// in state_dir); it becomes the long-lived one when the snapshot starts, so a
// throwaway build (edge -check, a reload that fails later) leaves nothing behind.
// Later builds only validate here and Reconfigure the List when the snapshot
// becomes current, because a build may still be dropped.
func (p *Proxy) buildBlacklist(s *Snapshot, prev *Snapshot) error {
	bc := s.Config.Blacklist
	if bc == nil {
		return nil
	}
	lc := listConfig(bc)
	if err := lc.Validate(); err != nil {
		return err
	}
	st := p.blacklistState
	b := &snapBlacklist{user: compileKey(bc.UserKey), autoBan: lc.AutoBan.Rejects > 0}
	s.stops = append(s.stops, b.stop)
	st.mu.Lock()
	list := st.list
	st.mu.Unlock()
	if list == nil {
		list, problems, err := blacklist.New(lc, s.Config.StateDir, time.Now())
		if err != nil {
			return fmt.Errorf("blacklist: %w", err)
		}
		logBlacklistProblems(problems)
		b.list = list
		s.starts = append(s.starts, func() {
			st.mu.Lock()
			if st.list == nil {
				st.list = list
			}
			st.mu.Unlock()
			p.startBlacklist(b, lc)
		})
	} else {
		// Reconfigure re-reads the file when the snapshot starts; refuse the reload
		// now if the file cannot be opened, so the running config stays.
		if lc.File != "" {
			f, err := os.Open(lc.File)
			if err != nil {
				return fmt.Errorf("blacklist: cannot open file: %w", err)
			}
			f.Close()
		}
		b.list = list
		s.starts = append(s.starts, func() {
			problems, err := list.Reconfigure(lc)
			if err != nil {
				// Validated and opened in build; a file that vanished since keeps
				// the previous static entries.
				slog.Default().Error("blacklist: reconfigure failed; the previous entries stay", "error", err)
			}
			logBlacklistProblems(problems)
			p.startBlacklist(b, lc)
		})
	}
	s.blacklist = b
	return nil
}

// startBlacklist starts the sweeper and the file watcher of a current snapshot.
func (p *Proxy) startBlacklist(b *snapBlacklist, lc blacklist.Config) {
	list := b.list
	ps := []*blacklist.Poller{blacklist.StartPoller(blacklistSweepEvery, func(now time.Time) {
		if _, err := list.Sweep(now); err != nil {
			slog.Default().Error("blacklist: cannot save bans; retrying", "error", err)
		}
	})}
	if lc.File != "" {
		ps = append(ps, blacklist.WatchFile(lc.File, blacklistWatchEvery, func() {
			problems, err := list.ReloadFile()
			if err != nil {
				slog.Default().Error("blacklist: cannot re-read file; the previous entries stay", "error", err)
				return
			}
			logBlacklistProblems(problems)
			slog.Default().Info("blacklist: file re-read", "file", lc.File)
		}))
	}
	b.mu.Lock()
	if b.stopped { // retired before it started: not expected, but never leak
		b.mu.Unlock()
		for _, p := range ps {
			p.Stop()
		}
		return
	}
	b.pollers = append(b.pollers, ps...)
	b.mu.Unlock()
}

func logBlacklistProblems(problems []error) {
	for _, pr := range problems {
		slog.Default().Warn("blacklist: line skipped", "problem", pr.Error())
	}
}

// blocked reports whether the client or its user is banned; when true, ctx holds
// the 403 answer. It allocates nothing.
func (p *Proxy) blocked(ctx *fasthttp.RequestCtx, s *Snapshot, client netip.Addr) bool {
	b := s.blacklist
	now := ctx.Time()
	st := p.blacklistState
	if k := b.list.BlockedIP(client, now); k != blacklist.KindNone {
		st.blockedBy[k].Inc()
		errBlocked.write(ctx)
		return true
	}
	var buf [blacklist.MaxUserLen + 64]byte
	if u := blacklistUser(b.user, ctx, client, buf[:0]); len(u) > 0 && b.list.BlockedUser(u, now) {
		st.blockedBy[blacklist.KindUser].Inc()
		errBlocked.write(ctx)
		return true
	}
	return false
}

// onLimitReject is told of every limit rejection, for auto-ban. It allocates
// nothing unless it creates a ban.
func (p *Proxy) onLimitReject(s *Snapshot, client netip.Addr) {
	b := s.blacklist
	if b == nil || !b.autoBan {
		return
	}
	if b.list.RecordReject(client, time.Now()) {
		p.blacklistState.autoBans.Inc()
		p.clusterAutoBanned(s, client) // cluster.go: tell the other edge nodes
	}
}

// blacklistState is what this feature keeps across reloads (created by
// initBlacklist in New): the List with its dynamic bans and auto-ban counts, and
// the metrics.
type blacklistState struct {
	mu   sync.Mutex
	list *blacklist.List // nil until a snapshot with a blacklist block started

	blocked   *prometheus.CounterVec
	blockedBy [4]prometheus.Counter // by blacklist.Kind; children made once
	autoBans  prometheus.Counter
}

// initBlacklist creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initBlacklist() {
	st := &blacklistState{
		blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_blacklist_blocked_total", Help: "Requests answered 403 by the blacklist, by the kind of entry that matched (ip, cidr, user).",
		}, []string{"kind"}),
		autoBans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_autoban_bans_total", Help: "Client IPs banned by auto_ban for hitting limits.",
		}),
	}
	for _, k := range []blacklist.Kind{blacklist.KindIP, blacklist.KindCIDR, blacklist.KindUser} {
		st.blockedBy[k] = st.blocked.WithLabelValues(k.String())
	}
	p.metrics.Reg.MustRegister(st.blocked, st.autoBans, &blacklistEntries{p: p})
	p.blacklistState = st
}

// closeBlacklist stops the current snapshot's pollers and saves the bans not yet
// written (auto-bans are written by the sweeper), so that a graceful stop keeps
// them. Called from Proxy.Close.
func (p *Proxy) closeBlacklist() {
	if s := p.snap.Load(); s != nil && s.blacklist != nil {
		s.blacklist.stop()
	}
	st := p.blacklistState
	st.mu.Lock()
	list := st.list
	st.mu.Unlock()
	if list == nil {
		return
	}
	if _, err := list.Sweep(time.Now()); err != nil {
		slog.Default().Error("blacklist: cannot save bans at close", "error", err)
	}
}

var entriesDesc = prometheus.NewDesc("edge_blacklist_entries",
	"Blacklist entries by kind (ip, cidr, user): config, file and live dynamic bans.", []string{"kind"}, nil)

// blacklistEntries reports edge_blacklist_entries at scrape time from the current
// snapshot's list, so the hot path keeps no gauge up to date.
type blacklistEntries struct{ p *Proxy }

func (c *blacklistEntries) Describe(ch chan<- *prometheus.Desc) { ch <- entriesDesc }

func (c *blacklistEntries) Collect(ch chan<- prometheus.Metric) {
	s := c.p.snap.Load()
	if s == nil || s.blacklist == nil {
		return
	}
	for _, k := range []blacklist.Kind{blacklist.KindIP, blacklist.KindCIDR, blacklist.KindUser} {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(s.blacklist.list.Len(k)), k.String())
	}
}

// blacklistUser returns the request's user id for user bans, or nil when the
// user_key is missing. A one-part key (the usual header:NAME, cookie:NAME or
// query:NAME) is read in place; other keys are built in buf, which keeps them off
// the heap up to its size. The result is valid until the handler returns.
func blacklistUser(k *compiledKey, ctx *fasthttp.RequestCtx, client netip.Addr, buf []byte) []byte {
	if len(k.parts) == 1 && k.parts[0].kind != config.KeyHost {
		v, _ := k.parts[0].value(ctx, client, buf)
		return v
	}
	v, ok := k.appendKey(buf[:0], ctx, client)
	if !ok {
		return nil
	}
	return v
}

// adminBlacklist registers the feature's admin endpoints: GET, POST and DELETE
// /blacklist (see docs/blacklist.md).
func (p *Proxy) adminBlacklist(api *admin.API) {
	api.Handle("GET /blacklist", p.adminListBlacklist)
	api.Handle("POST /blacklist", p.adminBan)
	api.Handle("DELETE /blacklist", p.adminUnban)
}

// adminList returns the current snapshot's List, or answers 404 when the running
// config has no blacklist block.
func (p *Proxy) adminList(w http.ResponseWriter) *blacklist.List {
	if s := p.snap.Load(); s != nil && s.blacklist != nil {
		return s.blacklist.list
	}
	admin.JSON(w, http.StatusNotFound, map[string]string{"error": "no_blacklist",
		"detail": "the running config has no blacklist block"})
	return nil
}

func (p *Proxy) adminListBlacklist(w http.ResponseWriter, r *http.Request) {
	list := p.adminList(w)
	if list == nil {
		return
	}
	entries := list.Entries(time.Now())
	admin.JSON(w, http.StatusOK, map[string]any{"entries": entries, "count": len(entries)})
}

// banRequest is the body of POST /blacklist.
type banRequest struct {
	IP     string `json:"ip"`
	User   string `json:"user"`
	TTL    string `json:"ttl"`
	Reason string `json:"reason"`
}

func badRequest(w http.ResponseWriter, code, detail string) {
	admin.JSON(w, http.StatusBadRequest, map[string]string{"error": code, "detail": detail})
}

func (p *Proxy) adminBan(w http.ResponseWriter, r *http.Request) {
	list := p.adminList(w)
	if list == nil {
		return
	}
	var req banRequest
	if !admin.Decode(w, r, &req) {
		return
	}
	if (req.IP == "") == (req.User == "") {
		badRequest(w, "bad_ban", `give exactly one of "ip" or "user"`)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			badRequest(w, "bad_ttl", fmt.Sprintf("ttl %q: want a positive Go duration like \"10m\"; leave it out for no expiry", req.TTL))
			return
		}
		ttl = d
	}
	if len(req.Reason) > 1024 {
		badRequest(w, "bad_reason", "reason is longer than 1024 bytes")
		return
	}
	now := time.Now()
	var e blacklist.Entry
	var err error
	if req.IP != "" {
		pfx, perr := blacklist.ParsePrefix(req.IP)
		if perr != nil {
			badRequest(w, "bad_ip", perr.Error())
			return
		}
		e, err = list.BanIP(pfx, ttl, req.Reason, now)
	} else {
		e, err = list.BanUser(req.User, ttl, req.Reason, now)
	}
	if err != nil {
		if !isIOError(err) {
			code := "bad_user"
			if req.IP != "" {
				code = "bad_ip"
			}
			badRequest(w, code, err.Error())
			return
		}
		slog.Default().Error("blacklist: ban failed", "error", err)
		admin.JSON(w, http.StatusInternalServerError, map[string]string{"error": "state_write_failed",
			"detail": "the ban could not be saved to state_dir and was not made; see the edge log"})
		return
	}
	p.clusterBanned(e) // cluster.go: tell the other edge nodes
	admin.JSON(w, http.StatusOK, e)
}

// isIOError tells a failure to save the state (an operator's problem: 500) apart
// from a refused value (the caller's: 400); the leaf validates before it writes.
func isIOError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le)
}

func (p *Proxy) adminUnban(w http.ResponseWriter, r *http.Request) {
	list := p.adminList(w)
	if list == nil {
		return
	}
	q := r.URL.Query()
	ip, user := q.Get("ip"), q.Get("user")
	if (ip == "") == (user == "") {
		badRequest(w, "bad_unban", "give exactly one of ?ip= or ?user=")
		return
	}
	now := time.Now()
	var err error
	var pfx netip.Prefix
	what := user
	if ip != "" {
		var perr error
		if pfx, perr = blacklist.ParsePrefix(ip); perr != nil {
			badRequest(w, "bad_ip", perr.Error())
			return
		}
		what = pfx.String()
		if pfx.IsSingleIP() {
			what = pfx.Addr().String()
		}
		err = list.UnbanIP(pfx, now)
	} else {
		err = list.UnbanUser(user, now)
	}
	switch {
	case err == nil:
		p.clusterUnbanned(pfx, user) // cluster.go: tell the other edge nodes
		admin.JSON(w, http.StatusOK, map[string]any{"removed": true, "entry": what})
	case errors.Is(err, blacklist.ErrNotFound):
		admin.JSON(w, http.StatusNotFound, map[string]string{"error": "not_found",
			"detail": "no ban made through the API or by auto-ban matches " + what})
	case errors.Is(err, blacklist.ErrStatic):
		admin.JSON(w, http.StatusConflict, map[string]string{"error": "static_entry",
			"detail": what + " comes from the config or the list file; edit it there and reload"})
	default:
		slog.Default().Error("blacklist: unban failed", "error", err)
		admin.JSON(w, http.StatusInternalServerError, map[string]string{"error": "state_write_failed",
			"detail": "the removal could not be saved to state_dir and was undone; see the edge log"})
	}
}

// BlockedIP says whether the running config's blacklist (static entries, the file,
// admin and automatic bans) holds ip, counting the block as an HTTP request's would be.
// L4 streams close such a client's connections.
func (p *Proxy) BlockedIP(ip netip.Addr) bool {
	b := p.snap.Load().blacklist
	if b == nil {
		return false
	}
	if k := b.list.BlockedIP(ip, time.Now()); k != blacklist.KindNone {
		p.blacklistState.blockedBy[k].Inc()
		return true
	}
	return false
}
