package blacklist

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors of the admin operations, for errors.Is.
var (
	// ErrNotFound: no dynamic ban matches what Unban was asked to remove.
	ErrNotFound = errors.New("blacklist entry not found")
	// ErrStatic: the entry comes from the config or the list file and cannot be
	// removed through the API; edit the config or the file instead.
	ErrStatic = errors.New("blacklist entry comes from the config or the list file")
)

// Config is the static part of a List and its auto-ban settings, as the blacklist
// block gives them. It survives reloads only by being passed again to Reconfigure.
type Config struct {
	IPs     []netip.Prefix // ips: addresses and CIDRs (see ParsePrefix for strings)
	Users   []string       // users: user ids
	File    string         // file: optional list file; "" none
	AutoBan AutoBanConfig  // auto_ban: zero value is off
}

// Validate reports every problem of cfg's own values, each naming its field; it does
// not read the list file. Reconfigure runs the same checks.
func (cfg Config) Validate() error {
	_, err := configEntries(cfg)
	return errors.Join(err, cfg.AutoBan.Validate())
}

func configEntries(cfg Config) ([]Entry, error) {
	var errs []error
	out := make([]Entry, 0, len(cfg.IPs)+len(cfg.Users))
	for i, p := range cfg.IPs {
		q, err := normalizePrefix(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("blacklist: ips[%d] %q: %w", i, p, err))
			continue
		}
		out = append(out, Entry{Kind: prefixKind(q), Source: SourceConfig, Prefix: q})
	}
	for i, u := range cfg.Users {
		if err := checkUser(u); err != nil {
			errs = append(errs, fmt.Errorf("blacklist: users[%d]: %w", i, err))
			continue
		}
		out = append(out, Entry{Kind: KindUser, Source: SourceConfig, User: u})
	}
	return out, errors.Join(errs...)
}

// List is a blacklist: static entries from the config and the list file, dynamic bans
// from the admin API and auto-ban. It lives outside the config snapshot, so dynamic
// bans and auto-ban counts survive reloads. All methods are safe for concurrent use.
type List struct {
	static  atomic.Pointer[static]
	tracker atomic.Pointer[tracker] // nil: auto-ban off
	dyn     *dynamic
	dir     string // state dir; "" dynamic bans are not saved

	staticMu   sync.Mutex // serialises Reconfigure and ReloadFile
	cfgEntries []Entry
	file       string
	autoCfg    AutoBanConfig

	mu    sync.Mutex  // serialises API bans, sweeps and state writes
	dirty atomic.Bool // dynamic bans changed since the last state write

	autoBans atomic.Uint64
	refused  atomic.Uint64
}

// New builds a List from cfg and loads the dynamic bans saved in stateDir ("" keeps
// dynamic bans in memory only); bans expired at now are dropped. problems are the bad
// lines of the list file, "FILE:LINE: message", which were skipped. err is non-nil
// when cfg is invalid, the list file cannot be read, or the state file is corrupt
// (it names the file; nothing is overwritten).
func New(cfg Config, stateDir string, now time.Time) (l *List, problems []error, err error) {
	l = &List{dyn: newDynamic(), dir: stateDir}
	l.static.Store(buildStatic(nil))
	problems, err = l.Reconfigure(cfg)
	if err != nil {
		return nil, problems, err
	}
	if stateDir != "" {
		bans, err := loadState(stateDir, now)
		if err != nil {
			return nil, problems, err
		}
		for _, e := range bans {
			l.apply(e)
		}
	}
	return l, problems, nil
}

// Reconfigure replaces the static entries and the auto-ban settings, for a reload.
// The new static structure is built off the hot path and swapped in at once; dynamic
// bans are kept, and so are auto-ban counts when the settings did not change. On err
// (invalid cfg, unreadable file) nothing changes. problems are skipped file lines.
func (l *List) Reconfigure(cfg Config) (problems []error, err error) {
	entries, err := configEntries(cfg)
	if err = errors.Join(err, cfg.AutoBan.Validate()); err != nil {
		return nil, err
	}
	l.staticMu.Lock()
	defer l.staticMu.Unlock()
	problems, err = l.rebuildLocked(entries, cfg.File)
	if err != nil {
		return problems, err
	}
	l.cfgEntries, l.file = entries, cfg.File
	ab := cfg.AutoBan.withDefaults()
	if cfg.AutoBan.Rejects == 0 {
		l.tracker.Store(nil)
	} else if t := l.tracker.Load(); t == nil || ab != l.autoCfg {
		l.tracker.Store(newTracker(ab))
	}
	l.autoCfg = ab
	return problems, nil
}

