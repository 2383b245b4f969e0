// Package capture records packets for weft's end-to-end tests and analyses
// them with tshark, so a test can prove what was (and was not) on the wire:
// that a marker sent in plaintext is visible, and that mesh traffic carries
// it only inside TLS.
//
// Start runs dumpcap (Wireshark's capture engine, which tshark itself uses)
// inside a named network namespace, writing a pcap file to the test's temp
// directory, and returns once the kernel really delivers packets to it: the
// capture socket is bound and its BPF filter installed (read from a
// duplicate of dumpcap's own socket, never guessed from a delay). Stop waits
// until dumpcap has written every packet the kernel handed it, stops it by
// PID and analyses the file: Result.Contains searches raw frames and
// reassembled TCP streams for a byte marker, Result.TCPBytes counts TCP
// payload bytes in one direction, and Result.TLSBytes counts the bytes of
// TLS records tshark dissects on a port (decoded as TLS whatever the port;
// 15008, weft's HBONE port, always is).
//
// Underlay captures a local cluster's underlay bridge (package
// tests/cluster), which every packet between two nodes crosses.
//
// Start needs root, dumpcap and tshark (hack/tools.sh apt installs them). The
// package is test infrastructure: it must never be imported by weft's
// components.
package capture
