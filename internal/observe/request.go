package observe

import (
	"fmt"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Query is what to ask every node for.
type Query struct {
	Filters Filters
	Follow  bool
	// Last is the number of most recent flows to return (0: all the node
	// holds, or none before following).
	Last uint64
	// Since and Until bound the flows' times: a duration ago ("5m") or an
	// RFC 3339 time; "" for no bound.
	Since, Until string
}

// Request builds the GetFlowsRequest of q, with relative times taken from
// now.
func (q Query) Request(now time.Time) (*observerpb.GetFlowsRequest, error) {
	wl, err := q.Filters.FlowFilters()
	if err != nil {
		return nil, err
	}
	req := &observerpb.GetFlowsRequest{Whitelist: wl, Follow: q.Follow, Number: q.Last}
	if q.Since != "" {
		t, err := ParseTime(q.Since, now)
		if err != nil {
			return nil, fmt.Errorf("invalid --since: %w", err)
		}
		req.Since = timestamppb.New(t)
	}
	if q.Until != "" {
		if q.Follow {
			return nil, fmt.Errorf("--until cannot be combined with --follow")
		}
		t, err := ParseTime(q.Until, now)
		if err != nil {
			return nil, fmt.Errorf("invalid --until: %w", err)
		}
		req.Until = timestamppb.New(t)
	}
	if req.Since != nil && req.Until != nil && req.Until.AsTime().Before(req.Since.AsTime()) {
		return nil, fmt.Errorf("--until %s is before --since %s", q.Until, q.Since)
	}
	// Without a bound, Hubble's CLI asks for the last 20 flows (or none
	// when following); the server returns everything it holds for 0, so
	// the CLI says what it means.
	if req.Number == 0 && req.Since == nil && req.Until == nil && !q.Follow {
		req.Number = DefaultLast
	}
	return req, nil
}

// DefaultLast is how many flows `weft observe` prints without --last,
// --since, --until or --follow (Hubble's default).
const DefaultLast = 20

// ParseTime parses an RFC 3339 time, or a duration before now ("90s",
// "5m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("negative duration %q", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (5m) nor an RFC 3339 time (2006-01-02T15:04:05Z)", s)
	}
	return t, nil
}
