package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unicode/utf8"

	"github.com/weftmesh/weft/internal/spiffe"
)

// kinder is an error that knows its kind.
type kinder interface {
	error
	ErrorKind() string
}

// ErrorKind classifies err for the kind label of
// weft_ztunnel_connection_errors_total, by type and never by text. An error
// in err's chain with a method ErrorKind() string decides, so a package with
// errors of its own (the HBONE client, say) need not be guessed at; its
// kinds become label values, so they must come from a small fixed set.
// Otherwise the kind is one of "canceled", "timeout", "refused", "reset",
// "broken_pipe", "unreachable", "eof", "tls" (handshake and certificate
// failures) or "other". It is "" for nil.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	if k, ok := errors.AsType[kinder](err); ok {
		if kind := k.ErrorKind(); kind != "" && utf8.ValidString(kind) {
			return kind
		}
	}
	var (
		alert     tls.AlertError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		host      x509.HostnameError
		ne        net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, spiffe.ErrUntrusted), errors.Is(err, spiffe.ErrInvalidID),
		errors.As(err, &alert), errors.As(err, &verify), errors.As(err, &record),
		errors.As(err, &authority), errors.As(err, &invalid), errors.As(err, &host):
		return "tls"
	default:
		return "other"
	}
}
