//go:build !linux

package pebbletest

import "syscall"

// sysProcAttr has nothing to add off Linux: cleanups kill the children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
