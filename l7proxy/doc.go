// Package l7proxy will be weft's per-namespace waypoint (weft-waypoint):
// HTTP/1.1 and HTTP/2 routing, traffic splitting, retries, timeouts, circuit
// breaking and L7 policy. Not built yet.
package l7proxy
