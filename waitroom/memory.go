package waitroom

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// NewMemoryStore returns the Store of a single edge node: the rooms' state lives in this
// process and dies with it. It has the semantics of the Redis store, leader lease
// included, so several Rooms on one memory store behave like several nodes on one Redis.
// Its size is bounded like the Redis store's: given-up places and expired admissions are
// dropped by the leader's ticks.
func NewMemoryStore() Store {
	return &memStore{rooms: make(map[string]*memRoom)}
}

type memStore struct {
	mu    sync.Mutex
	rooms map[string]*memRoom
}

// memRoom is one room's state, guarded by memStore.mu (a room's calls are short; one
// lock keeps the steps atomic as the Redis scripts are).
type memRoom struct {
	tail, serving, admitted int64
	paused                  bool
	rate, inForce           float64
	reason                  string
	seed, drawnFor, preseq  int64
	lockOwner               string
	lockUntil               time.Time

	seen   map[int64]int64 // waiting place -> last seen ms
	active map[int64]int64 // admitted place -> last seen ms
	owner  map[int64]memOwner
	keys   map[string]int64 // identity -> place (< 0: pre-queue ticket)
	ips    map[string]int   // ip -> places waiting
	early  []string         // pre-queue identities in arrival order
	late   []string
}

type memOwner struct{ ip, identity string }

func (m *memStore) room(name string) *memRoom {
	r := m.rooms[name]
	if r == nil {
		r = &memRoom{
			seen: make(map[int64]int64), active: make(map[int64]int64),
			owner: make(map[int64]memOwner), keys: make(map[string]int64), ips: make(map[string]int),
		}
		m.rooms[name] = r
	}
	return r
}

// forget removes every trace of place p (a place or, when negative, a pre-queue ticket).
func (r *memRoom) forget(p int64) {
	o, ok := r.owner[p]
	if ok {
		if o.identity != "" && r.keys[o.identity] == p {
			delete(r.keys, o.identity)
		}
		delete(r.owner, p)
	}
	_, waiting := r.seen[p]
	if waiting || p < 0 {
		if ok {
			r.leaveIP(o.ip)
		}
		delete(r.seen, p)
	}
	delete(r.active, p)
}

func (r *memRoom) leaveIP(ip string) {
	if ip == "" {
		return
	}
	if r.ips[ip] <= 1 {
		delete(r.ips, ip)
	} else {
		r.ips[ip]--
	}
}

func (m *memStore) join(_ context.Context, room string, q *joinQuery) (joinAnswer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	var p int64
	found := false
	if q.identity != "" {
		p, found = r.keys[q.identity]
	} else if q.place != 0 {
		p, found = q.place, true
	}
	cut := q.now - q.session
	if found {
		switch {
		case p < 0:
			if _, ok := r.owner[p]; ok {
				return joinAnswer{status: joinPre, place: p, serving: r.serving}, nil
			}
		case p > r.serving:
			if s, ok := r.seen[p]; ok && s >= cut {
				r.seen[p] = q.now
				return joinAnswer{status: joinWaiting, place: p, serving: r.serving}, nil
			}
		default:
			if s, ok := r.active[p]; ok && s >= cut {
				r.active[p] = q.now
				return joinAnswer{status: joinAdmitted, place: p, serving: r.serving}, nil
			}
		}
		r.forget(p)
	}
	if q.maxPerIP > 0 && q.ip != "" && r.ips[q.ip] >= q.maxPerIP {
		return joinAnswer{status: joinTooMany, serving: r.serving}, nil
	}
	if q.ip != "" {
		r.ips[q.ip]++
	}
	if q.opensAt > 0 && r.drawnFor != q.opensAt {
		r.preseq++
		id := q.identity
		if id == "" {
			id = "t" + strconv.FormatInt(r.preseq, 10)
		}
		r.keys[id] = -r.preseq
		r.owner[-r.preseq] = memOwner{ip: q.ip, identity: id}
		if q.now < q.opensAt {
			r.early = append(r.early, id)
		} else {
			r.late = append(r.late, id)
		}
		return joinAnswer{status: joinPre, place: -r.preseq, serving: r.serving}, nil
	}
	r.tail++
	p = r.tail
	r.seen[p] = q.now
	r.owner[p] = memOwner{ip: q.ip, identity: q.identity}
	if q.identity != "" {
		r.keys[q.identity] = p
	}
	return joinAnswer{status: joinWaiting, place: p, serving: r.serving}, nil
}

