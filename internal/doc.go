// Package internal holds small libraries shared by several weft components
// (netns helpers, SPIFFE identity, HBONE, flow records), and the repository's
// guard-rail tests. Keep it small; it must never import a component
// (daemon, ztunnel, l7proxy, operator) or tests/.
package internal