// ReloadFile re-reads the list file (if any) and swaps in a new static part; call it
// when the file changes (see WatchFile). On err the previous entries stay.
func (l *List) ReloadFile() (problems []error, err error) {
	l.staticMu.Lock()
	defer l.staticMu.Unlock()
	return l.rebuildLocked(l.cfgEntries, l.file)
}

func (l *List) rebuildLocked(cfgEntries []Entry, file string) (problems []error, err error) {
	entries := cfgEntries
	if file != "" {
		fe, probs, err := ReadList(file)
		if err != nil {
			return nil, err
		}
		problems = probs
		entries = append(slices.Clip(cfgEntries), fe...)
	}
	l.static.Store(buildStatic(entries))
	return problems, nil
}

// BlockedIP reports how ip is banned: KindIP (a banned address), KindCIDR (inside a
// banned range) or KindNone. IPv4-mapped IPv6 addresses match IPv4 entries. Dynamic
// bans expired at now no longer match, swept or not. It allocates nothing and takes
// no lock unless dynamic address bans exist (then one shard read lock).
func (l *List) BlockedIP(ip netip.Addr, now time.Time) Kind {
	if ip.Is4In6() {
		ip = ip.Unmap()
	}
	s := l.static.Load()
	switch {
	case ip.Is4():
		if k := s.lookup4(addr4(ip)); k != KindNone {
			return k
		}
	case ip.Is6():
		if len(s.r6) > 0 {
			if k := s.lookup6(addr6(ip)); k != KindNone {
				return k
			}
		}
	default:
		return KindNone
	}
	return l.dyn.lookupIP(ip, now.UnixNano())
}

// BlockedUser reports whether the user id is banned; an empty id never is. user is
// only read during the call. It allocates nothing.
func (l *List) BlockedUser(user []byte, now time.Time) bool {
	if len(user) == 0 {
		return false
	}
	if _, ok := l.static.Load().users[string(user)]; ok {
		return true
	}
	return l.dyn.lookupUser(user, now.UnixNano())
}

// BanIP bans p (an address or CIDR, normalized as ParsePrefix does) from now on for
// ttl (0: until removed), with source api, replacing an earlier dynamic ban of the
// same p. With a state dir the ban is saved before BanIP returns; if saving fails the
// ban is undone and the error returned. Adding a ban never rebuilds the static part.
func (l *List) BanIP(p netip.Prefix, ttl time.Duration, reason string, now time.Time) (Entry, error) {
	p, err := normalizePrefix(p)
	if err != nil {
		return Entry{}, fmt.Errorf("cannot ban %q: %w", p, err)
	}
	if ttl < 0 {
		return Entry{}, fmt.Errorf("cannot ban %s: negative ttl %s", prefixString(p), ttl)
	}
	e := Entry{Kind: prefixKind(p), Source: SourceAPI, Prefix: p, Reason: reason, Created: now}.withTTL(ttl, now)
	if err := l.banDurably(e, now); err != nil {
		return Entry{}, fmt.Errorf("cannot ban %s: %w", prefixString(p), err)
	}
	return e, nil
}

// withTTL returns e expiring ttl after now (never when ttl is 0).
func (e Entry) withTTL(ttl time.Duration, now time.Time) Entry {
	if ttl > 0 {
		e.Expires = now.Add(ttl)
	}
	return e
}

// banDurably applies e and saves the state file; when the save fails the ban is
// undone, so a ban is in force only once it is on disk.
func (l *List) banDurably(e Entry, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	undo := l.apply(e)
	if err := l.saveLocked(now); err != nil {
		undo()
		return err
	}
	return nil
}

// BanUser bans a user id like BanIP bans an address.
func (l *List) BanUser(user string, ttl time.Duration, reason string, now time.Time) (Entry, error) {
	if err := checkUser(user); err != nil {
		return Entry{}, fmt.Errorf("cannot ban user: %w", err)
	}
	if ttl < 0 {
		return Entry{}, fmt.Errorf("cannot ban user %q: negative ttl %s", user, ttl)
	}
	e := Entry{Kind: KindUser, Source: SourceAPI, User: user, Reason: reason, Created: now}.withTTL(ttl, now)
	if err := l.banDurably(e, now); err != nil {
		return Entry{}, fmt.Errorf("cannot ban user %q: %w", user, err)
	}
	return e, nil
}

