// Package observe is the client side of `weft observe`: it turns the
// command's filter flags into Hubble FlowFilters (applied by the server,
// never here), builds the GetFlowsRequest, finds and dials every node's
// flow API (the weft-agent's Hubble Observer service: a unix socket, or
// <node IP>:4244 over TLS pinned to the certificate the agent publishes on
// its pod, with a bearer token), merges the nodes' streams by time, and
// prints flows in Hubble's formats (compact, table, dict, json) with weft's
// SPIFFE identities and connection bytes.
//
// observe must never import a weft component (daemon, ztunnel, l7proxy,
// operator) or tests/: the CLI talks to them over their APIs.
package observe
