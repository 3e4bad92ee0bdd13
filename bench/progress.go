package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Progress shows how a run is going: on a terminal one line rewritten in place four
// times a second, otherwise a plain line every two seconds. One Progress serves one
// run at a time; set Label before each run.
type Progress struct {
	Out   io.Writer
	TTY   bool
	Label string

	stop chan struct{}
	wg   sync.WaitGroup
}

// NewProgress writes to stdout and finds out whether it is a terminal.
func NewProgress() *Progress {
	tty := false
	if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		tty = true
	}
	return &Progress{Out: os.Stdout, TTY: tty}
}

func (p *Progress) begin(start time.Time, total time.Duration, done, errs *atomic.Int64) {
	p.stop = make(chan struct{})
	every := 2 * time.Second
	if p.TTY {
		every = 250 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				if p.TTY {
					fmt.Fprint(p.Out, "\r\033[K")
				}
				return
			case now := <-t.C:
				el := now.Sub(start)
				n := done.Load()
				line := fmt.Sprintf("%s  %4.1fs/%.0fs  %9d req  %8.0f req/s  %d errors",
					p.Label, el.Seconds(), total.Seconds(), n, float64(n)/el.Seconds(), errs.Load())
				if p.TTY {
					fmt.Fprint(p.Out, "\r\033[K"+line)
				} else {
					fmt.Fprintln(p.Out, line)
				}
			}
		}
	}()
}

func (p *Progress) finish() {
	close(p.stop)
	p.wg.Wait()
}
