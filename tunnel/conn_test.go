package tunnel

import "testing"

// The example handshake of RFC 6455 §1.3, and fresh keys that differ.
func TestWebSocketKey(t *testing.T) {
	var k WebSocketKey
	copy(k[:], "dGhlIHNhbXBsZSBub25jZQ==")
	if !k.Accepted([]byte("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) || k.Accepted([]byte("s3pPLMBiTxaQ9kYGzzhZRbK+xOp=")) {
		t.Error("Accepted disagrees with RFC 6455's example")
	}
	if a, b := NewWebSocketKey(), NewWebSocketKey(); a == b || len(a) != 24 {
		t.Errorf("keys %q %q", a, b)
	}
}