func (m *memStore) touch(_ context.Context, room string, now, session int64, waiting, active []int64) ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	var dead []int64
	cut := now - session
	for _, p := range waiting {
		if s, ok := r.seen[p]; ok && s >= cut {
			r.seen[p] = now
		} else {
			dead = append(dead, p)
		}
	}
	for _, p := range active {
		if _, ok := r.active[p]; ok {
			r.active[p] = now
		}
	}
	return dead, nil
}

func (m *memStore) snapshot(_ context.Context, room string) (counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	return counters{
		tail: r.tail, serving: r.serving, admitted: r.admitted, paused: r.paused,
		rate: r.rate, inForce: r.inForce, reason: r.reason, seed: r.seed, drawnFor: r.drawnFor,
		active: int64(len(r.active)), waiting: int64(len(r.seen)), pre: int64(len(r.early) + len(r.late)),
	}, nil
}

func (m *memStore) acquire(_ context.Context, room, node string, lease time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	now := time.Now()
	if r.lockOwner == node || r.lockOwner == "" || now.After(r.lockUntil) {
		r.lockOwner, r.lockUntil = node, now.Add(lease)
		return true, nil
	}
	return false, nil
}

func (m *memStore) release(_ context.Context, room, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	if r.lockOwner == node {
		r.lockOwner = ""
	}
	return nil
}

// holds reports whether node holds r's lease now and renews it for lease ms.
func (r *memRoom) holds(node string, lease int64) bool {
	now := time.Now()
	if r.lockOwner != node || now.After(r.lockUntil) {
		return false
	}
	r.lockUntil = now.Add(time.Duration(lease) * time.Millisecond)
	return true
}

func (m *memStore) tick(_ context.Context, room string, q *tickQuery) (tickAnswer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	if !r.holds(q.node, q.lease) {
		return tickAnswer{}, nil
	}
	cut := q.now - q.session
	n := 0
	for p, s := range r.active {
		if s < cut && n < q.clean {
			r.forget(p)
			n++
		}
	}
	n = 0
	for p, s := range r.seen {
		if s < cut && n < q.clean {
			r.forget(p)
			n++
		}
	}
	r.inForce, r.reason = q.rate, q.reason
	a := tickAnswer{leader: true, paused: r.paused}
	if !r.paused {
		budget := q.budget
		if q.maxActive > 0 {
			budget = min(budget, q.maxActive-len(r.active))
		}
		for scanned := 0; a.admitted < budget && r.serving < r.tail && scanned < q.scan; scanned++ {
			r.serving++
			p := r.serving
			if s, ok := r.seen[p]; ok && s >= cut {
				delete(r.seen, p)
				r.leaveIP(r.owner[p].ip)
				r.active[p] = q.now
				a.admitted++
			} else {
				r.forget(p)
			}
		}
		r.admitted += int64(a.admitted)
	}
	a.serving, a.active = r.serving, int64(len(r.active))
	return a, nil
}

func (m *memStore) preQueue(_ context.Context, room string) (early, late []string, drawnFor int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	return append([]string(nil), r.early...), append([]string(nil), r.late...), r.drawnFor, nil
}

func (m *memStore) draw(_ context.Context, room string, q *drawQuery) (drawAnswer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.room(room)
	if !r.holds(q.node, q.lease) {
		return drawAnswer{status: drawNotLeader}, nil
	}
	if r.drawnFor == q.opensAt {
		return drawAnswer{status: drawAlready, seed: r.seed}, nil
	}
	if len(r.early) != q.nEarly || len(r.late) != q.nLate || len(q.order) != q.nEarly+q.nLate {
		return drawAnswer{status: drawChanged}, nil
	}
	for _, id := range q.order {
		if t, ok := r.keys[id]; !ok || t >= 0 {
			return drawAnswer{status: drawChanged}, nil
		}
	}
	for _, id := range q.order {
		t := r.keys[id]
		r.tail++
		r.keys[id] = r.tail
		r.owner[r.tail] = r.owner[t]
		delete(r.owner, t)
		r.seen[r.tail] = q.now
	}
	r.early, r.late = nil, nil
	r.drawnFor, r.seed = q.opensAt, q.seed
	return drawAnswer{status: drawDone, seed: q.seed}, nil
}

func (m *memStore) setPaused(_ context.Context, room string, paused bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.room(room).paused = paused
	return nil
}

func (m *memStore) setRate(_ context.Context, room string, rate float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.room(room).rate = rate
	return nil
}
