//go:build !unix

package rawsock

import "net"

// MaxChunk is the most one raw read or write moves (unused where raw calls are not
// available).
const MaxChunk = 256 << 10

// Wrap returns c unchanged: raw socket calls are implemented for Unix systems only.
func Wrap(c net.Conn) net.Conn { return c }

// Listener wraps the connections an inner listener accepts (here: passes them on).
type Listener struct{ net.Listener }
