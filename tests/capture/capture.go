package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds Start: dumpcap opening the interface and
	// installing its filter takes milliseconds.
	startTimeout = 10 * time.Second
	// flushTimeout bounds Stop's wait for dumpcap to write what the kernel
	// delivered: libpcap sees a ring block at the latest when the kernel
	// retires it, 250 ms (dumpcap's read timeout) after it was opened.
	flushTimeout = 10 * time.Second
	// exitTimeout is how long dumpcap gets to exit after SIGINT.
	exitTimeout = 10 * time.Second
	// bufferMiB is dumpcap's kernel ring (-B), sized for bulk test traffic.
	bufferMiB = 32
)

// Capture is a running dumpcap in a network namespace. Create it with Start
// and end it with Stop. It is safe for concurrent use.
type Capture struct {
	tb    testing.TB
	where string // "netns/iface", for errors
	file  string
	cmd   *exec.Cmd
	out   *progress

	exited  chan struct{} // closed once dumpcap has exited
	waitErr error         // dumpcap's exit; read only after exited is closed

	stopCtx func() bool // unregisters the context's stop

	stopDone chan struct{} // closed when the capture has been stopped

	mu      sync.Mutex // guards the fields below
	sock    *packetSocket
	base    int    // dumpcap's written count when it became ready
	dropped uint64 // kernel drops counted so far
	stopped bool   // a Stop (or the cleanup) has begun
	res     *Result
	stopErr error
}

// Start starts capturing packets on iface inside the named network namespace
// (a name under /run/netns, or an absolute path of a netns file), keeping
// those that match bpfFilter (libpcap syntax; "" keeps all), into a pcap
// file in tb's temp dir. It returns once the capture socket is bound and
// its filter installed, so every matching packet sent after Start returns
// is captured. The capture ends at Stop, when ctx is done, or at the end of
// the test, whichever comes first.
//
// The interface is put into promiscuous mode (dumpcap's default): on a
// bridge, that is what makes frames forwarded between its ports visible.
func Start(ctx context.Context, tb testing.TB, netnsName, iface, bpfFilter string) (*Capture, error) {
	tb.Helper()
	dumpcap, err := exec.LookPath("dumpcap")
	if err != nil {
		return nil, fmt.Errorf("find dumpcap: %w (hack/tools.sh apt installs it)", err)
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		return nil, fmt.Errorf("find tshark: %w (hack/tools.sh apt installs it)", err)
	}
	nsPath := netnsName
	if !filepath.IsAbs(nsPath) {
		nsPath = filepath.Join("/run/netns", netnsName)
	}
	if _, err := os.Stat(nsPath); err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsName, err)
	}
	c := &Capture{
		tb:       tb,
		where:    netnsName + "/" + iface,
		file:     filepath.Join(tb.TempDir(), "capture.pcap"),
		out:      newProgress(),
		exited:   make(chan struct{}),
		stopDone: make(chan struct{}),
	}
	// -P: classic pcap, which Result reads itself for raw frames.
	args := []string{"--net=" + nsPath, "--", dumpcap, "-i", iface, "-P", "-B", strconv.Itoa(bufferMiB), "-w", c.file}
	if bpfFilter != "" {
		args = append(args, "-f", bpfFilter)
	}
	// nsenter joins the netns and execs dumpcap: the PID is dumpcap's.
	c.cmd = exec.Command("nsenter", args...)
	c.cmd.Stderr = c.out
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dumpcap on %s: %w", c.where, err)
	}
	// The waiter is owned by the Capture: it ends when dumpcap exits, which
	// Stop, the context or the test's cleanup bring about.
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	c.stopCtx = context.AfterFunc(ctx, c.interrupt)
	if err := c.waitReady(ctx); err != nil {
		c.stopCtx()
		c.halt()
		return nil, err
	}
	// A capture the test did not stop is ended, not analysed.
	tb.Cleanup(func() {
		if c.begin() {
			c.stopCtx()
			c.halt()
			c.finish(nil, errStoppedEarly)
		}
	})
	return c, nil
}

// waitReady waits for "Capturing on" (dumpcap parsed its options and opens
// the interface next), then until its socket exists with the real filter
// installed, and takes the kernel counters' baseline.
func (c *Capture) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case <-c.out.started:
	case <-c.exited:
		return fmt.Errorf("start dumpcap on %s: %v: %s", c.where, c.waitErr, c.out.text())
	case <-ctx.Done():
		return fmt.Errorf("start dumpcap on %s: %w: %s", c.where, ctx.Err(), c.out.text())
	}
	pid := c.cmd.Process.Pid
	var sock *packetSocket
	err := poll(ctx, startTimeout, 5*time.Millisecond, "dumpcap's capture socket on "+c.where, func(context.Context) (bool, string, error) {
		select {
		case <-c.exited:
			return false, "", fmt.Errorf("dumpcap exited: %v: %s", c.waitErr, c.out.text())
		default:
		}
		if sock == nil {
			s, err := findPacketSocket(pid)
			if errors.Is(err, errNoSocket) {
				return false, "no packet socket yet", nil
			}
			if err != nil {
				return false, "", err
			}
			sock = s
		}
		ok, err := sock.filterInstalled()
		return ok, "filter not installed yet", err
	})
	if err != nil {
		if sock != nil {
			sock.close()
		}
		return err
	}
	// Reset the counters: Stop then waits for exactly what came after.
	if _, _, err := sock.stats(); err != nil {
		sock.close()
		return err
	}
	c.mu.Lock()
	c.sock, c.base = sock, c.out.count()
	c.mu.Unlock()
	return nil
}