// apply stores a dynamic ban and returns a function that restores what was there.
// The caller holds l.mu, or is New.
func (l *List) apply(e Entry) (undo func()) {
	b := dynBan{created: unixNano(e.Created), expires: unixNano(e.Expires), reason: e.Reason, source: e.Source}
	switch {
	case e.Kind == KindUser:
		prev, existed := l.dyn.putUser(e.User, b)
		return func() {
			if existed {
				l.dyn.putUser(e.User, prev)
			} else {
				l.dyn.delUser(e.User)
			}
		}
	case mapKeyable(e.Prefix):
		k := keyOf(e.Prefix)
		prev, existed := l.dyn.putIP(k, b)
		return func() {
			if existed {
				l.dyn.putIP(k, prev)
			} else {
				l.dyn.delIP(k)
			}
		}
	default:
		old := l.dyn.cidrs.Load()
		next := make([]dynCIDR, 0, len(old.list)+1)
		for _, c := range old.list {
			if c.p != e.Prefix {
				next = append(next, c)
			}
		}
		next = append(next, dynCIDR{e.Prefix, b})
		l.dyn.cidrs.Store(newCIDRSet(next))
		return func() { l.dyn.cidrs.Store(old) }
	}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// UnbanIP removes the dynamic ban of exactly p (normalized as ParsePrefix does; an
// address inside a banned CIDR does not remove the CIDR). It returns ErrNotFound, or
// ErrStatic when p is only a config or file entry. With a state dir the removal is
// saved before UnbanIP returns, or undone on error.
func (l *List) UnbanIP(p netip.Prefix, now time.Time) error {
	p, err := normalizePrefix(p)
	if err != nil {
		return fmt.Errorf("cannot unban %q: %w", p, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var undo func()
	if mapKeyable(p) {
		k := keyOf(p)
		if prev, ok := l.dyn.delIP(k); ok {
			undo = func() { l.dyn.putIP(k, prev) }
		}
	} else {
		old := l.dyn.cidrs.Load()
		if i := slices.IndexFunc(old.list, func(c dynCIDR) bool { return c.p == p }); i >= 0 {
			next := slices.Delete(slices.Clone(old.list), i, i+1)
			l.dyn.cidrs.Store(newCIDRSet(next))
			undo = func() { l.dyn.cidrs.Store(old) }
		}
	}
	if undo == nil {
		if l.static.Load().hasPrefix(p) {
			return fmt.Errorf("cannot unban %s: %w", prefixString(p), ErrStatic)
		}
		return fmt.Errorf("cannot unban %s: %w", prefixString(p), ErrNotFound)
	}
	if err := l.saveLocked(now); err != nil {
		undo()
		return fmt.Errorf("cannot unban %s: %w", prefixString(p), err)
	}
	return nil
}

// UnbanUser removes the dynamic ban of user; errors as UnbanIP.
func (l *List) UnbanUser(user string, now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.dyn.delUser(user)
	if !ok {
		if _, static := l.static.Load().users[user]; static {
			return fmt.Errorf("cannot unban user %q: %w", user, ErrStatic)
		}
		return fmt.Errorf("cannot unban user %q: %w", user, ErrNotFound)
	}
	if err := l.saveLocked(now); err != nil {
		l.dyn.putUser(user, prev)
		return fmt.Errorf("cannot unban user %q: %w", user, err)
	}
	return nil
}

// RecordReject counts one limit rejection of ip at now for auto-ban, and reports
// whether it created a ban (count it in edge_autoban_bans_total). The ban lasts
// AutoBanConfig.Ban, has source auto and reason "auto-ban: N rejects in W", and is
// saved to the state dir by the next Sweep (never on this call: no I/O here). It
// allocates nothing unless it creates a ban, and is a no-op with auto-ban off.
func (l *List) RecordReject(ip netip.Addr, now time.Time) bool {
	t := l.tracker.Load()
	if t == nil {
		return false
	}
	if ip.Is4In6() {
		ip = ip.Unmap()
	}
	if !ip.IsValid() {
		return false
	}
	k := t.key(ip)
	n := now.UnixNano()
	if !t.record(k, n) {
		return false
	}
	if l.dyn.nAuto.Load() >= int64(t.cfg.MaxBans) {
		l.refused.Add(1)
		return false
	}
	b := dynBan{created: n, expires: n + int64(t.cfg.Ban), reason: t.reason, source: SourceAuto}
	if !l.dyn.addAuto(k, b, n) {
		return false
	}
	l.dirty.Store(true)
	l.autoBans.Add(1)
	return true
}

// AutoBans returns how many auto-bans RecordReject has created since New.
func (l *List) AutoBans() uint64 { return l.autoBans.Load() }

// AutoBansRefused returns how many auto-bans were not created because
// AutoBanConfig.MaxBans auto-bans already existed.
func (l *List) AutoBansRefused() uint64 { return l.refused.Load() }

// Sweep removes dynamic bans expired at now and, with a state dir, saves the dynamic
// bans when they changed since the last save (auto-bans, removals). Call it
// periodically, e.g. every few seconds with StartPoller; expired bans stop matching
// without it. It returns how many bans it removed; on a save error the bans stay
// marked unsaved and the next Sweep tries again.
func (l *List) Sweep(now time.Time) (removed int, err error) {
	n := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.dyn.shards {
		s := &l.dyn.shards[i]
		s.mu.Lock()
		for k, b := range s.ips {
			if !b.live(n) {
				delete(s.ips, k)
				l.dyn.account(true, b.source, false, 0, l.dyn.countersFor(k))
				removed++
			}
		}
		for u, b := range s.users {
			if !b.live(n) {
				delete(s.users, u)
				l.dyn.account(true, b.source, false, 0, &l.dyn.nUsers)
				removed++
			}
		}
		s.mu.Unlock()
	}
	old := l.dyn.cidrs.Load().list
	if i := slices.IndexFunc(old, func(c dynCIDR) bool { return !c.ban.live(n) }); i >= 0 {
		next := make([]dynCIDR, 0, len(old))
		for _, c := range old {
			if c.ban.live(n) {
				next = append(next, c)
			}
		}
		removed += len(old) - len(next)
		l.dyn.cidrs.Store(newCIDRSet(next))
	}
	if removed > 0 {
		l.dirty.Store(true)
	}
	if !l.dirty.Load() {
		return removed, nil
	}
	return removed, l.saveLocked(now)
}

// saveLocked writes the dynamic bans live at now to the state dir; l.mu is held.
func (l *List) saveLocked(now time.Time) error {
	if l.dir == "" {
		l.dirty.Store(false)
		return nil
	}
	l.dirty.Store(false) // before the snapshot: a ban added meanwhile marks it again
	if err := writeState(l.dir, l.dynamicEntries(now.UnixNano(), nil)); err != nil {
		l.dirty.Store(true)
		return err
	}
	return nil
}

// dynamicEntries appends the dynamic bans live at now, oldest first.
func (l *List) dynamicEntries(now int64, dst []Entry) []Entry {
	start := len(dst)
	mk := func(b dynBan) Entry {
		e := Entry{Source: b.source, Reason: b.reason}
		if b.created != 0 {
			e.Created = time.Unix(0, b.created).UTC()
		}
		if b.expires != 0 {
			e.Expires = time.Unix(0, b.expires).UTC()
		}
		return e
	}
	for i := range l.dyn.shards {
		s := &l.dyn.shards[i]
		s.mu.RLock()
		for k, b := range s.ips {
			if b.live(now) {
				e := mk(b)
				e.Prefix = k.prefix()
				e.Kind = prefixKind(e.Prefix)
				dst = append(dst, e)
			}
		}
		for u, b := range s.users {
			if b.live(now) {
				e := mk(b)
				e.Kind, e.User = KindUser, u
				dst = append(dst, e)
			}
		}
		s.mu.RUnlock()
	}
	for _, c := range l.dyn.cidrs.Load().list {
		if c.ban.live(now) {
			e := mk(c.ban)
			e.Kind, e.Prefix = KindCIDR, c.p
			dst = append(dst, e)
		}
	}
	slices.SortFunc(dst[start:], func(a, b Entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Value(), b.Value())
	})
	return dst
}

// Entries returns every entry for the admin listing: the static ones (IPv4, then
// IPv6, then users; config entries before file entries in each) followed by the
// dynamic bans live at now, oldest first. The slice is the caller's.
func (l *List) Entries(now time.Time) []Entry {
	s := l.static.Load()
	dst := make([]Entry, 0, len(s.list4)+len(s.list6)+len(s.ulist))
	dst = s.appendEntries(dst)
	return l.dynamicEntries(now.UnixNano(), dst)
}

// Len returns the number of entries of kind k (static plus dynamic; dynamic bans
// count until swept), for edge_blacklist_entries{kind}. It allocates nothing.
func (l *List) Len(k Kind) int {
	n := 0
	if k < numKinds {
		n = l.static.Load().counts[k]
	}
	switch k {
	case KindIP:
		n += int(l.dyn.nExact.Load())
	case KindCIDR:
		n += int(l.dyn.n64.Load()) + len(l.dyn.cidrs.Load().list)
	case KindUser:
		n += int(l.dyn.nUsers.Load())
	}
	return n
}
