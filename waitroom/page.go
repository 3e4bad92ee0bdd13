package waitroom

import (
	"bytes"
	_ "embed"
)

//go:embed page.html
var defaultPage []byte

// Page returns the waiting page of a room: custom (a page = "…" file) or the embedded
// default, with every "{{poll_url}}" replaced by pollURL, the path that answers the
// page's polls. The default page shows the place in line, who is ahead and the wait,
// polls without a reload, and reloads once the answer says admitted.
func Page(custom []byte, pollURL string) []byte {
	if custom == nil {
		custom = defaultPage
	}
	return bytes.ReplaceAll(custom, []byte("{{poll_url}}"), []byte(pollURL))
}
