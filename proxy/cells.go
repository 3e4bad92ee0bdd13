package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/shard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Answers of cell routes.
var (
	errMissingKey      = jsonError(400, "missing_key")
	errCellUnavailable = jsonError(503, "cell_unavailable")
)

// cellHeader names the cell that served (or refused) a request of a cell route.
var cellHeader = []byte("X-Edge-Cell")

// Values of cellGroup.missing other than a cell index.
const (
	missingReject = -1
	missingAny    = -2
)

// cellGroup is one compiled cells block: the ring that maps a shard key to a
// cell, and each cell's servers as a strict pool. Immutable; part of one snapshot.
type cellGroup struct {
	name    string
	cfg     *config.Cells
	key     *compiledKey
	ring    *shard.Ring
	ringID  string  // the (name, weight) set the ring was built from, canonical
	cells   []*cell // index = ring index; sorted by name
	missing int     // missingReject, missingAny or the index of missing_key's cell
	spill   bool
	any     atomic.Uint64 // spreads key-less requests with missing_key = "any"
}

// cell is one cell of a cellGroup.
type cell struct {
	name     string
	nameB    []byte
	weight   float64
	pool     *pool
	requests prometheus.Counter // edge_cell_requests_total child
}

// keylessHash places requests without a key on the ring when missing_key names a
// cell and that cell is down (spill): the same spill cell on every node.
var keylessHash = shard.Hash(nil)

// buildCells sets s.cells from the config's cells blocks, and sets up health
// checks and retry counters for every pool of s (health.go). A cells block whose
// (name, weight) set is unchanged reuses the previous snapshot's Ring: building
// one costs tens of ms per cell.
func (p *Proxy) buildCells(s *Snapshot, prev *Snapshot) error {
	s.cells = map[string]*cellGroup{}
	for _, cc := range s.Config.Cells {
		g, err := p.buildCellGroup(s, prev, cc)
		if err != nil {
			return fmt.Errorf("cells %q: %w", cc.Name, err)
		}
		s.cells[cc.Name] = g
	}
	p.buildHealth(s)
	return nil
}

// RingOf returns the cells of cc in ring order (by name) and the ring's cells (weight 0
// counts as 1): shard.New of the second is the ring requests of cc are routed by, and
// cell i of it is the first's i. L4 streams build theirs with it, so that a client
// address picks one cell whether it comes over HTTP or a stream.
func RingOf(cc *config.Cells) ([]*config.Cell, []shard.Cell) {
	sorted := slices.Clone(cc.Cells)
	slices.SortFunc(sorted, func(a, b *config.Cell) int { return strings.Compare(a.Name, b.Name) })
	ring := make([]shard.Cell, len(sorted))
	for i, c := range sorted {
		ring[i] = shard.Cell{Name: c.Name, Weight: c.Weight}
		if c.Weight == 0 {
			ring[i].Weight = 1
		}
	}
	return sorted, ring
}

func (p *Proxy) buildCellGroup(s *Snapshot, prev *Snapshot, cc *config.Cells) (*cellGroup, error) {
	cst := p.cellState
	g := &cellGroup{name: cc.Name, cfg: cc, key: compileKey(cc.Key), spill: cc.Spill, missing: missingReject}
	sorted, ring := RingOf(cc)
	var id strings.Builder
	for i, c := range sorted {
		w := ring[i].Weight
		fmt.Fprintf(&id, "%q=%v;", c.Name, w)

		pl := &pool{name: cc.Name + "/" + c.Name, timeout: cc.Timeout, errs: p.metrics.upstream(cc.Name + "/" + c.Name),
			strict: true, unavailable: errCellUnavailable, retries: cst.retries.WithLabelValues(cc.Name + "/" + c.Name)}
		for _, addr := range c.Servers {
			ps := poolSettings{addr: addr, connectTimeout: cc.ConnectTimeout, timeout: cc.Timeout,
				maxConns: cc.MaxConns, keepalive: cc.KeepaliveTimeout, maxResponseSize: cc.MaxResponseSize,
				protocol: cc.Proto.Protocol, serverName: cc.Proto.TLSServerName, caFile: cc.Proto.TLSCAFile,
				proxyProto: cc.Proto.ProxyProtocol}
			if err := checkH2Settings(fmt.Sprintf("cells %q", cc.Name), ps); err != nil {
				return nil, err
			}
			pl.settings = append(pl.settings, ps)
			pl.servers = append(pl.servers, s.reg.acquire(ps))
			s.held = append(s.held, ps)
		}
		g.cells = append(g.cells, &cell{name: c.Name, nameB: []byte(c.Name), weight: w, pool: pl,
			requests: cst.requests.WithLabelValues(cc.Name, c.Name)})
	}
	g.ringID = id.String()
	if prev != nil {
		for _, pg := range prev.cells {
			if pg.ringID == g.ringID {
				g.ring = pg.ring
				break
			}
		}
	}
	if g.ring == nil {
		r, err := shard.New(ring)
		if err != nil {
			return nil, err
		}
		g.ring = r
	}
	switch cc.MissingKey {
	case "", "reject":
	case "any":
		g.missing = missingAny
	default:
		g.missing = slices.IndexFunc(g.cells, func(c *cell) bool { return c.name == cc.MissingKey })
		if g.missing < 0 {
			return nil, fmt.Errorf("missing_key %q is not a cell", cc.MissingKey)
		}
	}
	return g, nil
}

