// Package netns is weft's one entry point into network namespaces: it runs
// code inside a namespace on a locked OS thread, identifies namespaces by
// (device, inode), and reads a namespace's cookie — the key the eBPF
// programs use for pods. It must not import any weft component.
package netns
