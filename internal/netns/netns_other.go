//go:build !linux

package netns

import (
	"errors"
	"os"
)

// ID identifies a network namespace.
type ID struct{ Dev, Inode uint64 }

// ErrHostNetns means a process shares the caller's namespace.
var ErrHostNetns = errors.New("process is in the host network namespace")

var errUnsupported = errors.New("network namespaces need Linux")

// Identify is unsupported off Linux.
func Identify(*os.File) (ID, error) { return ID{}, errUnsupported }

// Do is unsupported off Linux.
func Do(*os.File, func() error) error { return errUnsupported }

// Cookie is unsupported off Linux.
func Cookie(*os.File) (uint64, error) { return 0, errUnsupported }

// Self is unsupported off Linux.
func Self() (*os.File, error) { return nil, errUnsupported }