// errStoppedEarly is Stop's error when the capture ended before Stop: its
// context was done (dumpcap may have lost its last packets) or the test
// ended.
var errStoppedEarly = errors.New("capture ended before Stop")

// Stop waits until dumpcap has written every packet the kernel delivered to
// it, stops it (SIGINT, by PID) and analyses the pcap file with tshark. Only
// the first call does the work; later calls return its result.
func (c *Capture) Stop() (*Result, error) {
	if !c.begin() {
		<-c.stopDone
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.res, c.stopErr
	}
	res, err := c.stop()
	c.finish(res, err)
	return res, err
}

// begin reports whether the caller is the first to stop the capture.
func (c *Capture) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := !c.stopped
	c.stopped = true
	return first
}

func (c *Capture) finish(res *Result, err error) {
	c.mu.Lock()
	c.res, c.stopErr = res, err
	sock := c.sock
	c.sock = nil
	c.mu.Unlock()
	if sock != nil {
		sock.close()
	}
	close(c.stopDone)
}

func (c *Capture) stop() (*Result, error) {
	c.stopCtx()
	select {
	case <-c.exited:
		return nil, fmt.Errorf("stop capture on %s: %w: %s", c.where, errStoppedEarly, c.out.text())
	default:
	}
	flushErr := c.flush()
	c.halt()
	c.mu.Lock()
	dropped := c.dropped
	c.mu.Unlock()
	if c.waitErr != nil {
		return nil, fmt.Errorf("run dumpcap on %s: %v: %s", c.where, c.waitErr, c.out.text())
	}
	if flushErr != nil {
		return nil, flushErr
	}
	return analyse(c.tb, c.file, dropped)
}

// flush waits until dumpcap reports having written as many packets as the
// kernel put into its ring since Start.
func (c *Capture) flush() error {
	c.mu.Lock()
	sock, base := c.sock, c.base
	c.mu.Unlock()
	received, dropped, err := sock.stats()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.dropped += dropped
	c.mu.Unlock()
	want := base + int(received)
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	return poll(ctx, flushTimeout, 5*time.Millisecond, fmt.Sprintf("dumpcap on %s to write %d packets", c.where, want),
		func(context.Context) (bool, string, error) {
			select {
			case <-c.exited:
				return false, "", fmt.Errorf("dumpcap exited: %v: %s", c.waitErr, c.out.text())
			default:
			}
			n := c.out.count()
			return n >= want, fmt.Sprintf("%d written", n), nil
		})
}

// interrupt asks dumpcap to finish: it flushes its file and exits.
func (c *Capture) interrupt() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGINT)
	}
}

// halt interrupts dumpcap and waits for it to exit, killing it if it does
// not.
func (c *Capture) halt() {
	c.interrupt()
	select {
	case <-c.exited:
		return
	case <-time.After(exitTimeout):
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// progress collects dumpcap's stderr: "Capturing on …" when it starts, then
// "\rPackets: N " whenever its count of written packets changes. It is safe
// for concurrent use.
type progress struct {
	started chan struct{} // closed at "Capturing on"

	mu      sync.Mutex // guards the fields below
	buf     bytes.Buffer
	scanned int // bytes of buf already searched for counts
	written int
	seen    bool // started is closed
}

func newProgress() *progress { return &progress{started: make(chan struct{})} }

var countRE = regexp.MustCompile(`Packets(?: captured)?: (\d+)[ \n]`)

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	data := p.buf.Bytes()
	if !p.seen && bytes.Contains(data, []byte("Capturing on")) {
		p.seen = true
		close(p.started)
	}
	// A count may be split across writes: search from the end of the last
	// complete one (each ends with a space or a newline).
	base := p.scanned
	for _, m := range countRE.FindAllSubmatchIndex(data[base:], -1) {
		if n, err := strconv.Atoi(string(data[base+m[2] : base+m[3]])); err == nil {
			p.written = n
		}
		p.scanned = base + m[1]
	}
	return len(b), nil
}

func (p *progress) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written
}

// text is dumpcap's stderr without the progress counts.
func (p *progress) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for l := range strings.SplitSeq(p.buf.String(), "\n") {
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:]
		}
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// poll calls cond every interval until it returns true or an error, or
// timeout passes; the error then names what was awaited and cond's last
// reason.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, why, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %s)", what, ctx.Err(), why)
		case <-tick.C:
		}
	}
}
