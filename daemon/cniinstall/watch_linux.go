package cniinstall

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// watchDir reports changes of the entries of dir (created, written, renamed,
// removed) on the returned channel, coalesced; stop ends the watch and
// waits for its reader.
func watchDir(dir string) (<-chan struct{}, func(), error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, func() {}, fmt.Errorf("watch %s: inotify_init1: %w", dir, err)
	}
	const mask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
		unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, func() {}, fmt.Errorf("watch %s: inotify_add_watch: %w", dir, err)
	}
	// Non-blocking, so the runtime poller owns it and Close ends a Read.
	f := os.NewFile(uintptr(fd), "inotify "+dir)
	changes := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned by stop, which waits for it
		defer wg.Done()
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			if _, err := f.Read(buf); err != nil {
				if !errors.Is(err, os.ErrClosed) {
					// The watch is gone (e.g. dir removed); the
					// interval re-check remains.
					select {
					case changes <- struct{}{}:
					default:
					}
				}
				return
			}
			select {
			case changes <- struct{}{}:
			default:
			}
		}
	}()
	var once sync.Once
	return changes, func() { once.Do(func() { f.Close(); wg.Wait() }) }, nil
}
