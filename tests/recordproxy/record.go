package recordproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// Listener names in Record.Listener.
const (
	ListenerOutbound = "outbound"
	ListenerInbound  = "inbound"
	ListenerHBONE    = "hbone"
)

// Record is one accepted connection: one JSON line of the record file.
type Record struct {
	Time time.Time `json:"time"`
	// Listener is ListenerOutbound, ListenerInbound or ListenerHBONE.
	Listener  string `json:"listener"`
	PodUID    string `json:"podUID"`
	PodName   string `json:"podName"`
	Namespace string `json:"namespace"`
	// Peer and Local are the accepted socket's remote and local addresses.
	Peer  string `json:"peer"`
	Local string `json:"local"`
	// OrigDst is the connection's original destination: Local for inbound
	// and HBONE, the OrigDstLookup's answer for outbound ("" without one).
	OrigDst string `json:"origDst"`
	// Mark is the accepted socket's SO_MARK, inherited from its listener.
	Mark uint32 `json:"mark"`
	// Upstream and UpstreamMark are the local address and SO_MARK of the
	// socket the proxy dialed to OrigDst from the pod netns, if it did.
	Upstream     string `json:"upstream,omitempty"`
	UpstreamMark uint32 `json:"upstreamMark,omitempty"`
	// Error says why the connection was not proxied, if it was not.
	Error string `json:"error,omitempty"`
}

// recorder appends Records to a file, one fsynced line each.
//
// recorder is safe for concurrent use.
type recorder struct {
	// mu guards f.
	mu sync.Mutex
	f  *os.File
}

func openRecorder(path string) (*recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open record file: %w", err)
	}
	return &recorder{f: f}, nil
}

func (r *recorder) write(rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(b); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("sync record file: %w", err)
	}
	return nil
}

func (r *recorder) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

// ReadRecords returns the records in the record file at path, oldest first;
// none if the file does not exist. A partial last line (a write in
// progress) is ignored.
func ReadRecords(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return recs, fmt.Errorf("read records: %s line %d: %w", path, line, err)
		}
		recs = append(recs, rec)
	}
	return recs, sc.Err()
}
