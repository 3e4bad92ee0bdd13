package tunnel

import (
	"context"
	"time"
)

// The sweeper's period is an eighth of the shortest idle timeout of the open tunnels,
// within these bounds.
const (
	minTick = 10 * time.Millisecond
	maxTick = time.Second
)

func tickFor(idle time.Duration) time.Duration {
	return min(max(idle/8, minTick), maxTick)
}

// open registers t as an open tunnel of its Group; false when Shutdown's deadline has
// passed, in which case t must not run.
func (r *Registry) open(t *tun) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	t.slot = len(r.tuns)
	r.tuns = append(r.tuns, t)
	r.active.Add(1)
	t.g.active.Add(1)
	t.g.total.Add(1)
	if t.idle > 0 {
		t.seenAt = time.Now()
		r.timed++
		switch tick := tickFor(t.idle); {
		case !r.sweeping:
			r.sweeping = true
			r.tick = tick
			go r.sweep()
		case tick < r.tick:
			r.poke()
		}
	}
	return true
}

// close unregisters t, if open registered it, and gives back its slot. After it, the
// Registry no longer touches t's conns.
func (r *Registry) close(t *tun) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last := len(r.tuns) - 1; t.slot <= last && r.tuns[t.slot] == t {
		r.tuns[t.slot] = r.tuns[last]
		r.tuns[t.slot].slot = t.slot
		r.tuns[last] = nil
		r.tuns = r.tuns[:last]
		r.active.Add(-1)
		t.g.active.Add(-1)
		if t.idle > 0 {
			r.timed--
			if r.timed == 0 {
				r.poke() // so that the sweeper exits now rather than a tick later
			}
		}
	}
	t.g.releaseLocked()
	r.notifyLocked()
}

// poke wakes the sweeper without waiting. Called with r.mu held.
func (r *Registry) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// notifyLocked wakes whoever waits in Shutdown for a tunnel or a slot to go.
func (r *Registry) notifyLocked() {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// stop ends t from outside its copies: the reason is recorded, and both conns are given a
// deadline in the past, which unblocks the copies. Called with r.mu held, so that t is
// still registered and Run has not returned (Run unregisters under r.mu before returning).
func (t *tun) stop(reason Reason) {
	t.reason.CompareAndSwap(0, uint32(reason))
	t.unblock()
}

// sweep ends the tunnels idle for longer than their timeout, every tick, until no open
// tunnel has a timeout. A tunnel's activity is its byte counters: when they have not
// moved since seenAt, it has been idle since seenAt at least (and at most a tick more).
func (r *Registry) sweep() {
	timer := time.NewTimer(maxTick)
	defer timer.Stop()
	for {
		r.mu.Lock()
		if r.timed == 0 {
			r.sweeping = false
			r.mu.Unlock()
			return
		}
		now := time.Now()
		shortest := time.Duration(0)
		for _, t := range r.tuns {
			if t.idle == 0 {
				continue
			}
			if n := t.up.Load() + t.down.Load(); n != t.seen {
				t.seen, t.seenAt = n, now
			} else if now.Sub(t.seenAt) >= t.idle {
				t.stop(ReasonIdle)
				continue // it unregisters itself shortly; do not let it keep the tick short
			}
			if shortest == 0 || t.idle < shortest {
				shortest = t.idle
			}
		}
		if shortest > 0 {
			r.tick = tickFor(shortest)
		}
		tick := r.tick
		r.mu.Unlock()

		timer.Reset(tick)
		select {
		case <-timer.C:
		case <-r.wake:
		}
	}
}

// Shutdown stops the tunnels for a graceful stop. From the call on, Acquire refuses new
// slots. Shutdown waits until every slot has been given back (open tunnels ended by
// themselves, slots acquired for a tunnel not yet running released or run to their end)
// and returns nil, or until ctx is done: then it ends the tunnels still open
// (ReasonShutdown), makes any later Run end at once the same way, waits for the open
// tunnels' Run to return, and returns ctx.Err(). That last wait is short: a stop
// unblocks the copies at once, and only a tls.Conn's close_notify on Close may take up to
// its own 5 s write timeout with a peer that does not read.
//
// A Registry is not reusable after Shutdown. Shutdown may be called again (it waits the
// same way) and from several goroutines.
func (r *Registry) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	if r.waitUntil(ctx, func() bool { return r.slots == 0 }) == nil {
		return nil
	}

	r.mu.Lock()
	r.stopped = true
	for _, t := range r.tuns {
		t.stop(ReasonShutdown)
	}
	r.mu.Unlock()
	_ = r.waitUntil(context.Background(), func() bool { return len(r.tuns) == 0 })
	return ctx.Err()
}

// waitUntil waits until cond, called with r.mu held, is true, or ctx is done.
func (r *Registry) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		r.mu.Lock()
		if cond() {
			r.mu.Unlock()
			return nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
