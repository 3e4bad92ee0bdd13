//go:build !unix

package workers

// selfCPU is 0 where getrusage is not available: no starvation verdicts, and the
// machine's busy time (from /proc/stat, Linux only) is unknown anyway.
func selfCPU() float64 { return 0 }
