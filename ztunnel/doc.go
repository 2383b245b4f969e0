// Package ztunnel will be weft's node proxy (weft-ztunnel): per-pod listeners
// inside each enrolled pod's netns, HBONE mTLS between pods, L4 policy and
// Istio-compatible telemetry (issue 4). Not built yet: until it is, tests use
// the recording stand-in in tests/recordproxy, which speaks the same in-pod
// handoff protocol (api/inpod/v1).
package ztunnel
