package testapp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// StreamConfig configures Stream.
type StreamConfig struct {
	Addr string // host:port of a tcp-echo server
	// Connections are opened concurrently and all held open until every
	// one has connected, so they really are concurrent; zero means 1.
	Connections int
	// Bytes is how many bytes each connection sends (and must get back).
	Bytes int64
	// Marker starts every connection's payload, so a capture on the wire
	// can look for it.
	Marker string
	// Timeout bounds the whole run; zero means 2 minutes.
	Timeout time.Duration
}

// StreamResult is Stream's summary.
type StreamResult struct {
	Connections   int      `json:"connections"`
	OK            int      `json:"ok"`
	BytesSent     int64    `json:"bytesSent"`
	BytesReceived int64    `json:"bytesReceived"`
	Errors        []string `json:"errors,omitempty"`
	Millis        int64    `json:"millis"`
}

// Stream opens cfg.Connections connections to an echo server, sends each
// cfg.Bytes of a per-connection pseudo-random pattern (after the marker),
// and verifies that every byte comes back in order.
func Stream(ctx context.Context, cfg StreamConfig) StreamResult {
	n := max(cfg.Connections, 1)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	res := StreamResult{Connections: n}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		allReady sync.WaitGroup
	)
	allReady.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", cfg.Addr)
			allReady.Done()
			if err != nil {
				mu.Lock()
				res.Errors = append(res.Errors, fmt.Sprintf("conn %d: dial: %v", i, err))
				mu.Unlock()
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			allReady.Wait()
			sent, recv, err := streamOne(c, i, cfg)
			mu.Lock()
			defer mu.Unlock()
			res.BytesSent += sent
			res.BytesReceived += recv
			if err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("conn %d: %v", i, err))
				return
			}
			res.OK++
		}()
	}
	wg.Wait()
	res.Millis = time.Since(start).Milliseconds()
	if len(res.Errors) > 20 {
		res.Errors = append(res.Errors[:20], fmt.Sprintf("… and %d more", len(res.Errors)-20))
	}
	return res
}

// pattern is connection i's payload: the marker, then a pseudo-random
// stream that is a pure function of (i, offset), so sender and checker agree
// whatever the read sizes.
type pattern struct {
	marker []byte
	seed   uint64
	off    int64
}

func newPattern(i int, marker string) *pattern {
	return &pattern{marker: []byte(marker), seed: uint64(i)*0x9e3779b97f4a7c15 + 0x77656674}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fill writes the next len(b) bytes of the payload into b.
func (p *pattern) fill(b []byte) {
	var word uint64
	wordIdx := int64(-1)
	for i := range b {
		o := p.off + int64(i)
		if o < int64(len(p.marker)) {
			b[i] = p.marker[o]
			continue
		}
		if w := o >> 3; w != wordIdx {
			wordIdx, word = w, splitmix(p.seed^uint64(w))
		}
		b[i] = byte(word >> ((o & 7) * 8))
	}
	p.off += int64(len(b))
}

func streamOne(c net.Conn, i int, cfg StreamConfig) (sent, recv int64, err error) {
	total := cfg.Bytes
	if total < int64(len(cfg.Marker)) {
		total = int64(len(cfg.Marker))
	}
	werr := make(chan error, 1)
	go func() {
		p := newPattern(i, cfg.Marker)
		buf := make([]byte, 32<<10)
		var done int64
		for done < total {
			chunk := buf[:min(int64(len(buf)), total-done)]
			p.fill(chunk)
			n, err := c.Write(chunk)
			done += int64(n)
			sent = done
			if err != nil {
				werr <- fmt.Errorf("write after %d bytes: %w", done, err)
				return
			}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		werr <- nil
	}()
	want := newPattern(i, cfg.Marker)
	got := make([]byte, 32<<10)
	exp := make([]byte, 32<<10)
	for recv < total {
		n, rerr := c.Read(got[:min(int64(len(got)), total-recv)])
		if n > 0 {
			want.fill(exp[:n])
			if !bytes.Equal(got[:n], exp[:n]) {
				return sent, recv, fmt.Errorf("echo differs from what was sent in bytes %d..%d", recv, recv+int64(n))
			}
			recv += int64(n)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) && recv < total {
				return sent, recv, fmt.Errorf("echo ended after %d of %d bytes", recv, total)
			}
			if recv < total {
				return sent, recv, fmt.Errorf("read after %d bytes: %w", recv, rerr)
			}
		}
	}
	if err := <-werr; err != nil {
		return sent, recv, err
	}
	return sent, recv, nil
}

// HoldConfig configures Hold.
type HoldConfig struct {
	Addr string // host:port of a tcp-echo server
	// Interval between pings; zero means 200ms.
	Interval time.Duration
	// Duration is how long to hold the connection; zero means 1 minute.
	Duration time.Duration
}

// HoldResult says how a held connection ended.
type HoldResult struct {
	Pings int `json:"pings"`
	// HeldMillis is how long the connection stayed usable.
	HeldMillis int64 `json:"heldMillis"`
	// Error is why it ended before Duration; empty if it lasted.
	Error string `json:"error,omitempty"`
}

// Hold opens one connection to an echo server and pings it every Interval
// for Duration, stopping at the first failed ping: a long-lived connection
// whose end (and when) a test can observe.
func Hold(ctx context.Context, cfg HoldConfig) HoldResult {
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Duration <= 0 {
		cfg.Duration = time.Minute
	}
	start := time.Now()
	var res HoldResult
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		res.Error = fmt.Sprintf("dial: %v", err)
		return res
	}
	defer c.Close()
	buf := make([]byte, 8)
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	end := time.After(cfg.Duration)
	for {
		msg := []byte(fmt.Sprintf("p%07d", res.Pings%10000000))
		c.SetDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		if err == nil && !bytes.Equal(buf, msg) {
			err = fmt.Errorf("echo %q, want %q", buf, msg)
		}
		if err != nil {
			res.HeldMillis = time.Since(start).Milliseconds()
			res.Error = fmt.Sprintf("ping %d: %v", res.Pings, err)
			return res
		}
		res.Pings++
		select {
		case <-ctx.Done():
			res.HeldMillis = time.Since(start).Milliseconds()
			res.Error = ctx.Err().Error()
			return res
		case <-end:
			res.HeldMillis = time.Since(start).Milliseconds()
			return res
		case <-t.C:
		}
	}
}
