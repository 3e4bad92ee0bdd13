//go:build !linux

package redistest

import "syscall"

// sysProcAttr has nothing to add off Linux: cleanups kill the server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
