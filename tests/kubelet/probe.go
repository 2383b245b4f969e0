//go:build linux

package kubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeKind names a probe as kubelet's events do.
type probeKind string

const (
	probeStartup   probeKind = "Startup"
	probeReadiness probeKind = "Readiness"
	probeLiveness  probeKind = "Liveness"
)

// probeResult is the outcome a prober reports after applying its thresholds.
type probeResult int

const (
	resultUnknown probeResult = iota
	resultSuccess
	resultFailure
)

func (r probeResult) String() string {
	switch r {
	case resultSuccess:
		return "success"
	case resultFailure:
		return "failure"
	}
	return "unknown"
}

// probeThresholds applies a probe's successThreshold and failureThreshold to
// single attempts, as kubelet's prober worker does: the result changes only
// after that many equal attempts in a row. It is not safe for concurrent use.
type probeThresholds struct {
	success, failure int32
	result           probeResult // the reported result
	last             probeResult // the last attempt
	run              int32       // consecutive attempts equal to last
}

// newProbeThresholds starts at kubelet's initial result: Failure for
// readiness, Success for liveness, Unknown for startup.
func newProbeThresholds(p *corev1.Probe, kind probeKind) *probeThresholds {
	t := &probeThresholds{success: p.SuccessThreshold, failure: p.FailureThreshold}
	if t.success <= 0 {
		t.success = 1
	}
	if t.failure <= 0 {
		t.failure = 3
	}
	switch kind {
	case probeReadiness:
		t.result = resultFailure
	case probeLiveness:
		t.result = resultSuccess
	}
	return t
}

// observe records one attempt and returns the reported result and whether
// it changed.
func (t *probeThresholds) observe(ok bool) (probeResult, bool) {
	r := resultFailure
	if ok {
		r = resultSuccess
	}
	if r == t.last {
		t.run++
	} else {
		t.last, t.run = r, 1
	}
	if (r == resultFailure && t.run < t.failure) || (r == resultSuccess && t.run < t.success) {
		return t.result, false
	}
	changed := t.result != r
	t.result = r
	return r, changed
}

// probeTiming returns a probe's delays with the API's defaults.
func probeTiming(p *corev1.Probe) (initial, period, timeout time.Duration) {
	period, timeout = 10*time.Second, time.Second
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	return time.Duration(p.InitialDelaySeconds) * time.Second, period, timeout
}

// resolvePort resolves a probe's numeric or named port against the
// container's ports.
func resolvePort(port intstr.IntOrString, ctr *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("resolve port %d: out of range", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	for _, p := range ctr.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("resolve port %q: no container port of that name", port.StrVal)
}

// probeUserAgent is sent by HTTP probes, as kubelet's "kube-probe/<version>".
const probeUserAgent = "kube-probe/1.36"

// probeHTTP runs an httpGet probe: success is a status in [200, 400).
// Redirects to another host end the probe with the redirect's status.
func probeHTTP(ctx context.Context, g *corev1.HTTPGetAction, podIP string, ctr *corev1.Container, timeout time.Duration) error {
	port, err := resolvePort(g.Port, ctr)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = podIP
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path)
	if err != nil {
		return fmt.Errorf("parse probe url: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build probe request: %w", err)
	}
	req.Header.Set("User-Agent", probeUserAgent)
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet does not verify probe certificates
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// probeTCP runs a tcpSocket probe: success is an accepted connection.
func probeTCP(ctx context.Context, s *corev1.TCPSocketAction, podIP string, ctr *corev1.Container, timeout time.Duration) error {
	port, err := resolvePort(s.Port, ctr)
	if err != nil {
		return err
	}
	host := s.Host
	if host == "" {
		host = podIP
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return conn.Close()
}

// probeGRPC runs a grpc probe: the standard grpc.health.v1.Health/Check over
// plaintext HTTP/2, success is status SERVING. It speaks the wire protocol
// directly so the emulator needs no gRPC dependency.
func probeGRPC(ctx context.Context, g *corev1.GRPCAction, podIP string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var msg []byte
	if g.Service != nil && *g.Service != "" {
		msg = appendProtoString(nil, 1, *g.Service)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	addr := net.JoinHostPort(podIP, strconv.Itoa(int(g.Port)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("build grpc probe request: %w", err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", probeUserAgent)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols, Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("grpc probe %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read grpc probe response: %w", err)
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	if status != "0" {
		return fmt.Errorf("grpc probe: rpc error: code = %s desc = %s", status, resp.Trailer.Get("Grpc-Message"))
	}
	if len(body) < 5 {
		return errors.New("grpc probe: empty response")
	}
	serving, err := healthStatus(body[5:])
	if err != nil {
		return err
	}
	if serving != 1 {
		return fmt.Errorf("service unhealthy (responded with %q)", healthStatusName(serving))
	}
	return nil
}

func appendProtoString(b []byte, field int, s string) []byte {
	b = binary.AppendUvarint(b, uint64(field<<3|2))
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// healthStatus decodes HealthCheckResponse.status (field 1, varint).
func healthStatus(msg []byte) (uint64, error) {
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return 0, errors.New("decode grpc health response: bad key")
		}
		msg = msg[n:]
		switch key & 7 {
		case 0:
			v, n := binary.Uvarint(msg)
			if n <= 0 {
				return 0, errors.New("decode grpc health response: bad varint")
			}
			msg = msg[n:]
			if key>>3 == 1 {
				return v, nil
			}
		case 2:
			l, n := binary.Uvarint(msg)
			if n <= 0 || uint64(len(msg)-n) < l {
				return 0, errors.New("decode grpc health response: bad length")
			}
			msg = msg[n+int(l):]
		default:
			return 0, errors.New("decode grpc health response: unexpected wire type")
		}
	}
	return 0, nil
}

func healthStatusName(v uint64) string {
	switch v {
	case 0:
		return "UNKNOWN"
	case 1:
		return "SERVING"
	case 2:
		return "NOT_SERVING"
	case 3:
		return "SERVICE_UNKNOWN"
	}
	return strconv.FormatUint(v, 10)
}
