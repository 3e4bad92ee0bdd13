package cluster

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as this node sees it.
type State uint8

// The member states. Suspect and alive members count as live (NumAlive); dead
// and left ones do not.
const (
	StateAlive   State = iota // answering probes
	StateSuspect              // this node's probe failed; the cluster may still refute it
	StateDead                 // declared failed by the cluster (crash, partition)
	StateLeft                 // left gracefully (Stop)
)

// States lists every State, in order, for metrics that set one gauge per state.
var States = [...]State{StateAlive, StateSuspect, StateDead, StateLeft}

// String returns "alive", "suspect", "dead" or "left".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Member is one node of the cluster as this node sees it. A Member is a copy:
// the caller owns it.
type Member struct {
	Name  string    // unique node name
	Addr  string    // advertised gossip address, host:port
	State State     // current state
	Since time.Time // when the member entered State, by this node's clock
	Local bool      // true for this node
}

// Node meta is two bytes: a format version and flags. metaLeaving is set just
// before a graceful leave, so peers can tell "left" from "dead": memberlist
// v0.7.0 hands NotifyLeave a Node whose State field is never updated.
const (
	metaVersion byte = 1
	metaLeaving byte = 1
)

// members is the member table, fed by memberlist's event, ping and conflict
// delegates. Those run with memberlist's own locks held, so they only update
// this table and signal; they never call back into memberlist.
type members struct {
	mu        sync.Mutex
	m         map[string]*Member
	live      atomic.Int32 // alive + suspect, for the broadcast queue and NumAlive
	changed   chan struct{}
	retention time.Duration
}

func (t *members) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// set records state s for name and reports whether anything changed. addr ""
// keeps the known address.
func (t *members) set(name, addr string, s State, local bool) {
	t.mu.Lock()
	m := t.m[name]
	changed := false
	if m == nil {
		m = &Member{Name: name, Addr: addr, State: s, Since: time.Now(), Local: local}
		t.m[name] = m
		changed = true
	} else {
		if m.State != s {
			m.State, m.Since = s, time.Now()
			changed = true
		}
		if addr != "" && addr != m.Addr {
			m.Addr = addr
			changed = true
		}
	}
	if changed {
		t.recount()
	}
	t.mu.Unlock()
	if changed {
		t.signal()
	}
}

// suspect marks name suspect if it is alive.
func (t *members) suspect(name string) {
	t.mu.Lock()
	m := t.m[name]
	changed := m != nil && m.State == StateAlive && !m.Local
	if changed {
		m.State, m.Since = StateSuspect, time.Now()
	}
	t.mu.Unlock()
	if changed {
		t.signal()
	}
}

// unsuspect marks name alive again if it is suspect.
func (t *members) unsuspect(name string) {
	t.mu.Lock()
	m := t.m[name]
	changed := m != nil && m.State == StateSuspect
	if changed {
		m.State, m.Since = StateAlive, time.Now()
	}
	t.mu.Unlock()
	if changed {
		t.signal()
	}
}

func (t *members) recount() {
	n := 0
	for _, m := range t.m {
		if m.State == StateAlive || m.State == StateSuspect {
			n++
		}
	}
	t.live.Store(int32(n))
}

// reap forgets members that have been dead or left for longer than retention.
func (t *members) reap(now time.Time) {
	t.mu.Lock()
	for name, m := range t.m {
		if (m.State == StateDead || m.State == StateLeft) && now.Sub(m.Since) > t.retention {
			delete(t.m, name)
		}
	}
	t.mu.Unlock()
}

func (t *members) list() []Member {
	t.mu.Lock()
	out := make([]Member, 0, len(t.m))
	for _, m := range t.m {
		out = append(out, *m)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (t *members) counts() map[State]int {
	out := make(map[State]int, len(States))
	for _, s := range States {
		out[s] = 0
	}
	t.mu.Lock()
	for _, m := range t.m {
		out[m.State]++
	}
	t.mu.Unlock()
	return out
}

// eventDelegate adapts Cluster to memberlist's EventDelegate, ConflictDelegate
// and PingDelegate without exporting those methods on Cluster.
type eventDelegate Cluster

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	d.members.set(n.Name, n.Address(), StateAlive, n.Name == d.name)
}

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	d.members.set(n.Name, n.Address(), StateAlive, n.Name == d.name)
}

func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	s := StateDead
	if len(n.Meta) >= 2 && n.Meta[0] == metaVersion && n.Meta[1]&metaLeaving != 0 {
		s = StateLeft
	}
	d.members.set(n.Name, n.Address(), s, n.Name == d.name)
}

func (d *eventDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.log.Error("cluster: two nodes use one name; give every node a unique name",
		"name", existing.Name, "addr", existing.Address(), "other_addr", other.Address())
}

func (d *eventDelegate) AckPayload() []byte { return nil }

func (d *eventDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.members.unsuspect(other.Name)
}

// suspectLine is how memberlist v0.7.0 logs that this node's probe of a peer
// failed and it now suspects the peer. memberlist has no delegate hook for
// suspicion, so the log line is the only signal; if a future version rewords
// it, members simply go from alive to dead without a suspect phase.
const suspectPrefix, suspectSuffix = "memberlist: Suspect ", " has failed, no acks received"

func suspectedName(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, suspectPrefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, suspectSuffix)
}
