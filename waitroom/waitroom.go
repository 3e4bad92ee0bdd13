package waitroom

// This file is the contract the proxy codes against; the implementation is in the
// other files of the package (doc.go tells how it works).

import (
	"errors"
	"net/netip"
	"time"
)

// Options are the settings of one room (a waiting_room block). A reload passes new
// Options to Room.Update; places, the serving counter and admitted users survive it.
type Options struct {
	AdmitRate float64       // users let in per second, across all nodes (admit_rate); > 0
	MaxActive int           // admitted users still active at once (max_active); 0: no cap
	Session   time.Duration // an admitted user stays admitted this long after their last request, and a waiting place nobody polls for this long is given up (session); > 0
	OpensAt   time.Time     // opens_at: before it, arrivals go to a pre-queue drawn in random order at OpensAt; zero: open
	MaxPerIP  int           // places one client address may hold at once; 0: no bound
	FailOpen  bool          // fail_open: the store unreachable lets requests through instead of 503
	Adaptive  Adaptive      // adaptive admission; zero value: off
	// Secret signs the cookies (HMAC-SHA256); at least 32 bytes. Every node of a room
	// must have the same one.
	Secret []byte
}

// Adaptive makes the admission rate follow the health of the protected routes'
// upstreams: it backs off when they slow down or fail and recovers when they are
// healthy, between MinRate and Options.AdmitRate.
type Adaptive struct {
	On            bool
	MinRate       float64       // the floor; default AdmitRate/10
	LatencyTarget time.Duration // a p90 latency of protected requests above it is unhealthy; default 500ms
	MaxErrorRatio float64       // a share of 5xx (or an open breaker) above it is unhealthy; default 0.05
}

// Errors of Room.Check.
var (
	// ErrUnavailable: the store cannot be reached and the room does not fail open: the
	// request is answered 503 with Retry-After (nobody is admitted blindly, nobody loses
	// a place).
	ErrUnavailable = errors.New("waiting room store unavailable")
	// ErrTooManyPlaces: the client address already holds Options.MaxPerIP places.
	ErrTooManyPlaces = errors.New("too many places for one client address")
)

// Visit is one request to a protected route, as the room needs it. Slices are only
// read during Check.
type Visit struct {
	// Key is the user's key (the block's key expression, e.g. the X-User-Id header);
	// empty: the user is known by the place cookie alone (a new one joins).
	Key []byte
	// Client is the client address (after trusted_proxies), for MaxPerIP.
	Client netip.Addr
	// AdmitCookie and PlaceCookie are the values of the room's cookies on the request
	// (CookieNames), empty when absent.
	AdmitCookie, PlaceCookie []byte
	Now                      time.Time
}

// Verdict is the room's answer to a Visit.
type Verdict struct {
	// Admitted: the request goes on through the route. Otherwise the user waits and
	// gets the waiting answer built from the fields below.
	Admitted bool
	// SetAdmit and SetPlace are cookie values to set on the answer (Set-Cookie with the
	// names CookieNames returns), nil when nothing changes. An admitted user's cookie is
	// re-signed now and then to slide its expiry.
	SetAdmit, SetPlace []byte
	// Position is the user's place in line counted from the front (1: next), Ahead the
	// users ahead of them; for a user who keeps polling Position never grows.
	Position, Ahead int64
	ETA             time.Duration // (position) ÷ the measured admission rate
	PollAfter       time.Duration // when to ask again: longer the further from the front
	// PreQueue: the room opens at Options.OpensAt and the user arrived before the draw;
	// Position and Ahead are 0 (nobody has a place yet) and ETA is the time to the opening.
	PreQueue bool
	// Err is ErrUnavailable or ErrTooManyPlaces (the caller answers 503 or 429), nil
	// otherwise.
	Err error
}

// Stats are a room's numbers for GET /waiting-rooms/{name} and the metrics.
type Stats struct {
	Waiting    int64   `json:"waiting"`    // places not admitted and not given up (approximate between ticks)
	Active     int64   `json:"active"`     // admitted users active within Session
	Admitted   int64   `json:"admitted"`   // admitted since the room started (the serving counter's progress)
	AdmitRate  float64 `json:"admit_rate"` // the rate in force (adaptive may hold it below the configured one)
	Configured float64 `json:"configured_admit_rate"`
	Measured   float64 `json:"measured_admit_rate"` // users admitted per second over the last 10s
	Paused     bool    `json:"paused"`
	Reason     string  `json:"rate_reason,omitempty"` // why the rate is what it is (adaptive)
	ETA        float64 `json:"eta_seconds"`           // for a user joining now
	Leader     bool    `json:"leader"`                // this node advances the counter now
	PreQueue   int64   `json:"pre_queue,omitempty"`   // before OpensAt: arrivals waiting for the draw
	Seed       int64   `json:"draw_seed,omitempty"`   // the seed of the pre-queue draw, once drawn
}
