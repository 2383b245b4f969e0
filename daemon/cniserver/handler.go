package cniserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// DecodeError reports a request body that is not one JSON object of the
// expected shape.
type DecodeError struct {
	Err error
}

func (e *DecodeError) Error() string { return "decode request: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Handler returns the HTTP handler Run serves; tests may serve it elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(cniv1.PathAdd, post(s.handleAdd))
	mux.HandleFunc(cniv1.PathCheck, post(s.handleCheck))
	mux.HandleFunc(cniv1.PathDel, post(s.handleDel))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeResponse(w, http.StatusNotFound, cniv1.Response{Error: fmt.Sprintf("unknown path %s (want %s, %s or %s)", r.URL.Path, cniv1.PathAdd, cniv1.PathCheck, cniv1.PathDel)})
	})
	return mux
}

// post wraps a handler with the checks every endpoint shares.
func post(h func(ctx context.Context, w http.ResponseWriter, body io.Reader)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeResponse(w, http.StatusMethodNotAllowed, cniv1.Response{Error: fmt.Sprintf("method %s not allowed on %s: use POST", r.Method, r.URL.Path)})
			return
		}
		h(r.Context(), w, http.MaxBytesReader(w, r.Body, cniv1.MaxBodyBytes))
	}
}

func (s *Server) timeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return DefaultRequestTimeout
}

func (s *Server) handleAdd(ctx context.Context, w http.ResponseWriter, body io.Reader) {
	req, err := decodeAdd(body)
	if err != nil {
		s.badRequest(w, cniv1.PathAdd, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	start := time.Now()
	log := s.log.With("op", "add", "pod", req.PodNamespace+"/"+req.PodName, "containerID", req.ContainerID, "netns", req.Netns)
	resp, err := s.enroller.CNIAdd(ctx, req)
	if err != nil {
		log.Warn("enroll pod", "err", err, "took", time.Since(start))
		writeResponse(w, failureStatus(err), cniv1.Response{Error: fmt.Sprintf("enroll pod %s/%s: %v", req.PodNamespace, req.PodName, err)})
		return
	}
	resp.Error = ""
	log.Info("cni add", "enrolled", resp.Enrolled, "reason", resp.Reason, "took", time.Since(start))
	writeResponse(w, http.StatusOK, resp)
}

func (s *Server) handleCheck(ctx context.Context, w http.ResponseWriter, body io.Reader) {
	req, err := decodeAdd(body)
	if err != nil {
		s.badRequest(w, cniv1.PathCheck, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	err = s.enroller.CNICheck(ctx, req)
	switch {
	case err == nil:
		writeResponse(w, http.StatusOK, cniv1.Response{Enrolled: true})
	case errors.Is(err, ErrNotEnrolled):
		writeResponse(w, http.StatusOK, cniv1.Response{Enrolled: false, Error: err.Error()})
	default:
		s.log.Warn("check pod", "pod", req.PodNamespace+"/"+req.PodName, "err", err)
		writeResponse(w, failureStatus(err), cniv1.Response{Error: fmt.Sprintf("check pod %s/%s: %v", req.PodNamespace, req.PodName, err)})
	}
}

func (s *Server) handleDel(ctx context.Context, w http.ResponseWriter, body io.Reader) {
	req, err := decodeDel(body)
	if err != nil {
		s.badRequest(w, cniv1.PathDel, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	start := time.Now()
	log := s.log.With("op", "del", "pod", req.PodNamespace+"/"+req.PodName, "containerID", req.ContainerID)
	if err := s.enroller.CNIDel(ctx, req); err != nil {
		log.Warn("release pod", "err", err)
		writeResponse(w, failureStatus(err), cniv1.Response{Error: fmt.Sprintf("release pod %s/%s: %v", req.PodNamespace, req.PodName, err)})
		return
	}
	log.Info("cni del", "took", time.Since(start))
	writeResponse(w, http.StatusOK, cniv1.Response{})
}

func (s *Server) badRequest(w http.ResponseWriter, path string, err error) {
	s.log.Warn("reject cni request", "path", path, "err", err)
	status := http.StatusBadRequest
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		status = http.StatusRequestEntityTooLarge
	}
	writeResponse(w, status, cniv1.Response{Error: err.Error()})
}

// failureStatus is the status of an Enroller error.
func failureStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func writeResponse(w http.ResponseWriter, status int, resp cniv1.Response) {
	w.Header().Set("Content-Type", cniv1.ContentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

type validator interface{ Validate() error }

// decode reads exactly one JSON object into a T and validates it. Unknown
// fields are ignored (fields are only ever added within a version).
func decode[T validator](body io.Reader) (T, error) {
	var v T
	data, err := io.ReadAll(body)
	if err != nil {
		return v, &DecodeError{Err: fmt.Errorf("read body: %w", err)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return v, &DecodeError{Err: errors.New("empty body, want a JSON object")}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		return v, &DecodeError{Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return v, &DecodeError{Err: errors.New("trailing data after the JSON object")}
	}
	if err := v.Validate(); err != nil {
		return v, err
	}
	return v, nil
}

func decodeAdd(body io.Reader) (cniv1.AddRequest, error) { return decode[cniv1.AddRequest](body) }
func decodeDel(body io.Reader) (cniv1.DelRequest, error) { return decode[cniv1.DelRequest](body) }
