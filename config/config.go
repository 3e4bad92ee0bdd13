// Package config reads edge.hcl into plain data: no sockets, no goroutines.
//
// Parse and Load validate everything and return every problem at once as Problems,
// each formatted FILE:LINE,COL: message. The structs below are the operator's
// reference: each field says its HCL name, its default and what zero means.
// A *Config is never modified after Load returns; the proxy builds its runtime
// snapshot from it.
package config

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is one parsed and validated edge.hcl.
type Config struct {
	File string // path it was read from
	Hash uint64 // xxhash of the file's bytes: equal hashes mean nothing changed

	// Listen (listen) is the address of the plain HTTP/1.1 listener, named "default"
	// (DefaultListener); default "127.0.0.1:8080"; "" turns it off when listener blocks
	// serve instead. It cannot change on reload (listener blocks can).
	Listen          string
	TrustedProxies  []netip.Prefix // trusted_proxies: peers whose X-Forwarded-For is believed; default none
	ShutdownTimeout time.Duration  // shutdown_timeout: how long a stop waits for in-flight requests; default 10s
	StateDir        string         // state_dir: where admin changes (bans, switches) are kept; default "./state"
	CacheSize       int64          // cache_size: bytes of the response cache; default 256MB

	// Client-facing bounds, so that no client can hold resources without end.
	ReadTimeout   time.Duration // read_timeout: whole request (headers and body) must arrive within; default 10s
	WriteTimeout  time.Duration // write_timeout: the response must be written within; default 30s
	IdleTimeout   time.Duration // idle_timeout: keep-alive connection idle limit; default 60s
	MaxHeaderSize int64         // max_header_size: request line plus headers; default 16KB (431 beyond)
	MaxBodySize   int64         // max_body_size: request body; default 4MB (413 beyond)
	MaxConns      int           // max_conns: concurrent client connections; default 20000

	// Workers (workers) is how many Go scheduler slots (GOMAXPROCS) run edge's code.
	// Default 0: steered by the workers controller (package workers): the CPUs other
	// processes leave idle, at least 1, and, while edge answers locally, one more when
	// its threads starve for CPU. A count fixes it. A GOMAXPROCS environment variable,
	// when set, wins. docs/config.md, "Workers", has the rules.
	Workers int

	AccessLog AccessLog
	Admin     Admin
	Upstreams []*Upstream
	Cells     []*Cells
	Routes    []*Route
	Blacklist *Blacklist // nil without a blacklist block
	Seckill   *Seckill   // nil without a seckill block
	Cluster   *Cluster   // nil without a cluster block
	Overload  *Overload  // overload block (edge): priority shedding; nil: off
	// Compression is the compression block (edge): gzip and brotli answers; nil: off.
	Compression *Compression
	Listeners   []*Listener // listener "NAME" blocks: more addresses, TLS, HTTP/2 (listener.go)
	Streams     []*Stream   // stream "NAME" blocks: L4 TCP/UDP relays (stream.go)
	// WaitingRooms are the waiting_room "NAME" blocks: fair queues in front of routes
	// (waitroom.go).
	WaitingRooms []*WaitingRoom
	// TLSTickets is the tls_tickets block (edge): session-ticket keys shared by every
	// edge given the same secret; nil: each process has random keys of its own.
	TLSTickets *TLSTickets

	ListenRange hcl.Range // where listen was set, for reload messages
}

// TLSTickets is the tls_tickets block. Every edge with the same secret derives the same
// session-ticket keys for the same hour, so a client resumes its TLS session on any of
// them, and across restarts (tlsstore.Tickets.SetSecret).
type TLSTickets struct {
	Secret string // secret: at least 32 bytes; use env("…"); required
}

// AccessLog is the access_log block. Without the block nothing is logged.
type AccessLog struct {
	Enabled bool   // true when the block is present
	Path    string // path: "stdout" (default), "stderr" or a file (appended)
	Format  string // format: "json" (default), "text", "combined" (nginx's), or "template" when Template is set
	// Template (template) is a line made of text and $variables (LogVars), nginx style;
	// Parts is it parsed (also for "combined").
	Template string
	Parts    []LogPart
	Buffer   int // buffer: lines queued before new ones are dropped (counted); default 8192
}

