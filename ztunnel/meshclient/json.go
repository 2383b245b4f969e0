package meshclient

import (
	"encoding/json"
	"fmt"

	"github.com/weftmesh/weft/ztunnel/state"
)

// snapshotJSON encodes snap for state.Parse, the one validating
// constructor of snapshots (the file and the stream share it).
func snapshotJSON(snap *state.Snapshot) ([]byte, error) {
	b, err := json.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("encode mesh config %s: %w", snap.Version, err)
	}
	return b, nil
}
