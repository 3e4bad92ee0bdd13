//go:build !unix

package rawsock

import "net"

// Wrap returns c unchanged: raw socket calls are implemented for Unix systems only.
func Wrap(c net.Conn) net.Conn { return c }