// Admin is the admin block: the admin API listener.
type Admin struct {
	Listen string // listen: default "127.0.0.1:9901"; cannot change on reload
	// Token (token) is the bearer token every mutating call needs. Empty is allowed only
	// when Listen is a loopback address; then mutating calls are open to local users.
	Token string
	Pprof bool // pprof: serve Go's /debug/pprof/ profiles on the admin listener; default false
}

// Upstream is an upstream "NAME" block: a pool of servers balanced round robin.
type Upstream struct {
	Name    string
	Servers []string // servers: "host:port" each; required

	Timeout          time.Duration // timeout: for the whole upstream response; default 5s (504 beyond)
	ConnectTimeout   time.Duration // connect_timeout: TCP connect; default 1s (502 beyond)
	MaxConns         int           // max_conns: connections per server; default 512
	KeepaliveTimeout time.Duration // keepalive_timeout: idle upstream connections are closed after; default 30s
	MaxResponseSize  int64         // max_response_size: default 64MB (502 beyond)
	Proto            UpstreamProtocol

	HealthCheck *HealthCheck // health_check block; nil: passive detection only
	MaxInflight int          // max_inflight: concurrent requests to this upstream; 0: unbounded
	Breaker     *Breaker     // breaker block (edge): circuit breaker of the pool; nil: none

	Pos hcl.Range
}

// UpstreamProtocol is how edge speaks to the servers of an upstream or cells block.
type UpstreamProtocol struct {
	// Protocol (protocol): "http1" (default), "h2c" (HTTP/2 by prior knowledge) or "h2"
	// (HTTP/2 over TLS): gRPC upstreams need one of the HTTP/2 ones (docs/streams.md).
	Protocol string
	// TLSServerName (tls_server_name): with "h2", the name sent as SNI and verified;
	// default the host of each server address.
	TLSServerName string
	// TLSCAFile (tls_ca_file): with "h2", PEM certificates of the CAs to trust instead of
	// the system's (a private CA); relative to the config file.
	TLSCAFile string
	// ProxyProtocol (proxy_protocol): "v1" or "v2" sends a PROXY protocol header with the
	// client's address first on every connection to a server; "" (default): none. On
	// HTTP routes such a connection carries one request (no keep-alive reuse); HTTP/2
	// upstreams cannot have it.
	ProxyProtocol string
}

// HealthCheck is a health_check block of an upstream or cells block.
type HealthCheck struct {
	Path     string        // path: default "/healthz"
	Interval time.Duration // interval: default 2s
	Timeout  time.Duration // timeout: default 1s
	Rise     int           // rise: passes to mark a server up; default 2
	Fall     int           // fall: failures to mark a server down; default 3
}

// Breaker is the breaker block (an edge addition) of an upstream or cells block: a
// circuit breaker over a sliding window of the pool's requests (docs/degrade.md).
// While open, requests get their route's fallback answer at once.
type Breaker struct {
	Window        time.Duration // window: sliding window of counted requests; default 10s
	MinRequests   int           // min_requests: requests in the window before it may open; default 20
	FailureRatio  float64       // failure_ratio: share of failures (connect errors, timeouts, 5xx) that opens it; default 0.5
	SlowRatio     float64       // slow_ratio: share of slow requests that opens it; default 0.5
	SlowThreshold time.Duration // slow_threshold: a request taking this long is slow; default 0: slowness not counted
	CoolOff       time.Duration // cool_off: how long it stays open before probing; default 5s
	Probes        int           // probes: requests let through half-open, all must succeed to close; default 3
}

// Overload is the overload block (an edge addition): priority shedding when the edge
// itself has too many requests in flight (docs/degrade.md). Routed requests in flight
// are counted; a new request of a route is shed with its fallback when the count
// would exceed its priority's bound.
type Overload struct {
	MaxInflight int     // max_inflight: the bound for core routes; required
	Low         float64 // low: share of max_inflight beyond which low routes are shed; default 0.5
	Normal      float64 // normal: share beyond which normal routes are shed; default 0.8
}

// Cells is a cells "NAME" block: unit cells chosen by consistent hash of Key.
type Cells struct {
	Name string
	Key  Key // key: the shard key; required
	// MissingKey (missing_key) is what a request without a key gets: "reject" (400,
	// default), "any" (spread over cells) or the name of a cell.
	MissingKey string
	Spill      bool // spill: users of a cell with no healthy server go to the next cell; default false (503)

	Timeout          time.Duration // as in upstream; default 5s
	ConnectTimeout   time.Duration // default 1s
	MaxConns         int           // default 512 per server
	KeepaliveTimeout time.Duration // default 30s
	MaxResponseSize  int64         // default 64MB
	Proto            UpstreamProtocol
	HealthCheck      *HealthCheck
	Breaker          *Breaker // breaker block (edge): one circuit breaker per cell; nil: none

	Cells []*Cell
	Pos   hcl.Range
}

