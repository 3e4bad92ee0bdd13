package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// The seed's sizing rule: 20% of users are active on a day, and 80% of the day's
// page views arrive within the peak window, 20% of the day by default.
const (
	activeShare      = 0.20
	peakShare        = 0.80
	defaultPeakHours = 24 * 0.20
)

// Layer is a tier behind the edge with its per-node capacity in requests per second.
type Layer struct {
	Name     string
	Capacity float64
}

// Plan is a capacity estimate. Fill the inputs and call Compute.
type Plan struct {
	Users     float64 // registered users
	Clicks    float64 // page views per active user per day
	Factor    float64 // redundancy factor, 2 to 5
	PeakHours float64 // length of the peak window in hours; 0: 20% of the day

	EdgeCapacity float64 // requests/s one edge node serves; 0: unknown
	CapacityFrom string  // where EdgeCapacity came from, for the printout
	Layers       []Layer

	Active   float64 // daily active users
	Views    float64 // page views per day
	PeakQPS  float64 // requests/s in the peak window
	Required float64 // PeakQPS × Factor: what to provision for
}

// Compute validates the inputs and fills the derived fields.
func (p *Plan) Compute() error {
	var errs []error
	if p.Users <= 0 {
		errs = append(errs, errors.New("-users must be > 0"))
	}
	if p.Clicks <= 0 {
		errs = append(errs, errors.New("-clicks must be > 0"))
	}
	if p.Factor < 2 || p.Factor > 5 {
		errs = append(errs, fmt.Errorf("-factor %g is outside 2–5 (the redundancy the seed's rule asks for)", p.Factor))
	}
	if p.PeakHours == 0 {
		p.PeakHours = defaultPeakHours
	}
	if p.PeakHours < 0 || p.PeakHours > 24 {
		errs = append(errs, fmt.Errorf("-peak-hours %g is outside (0, 24]", p.PeakHours))
	}
	if p.EdgeCapacity < 0 {
		errs = append(errs, errors.New("-edge-capacity must be > 0"))
	}
	for _, l := range p.Layers {
		if l.Capacity <= 0 {
			errs = append(errs, fmt.Errorf("layer %q: capacity must be > 0", l.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p.Active = p.Users * activeShare
	p.Views = p.Active * p.Clicks
	p.PeakQPS = peakShare * p.Views / (p.PeakHours * 3600)
	p.Required = p.PeakQPS * p.Factor
	return nil
}

// Nodes returns how many nodes of the given capacity carry the required load.
func (p *Plan) Nodes(capacity float64) int {
	return int(math.Ceil(p.Required / capacity))
}

// Print writes the formula with the numbers filled in.
func (p *Plan) Print(w io.Writer) {
	peakSecs := p.PeakHours * 3600
	fmt.Fprintf(w, "daily active users = 20%% × %s users = %s\n", thousands(p.Users), thousands(p.Active))
	fmt.Fprintf(w, "page views per day = %s active × %s clicks = %s\n", thousands(p.Active), trimFloat(p.Clicks), thousands(p.Views))
	fmt.Fprintf(w, "peak QPS           = 80%% × %s views / (%s h × 3600 s = %s s) = %s\n",
		thousands(p.Views), trimFloat(p.PeakHours), thousands(peakSecs), thousands(p.PeakQPS))
	fmt.Fprintf(w, "planned QPS        = %s × redundancy factor %s = %s QPS (≈%s)\n",
		thousands(p.PeakQPS), trimFloat(p.Factor), thousands(p.Required), short(p.Required))
	if p.EdgeCapacity > 0 {
		fmt.Fprintf(w, "edge nodes         = ⌈%s / %s req/s per node⌉ = %d\n",
			thousands(p.Required), thousands(p.EdgeCapacity), p.Nodes(p.EdgeCapacity))
		if p.CapacityFrom != "" {
			fmt.Fprintf(w, "                     (per-node capacity: %s)\n", p.CapacityFrom)
		}
	} else {
		fmt.Fprintln(w, "edge nodes         = unknown: pass -edge-capacity, or run `make bench` for a report to read it from")
	}
	for _, l := range p.Layers {
		fmt.Fprintf(w, "%-18s = ⌈%s / %s req/s per node⌉ = %d\n",
			l.Name+" nodes", thousands(p.Required), thousands(l.Capacity), p.Nodes(l.Capacity))
	}
	if len(p.Layers) > 0 {
		fmt.Fprintln(w, "(layers behind are sized for the full planned QPS: whatever edge rejects, caches or sheds is headroom)")
	}
}

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// short renders v as 107k or 1.2M.
func short(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(math.Round(v/1e3), 'f', 0, 64) + "k"
	}
	return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
}

// layerFlags collects repeated -layer NAME=CAPACITY flags.
type layerFlags []Layer

func (l *layerFlags) String() string {
	var s []string
	for _, x := range *l {
		s = append(s, fmt.Sprintf("%s=%g", x.Name, x.Capacity))
	}
	return strings.Join(s, ",")
}

func (l *layerFlags) Set(v string) error {
	name, c, ok := strings.Cut(v, "=")
	capacity, err := strconv.ParseFloat(c, 64)
	if !ok || name == "" || err != nil || capacity <= 0 {
		return fmt.Errorf("bad layer %q: want NAME=REQUESTS_PER_SECOND, e.g. app=2000", v)
	}
	*l = append(*l, Layer{Name: name, Capacity: capacity})
	return nil
}

// capacityFromReport picks the per-node capacity from a report: the edge req/s of
// the named scenario, which must be valid.
func capacityFromReport(r *Report, path, scenario string) (float64, string, error) {
	for _, sc := range r.Scenarios {
		if sc.Name != scenario {
			continue
		}
		if sc.Edge == nil || !sc.Edge.Valid {
			return 0, "", fmt.Errorf("report %s: scenario %s is not valid for edge: pass -edge-capacity", path, scenario)
		}
		return sc.Edge.RPS, fmt.Sprintf("edge req/s of scenario %s in %s, measured on %d cores (%s) with the load generator on the same machine",
			scenario, path, r.Machine.Cores, r.Machine.CPU), nil
	}
	return 0, "", fmt.Errorf("report %s has no scenario %s: pass -edge-capacity", path, scenario)
}
