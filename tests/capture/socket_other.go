//go:build !linux

package capture

import "errors"

// packetSocket is a capture socket; capturing needs Linux.
type packetSocket struct{}

func findPacketSocket(int) (*packetSocket, error)    { return nil, errors.ErrUnsupported }
func (*packetSocket) filterInstalled() (bool, error) { return false, errors.ErrUnsupported }
func (*packetSocket) stats() (received, dropped uint64, err error) {
	return 0, 0, errors.ErrUnsupported
}
func (*packetSocket) close() error { return nil }

var errNoSocket = errors.New("no capture socket yet")
