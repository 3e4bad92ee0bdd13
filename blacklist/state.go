package blacklist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// StateFile is the name of the file, inside the state dir, that keeps the dynamic bans.
const StateFile = "blacklist.json"

const (
	stateVersion = 1
	tempPattern  = "." + StateFile + ".tmp-*"
)

type stateDoc struct {
	Version int     `json:"version"`
	Bans    []Entry `json:"bans"`
}

// testHookBeforeRename, when set by a test, runs after the temp file is written and
// synced and before it replaces the state file; an error aborts the write.
var testHookBeforeRename func() error

// loadState reads the state file in dir. A missing file is an empty state; a corrupt
// one is an error naming the file. Entries expired at now are dropped. Leftover temp
// files of an interrupted write are removed.
func loadState(dir string, now time.Time) ([]Entry, error) {
	path := filepath.Join(dir, StateFile)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, tempPattern)); len(leftovers) > 0 {
		for _, f := range leftovers {
			_ = os.Remove(f) // a crash mid-write: the state file itself is intact
		}
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read blacklist state file: %w", err)
	}
	var doc stateDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("cannot parse blacklist state file %q: %w", path, err)
	}
	if doc.Version != stateVersion {
		return nil, fmt.Errorf("cannot parse blacklist state file %q: version %d, want %d", path, doc.Version, stateVersion)
	}
	out := doc.Bans[:0]
	for i, e := range doc.Bans {
		if e.Source != SourceAPI && e.Source != SourceAuto {
			return nil, fmt.Errorf("cannot parse blacklist state file %q: ban %d (%s) has source %q, want api or auto", path, i, e.Value(), e.Source)
		}
		if !e.Expires.IsZero() && !now.Before(e.Expires) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// writeState replaces the state file in dir with bans, atomically: the previous file
// stays whole until the new one is complete and synced.
func writeState(dir string, bans []Entry) error {
	if bans == nil {
		bans = []Entry{}
	}
	data, err := json.MarshalIndent(stateDoc{Version: stateVersion, Bans: bans}, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode blacklist state: %w", err)
	}
	data = append(data, '\n')
	return writeFileAtomic(filepath.Join(dir, StateFile), data)
}

// writeFileAtomic writes data to a temp file next to path, syncs it, renames it over
// path and syncs the directory, so a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot create temp file for %q: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("cannot write %q: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %q: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot close %q: %w", tmp, err)
	}
	if testHookBeforeRename != nil {
		if err := testHookBeforeRename(); err != nil {
			return fmt.Errorf("cannot replace %q: %w", path, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot replace %q: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open state dir %q to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return fmt.Errorf("cannot sync state dir %q: %w", dir, err)
	}
	return nil
}
