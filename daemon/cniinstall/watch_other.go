//go:build !linux

package cniinstall

import (
	"errors"
	"fmt"
)

// watchDir is not implemented here: changes are found by the interval
// re-check only.
func watchDir(dir string) (<-chan struct{}, func(), error) {
	return nil, func() {}, fmt.Errorf("watch %s: %w", dir, errors.ErrUnsupported)
}
