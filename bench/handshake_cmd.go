package main

import (
	"flag"
	"fmt"
	"time"
)

// cmdHandshake is `go run ./bench handshake`: full TLS handshakes against any server.
func cmdHandshake(args []string) error {
	fs := flag.NewFlagSet("handshake", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "TLS server host:port")
	lf := addLoadFlags(fs, "path of the one GET per connection; {item} and {seq} are filled per request")
	workers := fs.Int("c", 16, "connections in flight at once")
	tpl, expect, err := lf.parse(fs, args)
	if err != nil {
		return err
	}
	h := &Handshakes{Addr: *addr, Path: tpl, Workers: *workers, Duration: *lf.d, Expect: expect,
		Progress: NewProgress()}
	if h.Items, err = ParseIDs(*lf.items); err != nil {
		return err
	}
	h.Progress.Label = "handshakes " + *addr
	r, err := h.Run()
	if err != nil {
		return err
	}
	fmt.Printf("%d connections in flight, %s: %d full handshakes answered, %d errors, %d resumed\n%.0f handshakes/s\n",
		*workers, r.Elapsed.Round(time.Millisecond), r.Requests, r.Errors, r.Resumed, r.RPS())
	fmt.Printf("agreed: %s\nlatency p50 %s  p99 %s\nstatus %s\n", r.Agreed,
		fmtDur(r.Hist.Percentile(50)), fmtDur(r.Hist.Percentile(99)), fmtStatus(statusKeys(r.Status)))
	if r.FirstErr != "" {
		fmt.Printf("first error: %s\n", r.FirstErr)
	}
	return nil
}
