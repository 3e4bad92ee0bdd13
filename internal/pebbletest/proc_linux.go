//go:build linux

package pebbletest

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies without running its
// cleanups (a panic or a timeout), so no pebble outlives the test on a shared machine.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
