//go:build !linux

package tunnel

import (
	"net"
	"sync/atomic"
)

// spliceSupported says whether this platform has the splice path.
const spliceSupported = false

// splice is never taken here (spliceable says no); it copies.
func (t *tun) splice(dst, src *net.TCPConn, pending []byte, n *atomic.Int64, total *atomic.Uint64) {
	t.copy(dst, src, pending, 0, n, total)
}