// forwardCells sends the request to the cell that owns its shard key, and names
// the cell in X-Edge-Cell on whatever the answer is. A cell with no healthy
// server answers 503 cell_unavailable, or with spill the key's next cell on the
// ring, the one every node picks. Allocation-free.
func (p *Proxy) forwardCells(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	g := rt.cells
	h, ok := g.key.hashKey(ctx, client, 0) // seed 0: shard.Hash of the key bytes
	var i int
	switch {
	case ok:
		i = g.ring.LookupHash(h)
	case g.missing == missingReject:
		errMissingKey.write(ctx)
		return
	case g.missing == missingAny:
		// Fibonacci hashing of a counter spreads its top bits, which pick the
		// ring slot: key-less requests spread over cells by weight.
		h = g.any.Add(1) * 0x9E3779B97F4A7C15
		i = g.ring.LookupHash(h)
	default:
		h, i = keylessHash, g.missing
	}
	c := g.cells[i]
	if g.spill && !c.pool.available() {
		var up [shard.MaxCells]bool
		for j, cj := range g.cells {
			up[j] = cj.pool.available()
		}
		if j := g.ring.LookupAvailable(h, up[:len(g.cells)]); j >= 0 {
			c = g.cells[j]
		}
	}
	c.requests.Inc()
	p.forward(ctx, s, c.pool, peer, client, sc)
	ctx.Response.Header.SetBytesKV(cellHeader, c.nameB)
}

// cellState is what this feature keeps across reloads (created by initCells in
// New): the health checkers, keyed by server identity, and the metric vectors.
type cellState struct {
	health   *healthState
	requests *prometheus.CounterVec // edge_cell_requests_total{cells,cell}
	retries  *prometheus.CounterVec // edge_upstream_retries_total{upstream}

	mu     sync.Mutex
	labels map[[2]string]bool // {cells, cell} children of requests now exported
	pools  map[string]bool    // upstream children of retries now exported
}

// initCells creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initCells() {
	cst := &cellState{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cell_requests_total", Help: "Requests sent to a cell (after spill), by cells block and cell.",
		}, []string{"cells", "cell"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_retries_total", Help: "Requests repeated on another server after a safe-to-retry failure, by upstream (cells/cell for cells).",
		}, []string{"upstream"}),
		labels: map[[2]string]bool{},
		pools:  map[string]bool{},
	}
	cst.health = newHealthState()
	p.metrics.Reg.MustRegister(cst.requests, cst.retries, cst.health.checks, &upCollector{p: p})
	p.cellState = cst
}

// retainMetrics drops the children of cells and pools that s no longer has; run
// when s has become current.
func (cst *cellState) retainMetrics(s *Snapshot) {
	labels, pools := map[[2]string]bool{}, map[string]bool{}
	for _, g := range s.cells {
		for _, c := range g.cells {
			labels[[2]string{g.name, c.name}] = true
			pools[c.pool.name] = true
		}
	}
	for name := range s.pools {
		pools[name] = true
	}
	cst.mu.Lock()
	defer cst.mu.Unlock()
	for l := range cst.labels {
		if !labels[l] {
			cst.requests.DeleteLabelValues(l[0], l[1])
		}
	}
	for name := range cst.pools {
		if !pools[name] {
			cst.retries.DeleteLabelValues(name)
		}
	}
	cst.labels, cst.pools = labels, pools
}
