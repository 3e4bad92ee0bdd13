// Package soak holds what the long-run and abuse tests of edge share: reading a
// process's resident memory, descriptors and goroutines, the flatness check that
// tells a leak from noise, latency percentiles, and the report written to
// bench/results. The tests themselves (soak_test.go, abuse_test.go) start a real
// edge binary, real origins and a real redis-server; see docs/operations.md,
// "Soak" and "Resource bounds".
package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// RSS returns the resident set size of process pid in KiB (VmRSS in
// /proc/pid/status).
func RSS(pid int) (int64, error) {
	return procStatusKB(pid, "VmRSS:")
}

// PeakRSS returns the highest resident set size process pid has had, in KiB
// (VmHWM in /proc/pid/status): a peak between two samples is not missed.
func PeakRSS(pid int) (int64, error) {
	return procStatusKB(pid, "VmHWM:")
}

func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read the status of process %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("process %d: bad %s line %q: %w", pid, field, sc.Text(), err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("process %d: no %s in /proc/%d/status", pid, field, pid)
}

// FDs returns how many file descriptors process pid has open.
func FDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot list the descriptors of process %d: %w", pid, err)
	}
	return len(ents), nil
}

// Metric returns the value of the unlabelled metric name from the Prometheus text
// that GET http://adminAddr/metrics answers (go_goroutines, for example).
func Metric(adminAddr, name string) (float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("cannot scrape %s: %w", adminAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("cannot scrape %s: %w", adminAddr, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics has no %s", adminAddr, name)
}

// Percentiles returns the q-quantiles (0 < q ≤ 1) of ds in milliseconds, nearest
// rank; zeros when ds is empty. ds is sorted in place.
func Percentiles(ds []time.Duration, qs ...float64) []float64 {
	out := make([]float64, len(qs))
	if len(ds) == 0 {
		return out
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	for i, q := range qs {
		k := int(q*float64(len(ds))+0.999999) - 1
		k = max(0, min(k, len(ds)-1))
		out[i] = float64(ds[k]) / float64(time.Millisecond)
	}
	return out
}
