package state

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"time"
)

// racyWindow bounds the timestamp granularity of filesystems (FAT keeps 2 s).
// A file whose modification time was this close to when it was read may be
// rewritten without its time, size or inode changing, so it is read again
// rather than trusted unchanged (git calls this a "racily clean" file).
const racyWindow = 2 * time.Second

// WatchFile loads the snapshot in path now and again whenever its content
// changes, polling every interval. A poll of an unchanged file costs a stat.
// A file that is missing, unreadable, unparsable or invalid never replaces
// the current Snapshot: the problem is logged, counted in LoadErrors and
// kept in LastError, and the file is retried at the next change. WatchFile
// returns nil when ctx ends; it fails only for a non-positive interval.
//
// A rewrite that keeps the file's size and inode and restores its old
// modification time (e.g. cp -p over it) is not noticed; writing a new file
// and renaming it over path, as Kubernetes does for ConfigMap volumes,
// always is.
func (s *Store) WatchFile(ctx context.Context, path string, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("watch %s: poll interval %v is not positive", path, interval)
	}
	if ctx.Err() != nil {
		return nil
	}
	w := &fileWatch{store: s, path: path}
	w.poll()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.poll()
		}
	}
}

// fileWatch is the state of one WatchFile, used by its goroutine only.
type fileWatch struct {
	store *Store
	path  string

	info   os.FileInfo // of the latest read; nil to read at the next poll
	readAt time.Time   // when info was taken
	// good is the hash of the content the current Snapshot came from.
	good     [sha256.Size]byte
	haveGood bool
	// failed is the text of the problem last reported, so that a lasting
	// problem is reported once.
	failed string
}

func (w *fileWatch) poll() {
	// Stat before reading: a change after the stat shows at the next one.
	now := time.Now()
	fi, err := os.Stat(w.path)
	if err != nil {
		w.info = nil
		w.fail(fmt.Errorf("load snapshot file: %w", err))
		return
	}
	if w.unchanged(fi) {
		return
	}
	b, err := os.ReadFile(w.path)
	if err != nil {
		w.info = nil
		w.fail(fmt.Errorf("load snapshot file: %w", err))
		return
	}
	w.info, w.readAt = fi, now
	sum := sha256.Sum256(b)
	if w.haveGood && sum == w.good {
		w.ok() // e.g. touched, or back after it went missing
		return
	}
	snap, err := Parse(b)
	if err != nil {
		w.fail(fmt.Errorf("load snapshot file %s: %w", w.path, err))
		return
	}
	w.good, w.haveGood = sum, true
	w.ok()
	w.store.Set(snap)
	w.store.log.Info("snapshot loaded", "path", w.path, "version", snap.Version,
		"workloads", len(snap.Workloads), "services", len(snap.Services), "policies", len(snap.Policies))
}

func (w *fileWatch) unchanged(fi os.FileInfo) bool {
	old := w.info
	return old != nil && os.SameFile(old, fi) &&
		old.Size() == fi.Size() && old.ModTime().Equal(fi.ModTime()) &&
		w.readAt.Sub(fi.ModTime()) > racyWindow
}

func (w *fileWatch) fail(err error) {
	if err.Error() == w.failed {
		return
	}
	w.failed = err.Error()
	w.store.loadErrors.Add(1)
	w.store.setLastError(err)
	w.store.log.Warn("snapshot file rejected, keeping the current snapshot", "path", w.path,
		"version", w.store.Current().Version, "err", err)
}

func (w *fileWatch) ok() {
	if w.failed != "" {
		w.failed = ""
		w.store.setLastError(nil)
	}
}
