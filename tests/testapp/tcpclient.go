package testapp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// TCPCheckConfig configures TCPCheck.
type TCPCheckConfig struct {
	Addr string // host:port
	// Message is sent on each connection and must come back; empty means
	// "ping".
	Message string
	// Count is the number of connections, made one after another; zero
	// means 1.
	Count int
	// Banner expects the server to send one line (the pod name, from
	// weft-testapp tcp-echo --banner) before echoing.
	Banner bool
	// Timeout bounds each connection, from dialling to the last echoed
	// byte; zero means 5s.
	Timeout time.Duration
}

// TCPResult is one connection's outcome.
type TCPResult struct {
	Sent      string `json:"sent"`
	Received  string `json:"received"`
	Banner    string `json:"banner,omitempty"`
	RTTMicros int64  `json:"rttMicros"` // from writing Sent to reading the echo
	Error     string `json:"error,omitempty"`
}

// OK reports whether the connection echoed what was sent.
func (r TCPResult) OK() bool { return r.Error == "" }

// TCPCheck connects cfg.Count times and reports each connection. Failures
// are reported in the results.
func TCPCheck(ctx context.Context, cfg TCPCheckConfig) []TCPResult {
	if cfg.Message == "" {
		cfg.Message = "ping"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	results := make([]TCPResult, 0, max(cfg.Count, 1))
	for range max(cfg.Count, 1) {
		r := TCPResult{Sent: cfg.Message}
		if err := tcpOnce(ctx, cfg, &r); err != nil {
			r.Error = err.Error()
		}
		results = append(results, r)
	}
	return results
}

func tcpOnce(ctx context.Context, cfg TCPCheckConfig, r *TCPResult) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c, err := newDialer(cfg.Timeout).DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", cfg.Addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	br := bufio.NewReader(c)
	if cfg.Banner {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read banner from %s: %w", cfg.Addr, err)
		}
		r.Banner = strings.TrimSuffix(line, "\n")
	}
	start := time.Now()
	if _, err := io.WriteString(c, cfg.Message); err != nil {
		return fmt.Errorf("write to %s: %w", cfg.Addr, err)
	}
	buf := make([]byte, len(cfg.Message))
	n, err := io.ReadFull(br, buf)
	r.RTTMicros = time.Since(start).Microseconds()
	r.Received = string(buf[:n])
	if err != nil {
		return fmt.Errorf("read echo from %s: %w", cfg.Addr, err)
	}
	if r.Received != r.Sent {
		return fmt.Errorf("check echo from %s: got %q, want %q", cfg.Addr, r.Received, r.Sent)
	}
	return nil
}
