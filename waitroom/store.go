package waitroom

import (
	"context"
	"time"
)

// Store keeps the shared state of rooms: the place counter, the serving counter, who
// waits and who is active, the leader's lease, the pre-queue and the shared switches
// (pause, rate override). NewRedisStore shares it between edge nodes; NewMemoryStore keeps
// it in one process. Both have the same semantics, checked by the same tests. A Store is
// safe for concurrent use, serves any number of rooms (by name) and outlives reloads:
// build one per process (per Redis). Its methods are unexported: the Room is its only
// user. Every failure of the store itself wraps ErrUnavailable.
type Store interface {
	// join finds or makes the place of one user (see joinQuery) in one atomic step.
	join(ctx context.Context, room string, q *joinQuery) (joinAnswer, error)
	// touch records that the waiting places and the admitted places were seen at now; it
	// returns the waiting places that are no longer in line (given up, or admitted).
	touch(ctx context.Context, room string, now, session int64, waiting, active []int64) ([]int64, error)
	// snapshot reads the room's counters.
	snapshot(ctx context.Context, room string) (counters, error)
	// acquire takes or renews the leader lease for node; it reports whether node holds it.
	acquire(ctx context.Context, room, node string, lease time.Duration) (bool, error)
	// release gives the lease up if node holds it.
	release(ctx context.Context, room, node string) error
	// tick is one admission step of the leader, atomic (see tickQuery).
	tick(ctx context.Context, room string, q *tickQuery) (tickAnswer, error)
	// preQueue lists the pre-queue: early arrivals and those after the opening, each in
	// arrival order, and the opening that was drawn last (0: none).
	preQueue(ctx context.Context, room string) (early, late []string, drawnFor int64, err error)
	// draw gives the pre-queue places in the order given, once per opening (see drawQuery).
	draw(ctx context.Context, room string, q *drawQuery) (drawAnswer, error)
	// setPaused and setRate store the switches shared by every node of the room; a rate
	// of 0 removes the override.
	setPaused(ctx context.Context, room string, paused bool) error
	setRate(ctx context.Context, room string, rate float64) error
}

// joinQuery is one user asking for their place. All times are unix milliseconds.
//
// The user is identity when it is not empty ("k"+key for users with a key, "t"+ticket for
// an early arrival known by cookie), else the anonymous holder of place (from their
// cookie), else a newcomer. A known user whose place is still alive — waiting and seen
// within session, or admitted and active within session — gets it back and is marked seen
// now; anyone else gets a new place at the end (or a pre-queue ticket while opensAt is set
// and not drawn yet), unless maxPerIP > 0 places are held by ip already.
type joinQuery struct {
	identity string
	place    int64
	ip       string
	now      int64
	session  int64
	opensAt  int64 // 0: no pre-queue
	maxPerIP int   // 0: no bound
	idleTTL  int64 // keys of the room expire after this long without a write
}

// joinStatus is the outcome of a join.
type joinStatus int8

const (
	joinWaiting  joinStatus = iota + 1 // place > serving, in line
	joinAdmitted                       // place ≤ serving and admitted: active
	joinPre                            // a pre-queue ticket (place is -ticket)
	joinTooMany                        // ip holds maxPerIP places
)

// joinAnswer is the result of a join.
type joinAnswer struct {
	status  joinStatus
	place   int64 // > 0 a place; < 0 the pre-queue ticket -place
	serving int64
}

// counters are a room's shared numbers as snapshot reads them.
type counters struct {
	tail, serving, admitted int64
	paused                  bool
	rate                    float64 // the override of SetAdmitRate; 0: none
	inForce                 float64 // the rate the leader last admitted at
	reason                  string  // and why
	seed, drawnFor          int64   // of the last pre-queue draw
	active, waiting, pre    int64
}

// tickQuery is one admission step of the leader node, run only while node holds the
// lease (which it renews for lease ms). Admitted users whose last touch is older than
// session are dropped from active, and waiting places unseen that long are given up (at
// most clean of each). Unless the room is paused, the serving counter then moves forward
// over up to scan places: each place alive (seen within session) is admitted — until
// budget users were admitted or maxActive (> 0) users are active — and the others skipped.
type tickQuery struct {
	node         string
	lease        int64
	now, session int64
	budget       int
	maxActive    int
	scan, clean  int
	rate         float64 // the rate in force, stored for every node's Stats
	reason       string
	idleTTL      int64
}

// tickAnswer is the result of a tick.
type tickAnswer struct {
	leader   bool // false: node does not hold the lease; nothing changed
	paused   bool
	admitted int   // users admitted by this tick
	serving  int64 // the serving counter after it
	active   int64
}

// drawQuery assigns places to the pre-queue: order lists every identity of the
// pre-queue, early arrivals (in the drawn order) then later ones (in arrival order); the
// store checks that it holds exactly nEarly and nLate of them. Only the lease holder node
// may draw, and only once per opening opensAt.
type drawQuery struct {
	node          string
	lease         int64
	seed          int64
	now           int64
	opensAt       int64
	nEarly, nLate int
	order         []string
	idleTTL       int64
}

// drawStatus is the outcome of a draw.
type drawStatus int8

const (
	drawDone      drawStatus = iota + 1 // drawn now
	drawAlready                         // this opening was drawn before (seed: its seed)
	drawChanged                         // the pre-queue changed since it was listed: list again
	drawNotLeader                       // node does not hold the lease
)

type drawAnswer struct {
	status drawStatus
	seed   int64
}
