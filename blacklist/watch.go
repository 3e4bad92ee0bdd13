package blacklist

import (
	"os"
	"sync"
	"time"
)

// Poller calls a function on its own goroutine at a fixed interval until Stop. Use it
// to call List.Sweep, or through WatchFile to reload the list file.
type Poller struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartPoller calls fn(now) every interval (which must be positive) on a new
// goroutine. Calls never overlap; a slow fn delays the next tick.
func StartPoller(interval time.Duration, fn func(now time.Time)) *Poller {
	if interval <= 0 {
		panic("BUG: blacklist.StartPoller: interval must be positive")
	}
	p := &Poller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				fn(now)
			}
		}
	}()
	return p
}

// Stop ends the poller and waits until a running call returns. It is safe to call
// more than once and from several goroutines, but not from inside fn.
func (p *Poller) Stop() {
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

type fileStamp struct {
	exists  bool
	size    int64
	modTime time.Time
	info    os.FileInfo
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, size: fi.Size(), modTime: fi.ModTime(), info: fi}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.exists != b.exists {
		return false
	}
	if !a.exists {
		return true
	}
	return a.size == b.size && a.modTime.Equal(b.modTime) && os.SameFile(a.info, b.info)
}

// WatchFile polls path every interval and calls onChange (on the poller's goroutine)
// when its size, modification time or identity changes, or it appears or disappears
// — e.g. to call List.ReloadFile. Replacing the file by rename is seen too. The state
// at the call is the baseline: no call is made for it.
func WatchFile(path string, interval time.Duration, onChange func()) *Poller {
	last := stampOf(path)
	return StartPoller(interval, func(time.Time) {
		cur := stampOf(path)
		if cur.same(last) {
			return
		}
		last = cur
		onChange()
	})
}