// Cell is a cell "NAME" block inside cells.
type Cell struct {
	Name    string
	Servers []string // servers: required
	Weight  float64  // weight: share of users relative to other cells; default 1
	Pos     hcl.Range
}

// Route is a route "NAME" block. Routes are tried in file order; the first match wins.
// Exactly one of Upstream, Cells, Seckill or Respond says where a request goes.
type Route struct {
	Name  string
	Match Match

	Upstream string  // upstream: name of an upstream block
	Cells    string  // cells: name of a cells block
	Seckill  bool    // seckill: this route issues seckill tokens
	Respond  *Answer // respond block: edge answers itself

	Cache        *Cache   // cache block; nil: not cached
	Limits       []*Limit // limit "NAME" blocks; all must pass
	Reject       Answer   // reject block: the answer when a limit says no; default 429 JSON
	RequireToken bool     // require_token: X-Seckill-Token must be valid (order routes)

	Priority    string       // priority: "core", "normal" (default) or "low"
	MaxInflight int          // max_inflight: concurrent requests; 0: unbounded
	Fallback    Answer       // fallback block: the degraded answer; default 503 JSON
	Idempotency *Idempotency // idempotency block; nil: off

	// MaxBodySize (max_body_size) lets this route take request bodies larger than the
	// top-level max_body_size, streamed to the upstream as they arrive (edge holds one
	// buffer, not the body): a size, or "unlimited" (-1). Default 0: the top-level bound
	// (413 beyond). Routes with an idempotency block hold bodies and cannot raise it.
	MaxBodySize int64

	// WebSocket (websocket) lets requests with Upgrade: websocket through as tunnels:
	// after the whole funnel and the origin's 101, bytes flow both ways
	// (docs/streams.md). Default false: Upgrade is stripped like any hop-by-hop header.
	WebSocket         bool
	MaxTunnels        int           // max_tunnels: open tunnels of this route at once; beyond: 503; default 10000; 0: unbounded
	TunnelIdleTimeout time.Duration // tunnel_idle_timeout: a tunnel with no byte either way this long is closed; default 5m

	Pos hcl.Range
}

// Match is the match block of a route. Every field set must match.
type Match struct {
	Path    string   // path: prefix; default "/"
	Methods []string // methods: default any
	Host    string   // host: exact Host header (port ignored); default any
	// Listener (listener) is the name of the listener the request must have come
	// through ("default" for the top-level listen); default any.
	Listener string
	Query    map[string]string // query: argument values that must be equal
	Header   map[string]string // header: header values that must be equal
}

// Answer is a fixed response: respond, reject and fallback blocks.
type Answer struct {
	Status      int               // status
	Body        string            // body
	ContentType string            // content_type: default "application/json"
	Headers     map[string]string // headers: extra response headers
}

// Cache is the cache block of a route.
type Cache struct {
	TTL   time.Duration // ttl: freshness when the origin gives none; default 1s
	Stale time.Duration // stale: serve stale this long after expiry while refreshing or when the origin fails; default 0
	// Key (key) adds key expressions to the default key of method, host, path and query.
	Key         Key
	Statuses    []int         // statuses: cacheable status codes; default 200, 203, 301, 404
	MaxEntry    int64         // max_entry: larger bodies are not cached; default 8MB
	AllowCookie bool          // allow_cookie: cache requests that carry Cookie or Authorization; default false
	LockTimeout time.Duration // lock_timeout: how long concurrent misses wait for the first; default 5s
	// Targeted (targeted): targeted cache-control fields (RFC 9213) that govern edge's
	// cache ahead of Cache-Control, most preferred first, at most 4; default
	// ["CDN-Cache-Control"]; [] obeys none.
	Targeted []string
	// ForwardTargeted (forward_targeted): keep the targeted fields in stored answers and
	// show them to clients; default false (edge consumes them).
	ForwardTargeted bool
}

