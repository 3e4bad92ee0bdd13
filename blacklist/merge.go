package blacklist

import (
	"fmt"
	"time"
)

// Merge stores e, a dynamic ban made elsewhere (another edge node of a cluster),
// as it is: its source (api or auto), reason, creation and expiry are kept. It
// replaces a dynamic ban of the same address, range or user, and is a no-op for
// an e already expired at now, so applying one ban twice is harmless. Unlike
// BanIP it does no I/O: the next Sweep saves it to the state dir, so a burst of
// merged bans costs one write. Errors name an invalid e. Safe for concurrent use.
func (l *List) Merge(e Entry, now time.Time) error {
	switch e.Kind {
	case KindUser:
		if err := checkUser(e.User); err != nil {
			return fmt.Errorf("cannot merge ban: %w", err)
		}
	case KindIP, KindCIDR:
		p, err := normalizePrefix(e.Prefix)
		if err != nil {
			return fmt.Errorf("cannot merge ban of %q: %w", e.Prefix, err)
		}
		e.Prefix, e.Kind, e.User = p, prefixKind(p), ""
	default:
		return fmt.Errorf("cannot merge ban of kind %s", e.Kind)
	}
	if e.Source != SourceAuto {
		e.Source = SourceAPI
	}
	if !e.Expires.IsZero() && !now.Before(e.Expires) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.apply(e)
	l.dirty.Store(true)
	return nil
}