// Limit is a limit "NAME" block: a token bucket per key.
type Limit struct {
	Name  string
	Key   Key  // key: required
	Rate  Rate // rate: required
	Burst int  // burst: bucket size; default 1
	// MissingKey (missing_key): "skip" (default), "reject" or "shared".
	MissingKey string
	Delay      time.Duration // delay: wait up to this long for a token before rejecting; default 0
	DryRun     bool          // dry_run: count rejections but let requests pass
	Headers    bool          // headers: add RateLimit-* headers to answers
	Scope      string        // scope: "local" (default), "cluster" or "redis"
	FailOpen   bool          // fail_open: with scope "redis", pass when Redis is unreachable
	MaxKeys    int           // max_keys: tracked keys; default 1048576
	Pos        hcl.Range
}

// Idempotency is the idempotency block of a route.
type Idempotency struct {
	Header   string        // header: default "Idempotency-Key"
	TTL      time.Duration // ttl: default 24h
	Methods  []string      // methods: default ["POST"]
	UserKey  Key           // user_key: default header:X-User-Id; the client IP when empty
	Required bool          // required: a request without the header gets 400; default false
	Store    string        // store: "memory" (default) or "redis" (the seckill Redis)
	FailOpen bool          // fail_open: forward when the store is down; default false (503)

	// Wait (wait, an edge addition): how long a repeat that arrives while the first
	// request is still running waits for its answer before getting 409 in_progress;
	// default 0 (409 at once).
	Wait time.Duration
	// Lease (lease, an edge addition): how long a claim holds its key when the edge
	// that took it never completes it (a crash). It must outlast the upstream's
	// timeout; default 0: twice the timeout of the route's upstream or cells, at
	// least 10s.
	Lease time.Duration
	// MaxEntries (max_entries, an edge addition): keys the memory store of this route
	// holds, in flight and recorded; the oldest records are forgotten first beyond it.
	// Default 100000. Ignored with store "redis" (Redis's maxmemory bounds it).
	MaxEntries int
}

// Blacklist is the blacklist block.
type Blacklist struct {
	IPs     []netip.Prefix // ips: addresses and CIDRs
	Users   []string       // users: user ids, matched against UserKey
	UserKey Key            // user_key: default header:X-User-Id
	File    string         // file: one entry a line (IP, CIDR or user:ID), re-read when it changes
	AutoBan *AutoBan       // auto_ban block; nil: off
}

// AutoBan bans a client IP that keeps hitting limits.
type AutoBan struct {
	Rejects int           // rejects: limit rejections that trigger a ban; required
	Window  time.Duration // window: required
	Ban     time.Duration // ban: how long; required
}

// Seckill is the seckill block.
type Seckill struct {
	Store    string        // store: "memory" (default) or "redis"
	Redis    *Redis        // redis block; required with store "redis"
	Secret   string        // secret: HMAC key, at least 32 bytes; required
	TokenTTL time.Duration // token_ttl: default 5m
	UserKey  Key           // user_key: default header:X-User-Id
	ItemKey  Key           // item_key: default path:2
	Timeout  time.Duration // timeout: for one store call; default 200ms (503 beyond)
}

// Redis is a redis block: one server, or several addresses of a Redis Cluster.
type Redis struct {
	Addrs    []string // addrs: required
	Username string   // username
	Password string   // password: use env("…")
}

// Cluster is the cluster block: edge nodes that share bans, cache purges, seckill
// sold-out flags, degrade switches and the live-node count of scope = "cluster"
// limits over memberlist gossip (docs/cluster.md). A reload may change join (the
// new addresses are contacted); any other change of the block, or adding or
// removing it, needs a restart.
type Cluster struct {
	// name: the CLUSTER's name, the same on every node of it: nodes only talk to
	// nodes with the same name, so two clusters on one network never merge.
	// Default "" (no check).
	Name string
	// node_name: this node's name, unique in the cluster (memberlist misbehaves
	// silently on duplicates). Default "<hostname>-<port>-<4 random hex>".
	NodeName string
	// bind: gossip address, UDP and TCP on one port; default "0.0.0.0:7946".
	// Port 0 picks a free port (tests).
	Bind string
	// advertise: host:port the other nodes reach this node at; default: the bind
	// address, or a private IP of this host when bind is 0.0.0.0.
	Advertise string
	// join: host:port of existing nodes (any subset; a DNS name tries every A
	// record). Joined in the background with retries until one answers. Default
	// none: this node starts a cluster and waits to be joined.
	Join []string
	// secret: gossip encryption key (AES-GCM), 16, 24 or 32 bytes, the same on
	// every node; use env("…"). Default none: gossip in clear.
	Secret string
}
